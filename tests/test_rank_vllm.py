"""The ranking's vLLM path, run against `tests/stand_ins/vllm`: a stand-in of vLLM's interface, NOT vLLM.

vLLM cannot be installed on the machines this project is tested on (no GPU). These tests check what sec_trl asks of
vLLM's API (engine arguments, one seed per prompt, data-parallel engines under accelerate launch, sampling settings
taken from the training config) and that its outputs are turned into the same ranking columns. They say nothing
about vLLM's own behaviour, and nothing here was run with the real vLLM.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sec_trl.data import make_arithmetic_splits
from sec_trl.rank import rank_dataset


ROOT = Path(__file__).resolve().parents[1]
STAND_INS = ROOT / "tests" / "stand_ins"
FAST = {"num_samples": 4, "max_new_tokens": 4, "shard_size": 3, "prompts_per_batch": 2}


@pytest.fixture
def vllm_stand_in(monkeypatch, tmp_path):
    """`import vllm` finds the stand-in for this test only; its calls are logged to a file."""
    log = tmp_path / "vllm_calls.jsonl"
    monkeypatch.syspath_prepend(str(STAND_INS))
    monkeypatch.setenv("SEC_TRL_VLLM_STAND_IN_LOG", str(log))
    sys.modules.pop("vllm", None)
    yield log
    sys.modules.pop("vllm", None)  # later tests must see that vLLM is not installed


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _rows(ranked):
    keep = ("se_source_index", "semantic_entropy", "num_clusters", "se_sample_answers", "se_sample_lengths")
    return {k: ranked[k] for k in keep}


def test_one_process_asks_vllm_for_one_seed_per_prompt(tiny_model_dir, tmp_path, vllm_stand_in):
    dataset = make_arithmetic_splits(512, 128)["train"].select(range(6))
    ranked = rank_dataset(dataset, tiny_model_dir, tmp_path / "out", use_vllm=True, show_progress=False, **FAST)
    assert len(ranked) == 6 and ranked["semantic_entropy"] == sorted(ranked["semantic_entropy"])
    assert json.loads((tmp_path / "out" / "ranking_meta.json").read_text())["backend"] == "vllm"
    calls = _calls(vllm_stand_in)
    (init,) = [c for c in calls if c["event"] == "init"]
    assert "distributed_executor_backend" not in init["kwargs"]  # one process: a plain engine
    seeds = [s for c in calls if c["event"] == "generate" for s in c["seeds"]]
    assert len(seeds) == 6 and len(set(seeds)) == 6  # each prompt its own seed: batching cannot change samples
    # lengths come from len(output.token_ids), the tokens cumulative_logprob sums over
    assert {length for row in ranked["se_sample_lengths"] for length in row} <= {3, 4}


def test_two_processes_run_one_engine_each_and_rank_identically(tiny_model_dir, tmp_path, vllm_stand_in):
    one = rank_dataset(
        make_arithmetic_splits(512, 128)["train"].select(range(6)),
        tiny_model_dir,
        tmp_path / "one",
        use_vllm=True,
        show_progress=False,
        **FAST,
    )
    vllm_stand_in.unlink()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(STAND_INS), str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("ACCELERATE_USE_CPU", None)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(port), "-m", "sec_trl.rank", "--model_name_or_path", tiny_model_dir]
    command += ["--output_dir", str(tmp_path / "two"), "--num_prompts", "6", "--use_vllm", "true"]
    for key, value in FAST.items():
        command += [f"--{key}", str(value)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    inits = [c for c in _calls(vllm_stand_in) if c["event"] == "init"]
    assert sorted(c["rank"] for c in inits) == ["0", "1"]
    for init in inits:  # TRL's colocate layout: one engine per process, in the launcher's process group
        assert init["kwargs"]["distributed_executor_backend"] == "external_launcher"
        assert init["kwargs"]["tensor_parallel_size"] == 1
    from datasets import load_from_disk

    assert _rows(load_from_disk(str(tmp_path / "two"))) == _rows(one)


def test_train_py_ranks_with_vllm_and_the_training_sampling(tiny_model_dir, tmp_path, vllm_stand_in):
    """`train.py --use_vllm true --curriculum true`: the ranking step samples with vLLM, at the training's
    temperature and top_p (the training itself, TRL's vLLM, is not exercised: the stand-in is not vLLM)."""
    from sec_trl import SETGRPOConfig, train

    script_args = train.SENTScriptArguments(arithmetic_num_train=6, se_num_samples=4, se_max_new_tokens=4)
    args = SETGRPOConfig(
        output_dir=str(tmp_path / "run"),
        use_vllm=True,
        temperature=0.7,
        top_p=0.9,
        curriculum=True,
        num_train_epochs=1,
        report_to="none",
    )
    dataset = script_args.load("train")
    ranked, histogram = train.rank_for_curriculum(dataset, tiny_model_dir, script_args, args)
    assert len(ranked) == 6 and "semantic_entropy" in ranked.column_names
    assert Path(histogram).name == "se_histogram.png"
    generate = [c for c in _calls(vllm_stand_in) if c["event"] == "generate"]
    assert generate and all(c["temperature"] == 0.7 and c["top_p"] == 0.9 and c["n"] == 4 for c in generate)
