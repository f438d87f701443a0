"""What a ranking run reports: the SE summary and ``ranking_meta.json``, and the SE histogram."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from sec_trl.publishing import atomic_path
from sec_trl.ranking.cache import hash_json, read_json
from sec_trl.ranking.params import META_FILENAME, RankingParams


__all__ = ["ranking_meta", "read_ranking_meta", "summarize_se", "write_histogram"]


def read_ranking_meta(output_dir: str | os.PathLike) -> dict | None:
    """The ``ranking_meta.json`` of a finished ranking run (None if there is none)."""
    return read_json(Path(output_dir) / META_FILENAME)


def summarize_se(se: Sequence[float], clusters: Sequence[int], accuracy: Sequence[float | None], n: int) -> dict:
    """The ``semantic_entropy`` block of ``ranking_meta.json``: distribution of SE (quantiles by linear
    interpolation, ``numpy.quantile``'s default), clusters, and accuracy against SE when there are answers."""
    se = list(se)
    q25, median, q75 = (float(x) for x in np.quantile(se, [0.25, 0.5, 0.75]))
    out: dict[str, Any] = {
        "count": len(se),
        "mean": statistics.fmean(se),
        "std": statistics.pstdev(se),
        "min": min(se),
        "q25": q25,
        "median": median,
        "q75": q75,
        "max": max(se),
        "max_possible": math.log(n),
        "fraction_zero": sum(1 for x in se if x == 0.0) / len(se),
        "fraction_all_distinct": sum(1 for c in clusters if c == n) / len(se),
        "mean_num_clusters": statistics.fmean(clusters),
    }
    acc = [a for a in accuracy if a is not None]
    if acc and len(acc) == len(se):
        out["mean_sample_accuracy"] = statistics.fmean(acc)
        if len(se) > 1 and statistics.pstdev(se) > 0 and statistics.pstdev(acc) > 0:
            out["pearson_se_vs_accuracy"] = statistics.correlation(se, acc)
        low = [a for s, a in zip(se, acc, strict=True) if s <= out["median"]]
        high = [a for s, a in zip(se, acc, strict=True) if s > out["median"]]
        out["mean_accuracy_low_se_half"] = statistics.fmean(low) if low else None
        out["mean_accuracy_high_se_half"] = statistics.fmean(high) if high else None
    return out


def write_histogram(path: Path, se: Sequence[float], accuracy: Sequence[float | None], n: int, title: str) -> None:
    """``se_histogram.png``: the SE histogram and, when every prompt has an accuracy, accuracy against SE."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    have_accuracy = all(a is not None for a in accuracy) and len(accuracy) > 0
    fig = Figure(figsize=(11 if have_accuracy else 6, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if have_accuracy else 1, squeeze=False)[0]
    top = math.log(n)
    edges = [top * i / 20 for i in range(21)]
    edges[-1] = top * 1.0001
    ax = axes[0]
    ax.hist(list(se), bins=edges, color="#4C72B0", edgecolor="white")
    ax.axvline(statistics.median(se), color="#C44E52", linestyle="--", label=f"median {statistics.median(se):.3f}")
    ax.set_xlabel("semantic entropy (nats)")
    ax.set_ylabel("prompts")
    ax.set_xlim(-0.02 * top, top * 1.02)
    ax.set_title(f"SE of {len(se)} prompts, {n} samples each (max ln {n} = {top:.2f})", fontsize=10)
    ax.legend(fontsize=8)
    if have_accuracy:
        ax = axes[1]
        ax.scatter(list(se), list(accuracy), s=12, alpha=0.5, color="#4C72B0")
        centers, means = [], []
        for i in range(10):
            lo, hi = top * i / 10, top * (i + 1) / 10 + (1e-9 if i == 9 else 0)
            bucket = [a for s, a in zip(se, accuracy, strict=True) if lo <= s < hi]
            if bucket:
                centers.append((lo + hi) / 2)
                means.append(statistics.fmean(bucket))
        ax.plot(centers, means, color="#C44E52", marker="o", label="mean per SE bin")
        ax.set_xlabel("semantic entropy (nats)")
        ax.set_ylabel("sample accuracy")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title("sample accuracy vs SE", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)


def ranking_meta(
    *,
    model: str,
    params: RankingParams,
    num_processes: int,
    columns: tuple[str, str | None],
    fingerprint: dict,
    fingerprint_hash: str,
    dataset_fingerprint: str | None,
    rows: Sequence[dict],
    num_shards: int,
    process_stats: Sequence[dict],
    summary: dict,
    timing: dict,
) -> dict:
    """The content of ``ranking_meta.json`` (``timing`` holds ``wall_seconds`` and ``merge_and_write_seconds``)."""
    return {
        "complete": True,
        "model": model,
        "backend": "vllm" if params.use_vllm else "transformers",
        "num_processes": num_processes,
        "params": asdict(params),
        "prompt_column": columns[0],
        "answer_column": columns[1],
        "fingerprint": fingerprint_hash,
        "model_fingerprint": hash_json(fingerprint["model"]),
        "dataset_content_sha256": fingerprint["dataset"]["content_sha256"],
        "dataset_fingerprint": dataset_fingerprint,
        "sec_trl_version": fingerprint["versions"]["sec_trl"],
        "counts": _counts(rows, num_shards, process_stats, params.num_samples),
        "semantic_entropy": summary,
        "timing": _timing(process_stats, params.num_samples, **timing),
    }


def _counts(rows: Sequence[dict], num_shards: int, process_stats: Sequence[dict], num_samples: int) -> dict:
    num_rows = len(rows)
    generated = sum(s["prompts_generated"] for s in process_stats)
    samples_total = num_rows * num_samples
    return {
        "num_prompts": num_rows,
        "num_shards": num_shards,
        "num_prompts_generated": generated,
        "num_prompts_from_cache": num_rows - generated,
        "num_shards_generated": sum(s["shards_generated"] for s in process_stats),
        "num_shards_from_cache": sum(s["shards_cached"] for s in process_stats),
        "num_weighted_fallbacks": sum(1 for r in rows if r["estimator"] == "discrete_fallback"),
        "no_answer_fraction": sum(a is None for r in rows for a in r["answers"]) / samples_total,
        "truncated_fraction": sum(bool(t) for r in rows for t in r["truncated"]) / samples_total,
        "mean_completion_tokens": sum(x for r in rows for x in r["num_tokens"]) / samples_total,
    }


def _timing(process_stats: Sequence[dict], num_samples: int, *, wall_seconds: float, merge_and_write_seconds: float):
    generated = sum(s["prompts_generated"] for s in process_stats)
    gen_seconds = [s["generation_seconds"] for s in process_stats]
    wall = wall_seconds
    return {
        "wall_seconds": wall,
        "prompts_per_second": generated / wall if generated else None,
        "samples_per_second": generated * num_samples / wall if generated else None,
        "generation_seconds_per_process": gen_seconds,
        "model_load_seconds_per_process": [s["model_load_seconds"] for s in process_stats],
        "process_seconds_per_process": [s["process_seconds"] for s in process_stats],
        "fraction_outside_generation": (1.0 - statistics.fmean(gen_seconds) / wall) if generated else None,
        "merge_and_write_seconds": merge_and_write_seconds,
    }
