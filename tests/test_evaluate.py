"""sec_trl.evaluate: the pass@k estimator against hand values and brute force; evaluate_model end to end."""

import itertools
import math

import pytest

from sec_trl.evaluate import avg_at_k, evaluate_model, main, pass_at_k


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

    def fixed_generate(input_ids, num_return_sequences=1, **kwargs):
        rows = input_ids.repeat_interleave(num_return_sequences, dim=0)
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


def test_cli_on_generated_arithmetic(tiny_model_dir, tmp_path, capsys):
    import json

    out = tmp_path / "eval.json"
    result = main(
        ["--model", tiny_model_dir, "--dataset", "arithmetic", "--num_prompts", "3", "--k", "2",
         "--max_new_tokens", "4", "--output", str(out)]
    )  # fmt: skip
    assert result["num_prompts"] == 3
    saved = json.loads(out.read_text())
    assert saved["avg@2"] == result["avg@2"] and saved["dataset"] == "arithmetic"
    assert '"pass@2"' in capsys.readouterr().out
