"""sec_trl.evaluate: the pass@k estimator against hand values and brute force; evaluate_model end to end; the CLI run
the way a user runs it (a subprocess, TRL flag names, --config YAML, real files, the tiny model)."""

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sec_trl.evaluate import avg_at_k, evaluate_model, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(4, 1, 1, 0.25), (4, 1, 4, 1.0), (4, 0, 1, 0.0), (4, 0, 4, 0.0), (4, 4, 1, 1.0), (4, 2, 2, 1 - 1 / 6)],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_brute_force_over_subsets(n):
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows a float; the product form does not care
    value = pass_at_k(1000, 3, 500)
    assert value == pytest.approx(1 - math.comb(997, 500) / math.comb(1000, 500), abs=1e-12)
    assert 0.0 <= pass_at_k(10_000, 1, 10) <= 1.0


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_at_k():
    assert avg_at_k([True, False, False, True]) == 0.5
    assert avg_at_k([0, 0]) == 0.0
    with pytest.raises(ValueError):
        avg_at_k([])


@pytest.fixture(scope="module")
def three_prompts():
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": [
                [{"role": "user", "content": "What is 2 + 3? Put the answer in \\boxed{}."}],
                [{"role": "user", "content": "What is 7 * 6? Put the answer in \\boxed{}."}],
                [{"role": "user", "content": "What is 10 - 4? Put the answer in \\boxed{}."}],
            ],
            "answer": ["5", "42", "6"],
        }
    )


def test_evaluate_model_on_tiny_model(tiny_model_dir, three_prompts):
    result = evaluate_model(tiny_model_dir, None, three_prompts, k=4, max_new_tokens=6, batch_size=2, seed=0)
    for key in ("avg@4", "pass@1", "pass@4", "mean_completion_length", "truncated_frac", "per_prompt_correct"):
        assert key in result
    for key in ("avg@4", "pass@1", "pass@4", "truncated_frac"):
        assert 0.0 <= result[key] <= 1.0
    assert result["pass@1"] == pytest.approx(result["avg@4"])  # unbiased pass@1 == mean accuracy
    assert result["pass@4"] >= result["pass@1"]
    assert 1 <= result["mean_completion_length"] <= 6
    assert len(result["per_prompt_correct"]) == 3
    assert all(0 <= c <= 4 for c in result["per_prompt_correct"])
    assert result["num_prompts"] == 3 and result["k"] == 4


def test_evaluate_model_is_deterministic_for_a_seed(tiny_model_dir, three_prompts):
    kwargs = dict(k=3, max_new_tokens=6, batch_size=2, return_completions=True)
    a = evaluate_model(tiny_model_dir, None, three_prompts, seed=7, **kwargs)
    b = evaluate_model(tiny_model_dir, None, three_prompts, seed=7, **kwargs)
    c = evaluate_model(tiny_model_dir, None, three_prompts, seed=8, **kwargs)
    a.pop("seconds"), b.pop("seconds"), c.pop("seconds")
    assert a == b
    assert a["completions"] != c["completions"]
    assert [len(g) for g in a["completions"]] == [3, 3, 3]


def test_evaluate_model_scores_a_correct_answer(tiny_model_dir):
    """The checker is wired to the samples: a model object whose generate always says \\boxed{5} scores 1."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    answer_ids = tokenizer("\\boxed{5}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    def fixed_generate(input_ids, generation_config, **kwargs):
        rows = input_ids.repeat_interleave(generation_config.num_return_sequences, dim=0)
        tail = torch.tensor(answer_ids).expand(rows.shape[0], -1)
        return torch.cat([rows, tail], dim=1)

    model.generate = fixed_generate
    data = [{"prompt": "2 + 3?", "answer": "5"}, {"prompt": "2 + 2?", "answer": "4"}]
    result = evaluate_model(model, tokenizer, data, k=2, max_new_tokens=16)
    assert result["per_prompt_correct"] == [2, 0]
    assert result["avg@2"] == 0.5 and result["pass@2"] == 0.5
    assert result["mean_completion_length"] == len(answer_ids)
    assert result["truncated_frac"] == 0.0


def test_evaluate_model_rejects_missing_columns(tiny_model_dir):
    with pytest.raises(ValueError, match="answer"):
        evaluate_model(tiny_model_dir, None, [{"prompt": "hi"}], k=1, max_new_tokens=2)


ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, cwd, env_extra=None, timeout=300):
    """`python -m sec_trl.evaluate <args>` in a subprocess, this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    command = [sys.executable, "-m", "sec_trl.evaluate", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_on_generated_arithmetic(tiny_model_dir, tmp_path):
    """No dataset flag: the generated arithmetic test split, sized by --arithmetic_num_test as in train.py."""
    out = tmp_path / "eval"
    args = ["--model_name_or_path", tiny_model_dir, "--arithmetic_num_test", "3", "--k", "2", "--max_new_tokens", "4"]
    result = run_cli([*args, "--output_dir", str(out), "--save_completions", "true"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "eval_results.json").read_text())
    arithmetic = saved["results"]["arithmetic"]
    assert arithmetic["num_prompts"] == 3 and arithmetic["k"] == 2 and arithmetic["split"] == "test"
    assert [len(group) for group in arithmetic["completions"]] == [2, 2, 2]
    assert saved["mean"]["avg@k"] == arithmetic["avg@2"] and saved["mean"]["pass@k"] == arithmetic["pass@2"]
    assert saved["num_processes"] == 1 and saved["backend"] == "transformers"
    assert str(tmp_path) not in json.dumps(saved)  # the model is named by its base name, not a local path
    # the printed table, and a progress bar (prompts/s, ETA) on sampling and on checking
    assert "arithmetic" in result.stdout and "avg@k" in result.stdout
    assert "sampling" in result.stderr and "checking" in result.stderr and "prompt/s" in result.stderr


def test_cli_config_yaml_gives_the_same_run_as_flags(tiny_model_dir, tmp_path):
    """--config eval.yaml (TrlParser) sets the same fields as the flags; a flag given beside it wins."""
    (tmp_path / "eval.yaml").write_text(
        f"model_name_or_path: {tiny_model_dir}\narithmetic_num_test: 2\nk: 3\nmax_new_tokens: 4\nseed: 5\n"
        "save_completions: true\nshow_progress: false\n"
    )
    by_config = run_cli(["--config", "eval.yaml", "--output_dir", "a"], tmp_path)
    assert by_config.returncode == 0, by_config.stderr[-3000:]
    flags = ["--model_name_or_path", tiny_model_dir, "--arithmetic_num_test", "2", "--k", "3", "--max_new_tokens", "4"]
    by_flags = run_cli([*flags, "--seed", "5", "--save_completions", "true", "--output_dir", "b"], tmp_path)
    assert by_flags.returncode == 0, by_flags.stderr[-3000:]
    a = json.loads((tmp_path / "a" / "eval_results.json").read_text())["results"]["arithmetic"]
    b = json.loads((tmp_path / "b" / "eval_results.json").read_text())["results"]["arithmetic"]
    assert a["completions"] == b["completions"] and a["k"] == 3
    assert "sampling" not in by_config.stderr  # show_progress: false took effect
    overridden = run_cli(["--config", "eval.yaml", "--k", "1", "--output_dir", "c"], tmp_path)
    assert overridden.returncode == 0, overridden.stderr[-3000:]
    assert json.loads((tmp_path / "c" / "eval_results.json").read_text())["results"]["arithmetic"]["k"] == 1


def test_eval_split_is_the_one_train_py_evaluates_on():
    """Same --arithmetic_* flags -> the same held-out prompts and answers as train.py's eval dataset."""
    from sec_trl.evaluation.cli import EvalArguments, load_eval_sets
    from sec_trl.script_args import DatasetArguments

    data_args = DatasetArguments(arithmetic_num_train=40, arithmetic_num_test=6, arithmetic_seed=3)
    sets = load_eval_sets(EvalArguments(), data_args)
    train_eval = data_args.load("test")  # what train.py passes as eval_dataset
    assert sets["arithmetic"]["prompts"] == train_eval["prompt"]
    assert sets["arithmetic"]["references"] == train_eval["answer"]
    assert sets["arithmetic"]["k"] == 8
    other = load_eval_sets(EvalArguments(), DatasetArguments(arithmetic_num_test=6, arithmetic_seed=4))
    assert other["arithmetic"]["prompts"] != sets["arithmetic"]["prompts"]


def test_prompt_format_is_the_training_one(tmp_path):
    """A user file with string prompts: wrapped into a user message with the \\boxed instruction by default (as in
    training), with --system_prompt first; --wrap_string_prompts false keeps them raw."""
    from sec_trl.data import BOXED_INSTRUCTION
    from sec_trl.evaluation.cli import EvalArguments, load_eval_sets
    from sec_trl.script_args import DatasetArguments

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "What is 2 + 3?", "solution": "5"}) + "\n")
    common = dict(dataset_name=str(path), dataset_prompt_column="question", dataset_answer_column="solution")
    wrapped = load_eval_sets(EvalArguments(), DatasetArguments(system_prompt="Be brief.", **common))
    (entry,) = wrapped.values()
    assert entry["prompts"] == [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"What is 2 + 3?\n\n{BOXED_INSTRUCTION}"},
        ]
    ]
    assert entry["references"] == ["5"] and entry["source"]["split"] == "test"
    raw = load_eval_sets(EvalArguments(), DatasetArguments(wrap_string_prompts=False, **common))
    assert next(iter(raw.values()))["prompts"] == ["What is 2 + 3?"]


def test_cli_on_a_user_file_with_trl_column_flags(tiny_model_dir, tmp_path):
    rows = [{"question": f"What is {i} + 1?", "solution": str(i + 1)} for i in range(3)] + [
        {"question": "No gold here", "solution": None}
    ]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--model_name_or_path", tiny_model_dir, "--dataset_name", "mine.jsonl", "--dataset_prompt_column"]
    args += ["question", "--dataset_answer_column", "solution", "--k", "2", "--max_new_tokens", "3"]
    args += ["--output_dir", "o"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "o" / "eval_results.json").read_text())
    assert list(saved["results"]) == ["mine.jsonl"]
    # the row without a reference is left out, with a warning
    assert saved["results"]["mine.jsonl"]["num_prompts"] == 3
    assert "no reference answer" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmarks", "gsm8k"], "Unknown benchmark 'gsm8k'"),
        (["--benchmarks", "math500", "--dataset_name", "x.jsonl"], "either --benchmarks or --dataset_name"),
        (["--model", "x"], "ambiguous option"),  # the old argparse flags are gone, TRL's names replace them
        (["--use_vllm", "true"], "pip install 'sec_trl[vllm]'"),
        (["--k", "0"], "k must be >= 1"),
        (["--temperature", "0"], "temperature must be > 0"),
        (["--dataset_streaming", "true"], "error: --dataset_streaming True is not supported"),  # trl.ScriptArguments'
        (["--use_peft", "true"], "['--use_peft', 'true']"),  # a trl.ModelConfig training field, not an evaluation flag
    ],
)
def test_cli_fails_early_with_a_named_fix(tmp_path, args, message):
    import importlib.util

    if "--use_vllm" in args and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    result = run_cli([*args, "--model_name_or_path", str(tmp_path / "no-model-needed")], tmp_path, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "eval_results.json").exists()


@pytest.mark.parametrize("num_prompts", [0, 1, 5, 16, 17])
@pytest.mark.parametrize("batch_size", [1, 2, 8])
@pytest.mark.parametrize("num_processes", [1, 2, 3, 8])
def test_shards_are_contiguous_whole_batches_covering_every_prompt(num_prompts, batch_size, num_processes):
    from sec_trl.evaluation.sampling import shard_bounds

    bounds = [shard_bounds(num_prompts, batch_size, num_processes, p) for p in range(num_processes)]
    assert bounds[0][0] == 0 and bounds[-1][1] == num_prompts
    for (_, end), (start, _) in zip(bounds, bounds[1:], strict=False):
        assert end == start  # contiguous, in process order
    for start, end in bounds:
        assert start <= end and start % batch_size == 0  # a shard starts on a global batch boundary
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= batch_size  # balanced to within one batch


def test_vllm_runs_one_engine_per_process_under_accelerate_launch(monkeypatch):
    """Under `accelerate launch --num_processes N`, each process gets its own engine in the launcher's group (as TRL's
    colocate mode); one process gets a plain engine. (A stand-in module name only: nothing of vLLM is called.)"""
    import importlib.machinery
    import types

    from sec_trl.evaluation.cli import EvalArguments, check_backend, vllm_engine_kwargs

    stand_in = types.ModuleType("vllm")  # importable name only; nothing of it is called
    stand_in.__spec__ = importlib.machinery.ModuleSpec("vllm", loader=None)
    monkeypatch.setitem(sys.modules, "vllm", stand_in)
    check_backend(EvalArguments(use_vllm=True), types.SimpleNamespace(num_processes=2))
    args = EvalArguments(use_vllm=True, vllm_gpu_memory_utilization=0.5)
    assert vllm_engine_kwargs(args, 1) == {"gpu_memory_utilization": 0.5}
    assert vllm_engine_kwargs(args, 2) == {
        "gpu_memory_utilization": 0.5,
        "distributed_executor_backend": "external_launcher",
        "tensor_parallel_size": 1,
    }


def test_seeds_are_per_index_and_stable():
    from sec_trl.generation import evaluation_seed as derive_seed

    assert derive_seed(0, 0) == derive_seed(0, 0)
    assert len({derive_seed(0, i) for i in range(1000)}) == 1000
    assert derive_seed(0, 5) != derive_seed(1, 5)
    assert all(0 <= derive_seed(s, i) < 2**31 for s in range(3) for i in range(50))


def test_user_dataset_defaults_to_its_test_split(tmp_path):
    """--dataset_name with no --dataset_test_split evaluates the 'test' split; the flag picks another."""
    from datasets import Dataset, DatasetDict

    from sec_trl.evaluation.cli import EvalArguments, load_eval_sets
    from sec_trl.script_args import DatasetArguments

    def split(tag, n):
        return Dataset.from_dict({"problem": [f"{tag} {i}?" for i in range(n)], "answer": [str(i) for i in range(n)]})

    DatasetDict(train=split("train", 5), test=split("test", 3), validation=split("val", 2)).save_to_disk(
        tmp_path / "d"
    )
    common = dict(dataset_name=str(tmp_path / "d"), dataset_prompt_column="problem")
    (test,) = load_eval_sets(EvalArguments(), DatasetArguments(**common)).values()
    assert [p[-1]["content"].split("?")[0] for p in test["prompts"]] == ["test 0", "test 1", "test 2"]
    assert test["source"] == {"dataset_name": "d", "dataset_config": None, "split": "test"}
    (val,) = load_eval_sets(
        EvalArguments(num_prompts=1), DatasetArguments(dataset_test_split="validation", **common)
    ).values()
    assert len(val["prompts"]) == 1 and val["prompts"][0][-1]["content"].startswith("val 0")
