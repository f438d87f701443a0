"""Semantic-entropy ranking end to end (tiny models, ~8 prompts): output, cache/resume, invalidation, 2 processes."""

import importlib.util
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset
from helpers.models import fixed_logits, save_causal_lm

from sec_trl import rank
from sec_trl.answer_checking import get_default_checker
from sec_trl.data import make_arithmetic_splits
from sec_trl.generation import samplers
from sec_trl.rank import RankingIncomplete, RankingParams, ensure_ranked, rank_dataset, read_ranking_meta
from sec_trl.ranking.core import load_sampler, sample_batch
from sec_trl.ranking.scoring import score_prompt
from sec_trl.semantic_entropy import discrete_semantic_entropy, weighted_semantic_entropy


ROOT = Path(__file__).resolve().parents[1]
NUM_PROMPTS = 8
# 3 shards (3, 3, 2 prompts), 2 prompts per generate call
FAST = {"num_samples": 3, "max_new_tokens": 4, "shard_size": 3, "prompts_per_batch": 2}


class Crash(Exception):
    pass


def _dataset(n=NUM_PROMPTS):
    """The first n prompts of the CLI's default dataset (the generated arithmetic train split)."""
    return make_arithmetic_splits(512, 128)["train"].select(range(n))


def _biased_model(tokenizer_dir, path, boosts, seed=0):
    """A 2-layer Llama (hidden 16) whose next-token distribution is (nearly) fixed: logit 4 * boosts[token] for the
    boosted tokens, -8 for every other token, whatever the context (see `helpers.models.fixed_logits`).
    """
    return save_causal_lm(tokenizer_dir, path, seed=seed, edit=fixed_logits(boosts), tie_word_embeddings=False)


@pytest.fixture(scope="module")
def digit_model_dir(tiny_model_dir, tmp_path_factory):
    """Answers with one digit: '7' about half the time, another digit or EOS otherwise."""
    boosts = {str(d): 1.0 for d in range(10)} | {"7": 1.6, "<|im_end|>": 1.1}
    return _biased_model(tiny_model_dir, tmp_path_factory.mktemp("digit-model"), boosts)


@pytest.fixture(scope="module")
def eos_model_dir(tiny_model_dir, tmp_path_factory):
    """Always ends at once: every completion is empty."""
    return _biased_model(tiny_model_dir, tmp_path_factory.mktemp("eos-model"), {"<|im_end|>": 5.0})


@pytest.fixture(scope="module")
def reference_run(tiny_model_dir, tmp_path_factory):
    """One uninterrupted 1-process run of the tiny model (the reference the other runs must reproduce)."""
    out = tmp_path_factory.mktemp("reference")
    ranked = rank_dataset(_dataset(), tiny_model_dir, out, show_progress=False, **FAST)
    return out, ranked


def _rows(ds):
    return ds.to_dict()


# ------------------------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------------------------


def _check_ranked(ranked, source, num_samples):
    n = len(source)
    assert len(ranked) == n
    for column in ("semantic_entropy", "num_clusters", "sample_accuracy", "se_rank", "se_estimator"):
        assert column in ranked.column_names
    assert set(source.column_names) <= set(ranked.column_names)
    se = ranked["semantic_entropy"]
    assert all(0.0 <= x <= math.log(num_samples) + 1e-12 for x in se)
    # sorted ascending, ties in input order; se_rank is the position
    keys = list(zip(se, ranked["se_source_index"], strict=True))
    assert keys == sorted(keys)
    assert ranked["se_rank"] == list(range(n))
    assert sorted(ranked["se_source_index"]) == list(range(n))
    # every row still carries its own prompt and answer
    for row in ranked:
        original = source[row["se_source_index"]]
        assert row["prompt"] == original["prompt"] and row["answer"] == original["answer"]
        assert len(row["se_cluster_ids"]) == len(row["se_sample_answers"]) == num_samples
        assert row["num_clusters"] == len(set(row["se_cluster_ids"]))
        assert 0.0 <= row["sample_accuracy"] <= 1.0


def test_end_to_end_digit_model(digit_model_dir, tmp_path):
    source = _dataset()
    ranked = rank_dataset(
        source, digit_model_dir, tmp_path, num_samples=4, max_new_tokens=1, shard_size=3, show_progress=False
    )
    _check_ranked(ranked, source, 4)
    # the SE really is the discrete SE of the recorded clusters, and answers are digits (or none, after EOS)
    for row in ranked:
        assert row["semantic_entropy"] == discrete_semantic_entropy(row["se_cluster_ids"])
        assert all(a is None or a.isdigit() for a in row["se_sample_answers"])
        correct = sum(a == row["answer"] for a in row["se_sample_answers"])
        assert row["sample_accuracy"] == correct / 4
    assert len(set(ranked["semantic_entropy"])) > 1, "a peaked model should give prompts different SEs"
    assert (tmp_path / "se_histogram.png").stat().st_size > 1000
    meta = read_ranking_meta(tmp_path)
    assert meta["complete"] and meta["counts"]["num_prompts"] == NUM_PROMPTS
    assert meta["counts"]["num_prompts_generated"] == NUM_PROMPTS
    assert 0.0 < meta["timing"]["fraction_outside_generation"] < 1.0
    assert meta["semantic_entropy"]["max"] == max(ranked["semantic_entropy"])
    # what is on disk is what was returned
    from datasets import load_from_disk

    assert _rows(load_from_disk(str(tmp_path))) == _rows(ranked)


def test_weighted_estimator(digit_model_dir, tmp_path):
    ranked = rank_dataset(
        _dataset(4), digit_model_dir, tmp_path, estimator="weighted", num_samples=4, max_new_tokens=2,
        show_progress=False,
    )  # fmt: skip
    for row in ranked:
        assert row["se_estimator"] == "weighted"
        assert all(math.isfinite(x) and x < 0 for x in row["se_sample_logliks"])
        # 1 or 2 tokens each (a digit, then EOS or another token): the count the sum covers
        assert all(n in (1, 2) for n in row["se_sample_lengths"])
        ids, sums, lengths = row["se_cluster_ids"], row["se_sample_logliks"], row["se_sample_lengths"]
        # the ranking's SE is the length-normalised one, and both forms can be recomputed from the columns
        assert row["semantic_entropy"] == pytest.approx(weighted_semantic_entropy(ids, sums, lengths), abs=1e-12)
        means = [s / n for s, n in zip(sums, lengths, strict=True)]
        assert weighted_semantic_entropy(ids, sums, lengths) == pytest.approx(weighted_semantic_entropy(ids, means))
        assert math.isfinite(weighted_semantic_entropy(ids, sums))


def test_weighted_scores_are_length_normalised():
    """Two answers, two samples each, every sample with mean token log-probability -0.5: the weighted SE is the
    discrete one (ln 2) whatever the lengths. With sums (-200 vs -800) the shortest sample would take all the mass."""
    params = RankingParams(estimator="weighted", num_samples=4)
    lengths = [400, 1600, 1000, 700]
    samples = [samplers.Sample(f"\\boxed{{{a}}}", n, False, -0.5 * n) for a, n in zip("2255", lengths, strict=True)]
    row = score_prompt(0, samples, "2", params, get_default_checker())
    assert row["estimator"] == "weighted" and row["cluster_ids"] == [0, 0, 1, 1]
    assert row["semantic_entropy"] == pytest.approx(math.log(2), abs=1e-12)
    assert row["num_tokens"] == lengths
    assert weighted_semantic_entropy(row["cluster_ids"], row["logliks"]) < 1e-60  # the sums form: one-hot


def test_empty_completions_have_no_answer(eos_model_dir, tmp_path):
    ranked = rank_dataset(_dataset(4), eos_model_dir, tmp_path, num_samples=4, max_new_tokens=3, show_progress=False)
    for row in ranked:
        # the documented no-answer rule: every empty completion is its own cluster
        assert row["se_sample_answers"] == [None] * 4
        assert row["se_cluster_ids"] == [0, 1, 2, 3]
        assert row["semantic_entropy"] == pytest.approx(math.log(4))
        assert row["sample_accuracy"] == 0.0
    counts = read_ranking_meta(tmp_path)["counts"]
    assert counts["no_answer_fraction"] == 1.0 and counts["truncated_fraction"] == 0.0
    assert counts["mean_completion_tokens"] == 1.0  # just the EOS


def test_recorded_logliks_match_a_forward_pass(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    params = RankingParams(num_samples=2, max_new_tokens=5)
    sampler = load_sampler(tiny_model_dir, params, torch.device("cpu"))
    prompts = _dataset(3)["prompt"]
    sampler.reseed(123)
    samples = sample_batch(sampler, params, prompts, 0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for prompt, prompt_samples in zip(prompts, samples, strict=True):
        prompt_ids = samplers.prompt_token_ids(sampler.tokenizer, prompt)
        for sample in prompt_samples:
            assert len(sample.token_ids) == sample.num_tokens
            assert sample.text == sampler.tokenizer.decode(
                [t for t in sample.token_ids if t not in sampler.eos], skip_special_tokens=True
            )
            ids = torch.tensor([prompt_ids + sample.token_ids])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, 1:]
            expected = logprobs.gather(1, targets[:, None]).squeeze(1)[len(prompt_ids) - 1 :].sum()
            # the padded rows (prompts of different lengths share a batch) must score like unpadded ones
            assert sample.loglik == pytest.approx(float(expected), abs=1e-3)


def test_no_answer_column(tiny_model_dir, tmp_path):
    source = _dataset(4).remove_columns("answer")
    ranked = rank_dataset(source, tiny_model_dir, tmp_path, answer_column=None, show_progress=False, **FAST)
    assert ranked["sample_accuracy"] == [None] * 4
    assert "answer" not in ranked.column_names


# ------------------------------------------------------------------------------------------------------------------
# Cache, resume, invalidation
# ------------------------------------------------------------------------------------------------------------------


def test_crash_then_resume_generates_only_unfinished_shards(tiny_model_dir, tmp_path, reference_run):
    def crash_after_first_shard(shard, info):
        raise Crash(f"simulated crash after shard {shard}")

    with pytest.raises(Crash):
        rank_dataset(
            _dataset(), tiny_model_dir, tmp_path, shard_callback=crash_after_first_shard, show_progress=False, **FAST
        )
    assert sorted(p.name for p in (tmp_path / "shards").glob("*/shard-*.json")) == ["shard-000000.json"]
    assert read_ranking_meta(tmp_path) is None

    resumed = rank_dataset(_dataset(), tiny_model_dir, tmp_path, show_progress=False, **FAST)
    counts = read_ranking_meta(tmp_path)["counts"]
    assert counts["num_prompts_generated"] == NUM_PROMPTS - FAST["shard_size"]
    assert counts["num_shards_from_cache"] == 1
    # the resumed result is the uninterrupted one
    assert _rows(resumed) == _rows(reference_run[1])


def test_max_shards_stops_and_resumes(tiny_model_dir, tmp_path, reference_run):
    with pytest.raises(RankingIncomplete, match="Re-run"):
        rank_dataset(_dataset(), tiny_model_dir, tmp_path, max_shards=2, show_progress=False, **FAST)
    assert len(list((tmp_path / "shards").glob("*/shard-*.json"))) == 2
    # max_shards is not part of the fingerprint: the finished shards are reused
    resumed = rank_dataset(_dataset(), tiny_model_dir, tmp_path, max_shards=5, show_progress=False, **FAST)
    assert read_ranking_meta(tmp_path)["counts"]["num_prompts_generated"] == 2
    assert _rows(resumed) == _rows(reference_run[1])


def test_cached_rerun_generates_nothing(tiny_model_dir, tmp_path, reference_run, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(reference_run[0], out)

    class NoModel:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a fully cached run must not load the model")

    monkeypatch.setattr(samplers, "TransformersSampler", NoModel)
    again = rank_dataset(_dataset(), tiny_model_dir, out, show_progress=False, **FAST)
    meta = read_ranking_meta(out)
    assert meta["counts"]["num_prompts_generated"] == 0
    assert meta["counts"]["num_shards_from_cache"] == 3
    assert _rows(again) == _rows(reference_run[1])
    # ensure_ranked: a ranked dataset comes back untouched; an unranked one is served from the same cache
    assert ensure_ranked(again, tiny_model_dir, out) is again
    assert _rows(ensure_ranked(_dataset(), tiny_model_dir, out, show_progress=False, **FAST)) == _rows(again)


@pytest.mark.parametrize(
    "change",
    ["temperature", "num_samples", "cluster_method", "dataset", "model_weights"],
)
def test_changes_invalidate_the_cache(change, tiny_model_dir, tmp_path, reference_run, caplog):
    out = tmp_path / "out"
    shutil.copytree(reference_run[0], out)
    model_dir, dataset, params = tiny_model_dir, _dataset(), dict(FAST)
    if change == "model_weights":  # a fresh cache for a copy of the model, whose weights then "change"
        model_dir = tmp_path / "model"
        shutil.copytree(tiny_model_dir, model_dir)
        shutil.rmtree(out)
        rank_dataset(dataset, model_dir, out, show_progress=False, **params)
        assert read_ranking_meta(out)["counts"]["num_prompts_generated"] == NUM_PROMPTS
        os.utime(model_dir / "model.safetensors", ns=(1, 1))  # same size, new modification time
    elif change == "temperature":
        params["temperature"] = 0.7
    elif change == "num_samples":
        params["num_samples"] = 2
    elif change == "cluster_method":
        params["cluster_method"] = "exact"
    elif change == "dataset":
        dataset = dataset.map(lambda row: {"answer": row["answer"] + "0"})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sec_trl.ranking"):
        rank_dataset(dataset, model_dir, out, show_progress=False, **params)
    assert "was computed with different inputs" in caplog.text
    assert read_ranking_meta(out)["counts"]["num_prompts_generated"] == NUM_PROMPTS
    # the other inputs' cache is kept in its own folder, next to the new one
    caches = sorted((out / "shards").iterdir())
    assert len(caches) == 2 and all(len(list(d.glob("shard-*.json"))) == 3 for d in caches)


def test_older_cache_format_is_invalidated_and_the_log_says_why(tiny_model_dir, tmp_path, reference_run, caplog):
    out = tmp_path / "out"
    shutil.copytree(reference_run[0], out)
    # what a cache written before the string-prompt tokenization change looks like: format 2, its own hash
    (cache,) = (out / "shards").iterdir()
    stored = json.loads((cache / "fingerprint.json").read_text())
    assert stored["fingerprint"]["format"] == rank.RANKING_FORMAT_VERSION == 3
    stored["fingerprint"]["format"], stored["hash"] = 2, "0" * 64
    (cache / "fingerprint.json").write_text(json.dumps(stored))
    cache.rename(out / "shards" / ("0" * 16))  # its folder, as a format-2 fingerprint would name it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sec_trl.ranking"):
        rank_dataset(_dataset(), tiny_model_dir, out, show_progress=False, **FAST)
    assert "has cache format 2; this version writes format 3" in caplog.text
    assert "without added special tokens" in caplog.text and "changed: format" in caplog.text
    assert read_ranking_meta(out)["counts"]["num_prompts_generated"] == NUM_PROMPTS
    assert len(list((out / "shards" / ("0" * 16)).glob("shard-*.json"))) == 3  # kept, not deleted


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------


def test_bad_parameters_name_the_flag(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="--num_samples must be an integer >= 2"):
        rank_dataset(_dataset(), tiny_model_dir, tmp_path, num_samples=1)
    with pytest.raises(ValueError, match="--temperature"):
        RankingParams(temperature=0.0)
    with pytest.raises(ValueError, match="--estimator"):
        RankingParams(estimator="entropy")
    with pytest.raises(ValueError, match="--cluster_method"):
        RankingParams(cluster_method="semantic")
    with pytest.raises(TypeError):
        rank_dataset(_dataset(), tiny_model_dir, tmp_path, num_sample=4)
    with pytest.raises(ValueError, match="--num_samples"):
        rank.main(["--output_dir", str(tmp_path), "--num_samples", "1"])


def test_missing_columns_name_the_flag(tiny_model_dir, tmp_path):
    ds = Dataset.from_dict({"question": ["What is 1 + 1?"], "solution": ["2"]})
    with pytest.raises(ValueError, match="--dataset_prompt_column"):
        rank_dataset(ds, tiny_model_dir, tmp_path, **FAST)
    with pytest.raises(ValueError, match="--dataset_answer_column"):
        rank_dataset(ds, tiny_model_dir, tmp_path, prompt_column="question", **FAST)
    with pytest.raises(ValueError, match="--dataset_prompt_column"):
        rank_dataset(ds, tiny_model_dir, tmp_path, answer_column=None, **FAST)


def test_nan_logliks_fall_back_to_discrete(caplog):
    params = RankingParams(estimator="weighted", num_samples=3)
    samples = [samplers.Sample("\\boxed{2}", 3, False, -1.0), samplers.Sample("\\boxed{2}", 3, False, math.nan)]
    samples.append(samplers.Sample("\\boxed{5}", 3, False, -2.0))
    with caplog.at_level(logging.WARNING, logger="sec_trl.ranking"):
        row = score_prompt(7, samples, "2", params, get_default_checker())
    assert "Prompt 7" in caplog.text and "discrete_fallback" in caplog.text
    assert row["estimator"] == "discrete_fallback"
    assert row["semantic_entropy"] == discrete_semantic_entropy([0, 0, 1])
    assert row["logliks"] == [-1.0, None, -2.0]
    assert row["sample_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_use_vllm_without_vllm_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(ImportError, match="pip install vllm"):
        rank_dataset(_dataset(), tiny_model_dir, tmp_path, use_vllm=True, **FAST)


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        rank.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--model_name_or_path",
        "--dataset_name",
        "--dataset_config",
        "--dataset_train_split",
        "--output_dir",
        "--system_prompt",
        "--answer_instruction",
        "--wrap_string_prompts",
        "--dataset_prompt_column",
        "--dataset_answer_column",
        "--num_samples",
        "--temperature",
        "--top_p",
        "--max_new_tokens",
        "--prompts_per_batch",
        "--shard_size",
        "--seed",
        "--cluster_method",
        "--estimator",
        "--use_vllm",
        "--trust_remote_code",
        "--max_shards",
    ):
        assert flag in text, flag


def test_cli_takes_trl_names_a_config_file_and_the_shared_prompt_format(tiny_model_dir, tmp_path):
    """`python -m sec_trl.rank --config rank.yaml` with TRL's names; the prompt format is part of what is cached."""
    data = tmp_path / "problems.jsonl"
    data.write_text(
        "".join(json.dumps({"problem": f"What is {i} + 1?", "solution": str(i + 1)}) + "\n" for i in range(3))
    )
    out = tmp_path / "ranked"
    config = tmp_path / "rank.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_model_dir}\ndataset_name: {data}\ndataset_prompt_column: problem\n"
        f"dataset_answer_column: solution\noutput_dir: {out}\nnum_samples: 2\nmax_new_tokens: 2\n"
    )
    assert rank.main(["--config", str(config), "--seed", "3"]) == 0
    meta = json.loads((out / "ranking_meta.json").read_text())
    assert meta["counts"]["num_prompts_generated"] == 3 and meta["params"]["seed"] == 3
    # same flags: served from the cache; a system prompt changes the prompts, so everything is sampled again
    assert rank.main(["--config", str(config), "--seed", "3"]) == 0
    assert json.loads((out / "ranking_meta.json").read_text())["counts"]["num_prompts_generated"] == 0
    assert rank.main(["--config", str(config), "--seed", "3", "--system_prompt", "Be brief."]) == 0
    assert json.loads((out / "ranking_meta.json").read_text())["counts"]["num_prompts_generated"] == 3


# ------------------------------------------------------------------------------------------------------------------
# Two processes
# ------------------------------------------------------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_process_dataset(tiny_model_dir, tmp_path, reference_run):
    """`accelerate launch --multi_gpu --num_processes 2` (torchrun; gloo on this CPU-only machine).

    (`accelerate launch --cpu --num_processes 2` would start a single process: accelerate's simple launcher only
    fans out through mpirun.)
    """
    from datasets import load_from_disk

    out = tmp_path / "two"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(_free_port()), "-m", "sec_trl.rank", "--model_name_or_path", tiny_model_dir]
    command += ["--output_dir", str(out), "--num_prompts", str(NUM_PROMPTS)]
    for key, value in FAST.items():
        command += [f"--{key}", str(value)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    meta = json.loads((out / "ranking_meta.json").read_text())
    assert meta["num_processes"] == 2
    assert len(meta["timing"]["generation_seconds_per_process"]) == 2
    assert {json.loads(p.read_text())["process"] for p in (out / "shards").glob("*/shard-*.json")} == {0, 1}
    two, one = _rows(load_from_disk(str(out))), _rows(reference_run[1])
    # Same samples, clusters, SE, order. The log-likelihoods may differ in the last digits: the processes run with
    # one thread each (OMP_NUM_THREADS=1, torchrun's default), this process with more, and float sums depend on it.
    two_logliks, one_logliks = two.pop("se_sample_logliks"), one.pop("se_sample_logliks")
    assert two == one
    for a, b in zip(two_logliks, one_logliks, strict=True):
        assert a == pytest.approx(b, rel=1e-6)


def test_logs_never_show_the_absolute_output_path(tiny_model_dir, tmp_path, reference_run, caplog):
    out = tmp_path / "private" / "ranked"
    shutil.copytree(reference_run[0], out)
    with caplog.at_level(logging.INFO, logger="sec_trl.ranking"):
        rank_dataset(_dataset(), tiny_model_dir, out, show_progress=False, **FAST)  # served from the cache
    assert "Output: ranked" in caplog.text
    assert str(tmp_path) not in caplog.text
