"""Compare SENT with its baselines on the embedded task: same data, seeds, steps and budget for every method.

    python benchmarks/study.py --steps 8 --eval_prompts 24 --k 4 --out runs/study      # the real (small) study
    python benchmarks/study.py --quick --out /tmp/study-quick                            # a few minutes, embedded
    python benchmarks/study.py --quick --model path/to/tiny --out /tmp/study-tiny        # seconds (tests)

Each method trains with `accelerate launch train.py --config recipes/smollm2_arith_cpu.yaml` plus its flags
(one subprocess per method and seed), with two optimizer steps per rollout batch (`steps_per_generation 2` >
`gradient_accumulation_steps 1`, so the KL term of SENT / KL-Cov is active) and `--log_semantic_entropy true`.
The training set is the generated arithmetic train split with exactly as many prompts as the run consumes
(`steps / 2` rollout batches x 4 prompts), so each method sees each prompt once and the curriculum runs go through
both semantic-entropy stages. It is ranked ONCE (`sec_trl.rank.ensure_ranked` into `<out>/se_ranking`) and the
ranking is shared by the curriculum runs. Every saved model, and the base model once, is evaluated with
`sec_trl.evaluate.evaluate_model` on the held-out split of `make_arithmetic_splits` (disjoint questions).

Writes `<out>/results.json` (after every run, so a partial study is still readable), `<out>/study.png` (token
entropy and reward vs step, one line per method, mean over seeds) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RECIPE = ROOT / "recipes" / "smollm2_arith_cpu.yaml"

# name -> flags on top of the recipe (the recipe itself is SENT: token_regularizer sent, loss_type dapo, beta 0)
METHODS: dict[str, list[str]] = {
    "grpo": ["--token_regularizer", "none"],
    "entropy_bonus": ["--token_regularizer", "none", "--entropy_coef", "0.01"],
    "80_20": ["--token_regularizer", "none", "--top_entropy_quantile", "0.2"],
    "clip_cov": ["--token_regularizer", "clip_cov"],
    "kl_cov": ["--token_regularizer", "kl_cov"],
    "sent_token": ["--token_regularizer", "sent"],
    "se_curriculum": ["--token_regularizer", "none", "--curriculum", "true"],
    "sent_full": ["--token_regularizer", "sent", "--curriculum", "true"],
}
QUICK_METHODS = ["grpo", "sent_full"]
PROMPTS_PER_ROLLOUT = 4  # recipe: per_device_train_batch_size 8 x steps_per_generation 2 / num_generations 4
STEPS_PER_GENERATION = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/study", help="output directory")
    p.add_argument("--methods", nargs="+", default=None, choices=sorted(METHODS), help="default: all eight")
    p.add_argument("--seeds", type=int, default=1, help="seeds per method (0, 1, ...)")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per run (even: 2 per rollout batch)")
    p.add_argument("--eval_prompts", type=int, default=24, help="held-out prompts")
    p.add_argument("--k", type=int, default=4, help="samples per held-out prompt (avg@k, pass@k)")
    p.add_argument("--max_completion_length", type=int, default=32, help="training and evaluation tokens")
    p.add_argument("--se_num_samples", type=int, default=4, help="samples per prompt for the SE ranking")
    p.add_argument("--entropy_coef", type=float, default=0.01, help="the entropy-bonus method's coefficient")
    p.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--keep_models", action="store_true", help="keep the trained weights (default: deleted after eval)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch / OpenMP threads for every process (0: library default). 1 by default: on a shared machine, more "
        "threads than free cores make every parallel region wait for a descheduled thread (10x slower seen here)",
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="RESULTS_JSON",
        help="only re-render the table and figure of an existing results.json (no training)",
    )
    p.add_argument("--quick", action="store_true", help="tiny: 2 methods, 2 steps, 4 eval prompts, k=2, 8 tokens")
    args = p.parse_args(argv)
    if args.quick:
        args.methods = args.methods or QUICK_METHODS
        args.steps, args.eval_prompts, args.k, args.max_completion_length = 2, 4, 2, 8
        args.se_num_samples = 2
    args.methods = args.methods or list(METHODS)
    if args.steps < 2 or args.steps % STEPS_PER_GENERATION:
        p.error("--steps must be even and >= 2 (two optimizer steps per rollout batch)")
    return args


def num_train_prompts(steps: int) -> int:
    """What the run consumes (each prompt once), at least one rollout batch per curriculum stage (2 stages)."""
    return max(steps // STEPS_PER_GENERATION * PROMPTS_PER_ROLLOUT, 2 * PROMPTS_PER_ROLLOUT)


def curves(log_history: list[dict]) -> dict:
    """Per-step entropy and reward (reward only on the steps that generated)."""
    entropy = {int(e["step"]): float(e["entropy"]) for e in log_history if "entropy" in e and "step" in e}
    reward = {int(e["step"]): float(e["reward"]) for e in log_history if "reward" in e and "step" in e}
    se = {int(e["step"]): float(e["semantic_entropy/mean"]) for e in log_history if "semantic_entropy/mean" in e}
    return {"entropy": entropy, "reward": reward, "semantic_entropy": se}


def summarise_curves(c: dict) -> dict:
    ent = [c["entropy"][s] for s in sorted(c["entropy"])]
    rew = [c["reward"][s] for s in sorted(c["reward"])]
    last = rew[-max(1, len(rew) // 2) :]  # the second half of the generating steps
    return {
        "entropy_mean": sum(ent) / len(ent) if ent else None,
        "entropy_final": ent[-1] if ent else None,
        "reward_mean": sum(rew) / len(rew) if rew else None,
        "reward_last_half": sum(last) / len(last) if last else None,
    }


def train_one(args, method: str, seed: int, run_dir: Path, ranking_dir: Path) -> dict:
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "train.py"), "--config", str(RECIPE),
        "--output_dir", str(run_dir),
        "--seed", str(seed),
        "--max_steps", str(args.steps),
        "--max_completion_length", str(args.max_completion_length),
        "--arithmetic_num_train", str(num_train_prompts(args.steps)),
        "--arithmetic_num_test", str(args.eval_prompts),
        "--arithmetic_seed", "0",
        "--log_semantic_entropy", "true",
        # one checkpoint at the last step, model only: it carries trainer_state.json (the log history)
        "--save_strategy", "steps", "--save_steps", str(args.steps), "--save_only_model", "true",
        "--se_ranking_dir", str(ranking_dir),
        "--se_num_samples", str(args.se_num_samples),
        *METHODS[method],
    ]  # fmt: skip
    if method == "entropy_bonus":
        i = cmd.index("--entropy_coef")
        cmd[i + 1] = str(args.entropy_coef)
    if args.model:
        cmd += ["--model_name_or_path", args.model]
    log_path = run_dir.parent / f"{run_dir.name}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{method} seed {seed} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    state_files = sorted(run_dir.glob("**/trainer_state.json"))
    if (run_dir / "trainer_state.json").exists():
        history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    elif state_files:
        history = json.loads(state_files[-1].read_text())["log_history"]
    else:
        raise RuntimeError(f"{method}: no trainer_state.json in {run_dir}")
    c = curves(history)
    return {"wall_s": wall, "curves": c, **summarise_curves(c), "command": " ".join(cmd[3:])}


def rank_once(args, train_ds, ranking_dir: Path) -> float:
    from sec_trl.embedded import embedded_model_path
    from sec_trl.rank import ensure_ranked

    start = time.perf_counter()
    ensure_ranked(
        train_ds,
        args.model or embedded_model_path(),
        ranking_dir,
        num_samples=args.se_num_samples,
        max_new_tokens=args.max_completion_length,
        seed=0,
        show_progress=False,
    )
    return time.perf_counter() - start


def evaluate(args, model, test_ds) -> dict:
    from sec_trl.evaluate import evaluate_model

    return evaluate_model(
        model, None, test_ds, k=args.k, max_new_tokens=args.max_completion_length, batch_size=8, seed=1234
    )


def standard_error(per_prompt_correct: list[int], k: int) -> float | None:
    """Standard error of avg@k over prompts (per-prompt accuracy c_i / k; ddof 1). Sampling noise only."""
    n = len(per_prompt_correct)
    if n < 2:
        return None
    acc = [c / k for c in per_prompt_correct]
    mean = sum(acc) / n
    return (sum((a - mean) ** 2 for a in acc) / (n - 1) / n) ** 0.5


def aggregate(runs: list[dict], k: int) -> dict:
    def mean(key):
        vals = [r[key] for r in runs if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    out = {key: mean(key) for key in ("entropy_mean", "entropy_final", "reward_mean", "reward_last_half", "wall_s")}
    for key in (f"avg@{k}", "pass@1", f"pass@{k}", "mean_completion_length"):
        vals = [r["eval"][key] for r in runs if "eval" in r]
        out[key] = sum(vals) / len(vals) if vals else None
    ses = [standard_error(r["eval"]["per_prompt_correct"], k) for r in runs if "eval" in r]
    ses = [x for x in ses if x is not None]
    out[f"avg@{k}_se"] = (sum(x * x for x in ses) ** 0.5 / len(ses)) if ses else None  # SE of the mean over seeds
    return out


def markdown_table(results: dict) -> str:
    k = results["config"]["k"]
    head = (
        f"| method | entropy (mean over training) | entropy (final step) | reward (last half) | "
        f"held-out avg@{k} (± SE) | pass@{k} | mean length | wall (s) |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def f(x, p=3):
        return "" if x is None else f"{x:.{p}f}"

    def pm(x, se):
        return f(x) if se is None else f"{f(x)} ± {f(se)}"

    base = results.get("base")
    if base:
        se = standard_error(base["per_prompt_correct"], k)
        lines.append(
            f"| base model | | | | {pm(base[f'avg@{k}'], se)} | {f(base[f'pass@{k}'])} | "
            f"{f(base['mean_completion_length'], 1)} | |"
        )
    for name, m in results["methods"].items():
        a = m["summary"]
        lines.append(
            f"| {name} | {f(a['entropy_mean'])} | {f(a['entropy_final'])} | {f(a['reward_last_half'])} | "
            f"{pm(a[f'avg@{k}'], a.get(f'avg@{k}_se'))} | {f(a[f'pass@{k}'])} | "
            f"{f(a['mean_completion_length'], 1)} | {f(a['wall_s'], 0)} |"
        )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_r) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, m in results["methods"].items():
        for key, ax in (("entropy", ax_e), ("reward", ax_r)):
            per_step: dict[int, list[float]] = {}
            for run in m["runs"]:
                for s, v in run["curves"][key].items():
                    per_step.setdefault(int(s), []).append(v)
            steps = sorted(per_step)
            if steps:
                ax.plot(steps, [sum(per_step[s]) / len(per_step[s]) for s in steps], marker="o", ms=3, label=name)
    ax_e.set(xlabel="optimizer step", ylabel="mean token entropy (nats)", title="Token entropy")
    ax_r.set(xlabel="optimizer step", ylabel="mean reward (accuracy)", title="Training reward (generating steps)")
    ax_r.legend(fontsize=8, ncol=2)
    n_seeds = results["config"]["seeds"]
    fig.suptitle(f"SmolLM2-135M-Instruct, generated arithmetic, {results['config']['steps']} steps, {n_seeds} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(results: dict, out: Path) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out / "results.json")


def report(path: Path) -> dict:
    results = json.loads(path.read_text())
    for m in results["methods"].values():
        m["summary"] = aggregate(m["runs"], results["config"]["k"])
    plot(results, path.parent / "study.png")
    table = markdown_table(results)
    (path.parent / "table.md").write_text(table + "\n")
    print(table)
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.report:
        return report(Path(args.report))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads > 0:  # inherited by the training subprocesses
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    from sec_trl.data import make_arithmetic_splits

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    splits = make_arithmetic_splits(num_train_prompts(args.steps), args.eval_prompts, seed=0)
    results = {
        "config": {
            "command": " ".join([sys.executable, *sys.argv]) if argv is None else f"study.py {' '.join(argv)}",
            "methods": args.methods,
            "flags": {m: METHODS[m] for m in args.methods},
            "seeds": args.seeds,
            "steps": args.steps,
            "train_prompts": num_train_prompts(args.steps),
            "eval_prompts": args.eval_prompts,
            "k": args.k,
            "max_completion_length": args.max_completion_length,
            "se_num_samples": args.se_num_samples,
            "threads": args.threads,
            "model": args.model or "embedded SmolLM2-135M-Instruct",
            "recipe": str(RECIPE.relative_to(ROOT)),
        },
        "base": None,
        "methods": {},
    }
    t0 = time.perf_counter()

    ranking_dir = out / "se_ranking"
    if any("--curriculum" in METHODS[m] for m in args.methods):
        results["ranking_wall_s"] = rank_once(args, splits["train"], ranking_dir)
        print(f"ranked {len(splits['train'])} train prompts in {results['ranking_wall_s']:.0f} s", flush=True)
        save(results, out)

    results["base"] = evaluate(args, args.model or "embedded", splits["test"])
    print(f"base model: avg@{args.k} {results['base'][f'avg@{args.k}']:.3f}", flush=True)
    save(results, out)

    for method in args.methods:
        runs = []
        for seed in range(args.seeds):
            run_dir = out / "runs" / f"{method}-seed{seed}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run = train_one(args, method, seed, run_dir, ranking_dir)
            run["seed"] = seed
            run["eval"] = evaluate(args, str(run_dir), splits["test"])
            if not args.keep_models:
                for weights in run_dir.glob("**/*.safetensors"):
                    weights.unlink()
            runs.append(run)
            results["methods"][method] = {"runs": runs, "summary": aggregate(runs, args.k)}
            save(results, out)
            print(
                f"{method} seed {seed}: {run['wall_s']:.0f} s, entropy mean {run['entropy_mean']}, "
                f"avg@{args.k} {run['eval'][f'avg@{args.k}']:.3f}",
                flush=True,
            )
        plot(results, out / "study.png")

    results["total_wall_s"] = time.perf_counter() - t0
    save(results, out)
    plot(results, out / "study.png")
    table = markdown_table(results)
    (out / "table.md").write_text(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
