"""``python -m sec_trl.evaluate``: avg@k and pass@k of a model on the paper's benchmarks or on any prompt dataset.

    # the embedded model on the generated arithmetic test split (the split train.py evaluates on), CPU
    python -m sec_trl.evaluate --k 4 --max_new_tokens 32 --arithmetic_num_test 32

    # a trained model under the paper's protocol (six benchmarks, 32 samples per prompt, Avg@8/16/32 and
    # Pass@8/16/32, the authors' sampling settings and instruction), with vLLM; results in out/eval
    python -m sec_trl.evaluate --model_name_or_path out/run1 --benchmarks paper --use_vllm true --output_dir out/eval

    # any Hub dataset or local file, data-parallel over 8 GPUs
    accelerate launch --num_processes 8 -m sec_trl.evaluate --model_name_or_path out/run1 \
        --dataset_name HuggingFaceH4/MATH-500 --dataset_test_split test --dataset_prompt_column problem

Flags are TRL's script names (``--model_name_or_path``, ``--dataset_name``, ``--dataset_config``,
``--dataset_test_split``, ``--dataset_prompt_column``, ``--dataset_answer_column``, ``--output_dir``) and
``--config eval.yaml`` works. Prompts are formatted as in training (``--system_prompt``, ``--answer_instruction``,
``--wrap_string_prompts``, same defaults) and rendered with ``--chat_template_kwargs`` (give the training's
``chat_template_kwargs``). With ``--benchmarks``, the defaults are the paper's protocol
(:mod:`sec_trl.evaluation.paper`): 32 samples, temperature 1.0, top_p 1.0, 8000 new tokens, the authors'
instruction and answer extraction; each flag given overrides its default, and the report lists every setting that
differs from the paper's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from sec_trl.publishing import write_text_atomic

from .paper import PAPER_SETTINGS


logger = logging.getLogger("sec_trl.evaluate")

RESULTS_FILENAME = "eval_results.json"
DEFAULT_K = 8
"""Samples per prompt for a --dataset_name (or the generated data) when --k is not given."""
DEFAULT_MAX_NEW_TOKENS = 512
"""Tokens per completion for a --dataset_name (or the generated data) when --max_new_tokens is not given."""


@dataclass
class EvalArguments:
    """What to evaluate on and how to sample (model and data flags: `ModelArguments`, `DatasetArguments`)."""

    benchmarks: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Paper benchmarks: any of aime24 aime25 amc23 math500 olympiadbench minerva, or 'paper' for all "
            "six (Hub datasets), under the paper's protocol: Avg@8/16/32 and Pass@8/16/32 from 32 samples per "
            "prompt, the tables' 18-cell means, the authors' sampling settings as defaults. Unset: --dataset_name, "
            "or the generated arithmetic test split."
        },
    )
    k: int | None = field(
        default=None,
        metadata={
            "help": f"Samples per prompt (avg@k, pass@k). Unset: {PAPER_SETTINGS['k']} with --benchmarks (the "
            f"paper's protocol), {DEFAULT_K} otherwise."
        },
    )
    temperature: float | None = field(
        default=None, metadata={"help": "Sampling temperature. Unset: 1.0 (the paper's, with --benchmarks too)."}
    )
    top_p: float | None = field(
        default=None, metadata={"help": "Nucleus sampling top-p. Unset: 1.0 (the paper's, with --benchmarks too)."}
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": f"Tokens per completion; longer ones are cut (truncated_frac). Unset: "
            f"{PAPER_SETTINGS['max_new_tokens']} with --benchmarks (the paper's), {DEFAULT_MAX_NEW_TOKENS} "
            "otherwise."
        },
    )
    answer_extraction: str | None = field(
        default=None,
        metadata={
            "help": "How a completion's answer is read: 'default' (as the training reward: last \\boxed{}, else "
            "'answer is'/'answer:', else the last number) or 'paper' (last \\boxed{}, else the 'answer is' "
            "sentence). Unset: 'paper' with --benchmarks, 'default' otherwise."
        },
    )
    chat_template_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Extra apply_chat_template arguments, as TRL's GRPOConfig field (JSON, e.g. "
            "'{\"enable_thinking\": false}'): give the training's value to evaluate on the prompts it trained on."
        },
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


def given_flags(argv: Sequence[str]) -> set[str]:
    """The field names set on the command line (``--name value`` / ``--name=value``) or in its ``--config`` YAML:
    what the user gave, so that a protocol default never replaces it."""
    names: set[str] = set()
    config = None
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, _, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        names.add(name)
        if name == "config":
            config = value or (argv[i + 1] if i + 1 < len(argv) else None)
    if config:
        import yaml

        with open(config) as f:
            content = yaml.safe_load(f) or {}
        names |= {str(key) for key in content if key != "env"}
    return names


def resolve_settings(eval_args: EvalArguments, data_args, given: set[str] | None = None):
    """``(eval_args, data_args, protocol)`` with every unset default filled in. With ``--benchmarks`` the defaults
    are the paper's protocol (:data:`sec_trl.evaluation.paper.PAPER_SETTINGS`: k 32, temperature 1.0, top_p 1.0,
    8000 new tokens, the authors' instruction and answer extraction); ``protocol`` is then ``{"name": "paper",
    "ks", "settings", "differs_from_paper", ...}``, else None. ``given`` names the fields the user set (None: the
    instruction counts as set when it is not the training default, every other field when it is not None)."""
    from sec_trl.data import BOXED_INSTRUCTION
    from sec_trl.generation import parse_chat_template_kwargs

    from .benchmarks import resolve_benchmark_names
    from .paper import FIXED_DIFFERENCES, PAPER_KS, settings_differences

    paper = bool(eval_args.benchmarks)
    defaults = (
        PAPER_SETTINGS
        if paper
        else {
            "temperature": 1.0,
            "top_p": 1.0,
            "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
            "answer_extraction": "default",
        }
    )
    updates = {key: defaults[key] for key in defaults if hasattr(eval_args, key) and getattr(eval_args, key) is None}
    updates.pop("k", None)  # load_eval_sets resolves k per set
    updates["chat_template_kwargs"] = parse_chat_template_kwargs(eval_args.chat_template_kwargs)
    eval_args = dataclasses.replace(eval_args, **updates)
    if not paper:
        return eval_args, data_args, None
    instruction_given = (
        "answer_instruction" in given if given is not None else data_args.answer_instruction != BOXED_INSTRUCTION
    )
    if not instruction_given:
        data_args = dataclasses.replace(data_args, answer_instruction=PAPER_SETTINGS["answer_instruction"])
    fmt = data_args.prompt_format()
    k = PAPER_SETTINGS["k"] if eval_args.k is None else eval_args.k
    used = {
        "k": k,
        "temperature": eval_args.temperature,
        "top_p": eval_args.top_p,
        "max_new_tokens": eval_args.max_new_tokens,
        "answer_instruction": fmt.answer_instruction if fmt.wrap_string_prompts else None,
        "system_prompt": fmt.system_prompt,
        "answer_extraction": eval_args.answer_extraction,
    }
    benchmarks = resolve_benchmark_names(eval_args.benchmarks)
    protocol = {
        "name": "paper",
        "ks": sorted({j for j in PAPER_KS if j <= k} | {k}),
        "settings": {**used, "chat_template_kwargs": eval_args.chat_template_kwargs},
        "differs_from_paper": settings_differences(used, benchmarks, eval_args.num_prompts),
        "fixed_differences": list(FIXED_DIFFERENCES),
    }
    return eval_args, data_args, protocol


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
            k = PAPER_SETTINGS["k"] if eval_args.k is None else eval_args.k
            sets[name] = _eval_set(ds, bench.answer_column, k, source)
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
    from sec_trl.generation import require_vllm

    require_vllm()


def vllm_engine_kwargs(eval_args: EvalArguments, num_processes: int) -> dict:
    """`vllm.LLM` arguments. Under `accelerate launch`, one engine per process on its own GPU, in the launcher's
    process group (`external_launcher`, tensor-parallel size 1), as TRL's colocate mode: data-parallel
    evaluation, each process sampling its shard with per-batch seeds, so the samples do not depend on the count."""
    from sec_trl.generation import data_parallel_engine_kwargs

    return {
        "gpu_memory_utilization": eval_args.vllm_gpu_memory_utilization,
        **data_parallel_engine_kwargs(num_processes),
    }


def run(eval_args: EvalArguments, data_args, model_args, given: set[str] | None = None) -> dict:
    """Evaluate as the CLI does; every process returns the report, the main process prints and writes it.
    ``given``: the field names the user set (see :func:`resolve_settings`)."""
    from sec_trl.generation import process_state
    from sec_trl.publishing import display_name

    from .metrics import mean_over_benchmarks, table_means
    from .paper import paper_reference, paper_relation
    from .runner import build_sampler, evaluate_with_sampler
    from .sampling import SamplingSettings

    state = process_state(eval_args.use_cpu)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if state.is_main_process else logging.WARNING,
    )
    check_backend(eval_args, state)
    if eval_args.output_dir:  # the report is written after all the sampling: check now (every process stops alike)
        from sec_trl.preflight import check_writable

        check_writable(eval_args.output_dir, "--output_dir", what=f"the report ({RESULTS_FILENAME})")
    eval_args, data_args, protocol = resolve_settings(eval_args, data_args, given)
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
    ks = protocol["ks"] if protocol else ()
    relation = paper_relation(model_args.model_name_or_path) if protocol else None
    if protocol:
        prompts = sum(len(item["prompts"]) for item in sets.values())
        k = protocol["settings"]["k"]
        logger.info(
            "The paper's protocol: %d prompts x %d samples (%d completions) of up to %d new tokens, one pass; "
            "Avg@k and Pass@k for k in %s.",
            prompts,
            k,
            prompts * k,
            eval_args.max_new_tokens,
            ks,
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
        chat_template_kwargs=eval_args.chat_template_kwargs,
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
            ks=ks,
            answer_extraction=eval_args.answer_extraction,
        )
        results[name] = {**item["source"], **result}
    model_shown = "embedded" if model_args.model_name_or_path is None else display_name(model_args.model_name_or_path)
    report = {
        "model": model_shown,
        "sampling": {key: getattr(eval_args, key) for key in ("temperature", "top_p", "max_new_tokens", "seed")},
        "answer_extraction": eval_args.answer_extraction,
        "chat_template_kwargs": eval_args.chat_template_kwargs,
        "backend": "vllm" if eval_args.use_vllm else "transformers",
        "num_processes": state.num_processes,
        "results": results,
        "mean": mean_over_benchmarks(results),
    }
    if protocol:
        report["protocol"] = protocol
        report["table_means"] = table_means(results, ks)
        report["paper_model_relation"] = relation
        if relation:
            report["paper_reference"] = paper_reference(list(results))
    if state.is_main_process:
        print(format_report(report), flush=True)
        if eval_args.output_dir:
            write_report(report, eval_args.output_dir)
    state.wait_for_everyone()
    return report


def format_report(report: dict) -> str:
    """A fixed-width table: one row per benchmark, then the unweighted mean; under the paper's protocol, the paper's
    layout (:func:`format_protocol_report`)."""
    if report.get("protocol"):
        return format_protocol_report(report)
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


_COLUMN = 12


def _pct(value) -> str:
    return f"{100 * value:>{_COLUMN}.2f}" if value is not None else f"{'-':>{_COLUMN}}"


def format_protocol_report(report: dict) -> str:
    """The paper's two tables (Avg@k, Pass@k; rows benchmark x k, in percent), the user's numbers first (Pass@k also
    as the unbiased estimator over all samples), then the paper's base / GRPO / SENT columns when the model is
    DeepSeek-R1-Distill-Qwen-1.5B or trained from it; each table's cell mean ("Avg."); the settings that differ."""
    from .paper import BENCHMARK_TITLES

    protocol, results, means = report["protocol"], report["results"], report["table_means"]
    ks = protocol["ks"]
    reference = report.get("paper_reference")
    paper_rows = list(reference["rows"].values()) if reference else []
    relation = report.get("paper_model_relation")
    lines = [f"model: {report['model']}" + (f" ({relation}: {reference['model']})" if relation else "")]
    for table, title in (("avg", "Avg@k: mean accuracy over the first k samples (%)"), ("pass", "Pass@k (%)")):
        head = f"{'':<20}{'this run':>{_COLUMN}}" + (f"{'unbiased':>{_COLUMN}}" if table == "pass" else "")
        head += "".join(f"{row['label']:>{_COLUMN}}" for row in paper_rows)
        lines += ["", title, head]
        for name, r in results.items():
            for j in ks:
                cells = _pct(r[f"{table}@{j}"]) + (_pct(r[f"pass@{j}_unbiased"]) if table == "pass" else "")
                cells += "".join(_pct(row["results"].get(name, {}).get(f"{table}@{j}")) for row in paper_rows)
                lines.append(f"{BENCHMARK_TITLES.get(name, name) + ' ' + table[0].upper() + '@' + str(j):<20}{cells}")
        cells = _pct(means[f"{table}@k"]) + (_pct(means["pass@k_unbiased"]) if table == "pass" else "")
        for row in paper_rows:
            values = [row["results"].get(b, {}).get(f"{table}@{j}") for b in results for j in ks]
            cells += _pct(None if None in values else sum(values) / len(values))
        lines.append(f"{'Avg. (' + str(means['num_cells']) + ' cells)':<20}{cells}")
    if paper_rows:
        lines.append("(paper columns: Cao et al., arXiv 2512.04359, Tables I and II, DeepSeek-R1-Distill-Qwen-1.5B)")
    lines += ["", f"{'benchmark':<16}{'prompts':>9}{'k':>5}{'len':>9}{'cut':>7}"]
    for name, r in results.items():
        lines.append(
            f"{name:<16}{r['num_prompts']:>9}{r['k']:>5}{r['mean_completion_length']:>9.1f}{r['truncated_frac']:>7.2f}"
        )
    differs = protocol["differs_from_paper"]
    if differs:
        lines += ["", "settings that differ from the paper's:"]
        lines += [f"  {d['setting']}: {d['used']!r} (paper: {d['paper']!r})" for d in differs]
    else:
        lines += ["", "settings: the paper's (k, temperature, top_p, max_new_tokens, instruction, answer extraction)"]
    lines += ["always different from the authors' evaluation:"]
    lines += [f"  {text}" for text in protocol["fixed_differences"]]
    return "\n".join(lines)


def write_report(report: dict, output_dir: str) -> str:
    """``output_dir/eval_results.json``, written atomically (a temporary file renamed into place)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RESULTS_FILENAME)
    write_text_atomic(path, json.dumps(report, indent=2))
    logger.info("results written to %s", path)
    return path


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` (default: ``sys.argv[1:]``) with :func:`make_parser` and :func:`run`."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    eval_args, data_args, model_args = make_parser().parse_args_and_config(args=argv)
    return run(eval_args, data_args, model_args, given=given_flags(argv))


def cli(argv: Sequence[str] | None = None) -> dict:
    """``python -m sec_trl.evaluate``: :func:`main`, with a user's mistake found before sampling starts reported as
    one ``error:`` line and exit code 2 (``SEC_TRL_DEBUG=1``: the traceback; see :mod:`sec_trl.errors`)."""
    from sec_trl.errors import user_errors

    with user_errors("sec_trl.evaluate"):
        return main(argv)
