"""Held-out evaluation: avg@k and unbiased pass@k on the paper's benchmarks or any prompt dataset.

For each prompt, ``k`` completions are sampled (transformers ``generate`` with ``num_return_sequences=k``, or vLLM
with ``SamplingParams(n=k)``; the chat template for message prompts) and each is checked against the reference with
the time-bounded :class:`sec_trl.answer_checking.AnswerChecker` (model output is never evaluated). Reported per set:
``avg@k`` (mean accuracy over all samples), ``pass@1`` and ``pass@k`` (the unbiased estimator of Chen et al. 2021,
averaged over prompts), the mean completion length in tokens, the fraction cut at ``max_new_tokens`` and the
per-prompt correct counts; over several benchmarks, the unweighted mean of avg@k and of pass@k.

Modules: :mod:`.metrics` (estimators), :mod:`.benchmarks` (the Hub mapping), :mod:`.sampling` (samplers, seeds,
shards), :mod:`.runner` (load / sample / score / summarise), :mod:`.cli` (``python -m sec_trl.evaluate``).
"""

from .benchmarks import BENCHMARK_DIR_ENV, BENCHMARKS, PAPER_BENCHMARKS, Benchmark, load_benchmark
from .cli import EvalArguments, main, run
from .metrics import avg_at_k, mean_over_benchmarks, pass_at_k, summarise
from .runner import evaluate_model, evaluate_with_sampler, load_model


__all__ = [
    "BENCHMARKS",
    "BENCHMARK_DIR_ENV",
    "PAPER_BENCHMARKS",
    "Benchmark",
    "EvalArguments",
    "avg_at_k",
    "evaluate_model",
    "evaluate_with_sampler",
    "load_benchmark",
    "load_model",
    "main",
    "mean_over_benchmarks",
    "pass_at_k",
    "run",
    "summarise",
]
