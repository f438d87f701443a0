"""avg@k and pass@k, per prompt and summarised over a benchmark: the unbiased estimator of pass@k from n >= k samples
(Chen et al. 2021), and the paper's form over the first k of the samples (what one run of k samples gives)."""

from __future__ import annotations

from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n-c, k) / C(n, k)``.

    Computed as a product, ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``, which never forms large binomials (Chen et al.
    2021, "Evaluating Large Language Models Trained on Code").

    Examples:
        >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)
        (0.25, 1.0, 0.0)
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def avg_at_k(correct: Sequence[bool | int | float]) -> float:
    """Mean accuracy over the k samples of one prompt (or over any flat list of per-sample verdicts)."""
    if len(correct) == 0:
        raise ValueError("avg_at_k needs at least one sample")
    return float(sum(float(x) for x in correct) / len(correct))


def first_k_metrics(correct: Sequence[Sequence[bool]], j: int) -> dict:
    """The paper's Avg@j and Pass@j from each prompt's samples in sampling order, using the first ``j`` of them:
    Avg@j is the mean accuracy over those ``j`` samples (averaged over prompts), Pass@j the fraction of prompts with
    at least one correct among them; and ``pass@j_unbiased``, the unbiased estimator from all ``n`` samples.

    The first ``j`` samples of a run are distributed as a separate run of ``j`` samples, so Avg@j and Pass@j here
    are what the paper's separate runs measure; the unbiased estimator has the same expectation as Pass@j and a
    lower variance. With ``j == n`` the two pass forms are equal.

    Examples:
        >>> first_k_metrics([[False, True, False, False], [False, False, False, False]], 2)
        {'avg@2': 0.25, 'pass@2': 0.5, 'pass@2_unbiased': 0.25}
    """
    if not correct:
        raise ValueError("first_k_metrics needs at least one prompt")
    n = len(correct[0])
    if any(len(c) != n for c in correct) or not 1 <= j <= n:
        raise ValueError(f"first_k_metrics needs every prompt to have the same n >= {j} samples")
    return {
        f"avg@{j}": sum(avg_at_k(c[:j]) for c in correct) / len(correct),
        f"pass@{j}": sum(bool(any(c[:j])) for c in correct) / len(correct),
        f"pass@{j}_unbiased": sum(pass_at_k(n, int(sum(c)), j) for c in correct) / len(correct),
    }


def summarise(records: Sequence[dict], k: int, ks: Sequence[int] = ()) -> dict:
    """The benchmark's numbers from per-prompt records (``{"correct": [bool] * k, "lengths": [int] * k,
    "truncated": [bool] * k}``, in prompt order).

    Returns ``{"k", "num_prompts", "avg@<k>", "pass@1", "pass@<k>", "mean_completion_length", "truncated_frac",
    "per_prompt_correct", "per_prompt_verdicts"}``; ``avg@k`` is the mean accuracy over all samples, ``pass@1`` /
    ``pass@k`` the unbiased estimator averaged over prompts (with ``k`` samples per prompt, unbiased pass@1 equals
    avg@k, and pass@k is the fraction of prompts with a correct sample); ``per_prompt_verdicts`` holds each prompt's
    verdicts in sampling order as a string of ``0`` / ``1``. For each ``j`` in ``ks`` (``j <= k``), also
    ``avg@<j>``, ``pass@<j>`` (over the first ``j`` samples) and ``pass@<j>_unbiased``: :func:`first_k_metrics`.
    """
    if not records:
        raise ValueError("summarise needs at least one prompt")
    per_prompt = [int(sum(r["correct"])) for r in records]
    verdicts = [bool(v) for r in records for v in r["correct"]]
    lengths = [n for r in records for n in r["lengths"]]
    truncated = [t for r in records for t in r["truncated"]]
    return {
        "k": k,
        "num_prompts": len(records),
        f"avg@{k}": avg_at_k(verdicts),
        "pass@1": sum(pass_at_k(k, c, 1) for c in per_prompt) / len(records),
        f"pass@{k}": sum(pass_at_k(k, c, k) for c in per_prompt) / len(records),
        "mean_completion_length": sum(lengths) / len(lengths),
        "truncated_frac": sum(truncated) / len(truncated),
        "per_prompt_correct": per_prompt,
        "per_prompt_verdicts": ["".join("1" if v else "0" for v in r["correct"]) for r in records],
        **{
            key: value
            for j in ks
            for key, value in first_k_metrics([[bool(v) for v in r["correct"]] for r in records], j).items()
        },
    }


def table_means(results: dict[str, dict], ks: Sequence[int]) -> dict:
    """The paper's "Avg." of each table: the mean over every (benchmark, k) cell of Avg@k and of Pass@k (18 cells
    for its six benchmarks at k = 8, 16, 32), plus the mean over benchmarks at each k. Benchmarks weigh alike."""
    if not results or not ks:
        raise ValueError("table_means needs at least one benchmark and one k")
    cells = [(r, j) for r in results.values() for j in ks]
    return {
        "benchmarks": list(results),
        "ks": list(ks),
        "num_cells": len(cells),
        "avg@k": sum(r[f"avg@{j}"] for r, j in cells) / len(cells),
        "pass@k": sum(r[f"pass@{j}"] for r, j in cells) / len(cells),
        "pass@k_unbiased": sum(r[f"pass@{j}_unbiased"] for r, j in cells) / len(cells),
        "by_k": {
            str(j): {
                "avg": sum(r[f"avg@{j}"] for r in results.values()) / len(results),
                "pass": sum(r[f"pass@{j}"] for r in results.values()) / len(results),
            }
            for j in ks
        },
    }


def mean_over_benchmarks(results: dict[str, dict]) -> dict:
    """The paper's "mean Avg@k" / "mean Pass@k": the unweighted mean over benchmarks of each one's avg@k and pass@k
    (each benchmark at its own k), so a 30-problem AIME weighs as much as MATH-500."""
    if not results:
        raise ValueError("mean_over_benchmarks needs at least one benchmark")
    avg = [r[f"avg@{r['k']}"] for r in results.values()]
    best = [r[f"pass@{r['k']}"] for r in results.values()]
    return {
        "benchmarks": list(results),
        "k": {name: r["k"] for name, r in results.items()},
        "avg@k": sum(avg) / len(avg),
        "pass@k": sum(best) / len(best),
    }
