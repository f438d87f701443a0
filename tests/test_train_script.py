"""train.py end to end through its real command line (flags and --config), on a tiny model and a local dataset."""

import json

import pytest
from helpers.train_flags import LENGTH_REWARD, run_train, train_flags, write_jsonl


def test_train_script_with_recipe_and_custom_columns(tiny_model_dir, tmp_path):
    data = write_jsonl(
        tmp_path / "train.jsonl",
        [{"question": f"What is {i} + 1? Answer in \\boxed{{}}.", "solution": str(i + 1)} for i in range(8)],
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model_name_or_path: {tiny_model_dir}\n"
        f"dataset_name: {data}\n"
        "dataset_prompt_column: question\n"
        "dataset_answer_column: solution\n"
        "reward_funcs: [accuracy, format]\n"
        "steps_per_generation: 2\n"
        "max_steps: 2\n"
        "logging_steps: 1\n"
    )
    out = tmp_path / "out"
    result = run_train(["--config", str(recipe), *train_flags(output_dir=out)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    # the per-step table is printed and shows the SENT metric; the local model path is not logged
    assert "sent/high_cov_abs_log_ratio" in result.stdout
    assert str(tiny_model_dir) not in result.stdout + result.stderr
    # the SENT model card, rendered from this run, with its curve images, without local paths
    card = (out / "README.md").read_text()
    assert "2512.04359" in card and "token_regularizer" in card
    assert (out / "assets" / "entropy.png").read_bytes().startswith(b"\x89PNG")
    assert str(tmp_path) not in card and str(tiny_model_dir) not in card


def test_push_without_network_fails_clearly_after_saving(tiny_model_dir, tmp_path):
    data = write_jsonl(
        tmp_path / "train.jsonl", [{"prompt": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(4)]
    )
    out = tmp_path / "pushed"
    # checkpoints every step: the hub_strategy push fails at the first, is reported once, and training goes on
    args = train_flags(
        model_name_or_path=tiny_model_dir,
        dataset_name=data,
        max_steps=2,
        output_dir=out,
        push_to_hub=True,
        hub_model_id="someone/sent-test",
        hub_strategy="checkpoint",
        save_strategy="steps",
        save_steps=1,
    )
    result = run_train(args, tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("Pushing to the Hub failed") == 2  # once for the checkpoints, once at the end
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    assert "someone/sent-test" in result.stderr and "pushed" in result.stderr  # the repo and the local dir's name
    assert str(out) not in result.stderr  # never the full local path
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()  # nothing lost


def test_missing_answer_column_fails_before_the_model_loads(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "What is 1 + 1?", "label": "2"}])
    # the model path does not exist: the dataset error must come first
    result = run_train(
        train_flags(model_name_or_path=tmp_path / "no-such-model", dataset_name=data, output_dir="o"), tmp_path
    )
    assert result.returncode != 0
    assert "answer" in result.stderr and "--dataset_answer_column" in result.stderr
    assert "no-such-model" not in result.stderr.split("Error")[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--token_regularizer", "vanilla"], "invalid choice: 'vanilla'"),
        (["--low_entropy_quantile", "0"], "low_entropy_quantile=0.0 is out of range"),
        (["--reward_funcs", "nonsense"], "reward_funcs: unknown reward 'nonsense'"),
        (["--dataset_streaming", "true"], "--dataset_streaming True is not supported"),  # trl.ScriptArguments' switch
    ],
)
def test_bad_flags_fail_early_with_the_field_name(tmp_path, args, message):
    result = run_train([*train_flags(output_dir="o"), *args], tmp_path, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr


def test_lora_run_saves_an_adapter_that_reloads(tiny_model_dir, tmp_path):
    data = write_jsonl(
        tmp_path / "train.jsonl", [{"prompt": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(8)]
    )
    # a dotted-path reward that varies within a group (a random tiny model never answers correctly)
    (tmp_path / "my_rewards.py").write_text(LENGTH_REWARD)
    out = tmp_path / "lora"
    args = train_flags(
        reward_funcs="my_rewards.length_reward",
        model_name_or_path=tiny_model_dir,
        dataset_name=data,
        use_peft=True,
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj"],
        max_steps=2,
        steps_per_generation=2,
        learning_rate=1e-2,
        save_merged=True,
        output_dir=out,
    )
    result = run_train(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()

    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(str(out))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"))  # plain transformers, no peft
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, base(ids).logits), "the trained adapter changes nothing"
        torch.testing.assert_close(merged(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-4)


def test_curriculum_ranks_an_unranked_dataset_first_then_reuses_the_cache(tiny_model_dir, tmp_path):
    data = write_jsonl(
        tmp_path / "train.jsonl", [{"prompt": f"What is {i} + 3?", "answer": str(i + 3)} for i in range(8)]
    )
    out = tmp_path / "curriculum"
    args = train_flags(
        model_name_or_path=tiny_model_dir,
        dataset_name=data,
        curriculum=True,
        num_train_epochs=1,
        se_num_samples=2,
        se_max_new_tokens=4,
        max_steps=2,
        output_dir=out,
    )
    result = run_train(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "se_ranking" / "ranking_meta.json").exists()
    assert json.loads((out / "se_ranking" / "ranking_meta.json").read_text())["counts"]["num_prompts_generated"] == 8
    assert (out / "assets" / "se_histogram.png").exists()  # the card shows the dataset's SE histogram
    assert "se_histogram.png" in (out / "README.md").read_text()
    # a second run (replacing the first: a fresh run into a used --output_dir must say so) is served from the
    # ranking cache: nothing is generated for ranking
    again = run_train([*args, "--overwrite_output_dir", "true"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    meta = json.loads((out / "se_ranking" / "ranking_meta.json").read_text())
    assert meta["counts"]["num_prompts_generated"] == 0 and meta["counts"]["num_prompts_from_cache"] == 8, meta
