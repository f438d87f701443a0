"""``python -m sec_trl.evaluate``: avg@k and pass@k of a model on the paper's benchmarks or on any prompt dataset.

    # the embedded model on the generated arithmetic test split (the split train.py evaluates on), CPU
    python -m sec_trl.evaluate --k 4 --max_new_tokens 32 --arithmetic_num_test 32

    # a trained model on the paper's six benchmarks, each at its default k, with vLLM; results in out/eval
    python -m sec_trl.evaluate --model_name_or_path out/run1 --benchmarks paper --use_vllm true \
        --temperature 0.6 --top_p 0.95 --max_new_tokens 4096 --output_dir out/eval

    # any Hub dataset or local file, data-parallel over 8 GPUs
    accelerate launch --num_processes 8 -m sec_trl.evaluate --model_name_or_path out/run1 \
        --dataset_name HuggingFaceH4/MATH-500 --dataset_test_split test --dataset_prompt_column problem

Flags are TRL's script names (``--model_name_or_path``, ``--dataset_name``, ``--dataset_config``,
``--dataset_test_split``, ``--dataset_prompt_column``, ``--dataset_answer_column``, ``--output_dir``) and
``--config eval.yaml`` works. Prompts are formatted as in training (``--system_prompt``, ``--answer_instruction``,
``--wrap_string_prompts``, same defaults).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field


logger = logging.getLogger("sec_trl.evaluate")

RESULTS_FILENAME = "eval_results.json"
DEFAULT_K = 8
"""Samples per prompt for a --dataset_name (or the generated data) when --k is not given."""


@dataclass
class EvalArguments:
    """What to evaluate on and how to sample (model and data flags: `ModelArguments`, `DatasetArguments`)."""

    benchmarks: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Paper benchmarks: any of aime24 aime25 amc23 math500 olympiadbench minerva, or 'paper' for all "
            "six (Hub datasets; their mean avg@k / pass@k is reported). Unset: --dataset_name, or the generated "
            "arithmetic test split."
        },
    )
    k: int | None = field(
        default=None,
        metadata={
            "help": f"Samples per prompt (avg@k, pass@k). Unset: each benchmark's default k, {DEFAULT_K} otherwise."
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p."})
    max_new_tokens: int = field(
        default=512, metadata={"help": "Tokens per completion; longer ones are cut (truncated_frac)."}
    )
    batch_size: int = field(
        default=8, metadata={"help": "Prompts per generate call (transformers; each x k sequences)."}
    )
    seed: int = field(
        default=0, metadata={"help": "Sampling seed (per batch / per prompt; independent of --num_processes)."}
    )
    num_prompts: int | None = field(default=None, metadata={"help": "Evaluate only the first N prompts of each set."})
    answer_timeout: float = field(default=5.0, metadata={"help": "Seconds allowed to check one answer (then wrong)."})
    use_vllm: bool = field(
        default=False,
        metadata={"help": "Sample with vLLM (pip install 'sec_trl[vllm]'; CUDA GPUs; one engine per process)."},
    )
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "With --use_vllm: GPU memory share."})
    use_cpu: bool = field(default=False, metadata={"help": "Run on the CPU even if an accelerator is present."})
    output_dir: str | None = field(default=None, metadata={"help": f"Write {RESULTS_FILENAME} here."})
    save_completions: bool = field(default=False, metadata={"help": "Also write every completion to the JSON."})
    show_progress: bool = field(
        default=True, metadata={"help": "Progress bars (prompts/s, ETA) on sampling and checking."}
    )


def make_parser():
    """``TrlParser((EvalArguments, DatasetArguments, ModelArguments))``; ``--config file.yaml`` is accepted."""
    from trl import TrlParser

    from sec_trl.script_args import DatasetArguments, ModelArguments

    return TrlParser(
        (EvalArguments, DatasetArguments, ModelArguments),
        prog="python -m sec_trl.evaluate",
        description="avg@k and pass@k of a model on the paper's benchmarks or a prompt dataset (TRL flag names).",
    )


def load_eval_sets(eval_args: EvalArguments, data_args) -> dict[str, dict]:
    """``{name: {"prompts", "references", "k", "source"}}`` for every set to evaluate, loaded and validated (before
    any model is loaded, so a bad flag fails in seconds)."""
    from .benchmarks import BENCHMARKS, drop_missing_gold, first_prompts, load_benchmark, resolve_benchmark_names

    fmt = data_args.prompt_format()
    sets: dict[str, dict] = {}
    if eval_args.benchmarks:
        if data_args.dataset_name is not None:
            raise ValueError("Give either --benchmarks or --dataset_name, not both.")
        for name in resolve_benchmark_names(eval_args.benchmarks):
            bench = BENCHMARKS[name]
            ds = load_benchmark(name, fmt, eval_args.num_prompts)
            source = {"dataset_name": bench.hub_id, "dataset_config": bench.config, "split": bench.split}
            sets[name] = _eval_set(ds, bench.answer_column, bench.k if eval_args.k is None else eval_args.k, source)
        return sets
    if data_args.dataset_name is None:
        name, split = "arithmetic", "test"
    else:
        split = data_args.dataset_test_split or "test"
        data_args = dataclasses.replace(data_args, dataset_test_split=split)
        name = data_args.dataset_shown()
    ds = drop_missing_gold(data_args.load("test"), data_args.dataset_answer_column, name)
    ds = first_prompts(ds, eval_args.num_prompts)
    source = {"dataset_name": data_args.dataset_shown(), "dataset_config": data_args.dataset_config, "split": split}
    sets[name] = _eval_set(
        ds, data_args.dataset_answer_column, DEFAULT_K if eval_args.k is None else eval_args.k, source
    )
    return sets


def _eval_set(ds, answer_column: str, k: int, source: dict) -> dict:
    return {"prompts": list(ds["prompt"]), "references": list(ds[answer_column]), "k": k, "source": source}


def check_backend(eval_args: EvalArguments, state) -> None:
    """vLLM importable when asked for (before anything is loaded)."""
    if not eval_args.use_vllm:
        return
    from .sampling import require_vllm

    require_vllm()


def vllm_engine_kwargs(eval_args: EvalArguments, num_processes: int) -> dict:
    """`vllm.LLM` arguments. Under `accelerate launch`, one engine per process on its own GPU, in the launcher's
    process group (`external_launcher`, tensor-parallel size 1), as TRL's colocate mode: data-parallel
    evaluation, each process sampling its shard with per-batch seeds, so the samples do not depend on the count."""
    kwargs = {"gpu_memory_utilization": eval_args.vllm_gpu_memory_utilization}
    if num_processes > 1:
        kwargs.update(distributed_executor_backend="external_launcher", tensor_parallel_size=1)
    return kwargs


def run(eval_args: EvalArguments, data_args, model_args) -> dict:
    """Evaluate as the CLI does; every process returns the report, the main process prints and writes it."""
    from sec_trl.generation import process_state
    from sec_trl.script_args import display_name

    from .metrics import mean_over_benchmarks
    from .runner import build_sampler, evaluate_with_sampler
    from .sampling import SamplingSettings

    state = process_state(eval_args.use_cpu)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if state.is_main_process else logging.WARNING,
    )
    check_backend(eval_args, state)
    sets = load_eval_sets(eval_args, data_args)
    for item in sets.values():  # bad sampling flags fail here, before the model loads
        item["settings"] = SamplingSettings(
            item["k"],
            eval_args.temperature,
            eval_args.top_p,
            eval_args.max_new_tokens,
            eval_args.batch_size,
            eval_args.seed,
        )
    sampler = build_sampler(
        model_args.model_name_or_path,
        dtype=model_args.dtype,
        device=state.device,
        use_vllm=eval_args.use_vllm,
        seed=eval_args.seed,
        vllm_kwargs=vllm_engine_kwargs(eval_args, state.num_processes),
        trust_remote_code=model_args.trust_remote_code,
        revision=None if model_args.model_revision == "main" else model_args.model_revision,
    )
    results = {}
    for name, item in sets.items():
        logger.info(
            "%s: %d prompts x %d samples, up to %d new tokens",
            name,
            len(item["prompts"]),
            item["k"],
            eval_args.max_new_tokens,
        )
        result = evaluate_with_sampler(
            sampler,
            item["prompts"],
            item["references"],
            item["settings"],
            answer_timeout=eval_args.answer_timeout,
            state=state,
            show_progress=eval_args.show_progress,
            return_completions=eval_args.save_completions,
        )
        results[name] = {**item["source"], **result}
    model_shown = "embedded" if model_args.model_name_or_path is None else display_name(model_args.model_name_or_path)
    report = {
        "model": model_shown,
        "sampling": {key: getattr(eval_args, key) for key in ("temperature", "top_p", "max_new_tokens", "seed")},
        "backend": "vllm" if eval_args.use_vllm else "transformers",
        "num_processes": state.num_processes,
        "results": results,
        "mean": mean_over_benchmarks(results),
    }
    if state.is_main_process:
        print(format_report(report), flush=True)
        if eval_args.output_dir:
            write_report(report, eval_args.output_dir)
    state.wait_for_everyone()
    return report


def format_report(report: dict) -> str:
    """A fixed-width table: one row per benchmark, then the unweighted mean."""
    lines = [
        f"model: {report['model']}",
        f"{'benchmark':<16}{'k':>4}{'prompts':>9}{'avg@k':>9}{'pass@k':>9}{'len':>8}{'cut':>7}",
    ]
    for name, r in report["results"].items():
        k = r["k"]
        lines.append(
            f"{name:<16}{k:>4}{r['num_prompts']:>9}{r[f'avg@{k}']:>9.4f}{r[f'pass@{k}']:>9.4f}"
            f"{r['mean_completion_length']:>8.1f}{r['truncated_frac']:>7.2f}"
        )
    mean = report["mean"]
    lines.append(f"{'mean':<16}{'':>4}{'':>9}{mean['avg@k']:>9.4f}{mean['pass@k']:>9.4f}")
    return "\n".join(lines)


def write_report(report: dict, output_dir: str) -> str:
    """``output_dir/eval_results.json``, written atomically (a temporary file renamed into place)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RESULTS_FILENAME)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)
    logger.info("results written to %s", path)
    return path


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` (default: ``sys.argv[1:]``) with :func:`make_parser` and :func:`run`."""
    eval_args, data_args, model_args = make_parser().parse_args_and_config(args=argv)
    return run(eval_args, data_args, model_args)


def cli(argv: Sequence[str] | None = None) -> dict:
    """``python -m sec_trl.evaluate``: :func:`main`, with a user's mistake found before sampling starts reported as
    one ``error:`` line and exit code 2 (``SEC_TRL_DEBUG=1``: the traceback; see :mod:`sec_trl.errors`)."""
    from sec_trl.errors import user_errors

    with user_errors("sec_trl.evaluate"):
        return main(argv)
