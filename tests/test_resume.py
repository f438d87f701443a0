"""Kill a curriculum run with SIGKILL after a checkpoint, resume it, and compare the prompt stream with an
uninterrupted run: no prompt skipped or repeated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

RECORDING_REWARD = """
import json, os

def recording_reward(completions, prompts, **kwargs):
    # one line per rollout batch on this process: the prompt texts in the order they were fed
    with open(os.environ["PROMPT_STREAM"], "a") as f:
        f.write(json.dumps([p[-1]["content"] if isinstance(p, list) else p for p in prompts]) + "\\n")
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]
"""


def _command(model, data, out):
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "--model_name_or_path",
        model,
        "--dataset_name",
        data,
        "--reward_funcs",
        "stream_rewards.recording_reward",
        "--curriculum",
        "true",
        "--curriculum_stages",
        "2",
        "--num_train_epochs",
        "1",
        "--output_dir",
        str(out),
        "--use_cpu",
        "true",
        "--bf16",
        "false",
        "--report_to",
        "none",
        "--num_generations",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--steps_per_generation",
        "2",
        "--max_completion_length",
        "4",
        "--max_steps",
        "12",
        "--save_strategy",
        "steps",
        "--save_steps",
        "4",
        "--seed",
        "3",
    ]


def _env(stream):
    return {**os.environ, "PROMPT_STREAM": str(stream), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _stream(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_sigkill_and_resume_continue_the_exact_prompt_stream(tiny_model_dir, tmp_path):
    (tmp_path / "stream_rewards.py").write_text(RECORDING_REWARD)
    data = tmp_path / "train.jsonl"
    rows = [{"prompt": f"Question {i}", "answer": str(i), "semantic_entropy": (i * 7 % 12) / 10} for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    # 1. uninterrupted reference run: 12 steps, a rollout batch every 2 steps -> 6 batches of 2 prompts x 2
    full = subprocess.run(
        _command(tiny_model_dir, str(data), tmp_path / "full"),
        cwd=tmp_path,
        env=_env(tmp_path / "full.jsonl"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert full.returncode == 0, full.stderr[-3000:]
    reference = _stream(tmp_path / "full.jsonl")
    assert len(reference) == 6

    # 2. the same run, SIGKILLed once checkpoint-4 is complete
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _command(tiny_model_dir, str(data), out),
        cwd=tmp_path,
        env=_env(tmp_path / "killed.jsonl"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (out / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None, "the run ended before writing checkpoint-4"
        assert time.time() < deadline, "no checkpoint-4 within 300 s"
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint's last files land, then kill without any chance to clean up
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    latest = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert latest >= 4

    # 3. resume from the latest checkpoint: the stream continues exactly where checkpoint-4 left it
    resumed = subprocess.run(
        [*_command(tiny_model_dir, str(data), out), "--resume_from_checkpoint", "true"],
        cwd=tmp_path,
        env=_env(tmp_path / "resumed.jsonl"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # checkpoint-N was written after N steps = N / 2 rollout batches
    assert _stream(tmp_path / "resumed.jsonl") == reference[latest // 2 :]
    assert (out / "model.safetensors").exists()
