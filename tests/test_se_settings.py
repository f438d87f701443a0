"""train.py's ranking gets every flag that shapes it (clustering, estimator, answer timeout, dtype), and the online
semantic entropy the trainer logs clusters as configured (SETGRPOConfig.se_cluster_method, answer_timeout)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from datasets import Dataset

from sec_trl import SETGRPOConfig
from sec_trl.curriculum_trainer import CurriculumTrainerMixin


def _parse(flags):
    from sec_trl.train import make_parser, with_default_recipe

    return make_parser().parse_args_and_config(args=with_default_recipe(flags))


def test_train_flags_reach_the_ranking_and_the_reward(tmp_path, monkeypatch):
    import sec_trl.rank
    from sec_trl.preflight import build_reward_funcs
    from sec_trl.train import rank_for_curriculum

    flags = ["--output_dir", str(tmp_path), "--curriculum", "true", "--num_train_epochs", "1"]
    flags += ["--remove_unused_columns", "false"]
    flags += ["--se_cluster_method", "lexical", "--se_lexical_threshold", "0.3", "--se_estimator", "weighted"]
    flags += ["--answer_timeout", "2.5", "--dtype", "bfloat16", "--se_num_samples", "3"]
    script_args, training_args, model_args = _parse(flags)
    seen = {}

    def fake_ensure_ranked(dataset, model_path, ranking_dir, *, params, **kwargs):
        seen["params"] = params
        return dataset

    monkeypatch.setattr(sec_trl.rank, "ensure_ranked", fake_ensure_ranked)
    dataset = Dataset.from_dict({"prompt": ["p"], "answer": ["1"]})
    rank_for_curriculum(dataset, "model", script_args, training_args, dtype=model_args.dtype)
    params = seen["params"]
    assert (params.cluster_method, params.lexical_threshold, params.estimator) == ("lexical", 0.3, "weighted")
    assert (params.answer_timeout, params.dtype, params.num_samples) == (2.5, "bfloat16", 3)
    (accuracy,) = build_reward_funcs(["accuracy"], "answer", training_args)
    assert accuracy.timeout == 2.5


def test_the_settings_are_validated_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="se_cluster_method='semantic'"):
        SETGRPOConfig(output_dir=str(tmp_path), se_cluster_method="semantic")
    with pytest.raises(ValueError, match="se_lexical_threshold"):
        SETGRPOConfig(output_dir=str(tmp_path), se_lexical_threshold=0.0)
    with pytest.raises(ValueError, match="answer_timeout"):
        SETGRPOConfig(output_dir=str(tmp_path), answer_timeout=0)


def test_every_range_is_one_table_entry_checked_with_the_fix_and_stated_in_the_help(tmp_path):
    """One mechanism: each numeric field SENT adds has its range in NUMERIC_RANGES (none is checked elsewhere), a
    value just outside either end is refused naming the field, the value, the range and the fix, and the field's
    help (so `--help` and docs/configuration.md's generated table) states that same range."""
    import dataclasses

    from trl import GRPOConfig

    from sec_trl.config import NUMERIC_RANGES

    inherited = {f.name for f in dataclasses.fields(GRPOConfig)}
    added = [f for f in dataclasses.fields(SETGRPOConfig) if f.name not in inherited]
    numeric = [f for f in added if type(f.default) in (int, float)]
    unranged = {"clip_cov_lower", "clip_cov_upper"}  # any float; only their order is checked
    assert {f.name for f in numeric} - unranged <= set(NUMERIC_RANGES)
    checked = [f for f in numeric if f.name not in unranged]
    assert len(checked) == 11, [f.name for f in checked]
    for f in checked:
        name, allowed = f.name, NUMERIC_RANGES[f.name]
        assert f.metadata["help"].endswith(f" Allowed: {allowed}."), name
        step = 1 if type(f.default) is int else 1e-3
        outside = [allowed.low if allowed.low_open else allowed.low - step]
        if math.isfinite(allowed.high):
            outside.append(allowed.high if allowed.high_open else allowed.high + step)
        for value in outside:
            value = type(f.default)(value)
            with pytest.raises(ValueError) as raised:
                SETGRPOConfig(output_dir=str(tmp_path), **{name: value})
            assert str(raised.value) == (
                f"{name}={value!r} is out of range; allowed range is {allowed}: set --{name} to a value inside it."
            )
        SETGRPOConfig(output_dir=str(tmp_path), **{name: f.default})  # the default is inside


def _online_se(method: str, completions: list[str]) -> float:
    """The trainer's online semantic entropy of one group, with a stand-in for the trainer's state."""
    fake = SimpleNamespace(
        args=SimpleNamespace(
            se_cluster_method=method, answer_timeout=5.0, se_lexical_threshold=0.5, semantic_entropy_time_budget=10.0
        ),
        num_generations=len(completions),
        accelerator=SimpleNamespace(is_main_process=True),
        model=SimpleNamespace(training=True),
        _metrics={"train": {"semantic_entropy/mean": [], "semantic_entropy/num_clusters": []}},
    )
    CurriculumTrainerMixin._log_online_semantic_entropy(fake, completions)
    return fake._metrics["train"]["semantic_entropy/mean"][-1]


def test_online_semantic_entropy_uses_the_configured_clustering():
    group = ["\\boxed{0.5}", "\\boxed{1/2}"]  # one math answer, two strings
    assert _online_se("math", group) == 0.0
    assert _online_se("exact", group) == pytest.approx(math.log(2))


# --------------------------------------------------------------------------------------------------------------------
# evaluation during training: its work is logged, and on the generated data it costs about one training step


def test_evaluation_on_the_embedded_recipe_is_one_steps_work_and_says_so(tmp_path, caplog):
    import logging

    from sec_trl.train import load_eval_dataset

    flags = ["--output_dir", str(tmp_path), "--eval_strategy", "steps", "--eval_steps", "3"]
    script_args, training_args, _ = _parse(flags)
    with caplog.at_level(logging.INFO, logger="sec_trl.train"):
        eval_dataset = load_eval_dataset(script_args, training_args)
    # the recipe: 8 completions per optimizer step (2 prompts x 4 generations), 32 new tokens, 12 steps
    assert len(eval_dataset) == 2
    assert "2 held-out prompts x 4 samples x up to 32 new tokens = 8 completions per evaluation" in caplog.text
    assert "a training step samples 8" in caplog.text and "4 evaluations in this run (32 completions)" in caplog.text

    script_args, training_args, _ = _parse([*flags, "--eval_num_prompts", "5"])
    assert len(load_eval_dataset(script_args, training_args)) == 5
    full = script_args.load("test")
    assert len(full) == 128  # the generated held-out split itself is unchanged (train split excludes its questions)


def test_a_users_test_split_is_evaluated_whole(tmp_path):
    from sec_trl.train import load_eval_dataset

    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"prompt": "What is {i} + 1?", "answer": "{i + 1}"}}\n' for i in range(6)))
    flags = ["--output_dir", str(tmp_path), "--eval_strategy", "steps", "--model_name_or_path", "some/model"]
    flags += ["--dataset_name", str(data), "--dataset_test_split", "train", "--use_cpu", "true"]
    script_args, training_args, _ = _parse(flags)
    assert len(load_eval_dataset(script_args, training_args)) == 6
