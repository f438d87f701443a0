"""avg@k and the unbiased pass@k estimator, per prompt and summarised over a benchmark."""

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


def summarise(records: Sequence[dict], k: int) -> dict:
    """The benchmark's numbers from per-prompt records (``{"correct": [bool] * k, "lengths": [int] * k,
    "truncated": [bool] * k}``, in prompt order).

    Returns ``{"k", "num_prompts", "avg@<k>", "pass@1", "pass@<k>", "mean_completion_length", "truncated_frac",
    "per_prompt_correct"}``; ``avg@k`` is the mean accuracy over all samples, ``pass@1`` / ``pass@k`` the unbiased
    estimator averaged over prompts (with ``k`` samples per prompt, unbiased pass@1 equals avg@k).
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
