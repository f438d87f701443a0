"""What a TRL / open-r1 user types after `make train`, run the way they would run it: train.py in a subprocess, the
real TRL, real files, the README's own snippet."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--report_to",
    "none",
    "--num_generations",
    "4",
    "--per_device_train_batch_size",
    "4",
    "--max_completion_length",
    "6",
    "--save_strategy",
    "no",
]


def _run(args, cwd, timeout=900, script=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "train.py"), *args] if script is None else [sys.executable, *script]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _math_rows(n, prompt="problem", answer="solution", offset=1):
    return [{prompt: f"What is {i} + {offset}?", answer: str(i + offset)} for i in range(n)]


def _card_setting(card: str, name: str) -> str:
    match = re.search(rf"^\| `{name}` \| ([^|]+) \|", card, flags=re.MULTILINE)
    assert match, f"{name} not in the card's settings"
    return match.group(1).strip()


# --------------------------------------------------------------------------------------------------------------------
# 1. defaults that follow the hardware


def test_one_flag_without_config_keeps_the_embedded_recipe(embedded_dir, tmp_path):
    """`accelerate launch train.py --max_steps 1`: no --config, no --use_cpu / --bf16, on a machine without GPU."""
    result = _run(["--max_steps", "1", "--output_dir", "run", "--save_strategy", "no"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    card = (tmp_path / "run" / "README.md").read_text()
    # the recipe's values, not TRL's defaults (256 tokens, 8 generations, dr_grpo / lr 1e-6)
    assert _card_setting(card, "max_completion_length") == "32"
    assert _card_setting(card, "num_generations") == "4"
    assert _card_setting(card, "steps_per_generation") == "2"
    assert _card_setting(card, "loss_type") == "dapo"
    assert "SmolLM2-135M-Instruct (embedded)" in card and "generated arithmetic" in card


def test_another_model_without_config_trains_on_the_cpu_in_fp32(tiny_model_dir, tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", _math_rows(4, "prompt", "answer"))
    args = ["--model_name_or_path", tiny_model_dir, "--dataset_name", data, "--max_steps", "1", "--output_dir", "o"]
    result = _run([*args, *TINY], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "o" / "model.safetensors").exists()
    assert "bf16/gpu" not in result.stderr


def test_readme_python_snippet_runs_as_written(embedded_dir, tmp_path):
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(from sec_trl import .*?)```", readme, flags=re.DOTALL).group(1)
    (tmp_path / "snippet.py").write_text(snippet)
    result = _run([], tmp_path, script=["snippet.py"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    card = (out / "README.md").read_text()
    assert "not recorded" not in card  # base model and training data are both named
    assert "SmolLM2-135M-Instruct (embedded)" in card and "generated arithmetic" in card


# --------------------------------------------------------------------------------------------------------------------
# 3. the TRL ecosystem unchanged


def test_trl_and_open_r1_rewards_read_the_solution_column(tiny_model_dir, tmp_path):
    rows = _math_rows(8)
    rows[3]["solution"] = None  # missing gold: TRL's reward returns None, the sample is skipped, the run goes on
    data = _write_jsonl(tmp_path / "d.jsonl", rows)
    # an open-r1-style reward: reads `solution` by name
    (tmp_path / "my_rewards.py").write_text(
        "def solution_length(completions, solution, **kwargs):\n"
        "    return [None if s is None else float(len(s)) for s in solution]\n"
    )
    args = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_name",
        data,
        "--dataset_prompt_column",
        "problem",
        "--dataset_answer_column",
        "solution",
        "--reward_funcs",
        "trl.rewards.accuracy_reward",
        "my_rewards.solution_length",
        "--max_steps",
        "1",
        "--logging_steps",
        "1",
        "--output_dir",
        "o",
    ]
    result = _run([*args, *TINY], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rewards/solution_length/mean" in result.stdout and "rewards/accuracy_reward/mean" in result.stdout


def test_sec_trl_accuracy_reward_reads_the_configured_column_and_gives_none_without_gold():
    from sec_trl.preflight import build_reward_funcs

    (accuracy,) = build_reward_funcs(["accuracy"], "solution")
    completions = [[{"role": "assistant", "content": "\\boxed{4}"}]] * 3
    assert accuracy(completions, solution=["4", "5", None]) == [1.0, 0.0, None]
    assert accuracy(completions, solution=["4", "  ", "\\boxed{}"]) == [1.0, None, None]


def test_reward_funcs_accepts_model_ids_and_rejects_what_trl_cannot_call(tmp_path, monkeypatch):
    from sec_trl.preflight import build_reward_funcs

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "user_rewards.py").write_text(
        "NUMBER = 3\n"
        "class Scorer:\n    def __call__(self, completions, **kw):\n        return [1.0] * len(completions)\n"
        "def positional(texts):\n    return [1.0] * len(texts)\n"
        "def good(completions, **kwargs):\n    return [1.0] * len(completions)\n"
        "scorer = Scorer()\n"
    )
    # a Hub reward model with dots in its name is passed to TRL as is (TRL loads it), not imported
    funcs = build_reward_funcs(
        ["Skywork/Skywork-Reward-V2-Llama-3.1-8B", "user_rewards.good", "user_rewards.scorer"], "a"
    )
    assert funcs[0] == "Skywork/Skywork-Reward-V2-Llama-3.1-8B" and callable(funcs[1]) and callable(funcs[2])
    for name, message in [
        ("user_rewards.NUMBER", "is a int, not a reward function"),
        ("user_rewards.Scorer", "is a class"),
        ("user_rewards.positional", "does not accept a 'completions' keyword"),
        ("user_rewards.missing", "has no attribute 'missing'"),
        ("no_such_module.f", "cannot import module 'no_such_module'"),
        ("nonsense", "unknown reward 'nonsense'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            build_reward_funcs([name], "answer")


# --------------------------------------------------------------------------------------------------------------------
# 4. evaluation during training


def test_eval_strategy_logs_held_out_accuracy_and_the_card_reports_it(tiny_model_dir, tmp_path):
    args = [
        "--model_name_or_path",
        tiny_model_dir,
        "--arithmetic_num_train",
        "8",
        "--arithmetic_num_test",
        "4",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "1",
        "--per_device_eval_batch_size",
        "4",
        "--max_steps",
        "1",
        "--output_dir",
        "o",
    ]
    result = _run([*args, *TINY], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval_rewards/accuracy_reward/mean" in result.stdout
    card = (tmp_path / "o" / "README.md").read_text()
    assert "## Held-out evaluation" in card and "`eval_rewards/accuracy_reward/mean` | 1 |" in card


def test_eval_without_a_test_split_fails_before_the_model_loads(tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", _math_rows(4, "prompt", "answer"))
    args = ["--model_name_or_path", "no-such/model", "--dataset_name", data, "--eval_strategy", "steps"]
    result = _run([*args, "--output_dir", "o", *TINY], tmp_path, timeout=300)
    assert result.returncode != 0
    assert "--dataset_test_split" in result.stderr and "no-such/model" not in result.stderr.split("Error")[-1]


# --------------------------------------------------------------------------------------------------------------------
# 5. fail before the expensive part, leave nothing behind


@pytest.mark.parametrize(
    "extra, rows, message",
    [
        (["--report_to", "tensorboard"], None, "--report_to tensorboard: the 'tensorboard' package is not installed"),
        (["--curriculum", "true", "--curriculum_stages", "2", "--num_train_epochs", "1"], None, "smaller than one"),
        (["--curriculum", "true", "--num_train_epochs", "1"], "negative", "negative value(s)"),
        (["--kl_cov_coef", "inf"], None, "kl_cov_coef"),
    ],
)
def test_checkable_errors_come_before_ranking_and_model_loading(tmp_path, extra, rows, message):
    if "tensorboard" in extra and importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here: the missing-tracker error cannot happen")
    if rows == "negative":
        data = [{"prompt": f"q{i}", "answer": "1", "semantic_entropy": -0.5 if i == 2 else 0.1} for i in range(8)]
    else:
        data = [{"prompt": f"q{i}", "answer": "1"} for i in range(4)]
    path = _write_jsonl(tmp_path / "d.jsonl", data)
    # the model does not exist: loading it (or ranking with it) would fail with another message
    args = ["--model_name_or_path", "no-such/model", "--dataset_name", path, "--output_dir", "o", *TINY, *extra]
    if rows != "negative" and "--curriculum" in extra:
        # 4 prompts x 4 generations per device batch, 4 micro-batches per rollout: 4 prompts per rollout batch,
        # more than a stage of 2 prompts holds
        args += ["--steps_per_generation", "4"]
    result = _run(args, tmp_path, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "o").exists()  # nothing half-written


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", "", "'empty.jsonl' is empty"),
        ("bad.jsonl", '{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": \n', "'bad.jsonl': line 2"),
        ("header.csv", "prompt,answer\n", "'header.csv' has a header line and no data rows"),
    ],
)
def test_bad_data_files_name_the_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    result = _run(["--dataset_name", name, "--output_dir", "o", "--max_steps", "1"], tmp_path, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------------------------------
# 6. resume after a crash during a save


def test_resume_skips_a_checkpoint_whose_save_was_interrupted(tiny_model_dir, tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", _math_rows(8, "prompt", "answer"))
    base = ["--model_name_or_path", tiny_model_dir, "--dataset_name", data, "--output_dir", "o", *TINY]
    # one rollout batch feeds two optimizer steps: rewards are logged on the generating steps 1, 3, ...
    base += ["--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "1", "--steps_per_generation", "2"]
    first = _run([*base, "--max_steps", "2"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # what a SIGKILL during the second save leaves: no trainer_state.json, a half-written temporary file
    broken = tmp_path / "o" / "checkpoint-2"
    (broken / "trainer_state.json").unlink()
    (broken / "model.safetensors.tmp").write_bytes(b"\0" * 1024)
    resumed = _run([*base, "--max_steps", "3", "--resume_from_checkpoint", "true"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Skipping incomplete checkpoint checkpoint-2: no trainer_state.json" in resumed.stderr
    assert "Resuming from checkpoint-1." in resumed.stderr
    state = json.loads((tmp_path / "o" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3]  # step 1 from the first run, steps 2-3 redone from checkpoint-1
    # the rollout buffered at checkpoint-1 (half used) is not saved: the resumed run generates again at step 2
    generated = [entry["step"] for entry in state["log_history"] if "reward" in entry]
    first_state = json.loads((tmp_path / "o" / "checkpoint-1" / "trainer_state.json").read_text())
    assert [e["step"] for e in first_state["log_history"] if "reward" in e] == [1]
    assert generated == [1, 2], generated


# --------------------------------------------------------------------------------------------------------------------
# 7. pushes without local paths


def test_uploads_hold_no_local_path(tiny_model_dir, tmp_path):
    """A LoRA + curriculum run on a local model, staged as every hub_strategy would upload it."""
    from sec_trl.hub import find_leaks, local_roots, stage_for_upload

    data = _write_jsonl(tmp_path / "d.jsonl", _math_rows(8, "prompt", "answer"))
    out = tmp_path / "o"
    args = ["--model_name_or_path", tiny_model_dir, "--dataset_name", data, "--output_dir", str(out), *TINY]
    args += ["--use_peft", "--lora_r", "2", "--lora_target_modules", "q_proj", "v_proj", "--curriculum", "true"]
    args += ["--se_num_samples", "2", "--se_max_new_tokens", "2", "--max_steps", "1", "--save_strategy", "steps"]
    args += ["--save_steps", "1"]
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    roots = local_roots([out])
    # the raw folders do hold local paths (so this test can fail): the adapter's base model, the ranking cache
    assert find_leaks(out, roots)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == tiny_model_dir
    for folder, ignore in [(out, ["checkpoint-*"]), (out / "checkpoint-1", []), (out / "checkpoint-1", ["*.pt"])]:
        staged = stage_for_upload(folder, tmp_path / f"staged-{len(ignore)}-{folder.name}", ignore=ignore)
        assert find_leaks(staged, roots) == []
        assert not (staged / "training_args.bin").exists()
        assert not list(staged.rglob("shards"))  # the ranking's sample cache stays local
        staged_adapter = json.loads((staged / "adapter_config.json").read_text())
        assert staged_adapter["base_model_name_or_path"] == Path(tiny_model_dir).name
    assert (tmp_path / f"staged-1-{out.name}" / "se_ranking" / "ranking_meta.json").exists()


def test_staging_refuses_a_token_and_scrubs_paths_in_any_json(tmp_path):
    from argparse import Namespace

    from sec_trl.hub import stage_for_upload

    folder = tmp_path / "run"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "meta.json").write_text(json.dumps({"cache": str(tmp_path / "cache" / "x"), "n": [1, "/"]}))
    staged = stage_for_upload(folder, tmp_path / "s1")
    assert json.loads((staged / "sub" / "meta.json").read_text()) == {"cache": "x", "n": [1, "/"]}
    (folder / "notes.txt").write_text("pushed with hf_abcdefghijklmnop")
    args = Namespace(hub_token="hf_abcdefghijklmnop", output_dir=str(folder))
    with pytest.raises(ValueError, match="notes.txt: a token"):
        stage_for_upload(folder, tmp_path / "s2", args=args)


def test_card_links_tracker_runs_and_reports_the_last_evaluation(tmp_path):
    from sec_trl import SETGRPOConfig
    from sec_trl.model_card import render_model_card

    args = SETGRPOConfig(output_dir=str(tmp_path), report_to="none")
    history = [
        {"step": 1, "reward": 0.1, "entropy": 2.0},
        {"step": 2, "eval_reward": 0.25, "eval_rewards/accuracy_reward/mean": 0.25},
        {"step": 4, "eval_reward": 0.5, "eval_rewards/accuracy_reward/mean": 0.5},
    ]
    card = render_model_card(
        output_dir=tmp_path,
        args=args,
        log_history=history,
        base_model="Qwen/Qwen2.5-0.5B-Instruct",
        dataset_name="open-r1/DAPO-Math-17k-Processed",
        hub_model_id="me/run",
        tracker_links=[("Weights & Biases", "https://wandb.ai/me/proj/runs/abc"), ("Comet", None)],
    )
    assert "| `eval_rewards/accuracy_reward/mean` | 4 | 0.5000 | 2 |" in card
    assert "| `eval_reward` | 4 | 0.5000 | 2 |" in card
    assert "**Experiment tracking:** [Weights & Biases](https://wandb.ai/me/proj/runs/abc)" in card
    assert "Comet" not in card
    assert (tmp_path / "assets" / "eval_reward.png").read_bytes().startswith(b"\x89PNG")


def test_max_steps_inside_the_first_stage_is_warned(caplog):
    from sec_trl import SETGRPOConfig
    from sec_trl.preflight import warn_if_curriculum_is_cut

    # the embedded recipe's batch: a rollout is 8 completions x 2 micro-steps = 16 completions = 4 prompts x 4
    # generations, used for 2 optimizer steps (1 micro-step each). 512 prompts in 2 stages of 256 = 64 rollouts
    # each: stage 1 starts after 64 x 2 = 128 optimizer steps, at step 129.
    common = dict(output_dir="o", report_to="none", num_generations=4, per_device_train_batch_size=8)
    common.update(steps_per_generation=2, gradient_accumulation_steps=1, curriculum=True, curriculum_stages=2)
    with caplog.at_level("WARNING", logger="sec_trl.preflight"):
        assert warn_if_curriculum_is_cut(512, SETGRPOConfig(max_steps=12, **common)) == 129
    assert "max_steps=12 ends the run before the curriculum's last stage" in caplog.text
    assert "starts at optimizer step 129" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sec_trl.preflight"):
        assert warn_if_curriculum_is_cut(512, SETGRPOConfig(max_steps=300, **common)) == 129
    assert caplog.text == ""  # nor the sampler's tie warning: the placeholder entropies are distinct
