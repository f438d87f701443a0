"""The supported TRL range (pyproject.toml: TRL 1.15 and 1.16). `make test` runs these on TRL 1.16, `make test-trl-min`
on TRL 1.15 (with the trainer test files): the declared range, the check that refuses TRL 1.15 where its GRPO forward
cannot run, and the tests' CPU version of TRL 1.15's kernel (`helpers/trl_kernel.py`) against TRL's own kernel."""

import json
import os
import subprocess
import sys
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

import pytest
from helpers import trl_kernel
from packaging.requirements import Requirement
from packaging.version import Version

from sec_trl.config import SETGRPOConfig, trl_forward_problem


ROOT = Path(__file__).resolve().parent.parent
TRL = Version(version("trl"))


def _trl_requirement() -> str:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in dependencies if Requirement(d).name == "trl")


def test_the_declared_range_is_the_tested_one():
    """pyproject.toml allows the two tested minors (1.15, 1.16) and no other; the README and docs/training.md say so;
    the TRL these tests run on is inside it."""
    requirement = _trl_requirement()
    spec = Requirement(requirement).specifier
    assert [v for v in ("1.14.2", "1.15.0", "1.15.9", "1.16.0", "1.16.3", "1.17.0") if spec.contains(v)] == [
        "1.15.0",
        "1.15.9",
        "1.16.0",
        "1.16.3",
    ]
    assert spec.contains(TRL), f"the tests run on TRL {TRL}, outside pyproject.toml's {spec}"
    for doc in ("README.md", "docs/training.md"):
        assert f"`{requirement}`" in (ROOT / doc).read_text(), f"{doc} does not state `{requirement}`"


class _TritonKernelStandIn:
    """What `trl.trainer.utils` holds on TRL 1.15 with triton installed: a class from `trl.kernels`."""

    __module__ = "trl.kernels.chunked_logprob"


def test_trl_forward_problem_names_the_fix():
    """TRL 1.15 without triton, or with its Triton kernel on a device Triton cannot serve: the fix is TRL 1.16.
    TRL 1.16 runs everywhere; TRL 1.15's kernel on CUDA/XPU, or a CPU path put in its place, passes."""
    for kernel, device in (
        (None, "cpu"),
        (None, "cuda"),
        (_TritonKernelStandIn, "cpu"),
        (_TritonKernelStandIn, "mps"),
    ):
        problem = trl_forward_problem("1.15.0", kernel, device)
        assert problem and "TRL 1.15.0's GRPO forward" in problem and "pip install 'trl>=1.16,<1.17'" in problem
    assert "needs the triton package" in trl_forward_problem("1.15.0", None, "cuda")
    assert "not cpu" in trl_forward_problem("1.15.0", _TritonKernelStandIn, "cpu")
    assert trl_forward_problem("1.15.0", _TritonKernelStandIn, "cuda") is None
    assert trl_forward_problem("1.15.0", _TritonKernelStandIn, "xpu") is None
    assert trl_forward_problem("1.15.0", trl_kernel._CpuOrTrlKernel(None), "cpu") is None
    for kernel in (None, _TritonKernelStandIn):
        assert trl_forward_problem("1.16.0", kernel, "cpu") is None
        assert trl_forward_problem("1.16.0.dev0", kernel, "cpu") is None


@pytest.mark.skipif(not trl_kernel.kernel_needs_stand_in(), reason="TRL >= 1.16 runs its forward on the CPU")
def test_config_refuses_trl_115s_own_kernel_on_the_cpu(tmp_path, monkeypatch):
    """On TRL 1.15 with its own kernel (the tests' CPU version taken out again), `SETGRPOConfig` on the CPU raises
    the ImportError (one `error:` line at the CLI) before anything loads."""
    from trl.trainer import utils

    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", utils._ChunkedLogProbFunction.trl_kernel)
    with pytest.raises(ImportError, match=r"pip install 'trl>=1\.16,<1\.17'"):
        SETGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")


def test_the_stand_in_is_installed_only_on_trl_115():
    from trl.trainer import utils

    assert trl_kernel.kernel_needs_stand_in() == (TRL.release[:2] < (1, 16))
    assert isinstance(utils._ChunkedLogProbFunction, trl_kernel._CpuOrTrlKernel) == trl_kernel.kernel_needs_stand_in()


# Run in a fresh interpreter: on TRL 1.15, TRITON_INTERPRET=1 must be set before `trl.kernels` is imported (Triton
# reads it when the kernels are defined). Several vocabulary chunks and 1024-wide blocks, a bias, logit scale, softcap
# and temperature; the gradients of a weighted sum of log-probabilities and entropies.
_COMPARE = """
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
from helpers.trl_kernel import TorchChunkedLogProb
from trl.kernels import ChunkedLogProbFunction

torch.manual_seed(0)
N, H, V = 5, 8, 2500
outputs = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
hidden = torch.randn(N, H, dtype=torch.float64).float()
weight = torch.randn(V, H).mul(3)
bias = torch.randn(V)
targets = torch.randint(0, V, (N,))
with torch.no_grad():
    targets[0] = (hidden[0] @ weight.t() + bias).argmax()  # one top-1 token
w_logp, w_ent = torch.randn(N), torch.randn(N)
result = {}
for name, fn in (("trl", ChunkedLogProbFunction), ("ours", TorchChunkedLogProb)):
    h, w, b = (x.clone().requires_grad_() for x in (hidden, weight, bias))
    logp, ent, sq, mean, top1 = fn.apply(h, w, b, targets, 0.7, 1024, 30.0, 0.5, outputs)
    ((logp * w_logp).sum() + (ent * w_ent).sum()).backward()
    result[name] = {
        "logp": logp.tolist(), "entropy": ent.tolist(), "log_sum_sq_probs": sq.tolist(), "mean_logits": mean.tolist(),
        "is_top1": top1.tolist(), "grad_hidden": h.grad.flatten().tolist(), "grad_weight": w.grad.flatten().tolist(),
        "grad_bias": b.grad.tolist(),
    }
print(json.dumps(result))
"""


def test_the_cpu_kernel_matches_trls():
    """`TorchChunkedLogProb` = TRL's `ChunkedLogProbFunction` on every output and gradient: on TRL 1.15 its Triton
    kernel, run by Triton's interpreter on the CPU; on TRL 1.16 its torch path."""
    if trl_kernel.kernel_needs_stand_in() and find_spec("triton") is None:
        pytest.skip("TRL 1.15's kernel needs the triton package to run at all (make test-trl-min installs it)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-c", _COMPARE, str(ROOT / "tests")], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    theirs, ours = result["trl"], result["ours"]
    assert theirs["is_top1"] == ours["is_top1"] and ours["is_top1"][0] is True
    for key in ("logp", "entropy", "log_sum_sq_probs", "mean_logits", "grad_hidden", "grad_weight", "grad_bias"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), key
