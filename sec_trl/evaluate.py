"""``python -m sec_trl.evaluate``: the evaluation entry point (the code lives in :mod:`sec_trl.evaluation`).

python -m sec_trl.evaluate --help
python -m sec_trl.evaluate --model_name_or_path out/run1 --benchmarks paper --use_vllm true --output_dir out/eval
"""

from sec_trl.evaluation import (
    BENCHMARKS,
    PAPER_BENCHMARKS,
    EvalArguments,
    avg_at_k,
    evaluate_model,
    main,
    mean_over_benchmarks,
    pass_at_k,
)
from sec_trl.evaluation.cli import cli


__all__ = [
    "BENCHMARKS",
    "PAPER_BENCHMARKS",
    "EvalArguments",
    "avg_at_k",
    "cli",
    "evaluate_model",
    "main",
    "mean_over_benchmarks",
    "pass_at_k",
]


if __name__ == "__main__":
    cli()
