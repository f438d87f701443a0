"""`accelerate launch --multi_gpu --num_processes 2 -m sec_trl.evaluate` on the CPU (two real gloo processes): the
prompts are sharded over the processes and gathered, and the report equals the one-process report sample for sample.

Five prompts with --batch_size 2 are three global batches, so the shards are uneven ([0, 2) and [2, 5)): the
identity holds because each batch is seeded from (seed, its first prompt index), whichever process samples it.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from test_evaluate import run_cli


ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_report_exactly_what_one_process_reports(tiny_model_dir, tmp_path):
    args = ["--model_name_or_path", tiny_model_dir, "--arithmetic_num_test", "5", "--batch_size", "2", "--k", "3"]
    args += ["--max_new_tokens", "5", "--seed", "3", "--save_completions", "true", "--use_cpu", "true"]

    single = run_cli([*args, "--output_dir", "one"], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--main_process_port", str(_free_port()), "-m"]
    two = subprocess.run(
        [*launch, "sec_trl.evaluate", *args, "--output_dir", "two"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-4000:]

    a = json.loads((tmp_path / "one" / "eval_results.json").read_text())
    b = json.loads((tmp_path / "two" / "eval_results.json").read_text())
    assert a["num_processes"] == 1 and b["num_processes"] == 2
    ra, rb = a["results"]["arithmetic"], b["results"]["arithmetic"]
    assert rb["num_prompts"] == 5 and len(rb["completions"]) == 5
    assert rb["completions"] == ra["completions"]
    assert rb["per_prompt_correct"] == ra["per_prompt_correct"]
    for key in ("avg@3", "pass@1", "pass@3", "mean_completion_length", "truncated_frac"):
        assert rb[key] == ra[key], key
    # both processes sampled: contiguous shards of whole batches, uneven (3 batches over 2 processes)
    assert rb["shards"] == [[0, 2], [2, 5]] and "shards" not in ra
    assert "process 0 of 2" in two.stderr  # the bar is shown by the main process, labelled with its shard
    assert two.stdout.count("model:") == 1  # the table is printed once, by the main process
