"""Held-out evaluation: avg@k and unbiased pass@k on the paper's benchmarks or any prompt dataset.

For each prompt, ``k`` completions are sampled (transformers ``generate`` with ``num_return_sequences=k``, or vLLM
with ``SamplingParams(n=k)``; the chat template for message prompts) and each is checked against the reference with
the time-bounded :class:`sec_trl.answer_checking.AnswerChecker` (model output is never evaluated). Reported per set:
``avg@k`` (mean accuracy over all samples), ``pass@1`` and ``pass@k`` (the unbiased estimator of Chen et al. 2021,
averaged over prompts), the mean completion length in tokens, the fraction cut at ``max_new_tokens`` and the
per-prompt correct counts; over several benchmarks, the unweighted mean of avg@k and of pass@k. On the paper's
benchmarks, the paper's protocol (:mod:`.paper`): Avg@8/16/32 and Pass@8/16/32 over the first k of 32 samples, the
unbiased pass@k beside them, each table's 18-cell mean, and the paper's own rows for its base model.

Modules: :mod:`.metrics` (estimators), :mod:`.benchmarks` (the Hub mapping), :mod:`.paper` (the protocol's settings
and the paper's numbers), :mod:`.sampling` (settings, seeds, shards), :mod:`.runner` (load / sample / score /
summarise), :mod:`.cli` (``python -m sec_trl.evaluate``). The samplers are the ranking's too:
:mod:`sec_trl.generation`.
"""

from .benchmarks import BENCHMARK_DIR_ENV, BENCHMARKS, PAPER_BENCHMARKS, Benchmark, load_benchmark
from .cli import EvalArguments, main, run
from .metrics import avg_at_k, first_k_metrics, mean_over_benchmarks, pass_at_k, summarise, table_means
from .paper import PAPER_MODEL, PAPER_RESULTS, PAPER_SETTINGS
from .runner import evaluate_model, evaluate_with_sampler, load_model


__all__ = [
    "BENCHMARKS",
    "BENCHMARK_DIR_ENV",
    "PAPER_BENCHMARKS",
    "PAPER_MODEL",
    "PAPER_RESULTS",
    "PAPER_SETTINGS",
    "Benchmark",
    "EvalArguments",
    "avg_at_k",
    "evaluate_model",
    "evaluate_with_sampler",
    "first_k_metrics",
    "load_benchmark",
    "load_model",
    "main",
    "mean_over_benchmarks",
    "pass_at_k",
    "run",
    "summarise",
    "table_means",
]
