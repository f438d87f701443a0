"""train.py under `accelerate launch` with 2 real processes on the CPU (gloo): DeepSpeed ZeRO-3, and plain DDP.

The ZeRO-3 run uses `accelerate_configs/zero3_cpu.yaml` as documented there. On a fresh machine DeepSpeed first
JIT-compiles a small comm op (about a minute, cached in ~/.cache/torch_extensions); afterwards each run takes ~15 s.
"""

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers.train_flags import DDP_TWO_CPU_PROCESSES, ROOT, accelerate_launch, train_flags


ZERO3_CPU_CONFIG = ROOT / "accelerate_configs" / "zero3_cpu.yaml"
NUM_GENERATIONS = 4

pytest.importorskip("deepspeed")

# A reward that varies within a group (a random tiny model never answers correctly), which also records, per rank,
# the prompts it scored: the two ranks together must hold whole GRPO groups.
MY_REWARDS = """\
import json, os


def length_reward(completions, prompts, **kwargs):
    with open(f"rewards_rank{os.environ.get('RANK', '0')}.jsonl", "a") as f:
        f.write(json.dumps({"prompts": [json.dumps(p, sort_keys=True) for p in prompts]}) + "\\n")
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]
"""


def _train_flags(model, out, **overrides):
    flags = dict(
        model_name_or_path=model,
        output_dir=out,
        dataset_name="train.jsonl",
        reward_funcs="my_rewards.length_reward",
        num_generations=NUM_GENERATIONS,
        per_device_train_batch_size=2,
        max_steps=2,
        steps_per_generation=2,
        logging_steps=1,
        learning_rate=1e-3,
    )
    return train_flags(**{**flags, **overrides})


def _setup(tmp_path):
    rows = [{"prompt": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(8)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "my_rewards.py").write_text(MY_REWARDS)


def _check_two_ranks_scored_whole_groups(tmp_path):
    """Both ranks scored completions, and each generation batch, over both ranks, holds whole groups of 4."""
    calls = {rank: (tmp_path / f"rewards_rank{rank}.jsonl").read_text().splitlines() for rank in (0, 1)}
    assert len(calls[0]) == len(calls[1]) >= 1
    for call0, call1 in zip(calls[0], calls[1], strict=True):
        prompts = json.loads(call0)["prompts"] + json.loads(call1)["prompts"]
        # per rank: per_device_train_batch_size * steps_per_generation = 4 completions
        assert len(prompts) == 8
        assert set(Counter(prompts).values()) == {NUM_GENERATIONS}, Counter(prompts)


def _check_saved_model(out, tiny_model_dir):
    """out/model.safetensors is complete (not ZeRO-3's empty placeholders), trained, and loads and generates."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    saved = load_file(str(out / "model.safetensors"))
    assert saved.keys() == initial.keys()
    for name, tensor in saved.items():
        assert tensor.shape == initial[name].shape and tensor.numel() > 0, f"{name}: {tuple(tensor.shape)}"
        assert torch.isfinite(tensor).all(), name
    changed = [name for name in saved if not torch.equal(saved[name], initial[name])]
    assert len(changed) == len(saved), f"untouched by training: {sorted(set(saved) - set(changed))}"

    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ids = tokenizer("What is 1 + 2?", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 3)


def _log_history(state_file):
    return json.loads(state_file.read_text())["log_history"]


def test_zero3_cpu_two_processes(tiny_model_dir, tmp_path):
    _setup(tmp_path)
    out = tmp_path / "out"
    # No DS_ACCELERATOR, as documented: zero3_cpu.yaml's `gpu_ids: ''` hides any GPU from the ranks, so DeepSpeed
    # auto-detects its CPU accelerator.
    result = accelerate_launch(
        ["--config_file", str(ZERO3_CPU_CONFIG)],
        _train_flags(tiny_model_dir, out, save_strategy="steps", save_steps=2),
        tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    # the SENT metrics are printed (the per-step table) and logged
    assert "sent/high_cov_abs_log_ratio" in result.stdout
    history = _log_history(out / "checkpoint-2" / "trainer_state.json")
    steps = {entry["step"]: entry for entry in history if "entropy" in entry}
    assert sorted(steps) == [1, 2]
    # rewards and group advantages were computed on the rollout batch (step 1 generated it)
    assert steps[1]["reward_std"] > 0 and steps[1]["frac_reward_zero_std"] == 0
    for entry in steps.values():
        assert entry["sent/low_entropy_frac"] > 0 and "sent/entropy_threshold" in entry
    # step 2 reuses the rollout after one optimizer step: SENT's |logp - old_logp| term is live under ZeRO-3
    assert steps[2]["sent/high_cov_abs_log_ratio"] > 0
    _check_two_ranks_scored_whole_groups(tmp_path)

    # it really ran DeepSpeed ZeRO-3 on 2 ranks: sharded ZeRO state and one RNG state per rank in the checkpoint
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "global_step2").is_dir()
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    assert (checkpoint / "model.safetensors").exists()  # the gathered 16-bit-save weights
    _check_saved_model(out, tiny_model_dir)
    _check_saved_model(checkpoint, tiny_model_dir)


def test_ddp_cpu_two_processes(tiny_model_dir, tmp_path):
    _setup(tmp_path)
    out = tmp_path / "out"
    result = accelerate_launch(DDP_TWO_CPU_PROCESSES, _train_flags(tiny_model_dir, out), tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "sent/high_cov_abs_log_ratio" in result.stdout
    _check_two_ranks_scored_whole_groups(tmp_path)
    _check_saved_model(out, tiny_model_dir)
