"""The benchmark scripts run end to end with tiny `--quick` settings and print their ratio lines, so they cannot rot.

Each runs as a subprocess, as a user would run it (about 10 s and 20 s on 2 CPU cores). The numbers themselves are
not asserted: timings on a shared machine are not a test. `bench_loss.py` does assert, before timing, that
`sec_trl`'s losses equal the reference-style re-implementations (forward, gradient, selected coefficients).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NUMBER = r"\d+\.\d+"


def _run(script, *args):
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,  # generous: the machine is shared; a quick run takes ~10-20 s
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize("device", DEVICES)
def test_bench_loss_quick(device):
    out = _run("bench_loss.py", "--device", device)
    assert re.search(r"^machine: .*; torch .*; device ", out, re.M), out
    assert "outputs checked equal" in out
    for loss in ("sent", "kl_cov"):
        assert re.search(rf"^ratio \(reference / sec_trl\) = {NUMBER}  \[{loss}, 8x256, {device}\]$", out, re.M), out


@pytest.mark.parametrize("device", DEVICES)
def test_bench_step_quick(device):
    out = _run("bench_step.py", "--device", device)
    assert re.search(r"^machine: .*; torch .*; device ", out, re.M), out
    assert "full trainer.train()" in out
    for variant in ("none", "sent", "kl_cov", "clip_cov"):
        line = re.search(
            rf"^step-time ratio \(SETGRPOTrainer {variant} / GRPOTrainer\) = {NUMBER} \(paired {NUMBER}; "
            rf"target <= 1\.02\)(.*)$",
            out,
            re.M,
        )
        assert line, out
        # the CPU peak-memory measure passes its self-check here; on CUDA it is max_memory_allocated
        assert re.fullmatch(rf"; peak-memory ratio = {NUMBER} \(target <= 1\.01\)", line.group(1)), out
