"""The pre-registered token-loss study's analysis (benchmarks/PREREGISTRATION.md), from its JSON.

    python benchmarks/study.py --report benchmarks/results/token_study.json

Exactly the pre-registered endpoints: per seed, d = ln(mean entropy of the last 10 steps) of one arm minus the
other's; a two-sided paired t-test (the decision) and the exact Wilcoxon signed-rank test beside it; held-out
avg@k / pass@k with 95% t-intervals over seeds; collapse and derailment counts by the pre-registered rules; the
covariance between log-probability and advantage; SENT's `|logp - old_logp|` on its strong-KL tokens. With fewer
runs than planned the report says "interim" and is not the pre-registered test.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from study_report import mean_sd, mechanism_line, plot_by_method


LAST_WINDOW = 10  # "final": the mean of the last 10 steps
FIRST_WINDOW = 2  # "start": the mean of steps 1-2
DERAIL_REWARD = 0.05
PRIMARY = ("sent_token", "grpo")
SECONDARY = (("sent_no_kl", "grpo"), ("sent_token", "sent_no_kl"))
ALPHA = 0.05


# ---- distributions (no scipy: two small functions, checked against tabulated values in tests/test_study.py) ----


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile (p > 0.5) of Student's t, by bisection on the two-sided tail."""
    target = 2.0 * (1.0 - p)
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_sf_two_sided(mid, df) > target else (lo, mid)
    return (lo + hi) / 2.0


def wilcoxon_exact(diffs: list[float]) -> tuple[float | None, float | None, int]:
    """Exact two-sided Wilcoxon signed-rank test: (W+, p, n used). Zero differences are dropped (Wilcoxon's rule);
    tied |d| get average ranks, and the null distribution is enumerated over those ranks (2^n sign patterns)."""
    d = [x for x in diffs if x != 0.0]
    n = len(d)
    if n == 0:
        return None, None, 0
    order = sorted(range(n), key=lambda i: abs(d[i]))
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2.0 + 1.0
        i = j + 1
    w_plus = sum(r for r, x in zip(ranks, d, strict=True) if x > 0)
    # null distribution of W+ by dynamic programming over doubled (integer) ranks
    counts = {0: 1}
    for r in ranks:
        step = round(2 * r)
        new: dict[int, int] = {}
        for s, c in counts.items():
            new[s] = new.get(s, 0) + c
            new[s + step] = new.get(s + step, 0) + c
        counts = new
    total = 2**n
    mean2 = sum(round(2 * r) for r in ranks) / 2.0  # E[2 W+]
    dev = abs(2 * w_plus - mean2)
    p = sum(c for s, c in counts.items() if abs(s - mean2) >= dev - 1e-9) / total
    return w_plus, min(1.0, p), n


# ---- per run and per comparison ----


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def run_endpoints(run: dict, base_avg: float | None) -> dict:
    steps = run["steps"]
    ent = [s["entropy"] for s in steps]
    rewards = [s["reward"] for s in steps if s.get("reward") is not None]
    start, final = _mean(ent[:FIRST_WINDOW]), _mean(ent[-LAST_WINDOW:])
    reward_last_half = _mean(rewards[len(rewards) // 2 :])
    avg = run["eval"]["avg_at_k"]
    # SENT's KL acts on the steps that reuse a rollout batch (no reward logged there); on-policy steps are exactly 0
    off_policy = [
        s["high_cov_abs_log_ratio"] for s in steps if s.get("reward") is None and "high_cov_abs_log_ratio" in s
    ]
    return {
        "seed": run["seed"],
        "entropy_start": start,
        "entropy_final": final,
        "log_final": math.log(final) if final and final > 0 else None,
        "collapsed": bool(ent) and final < 0.5 * start,
        "reward_last_half": reward_last_half,
        "derailed": reward_last_half is not None
        and reward_last_half < DERAIL_REWARD
        and base_avg is not None
        and avg < base_avg,
        "avg_at_k": avg,
        "pass_at_k": run["eval"]["pass_at_k"],
        "cov_mean": _mean([s["cov"] for s in steps if s.get("cov") is not None]),
        "high_cov_abs_log_ratio": _mean(off_policy),
        "k_mean": _mean([s["k"] for s in steps if s.get("k") is not None]),
    }


def interval(values: list[float]) -> dict:
    """Mean and two-sided 95% t-interval; `lo`/`hi` None with fewer than 2 values or zero spread."""
    m, sd = mean_sd(values)
    out = {"n": len(values), "mean": m, "sd": sd, "lo": None, "hi": None}
    if m is not None and sd:
        half = t_quantile(0.975, len(values) - 1) * sd / math.sqrt(len(values))
        out.update(lo=m - half, hi=m + half)
    return out


def paired_test(diffs: list[float]) -> dict:
    """Paired t-test (two-sided), its 95% interval, Wilcoxon beside it, and the effect the pairs could detect at
    80% power (in the units of `diffs`)."""
    out = interval(diffs)
    n, sd = out["n"], out["sd"]
    out.update(t=None, p_t=None, mde80=None)
    if n >= 2 and sd:
        out["t"] = out["mean"] / (sd / math.sqrt(n))
        out["p_t"] = t_sf_two_sided(out["t"], n - 1)
        out["mde80"] = (t_quantile(1 - ALPHA / 2, n - 1) + t_quantile(0.8, n - 1)) * sd / math.sqrt(n)
    out["wilcoxon_w_plus"], out["p_wilcoxon"], out["wilcoxon_n"] = wilcoxon_exact(diffs)
    return out


def analyse(data: dict) -> dict:
    base_avg = (data.get("base") or {}).get("avg_at_k")
    arms: dict[str, dict[int, dict]] = {}
    for run in data["runs"]:
        arms.setdefault(run["method"], {})[run["seed"]] = run_endpoints(run, base_avg)
    planned = len(data["config"].get("seeds", [])) * len(data["config"].get("methods", {}))
    per_arm = {}
    for arm, runs in arms.items():
        rows = list(runs.values())
        per_arm[arm] = {
            "runs": len(rows),
            "collapsed": sum(r["collapsed"] for r in rows),
            "derailed": sum(r["derailed"] for r in rows),
            **{q: interval([r[q] for r in rows if r[q] is not None]) for q in (
                "entropy_start", "entropy_final", "avg_at_k", "pass_at_k", "cov_mean", "high_cov_abs_log_ratio",
                "k_mean", "reward_last_half")},
        }  # fmt: skip
    comparisons = {}
    for a, b in (PRIMARY, *SECONDARY):
        if a not in arms or b not in arms:
            continue
        seeds = sorted(set(arms[a]) & set(arms[b]))
        comp = {"seeds": seeds}
        for q in ("log_final", "avg_at_k", "pass_at_k"):
            comp[q] = paired_test([arms[a][s][q] - arms[b][s][q] for s in seeds])
        comparisons[f"{a} - {b}"] = comp
    return {
        "interim": len(data["runs"]) < planned,
        "runs": len(data["runs"]),
        "planned_runs": planned,
        "base_avg_at_k": base_avg,
        "per_arm": per_arm,
        "per_run": {arm: [runs[s] for s in sorted(runs)] for arm, runs in arms.items()},
        "comparisons": comparisons,
    }


# ---- rendering ----


def _f(x, p=3) -> str:
    return "" if x is None else f"{x:.{p}f}"


def _ci(iv: dict, p=3, signed=False) -> str:
    """`mean [lo, hi]`; an interval of zero width (identical values) or from one value is not printed as one."""
    if iv["mean"] is None:
        return ""
    m = f"{iv['mean']:+.{p}f}" if signed else _f(iv["mean"], p)
    if iv["lo"] is None:
        why = "1 value" if iv["n"] < 2 else f"{iv['n']} identical values, no interval"
        return f"{m} ({why})"
    lo, hi = (f"{iv['lo']:+.{p}f}", f"{iv['hi']:+.{p}f}") if signed else (_f(iv["lo"], p), _f(iv["hi"], p))
    return f"{m} [{lo}, {hi}]"


def _p(x) -> str:
    return "" if x is None else (f"{x:.4f}" if x >= 1e-4 else f"{x:.1e}")


def prereg_amendments() -> list[str]:
    """The commits that touched PREREGISTRATION.md (the first is the registration itself)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "log", "--reverse", "--format=%h %ad %s", "--date=short", "--", "benchmarks/PREREGISTRATION.md"],
            cwd=root, capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in out.splitlines() if line.strip()]


def render(data: dict, result: dict) -> str:
    k = data["config"]["k"]
    lines = []
    if result["interim"]:
        lines.append(
            f"**Interim: {result['runs']} of {result['planned_runs']} planned runs. Not the pre-registered test** "
            "(PREREGISTRATION.md: the test is computed once, on all runs).\n"
        )
    lines += [
        f"Per arm (mean [95% t-interval over seeds]); collapse = mean entropy of the last {LAST_WINDOW} steps < half "
        f"the mean of steps 1-{FIRST_WINDOW}; derailed = training reward over the second half of the rollouts < "
        f"{DERAIL_REWARD} and held-out avg@{k} below the base model's ({_f(result['base_avg_at_k'])}).",
        "",
        f"| arm | runs | entropy, steps 1-2 | entropy, last 10 | collapsed | derailed | avg@{k} | pass@{k} "
        "| cov(logp, A) | SENT \\|logp - old\\| (off-policy steps) | k |",
        "|---|---:|---|---|---:|---:|---|---|---|---|---:|",
    ]
    for arm, s in result["per_arm"].items():
        lines.append(
            f"| {arm} | {s['runs']} | {_ci(s['entropy_start'], 2)} | {_ci(s['entropy_final'], 2)} | "
            f"{s['collapsed']}/{s['runs']} | {s['derailed']}/{s['runs']} | {_ci(s['avg_at_k'])} | "
            f"{_ci(s['pass_at_k'])} | {_ci(s['cov_mean'], 4)} | {_ci(s['high_cov_abs_log_ratio'], 4)} | "
            f"{_f(s['k_mean']['mean'], 1)} |"
        )
    if result["comparisons"]:
        lines += _comparison_table(result, k)
    lines += _verdict(result)
    lines += ["", mechanism_line(data)]
    amendments = prereg_amendments()
    if amendments:
        lines += ["", "Pre-registration history (`git log -- benchmarks/PREREGISTRATION.md`):", ""]
        lines += [f"- {a}" for a in amendments]
    return "\n".join(lines)


def _comparison_table(result: dict, k: int) -> list[str]:
    lines = [
        "",
        "Paired by seed. `d` = ln(final entropy) difference (exp(d) = ratio of final entropies); t-test two-sided "
        "(the pre-registered decision), exact Wilcoxon signed-rank beside it; MDE = the effect in `d` these pairs "
        "detect with 80% power at alpha 0.05.",
        "",
        f"| comparison | pairs | mean d [95% CI] | ratio exp(d) | sd(d) | t | p (t) | p (Wilcoxon) | MDE | "
        f"Δ avg@{k} [95% CI] | Δ pass@{k} [95% CI] |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, comp in result["comparisons"].items():
        d = comp["log_final"]
        role = "primary" if name == " - ".join(PRIMARY) else "secondary"
        lines.append(
            f"| {name} ({role}) | {d['n']} | {_ci(d, 3, signed=True)} | "
            f"{_f(math.exp(d['mean']) if d['mean'] is not None else None, 2)} | {_f(d['sd'])} | {_f(d['t'], 2)} | "
            f"{_p(d['p_t'])} | {_p(d['p_wilcoxon'])} | {_f(d['mde80'])} | "
            f"{_ci(comp['avg_at_k'], 3, signed=True)} | {_ci(comp['pass_at_k'], 3, signed=True)} |"
        )
    return lines


def _verdict(result: dict) -> list[str]:
    lines = []
    primary = result["comparisons"].get(" - ".join(PRIMARY))
    if result["interim"]:  # no verdict on part of the data (PREREGISTRATION.md's stopping rule)
        return ["", "No verdict: the primary test is read once, on all planned runs."]
    if primary and primary["log_final"]["p_t"] is not None:
        d = primary["log_final"]
        verdict = "significant" if d["p_t"] < ALPHA else "not significant"
        lines += ["", f"Primary test ({' vs '.join(PRIMARY)}): {verdict} at alpha {ALPHA} (p = {_p(d['p_t'])})."]
        if (d["p_t"] < ALPHA) != (d["p_wilcoxon"] is not None and d["p_wilcoxon"] < ALPHA):
            lines.append("The Wilcoxon test disagrees with the t-test at this alpha.")
    return lines


def report(path: Path) -> dict:
    path = Path(path)
    data = json.loads(path.read_text())
    if not data.get("runs"):
        raise SystemExit(f"{path}: no finished run to report")
    result = analyse(data)
    text = render(data, result)
    path.with_suffix(".md").write_text(text + "\n")
    plot_by_method(data, path.with_name(f"{path.stem}_by_method.png"))
    print(text)
    return {"text": text, **result}
