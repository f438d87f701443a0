"""Running a ranking: :func:`rank_dataset` in phases (set up, generate the missing shards, merge and write) and
:func:`ensure_ranked`. See :mod:`sec_trl.ranking` for what a run produces and how the cache and processes work."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sec_trl import generation
from sec_trl.data import PromptFormat
from sec_trl.embedded import resolve_model_path
from sec_trl.errors import work_phase
from sec_trl.generation import process_state
from sec_trl.publishing import model_display_name, shown_path, write_json_atomic
from sec_trl.ranking.cache import (
    build_fingerprint,
    cache_dir,
    hash_json,
    load_shard,
    prepare_cache,
    prune_caches,
    save_dataset_atomically,
    shard_path,
)
from sec_trl.ranking.params import (
    HISTOGRAM_FILENAME,
    META_FILENAME,
    SE_COLUMNS,
    RankingIncomplete,
    RankingParams,
)
from sec_trl.ranking.report import ranking_meta, summarize_se, write_histogram
from sec_trl.ranking.scoring import score_prompt


logger = logging.getLogger(__name__)

__all__ = ["build_ranked_dataset", "ensure_ranked", "process_state", "rank_dataset"]


def rank_dataset(
    dataset,
    model_name_or_path: str | None,
    output_dir: str | os.PathLike,
    *,
    prompt_column: str = "prompt",
    answer_column: str | None = "answer",
    params: RankingParams | None = None,
    prompt_format: PromptFormat | None = None,
    shard_callback: Callable[[int, dict], None] | None = None,
    show_progress: bool = True,
    **param_overrides: Any,
):
    """Sample, cluster and score every prompt of ``dataset``; return it sorted by semantic entropy (ascending).

    Args:
        dataset: a ``datasets.Dataset`` with a prompt column (string or chat messages) and, optionally, an answer
            column. It is validated with :func:`sec_trl.data.validate_prompt_dataset` (missing columns, empty
            prompts/answers raise ``ValueError``). Columns named like :data:`SE_COLUMNS` are replaced.
        model_name_or_path: a local directory or Hub name; None (or ``"embedded"``) for the embedded
            SmolLM2-135M-Instruct.
        output_dir: where the ranked dataset, ``se_histogram.png``, ``ranking_meta.json`` and the shard cache go.
        prompt_column, answer_column: column names (``answer_column=None``: no reference answers; then
            ``sample_accuracy`` is None).
        params: a :class:`RankingParams`; or give its fields as keyword arguments (``num_samples=8, ...``).
        prompt_format: how prompts are formatted (:class:`sec_trl.data.PromptFormat`; default: string prompts become
            a user message with the ``\\boxed{}`` instruction), the same object training and evaluation use. The
            formatted prompts are what the cache fingerprint hashes.
        shard_callback: called as ``f(shard_index, info)`` in the process that wrote the shard, right after it was
            written (progress reporting, tests). An exception from it aborts the run like a crash would.
        show_progress: a tqdm bar (prompts/s, ETA) on each node's main process.

    Returns:
        The input dataset (all its columns, plus :data:`SE_COLUMNS`), sorted by ``semantic_entropy`` with ties in
        input order, as loaded back from ``output_dir``. Every process of a multi-process run returns it.

    Raises:
        ValueError: bad parameters (naming the flag) or bad data.
        RankingIncomplete: ``max_shards`` stopped the run before all shards were done (they are cached).
        ImportError: ``use_vllm`` without vLLM installed.
    """
    from datasets import load_from_disk

    wall_start = time.perf_counter()
    if params is None:
        params = RankingParams(**param_overrides)
    elif param_overrides:
        params = RankingParams(**{**asdict(params), **param_overrides})
    run = _start_run(dataset, model_name_or_path, output_dir, prompt_column, answer_column, params, prompt_format)
    with _output_lock(run):
        if run.state.is_main_process:
            prepare_cache(run.output_dir, run.fingerprint, run.fingerprint_hash)
        run.state.wait_for_everyone()
        process_stats = _generate_missing_shards(run, shard_callback, show_progress, wall_start)
        if run.state.is_main_process:
            _merge_and_write(run, dataset, (prompt_column, answer_column), process_stats, wall_start)
            if params.prune_cache:
                prune_caches(run.output_dir, run.fingerprint_hash)
        run.state.wait_for_everyone()
    return load_from_disk(str(run.output_dir))


def ensure_ranked(
    dataset,
    model_name_or_path: str | None,
    output_dir: str | os.PathLike,
    **kwargs: Any,
):
    """``dataset`` unchanged when it already has a ``semantic_entropy`` column, else :func:`rank_dataset` of it.

    Ranking reuses (and fills) the cache in ``output_dir``, so calling this at the start of every training run is
    cheap after the first time. Keyword arguments are those of :func:`rank_dataset`.
    """
    if "semantic_entropy" in dataset.column_names:
        logger.info("The dataset already has a semantic_entropy column; using its ranking as is.")
        return dataset
    return rank_dataset(dataset, model_name_or_path, output_dir, **kwargs)


def build_ranked_dataset(dataset, rows: list[dict], save_completions: bool):
    """``dataset`` (any SE columns it had replaced) with the scored ``rows`` (one per input row, in input order) as
    :data:`SE_COLUMNS`, sorted by ``semantic_entropy`` with ties in input order, ``se_rank`` the position."""
    from datasets import Dataset, Features, List, Value, concatenate_datasets

    columns = {
        "semantic_entropy": [r["semantic_entropy"] for r in rows],
        "num_clusters": [r["num_clusters"] for r in rows],
        "sample_accuracy": [r["sample_accuracy"] for r in rows],
        "se_estimator": [r["estimator"] for r in rows],
        "se_source_index": [r["index"] for r in rows],
        "se_cluster_ids": [r["cluster_ids"] for r in rows],
        "se_sample_answers": [r["answers"] for r in rows],
        "se_sample_logliks": [[math.nan if x is None else x for x in r["logliks"]] for r in rows],
        "se_sample_lengths": [r["num_tokens"] for r in rows],
    }
    features = {
        "semantic_entropy": Value("float64"),
        "num_clusters": Value("int64"),
        "sample_accuracy": Value("float64"),
        "se_estimator": Value("string"),
        "se_source_index": Value("int64"),
        "se_cluster_ids": List(Value("int64")),
        "se_sample_answers": List(Value("string")),
        "se_sample_logliks": List(Value("float64")),
        "se_sample_lengths": List(Value("int64")),
    }
    if save_completions:
        columns["se_completions"] = [r["completions"] for r in rows]
        features["se_completions"] = List(Value("string"))
    base = dataset.remove_columns([c for c in SE_COLUMNS if c in dataset.column_names])
    if base._indices is not None:  # concatenating along columns needs both tables in their stored row order
        base = base.flatten_indices()
    extra = Dataset.from_dict(columns, features=Features(features))
    with warnings.catch_warnings():  # datasets passes pyarrow >= 25 a deprecated sort option; nothing to act on
        warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)
        ranked = concatenate_datasets([base, extra], axis=1).sort(["semantic_entropy", "se_source_index"])
    return ranked.add_column("se_rank", list(range(len(ranked))))


# ----------------------------------------------------------------------------------------------------------------
# Phases of rank_dataset
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What every phase of one ranking run needs (the same in every process)."""

    params: RankingParams
    state: Any  # accelerate.PartialState
    output_dir: Path
    view: Any  # the validated prompts (and answers): datasets.Dataset with columns prompt (, answer)
    shown_model: str
    model_path: str
    fingerprint: dict
    fingerprint_hash: str
    bounds: list[tuple[int, int]]  # per shard: [start, end) rows

    @property
    def shard_dir(self) -> Path:
        return cache_dir(self.output_dir, self.fingerprint_hash)

    def cached_shard(self, shard: int) -> dict | None:
        return load_shard(self.shard_dir, shard, self.fingerprint_hash, *self.bounds[shard])


def _start_run(
    dataset, model_name_or_path, output_dir, prompt_column, answer_column, params, prompt_format=None
) -> _Run:
    """Check the arguments, validate the prompts, resolve the model (once, on the main process) and fingerprint."""
    from datasets import Dataset

    if output_dir is None:
        raise ValueError("output_dir is required (--output_dir): it holds the ranked dataset and the cache")
    if not isinstance(dataset, Dataset):
        raise ValueError(f"expected a datasets.Dataset, got {type(dataset).__name__}")
    if params.use_vllm:
        generation.require_vllm()
    state = process_state()
    view = _validated_view(dataset, prompt_column, answer_column, prompt_format)
    model_path = resolve_model_path(model_name_or_path) if state.is_main_process else None
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        holder = [model_path]
        broadcast_object_list(holder)  # the embedded model is resolved (and built, if need be) once
        model_path = holder[0]
    fingerprint = build_fingerprint(view, model_path, params, answer_column is not None)
    num_rows, size = len(view), params.shard_size
    return _Run(
        params=params,
        state=state,
        output_dir=Path(output_dir).expanduser().absolute(),
        view=view,
        shown_model=model_display_name(model_name_or_path),
        model_path=model_path,
        fingerprint=fingerprint,
        fingerprint_hash=hash_json(fingerprint),
        bounds=[(s * size, min(num_rows, (s + 1) * size)) for s in range(math.ceil(num_rows / size))],
    )


@contextlib.contextmanager
def _output_lock(run: _Run) -> Iterator[None]:
    """On the main process, hold ``output_dir/.ranking.lock`` for the run (two runs must not share a cache)."""
    from filelock import FileLock, Timeout

    if not run.state.is_main_process:
        yield
        return
    run.output_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run.output_dir / ".ranking.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RuntimeError(
            f"Another ranking run is writing to {shown_path(run.output_dir)} (its lock file is held); wait for it or "
            "choose another --output_dir."
        ) from None
    try:
        yield
    finally:
        lock.release()


def _generate_missing_shards(run: _Run, shard_callback, show_progress: bool, wall_start: float) -> list[dict]:
    """Generate this process's uncached shards; return every process's statistics (after a barrier).

    Shards go round-robin to the processes. Raises :class:`RankingIncomplete` when ``max_shards`` stopped any
    process early.
    """
    state = run.state
    mine = list(range(state.process_index, len(run.bounds), state.num_processes))
    todo = [s for s in mine if run.cached_shard(s) is None]
    stats = {
        "process": state.process_index,
        "shards_generated": 0,
        "prompts_generated": 0,
        "shards_cached": len(mine) - len(todo),
        "generation_seconds": 0.0,
        "model_load_seconds": 0.0,
        "process_seconds": 0.0,
        "stopped_early": False,
    }
    if todo:
        stats.update(_run_shards(run, todo, shard_callback, show_progress))
    stats["process_seconds"] = time.perf_counter() - wall_start
    all_stats = [stats]
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        all_stats = gather_object([stats])
    state.wait_for_everyone()
    if any(s["stopped_early"] for s in all_stats):
        done = sum(1 for s in range(len(run.bounds)) if shard_path(run.shard_dir, s).exists())
        raise RankingIncomplete(
            f"Stopped after max_shards={run.params.max_shards} new shard(s) per process; {done}/{len(run.bounds)} "
            f"shards are cached in {shown_path(run.shard_dir)}. Re-run the same command to continue."
        )
    return all_stats


def _run_shards(run: _Run, todo: list[int], shard_callback, show_progress: bool) -> dict:
    """Generate and score this process's unfinished shards, writing each as it completes."""
    from tqdm.auto import tqdm

    from sec_trl.answer_checking import AnswerChecker

    params, state = run.params, run.state
    todo_now = todo if params.max_shards is None else todo[: params.max_shards]
    if not todo_now:  # max_shards=0: nothing to do in this run, not even loading the model
        return {"stopped_early": True}
    load_start = time.perf_counter()
    sampler = load_sampler(run.model_path, params, state.device, state.num_processes)
    out = {
        "shards_generated": 0,
        "prompts_generated": 0,
        "model_load_seconds": time.perf_counter() - load_start,
        "backend": sampler.backend,
    }
    checker = AnswerChecker(timeout=params.answer_timeout)
    bar = tqdm(
        total=sum(run.bounds[s][1] - run.bounds[s][0] for s in todo_now),
        unit="prompt",
        desc=f"SE ranking (process {state.process_index})" if state.num_processes > 1 else "SE ranking",
        disable=not (show_progress and state.is_local_main_process),
        dynamic_ncols=True,
    )
    try:
        for shard in todo_now:
            info = _process_shard(run, sampler, checker, shard, bar)
            write_json_atomic(shard_path(run.shard_dir, shard), info)
            out["shards_generated"] += 1
            out["prompts_generated"] += info["end"] - info["start"]
            if shard_callback is not None:
                shard_callback(shard, {k: v for k, v in info.items() if k != "rows"})
    finally:
        bar.close()
        checker.close()
        sampler.close()
    out["generation_seconds"] = sampler.generation_seconds
    out["stopped_early"] = len(todo_now) < len(todo)
    return out


def load_sampler(model_path: str, params: RankingParams, device, num_processes: int = 1):
    """The ranking's sampler (:mod:`sec_trl.generation.samplers`), recording log-likelihoods for the weighted SE:
    vLLM with ``use_vllm`` (one engine per process under accelerate launch), else transformers on ``device``."""
    from sec_trl.generation import samplers

    common = {"chat_template_kwargs": params.chat_template_kwargs, "logliks": True}
    if params.use_vllm:
        return samplers.VLLMSampler(
            model_path,
            trust_remote_code=params.trust_remote_code,
            dtype=params.dtype,
            seed=params.seed,
            gpu_memory_utilization=params.vllm_gpu_memory_utilization,
            **generation.data_parallel_engine_kwargs(num_processes),
            **common,
        )
    return samplers.TransformersSampler.from_pretrained(
        model_path, device=device, dtype=params.dtype, trust_remote_code=params.trust_remote_code, **common
    )


def sample_batch(sampler, params: RankingParams, prompts, first_index: int):
    """``num_samples`` samples for each of ``prompts`` (dataset rows ``first_index, ...``): vLLM seeds each prompt
    from its row index; transformers draws from the shard's torch stream (:func:`sec_trl.generation.shard_seed`)."""
    seeds = [generation.prompt_seed(params.seed, first_index + i) for i in range(len(prompts))]
    return sampler.sample(
        prompts,
        seeds,
        n=params.num_samples,
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
    )


@work_phase()  # sampling and scoring: an error from here on keeps its traceback (sec_trl.errors)
def _process_shard(run: _Run, sampler, checker, shard: int, bar) -> dict:
    """Sample and score one shard, always in the same batches from the shard's own seed; the shard file's content."""
    params = run.params
    start, end = run.bounds[shard]
    shard_start = time.perf_counter()
    gen_before = sampler.generation_seconds
    sampler.reseed(generation.shard_seed(params.seed, shard))
    rows = []
    for batch_start in range(start, end, params.prompts_per_batch):
        batch_end = min(end, batch_start + params.prompts_per_batch)
        batch = run.view.select(range(batch_start, batch_end))
        samples = sample_batch(sampler, params, batch["prompt"], batch_start)
        references = batch["answer"] if "answer" in batch.column_names else [None] * len(batch)
        for offset, (prompt_samples, reference) in enumerate(zip(samples, references, strict=True)):
            rows.append(score_prompt(batch_start + offset, prompt_samples, reference, params, checker))
        bar.update(batch_end - batch_start)
    return {
        "shard": shard,
        "start": start,
        "end": end,
        "fingerprint": run.fingerprint_hash,
        "process": run.state.process_index,
        "generation_seconds": sampler.generation_seconds - gen_before,
        "seconds": time.perf_counter() - shard_start,
        "rows": rows,
    }


def _merge_and_write(run: _Run, dataset, columns, process_stats: list[dict], wall_start: float) -> None:
    """Main process: merge every shard in order, write the ranked dataset, the histogram and ranking_meta.json."""
    merge_start = time.perf_counter()
    rows = []
    for s in range(len(run.bounds)):
        data = run.cached_shard(s)
        if data is None:
            raise RuntimeError(
                f"Shard {s} of {len(run.bounds)} is missing from {shown_path(run.shard_dir)} after all processes "
                "finished; a process must have failed. Re-run to generate it."
            )
        rows.extend(data["rows"])
    params = run.params
    save_dataset_atomically(build_ranked_dataset(dataset, rows, params.save_completions), run.output_dir)
    se, accuracy = [r["semantic_entropy"] for r in rows], [r["sample_accuracy"] for r in rows]
    summary = summarize_se(se, [r["num_clusters"] for r in rows], accuracy, params.num_samples)
    title = f"{run.shown_model}: {params.cluster_method} clusters, {params.estimator} SE"
    write_histogram(run.output_dir / HISTOGRAM_FILENAME, se, accuracy, params.num_samples, title)
    merge_seconds = time.perf_counter() - merge_start
    wall = time.perf_counter() - wall_start
    meta = ranking_meta(
        model=run.shown_model,
        params=params,
        num_processes=run.state.num_processes,
        columns=columns,
        fingerprint=run.fingerprint,
        fingerprint_hash=run.fingerprint_hash,
        dataset_fingerprint=getattr(dataset, "_fingerprint", None),
        rows=rows,
        num_shards=len(run.bounds),
        process_stats=process_stats,
        summary=summary,
        timing={"wall_seconds": wall, "merge_and_write_seconds": merge_seconds},
    )
    write_json_atomic(run.output_dir / META_FILENAME, meta)
    generated = meta["counts"]["num_prompts_generated"]
    logger.info(
        "Ranked %d prompts (%d generated, %d from cache) in %.1f s: SE mean %.3f, median %.3f, %d%% at 0. Output: %s",
        len(rows),
        generated,
        len(rows) - generated,
        wall,
        summary["mean"],
        summary["median"],
        round(100 * summary["fraction_zero"]),
        shown_path(run.output_dir),
    )


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


def _validated_view(dataset, prompt_column: str, answer_column: str | None, prompt_format: PromptFormat | None):
    """The prompts (and answers) to rank, validated and formatted exactly as for training (``prompt_format``, default
    :class:`~sec_trl.data.PromptFormat`): columns ``prompt`` (and ``answer``; absent when ``answer_column`` is
    None)."""
    from sec_trl.data import PROMPT_COLUMN_FLAG, validate_prompt_dataset

    if answer_column is not None:
        view = dataset.select_columns(
            [c for c in dict.fromkeys([prompt_column, answer_column]) if c in dataset.column_names]
        )
        return validate_prompt_dataset(
            view, prompt_column, answer_column, prompt_format=prompt_format, rename_answer=True
        )
    if prompt_column not in dataset.column_names:
        raise ValueError(
            f"Dataset has no prompt column {prompt_column!r}; columns present: {list(dataset.column_names)}. "
            f"Set the prompt column name with {PROMPT_COLUMN_FLAG} <column>."
        )
    dummy = "__sec_trl_no_answer__"
    view = dataset.select_columns([prompt_column]).add_column(dummy, ["-"] * len(dataset))
    view = validate_prompt_dataset(view, prompt_column, dummy, prompt_format=prompt_format, rename_answer=True)
    return view.remove_columns("answer")
