"""Table and figure of an entropy-collapse study JSON (`benchmarks/study.py` writes it; `--report` calls this).

    python benchmarks/study.py --report benchmarks/results/entropy_collapse.json

Per method: mean and standard deviation across seeds of each quantity, and for the held-out avg@k / pass@k and the
final entropy the paired difference to the reference method (GRPO) with a 95% t-interval over seeds (each seed
gives both methods the same data order and evaluation samples, so the seed-to-seed noise they share cancels).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path


# two-sided 95% Student t quantiles, by degrees of freedom (no scipy dependency for one table)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
FINAL_WINDOW = 4  # "final" entropy: the mean over the last 4 optimizer steps (2 rollout batches), less noisy


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def t_interval(diffs: list[float]) -> tuple[float | None, float | None, float | None]:
    """Mean of paired differences and its two-sided 95% t-interval (None bounds with fewer than 2 pairs)."""
    m, sd = mean_sd(diffs)
    if m is None or sd is None:
        return m, None, None
    half = T95.get(len(diffs) - 1, 1.96) * sd / math.sqrt(len(diffs))
    return m, m - half, m + half


def run_summary(run: dict) -> dict:
    steps = run["steps"]
    ent = [s["entropy"] for s in steps]
    rewards = [s["reward"] for s in steps if s.get("reward") is not None]
    covs = [s["cov"] for s in steps if s.get("cov") is not None]
    ks = [s["k"] for s in steps if s.get("k") is not None]
    final = ent[-FINAL_WINDOW:]
    half = rewards[len(rewards) // 2 :]
    return {
        "entropy_initial": ent[0] if ent else None,
        "entropy_final": sum(final) / len(final) if final else None,
        "collapsed": bool(ent) and sum(final) / len(final) < 0.5 * ent[0],
        "reward_last_half": sum(half) / len(half) if half else None,
        "cov_mean": sum(covs) / len(covs) if covs else None,
        "mean_k": sum(ks) / len(ks) if ks else None,
        "avg_at_k": run["eval"]["avg_at_k"],
        "pass_at_k": run["eval"]["pass_at_k"],
    }


def summarise(data: dict) -> dict:
    """`{method: {"seeds": [...], "<quantity>": (mean, sd), "diff_<q>": (mean, lo, hi), "collapsed": "n/N"}}`."""
    reference = data["config"].get("reference_method", "grpo")
    by_method: dict[str, dict[int, dict]] = {}
    for run in data["runs"]:
        by_method.setdefault(run["method"], {})[run["seed"]] = run_summary(run)
    ref = by_method.get(reference, {})
    out = {}
    for method, seeds in by_method.items():
        s = {"seeds": sorted(seeds)}
        for q in (
            "entropy_initial",
            "entropy_final",
            "reward_last_half",
            "cov_mean",
            "mean_k",
            "avg_at_k",
            "pass_at_k",
        ):
            s[q] = mean_sd([r[q] for r in seeds.values()])
        s["collapsed"] = f"{sum(r['collapsed'] for r in seeds.values())}/{len(seeds)}"
        for q in ("avg_at_k", "pass_at_k", "entropy_final"):
            paired = [seeds[x][q] - ref[x][q] for x in sorted(seeds) if x in ref]
            s[f"diff_{q}"] = t_interval(paired) if method != reference else (None, None, None)
            s["paired_seeds"] = len(paired)
        out[method] = s
    return out


def _f(x, p=3) -> str:
    return "" if x is None else f"{x:.{p}f}"


def _msd(pair, p=3) -> str:
    m, sd = pair
    if m is None:
        return ""
    return _f(m, p) if sd is None else f"{_f(m, p)} ± {_f(sd, p)}"


def _ci(triple, p=3) -> str:
    """`mean [lo, hi]`; an interval of zero width (every paired difference equal) is not printed as an interval."""
    m, lo, hi = triple
    if m is None:
        return ""
    if lo is None:
        return f"{m:+.{p}f}"
    if hi - lo == 0:
        return f"{m:+.{p}f} (identical differences, no interval)"
    return f"{m:+.{p}f} [{lo:+.{p}f}, {hi:+.{p}f}]"


def _entropy_cell(method: str, s: dict) -> str:
    """`start → final ± sd`: the mean step-1 entropy, then the final entropy's mean ± sd over seeds."""
    return f"{_f(s['entropy_initial'][0], 2)} → {_msd(s['entropy_final'], 2)}"


def _table(data: dict, columns: list[tuple[str, str, Callable[[str, dict], str], str | None]]) -> str:
    """A markdown table, one row per method (the config's order) after the base model's row.

    `columns`: (title, alignment, cell(method, summary entry), the base model's key for that column or None).
    """
    summary = summarise(data)
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "|".join(c[1] for c in columns) + "|"]
    base = data.get("base")
    if base:
        cells = ["base model"] + [_f(base[c[3]]) if c[3] else "" for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    order = list(data["config"].get("methods", summary))
    for method in [m for m in order if m in summary] + [m for m in summary if m not in order]:
        lines.append("| " + " | ".join(c[2](method, summary[method]) for c in columns) + " |")
    return "\n".join(lines)


def markdown_table(data: dict) -> str:
    k = data["config"]["k"]
    return _table(
        data,
        [
            ("method", "---", lambda m, s: m, None),
            ("seeds", "---:", lambda m, s: str(len(s["seeds"])), None),
            (
                "entropy start → final",
                "---",
                _entropy_cell,
                None,
            ),
            ("collapsed", "---:", lambda m, s: s["collapsed"], None),
            ("reward (last half)", "---:", lambda m, s: _msd(s["reward_last_half"]), None),
            ("cov(logp, A)", "---:", lambda m, s: _msd(s["cov_mean"], 4), None),
            ("mean k", "---:", lambda m, s: _f(s["mean_k"][0], 1), None),
            (f"avg@{k}", "---:", lambda m, s: _msd(s["avg_at_k"]), "avg_at_k"),
            (f"Δ avg@{k} vs GRPO [95% CI]", "---", lambda m, s: _ci(s["diff_avg_at_k"]), None),
            (f"pass@{k}", "---:", lambda m, s: _msd(s["pass_at_k"]), "pass_at_k"),
            (f"Δ pass@{k} vs GRPO [95% CI]", "---", lambda m, s: _ci(s["diff_pass_at_k"]), None),
            ("Δ final entropy vs GRPO", "---", lambda m, s: _ci(s["diff_entropy_final"], 2), None),
        ],
    )


def pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


def mechanism(data: dict) -> dict:
    """Does the covariance predict the entropy change, as Cui et al.'s identity says (dH ~ -lr * cov)?

    `step`: over every step of every run, cov at step t against H(t+1) - H(t) (the next batch's entropy minus this
    one's; both are measured on different samples, so this is noisy). `run`: per run, the mean covariance against
    the entropy change over the run (final - step 1). Negative correlations are what the identity predicts.
    """
    step_x, step_y, run_x, run_y = [], [], [], []
    for run in data["runs"]:
        steps = run["steps"]
        for a, b in zip(steps, steps[1:], strict=False):
            if a.get("cov") is not None:
                step_x.append(a["cov"])
                step_y.append(b["entropy"] - a["entropy"])
        summary = run_summary(run)
        if summary["cov_mean"] is not None:
            run_x.append(summary["cov_mean"])
            run_y.append(summary["entropy_final"] - summary["entropy_initial"])
    return {
        "step_corr": pearson(step_x, step_y),
        "step_pairs": len(step_x),
        "run_corr": pearson(run_x, run_y),
        "runs": len(run_x),
        # steps whose every advantage is 0 (all rewards of each group equal) have cov exactly 0 and no gradient
        "zero_cov_steps": sum(x == 0 for x in step_x),
        "positive_cov_frac": sum(x > 0 for x in step_x) / max(1, sum(x != 0 for x in step_x)) if step_x else None,
    }


def mechanism_line(data: dict) -> str:
    m = mechanism(data)
    return (
        f"Mechanism check (Cui et al.: entropy falls when cov(logp, A) > 0): correlation of cov at step t with the "
        f"entropy change to step t+1 = {_f(m['step_corr'])} over {m['step_pairs']} steps; of a run's mean cov with "
        f"its entropy change (final - step 1) = {_f(m['run_corr'])} over {m['runs']} runs. cov > 0 on "
        f"{_f(m['positive_cov_frac'], 2)} of the steps with a non-zero cov; {m['zero_cov_steps']} steps had cov "
        f"exactly 0 (every advantage 0: no gradient from the policy term)."
    )


def compact_table(data: dict) -> str:
    """The README's version: entropy, collapse count, and the held-out numbers with their paired intervals."""
    k = data["config"]["k"]
    return _table(
        data,
        [
            ("method", "---", lambda m, s: m, None),
            (
                "token entropy, step 1 → final",
                "---",
                _entropy_cell,
                None,
            ),
            ("collapsed", "---:", lambda m, s: s["collapsed"], None),
            (f"held-out avg@{k}", "---:", lambda m, s: _msd(s["avg_at_k"]), "avg_at_k"),
            ("Δ vs GRPO [95% CI]", "---", lambda m, s: _ci(s["diff_avg_at_k"]), None),
            (f"pass@{k}", "---:", lambda m, s: _msd(s["pass_at_k"]), "pass_at_k"),
            ("Δ vs GRPO [95% CI]", "---", lambda m, s: _ci(s["diff_pass_at_k"]), None),
        ],
    )


def _band(runs: list[dict], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    per_step: dict[int, list[float]] = {}
    for run in runs:
        for rec in run["steps"]:
            if rec.get(key) is not None:
                per_step.setdefault(rec["step"], []).append(rec[key])
    steps = sorted(per_step)
    mean = [sum(per_step[s]) / len(per_step[s]) for s in steps]
    return steps, mean, [min(per_step[s]) for s in steps], [max(per_step[s]) for s in steps]


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    by_method: dict[str, list[dict]] = {}
    for run in data["runs"]:
        by_method.setdefault(run["method"], []).append(run)
    titles = {"entropy": "Token entropy (nats)", "reward": "Training reward (generating steps)",
              "cov": "Cov(log-prob, advantage)"}  # fmt: skip
    for ax, key in zip(axes, ("entropy", "reward", "cov"), strict=True):
        for i, (method, runs) in enumerate(by_method.items()):
            steps, mean, lo, hi = _band(runs, key)
            if not steps:
                continue
            style = "-" if i < 10 else "--"
            (line,) = ax.plot(steps, mean, style, lw=1.6, label=f"{method} (n={len(runs)})")
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.12)
        ax.set(xlabel="optimizer step", title=titles[key])
    axes[0].legend(fontsize=7, ncol=2)
    cfg = data["config"]
    fig.suptitle(
        f"{cfg.get('model', '')}: mean over seeds (line) and min-max across seeds (band); "
        f"lr {cfg['regime'].get('learning_rate')}, {cfg['steps']} steps"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_by_method(data: dict, path: Path) -> None:
    """Small multiples: each method's entropy, one line per seed, against the reference method's seed mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, list[dict]] = {}
    for run in data["runs"]:
        by_method.setdefault(run["method"], []).append(run)
    reference = data["config"].get("reference_method", "grpo")
    ref_steps, ref_mean, _, _ = _band(by_method.get(reference, []), "entropy")
    cols = 3
    rows = max(1, math.ceil(len(by_method) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, (method, runs) in zip(axes.flat, by_method.items(), strict=False):
        if ref_steps and method != reference:
            ax.plot(ref_steps, ref_mean, "k--", lw=1.2, label=f"{reference} (mean)")
        for run in sorted(runs, key=lambda r: r["seed"]):
            ax.plot(
                [r["step"] for r in run["steps"]], [r["entropy"] for r in run["steps"]], label=f"seed {run['seed']}"
            )
        ax.set_title(method)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(by_method) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")
    for ax in axes[:, 0]:
        ax.set_ylabel("token entropy (nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(path: Path, figure: Path | None = None) -> dict:
    """Print the table, write `<stem>.md` and the figure `<stem>.png` next to the JSON; return the summary."""
    path = Path(path)
    data = json.loads(path.read_text())
    if not data.get("runs"):
        raise SystemExit(f"{path}: no finished run to report")
    table, compact = markdown_table(data), compact_table(data)
    mech = mechanism_line(data)
    path.with_suffix(".md").write_text(f"{table}\n\n{mech}\n\nCompact (the README's):\n\n{compact}\n")
    plot(data, figure or path.with_suffix(".png"))
    plot_by_method(data, path.with_name(f"{path.stem}_by_method.png"))
    print(table, mech, sep="\n\n")
    return {"table": table, "compact": compact, "summary": summarise(data), "mechanism": mechanism(data)}
