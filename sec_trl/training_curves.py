"""The training curves of a run, from `trainer.state.log_history`: PNG plots and the summary tables of the card."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .publishing import atomic_path


# (log_history key, title, PNG file name)
TRAINING_CURVES: tuple[tuple[str, str, str], ...] = (
    ("reward", "Reward", "reward.png"),
    ("entropy", "Token entropy", "entropy.png"),
    ("semantic_entropy/mean", "Online semantic entropy", "semantic_entropy.png"),
    ("eval_reward", "Held-out reward (evaluation)", "eval_reward.png"),
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(log_history: Sequence[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) for the entries that logged `key` (reward, for one, is logged only on generating steps)."""
    points = [
        (entry["step"], float(entry[key]))
        for entry in log_history
        if _is_number(entry.get("step")) and _is_number(entry.get(key))
    ]
    return sorted(points, key=lambda point: point[0])


def plot_training_curves(log_history: Sequence[dict], path: str | os.PathLike) -> list[str]:
    """One PNG per logged metric (reward, token entropy, online semantic entropy) against the optimizer step.

    Args:
        log_history: `trainer.state.log_history`, a list of dicts with `step` and metric keys.
        path: the directory to write into (created if needed).

    Returns:
        The file names written, relative to `path`, in the order reward, entropy, semantic entropy; a metric with no
        logged value has no file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    directory = Path(path)
    written = []
    for key, title, filename in TRAINING_CURVES:
        points = _series(log_history, key)
        if not points:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        steps = [step for step, _ in points]
        values = [value for _, value in points]
        fig = Figure(figsize=(5.5, 3.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(steps, values, marker="o", markersize=3, linewidth=1.5, color="#4C72B0")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        target = directory / filename
        with atomic_path(target, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
        written.append(filename)
    return written


def _fmt_number(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"


def _metric_summary(log_history: Sequence[dict]) -> list[dict[str, Any]]:
    rows = []
    for key, _, _ in TRAINING_CURVES:
        points = _series(log_history, key)
        if points:
            first, last = _fmt_number(points[0][1]), _fmt_number(points[-1][1])
            rows.append({"key": key, "count": len(points), "first": first, "last": last})
    return rows


def _evaluation_rows(log_history: Sequence[dict]) -> list[dict[str, Any]]:
    """The last held-out value of the total reward and of each reward function's mean (`--eval_strategy`)."""
    keys = [
        key
        for key in dict.fromkeys(k for entry in log_history for k in entry)
        if key == "eval_reward" or (key.startswith("eval_rewards/") and key.endswith("/mean"))
    ]
    rows = []
    for key in keys:
        points = _series(log_history, key)
        if points:
            rows.append(
                {"key": key, "step": int(points[-1][0]), "value": _fmt_number(points[-1][1]), "n": len(points)}
            )
    return rows
