"""Entropy-collapse study: SENT against its baselines on the embedded task, several paired seeds, on the CPU.

    python benchmarks/study.py --out runs/study                 # the study (~1.5-2 h on 2 cores, resumable)
    python benchmarks/study.py --report benchmarks/results/entropy_collapse.json   # table + figure from the JSON
    python benchmarks/study.py --quick --out /tmp/study-quick   # a few minutes, embedded model
    python benchmarks/study.py --quick --model path/to/tiny --out /tmp/study-tiny   # seconds (tests)

Every run is `accelerate launch train.py --config recipes/smollm2_arith_cpu.yaml` plus the regime's flags
(:data:`REGIME`: learning rate 5e-5, 24 completion tokens, two optimizer steps per rollout batch, so the KL terms
of SENT and KL-Cov act on every second step) plus the method's flags (:data:`METHODS`). Runs are paired: seed `s`
gives every method the same training prompts in the same order (the curriculum methods excepted: their order is the
treatment), the same generation seeds and the same evaluation seed. Each trained model is evaluated on the same
held-out prompts (questions disjoint from the training split), `k` samples each.

The study runs `--jobs` runs at a time (1 torch thread each; `benchmarks/_common.py` says why), writes each run's
result to `<out>/runs/<method>-seed<s>/result.json` as soon as it is evaluated, and skips finished runs when
started again: an interrupted study continues where it stopped. `<out>/entropy_collapse.json` (schema in
:func:`sec_trl_study_json`) is rewritten after every run; `--report` renders the table and figure from it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RECIPE = ROOT / "recipes" / "smollm2_arith_cpu.yaml"


# The regime every method shares (pilot runs that chose it: benchmarks/STUDY.md). On top of the recipe.
REGIME: dict[str, str] = {
    "learning_rate": "5e-5",
    "max_completion_length": "24",
    "steps_per_generation": "2",  # > gradient_accumulation_steps (1): off-policy updates, so the KL terms act
    "gradient_accumulation_steps": "1",
    "cov_ratio": "0.03",  # several tokens per loss computation (~190 tokens each); the papers' 2e-4 gives k = 1
}
# name -> flags on top of the recipe + REGIME. The recipe's own regulariser is SENT (kl_cov_coef 0.1, x2 / x0.5).
# Each baseline carries its paper's coefficients (docs/method.md); cov_ratio is the study's scaled value.
METHODS: dict[str, list[str]] = {
    "grpo": ["--token_regularizer", "none"],
    "entropy_bonus": ["--token_regularizer", "none", "--entropy_coef", "0.001"],
    "80_20": ["--token_regularizer", "none", "--top_entropy_quantile", "0.2"],
    "clip_cov": ["--token_regularizer", "clip_cov", "--epsilon", "1.0", "--epsilon_high", "1.0"],
    "kl_cov": ["--token_regularizer", "kl_cov", "--kl_cov_coef", "1.0"],
    "sent_token": ["--token_regularizer", "sent"],
    "se_curriculum": ["--token_regularizer", "none", "--curriculum", "true"],
    "grpo_se_shuffled": ["--token_regularizer", "none", "--curriculum", "true", "--curriculum_stages", "1"],
    "sent_full": ["--token_regularizer", "sent", "--curriculum", "true"],
}
# The sweep (not in the default set; `--methods grpo sent_token sent_kl1 sent_k10 sent_spg4 --name
# entropy_collapse_sweep`): why SENT's token loss does or does not hold entropy at this scale. One change each.
SWEEP_METHODS: dict[str, list[str]] = {
    "sent_kl1": [*METHODS["sent_token"], "--kl_cov_coef", "1.0"],  # coefficient: KL-Cov's 1 instead of 0.1
    "sent_k10": [*METHODS["sent_token"], "--cov_ratio", "0.1"],  # k: ~3x more tokens per loss computation
    "sent_spg4": [*METHODS["sent_token"], "--steps_per_generation", "4"],  # 3 of 4 updates off-policy (KL active)
}
DEFAULT_METHODS = list(METHODS)
METHODS.update(SWEEP_METHODS)
# The pre-registered token-loss study (benchmarks/PREREGISTRATION.md; `--preset token_study`): three arms, paired by
# seed. sent_no_kl is SENT's loss with its KL term off, i.e. policy gradient without PPO clipping: it separates what
# SENT's dropped clipping does from what its |logp - old_logp| term on k tokens does.
TOKEN_METHODS: dict[str, list[str]] = {
    "sent_no_kl": [*METHODS["sent_token"], "--kl_cov_coef", "0"],
}
METHODS.update(TOKEN_METHODS)
TOKEN_STUDY_METHODS = ["grpo", "sent_token", "sent_no_kl"]
# Its regime (chosen by the pilots of PREREGISTRATION.md; on top of the recipe, like REGIME): 60 steps, lr 5e-5 after
# a 6-step linear warm-up (the first updates at full rate are where the exploratory study's runs derailed), and
# cov_ratio 0.05 so that k is several tokens (~150 low-entropy tokens per loss computation -> k ~ 7).
TOKEN_REGIME: dict[str, str] = {
    **REGIME,
    "lr_scheduler_type": "constant_with_warmup",
    "warmup_steps": "6",
    "cov_ratio": "0.05",
}
PRESETS = {
    "token_study": {
        "methods": TOKEN_STUDY_METHODS,
        "regime": TOKEN_REGIME,
        "steps": 60,
        "seeds": 8,
        "name": "token_study",
        "archive": "benchmarks/results/token_study",
    },
}
# Order of the runs within a seed: the three ranked-data methods far apart, so that the first one has cached the
# seed's ranking before the next one starts (they share <out>/se_ranking-seed<s>).
RUN_ORDER = [
    "se_curriculum", "grpo", "kl_cov", "sent_full", "entropy_bonus", "80_20", "grpo_se_shuffled", "clip_cov",
    "sent_token", *SWEEP_METHODS, "sent_no_kl",
]  # fmt: skip
QUICK_METHODS = ["grpo", "sent_full"]
PROMPTS_PER_ROLLOUT = 4  # recipe: per_device_train_batch_size 8 x steps_per_generation 2 / num_generations 4
STEPS_PER_GENERATION = 2
REFERENCE = "grpo"
# Per-method metric holding k (tokens selected per loss computation), from the trainer's `<prefix>/<name>_tokens`
K_METRICS = {
    "sent": "sent/high_cov_tokens",
    "kl_cov": "kl_cov/high_cov_tokens",
    "clip_cov": "clip_cov/cov_clipped_tokens",
}
# Per-step metrics kept when logged: step-record key -> trainer metric
EXTRA_METRICS = {
    "high_cov_abs_log_ratio": "sent/high_cov_abs_log_ratio",  # SENT: mean |logp - old_logp| on the strong-KL tokens
    "learning_rate": "learning_rate",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/study", help="output directory (finished runs in it are kept: resume)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=sorted(METHODS),
        help="default: the nine of the study (not the sweep's)",
    )
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="a pre-registered study's settings")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (0, 1, ...); default 3 (--quick: 1)")
    p.add_argument("--first_seed", type=int, default=0, help="seeds run are first_seed, first_seed + 1, ... (pilots)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (even: 2 per rollout batch; 24)")
    p.add_argument(
        "--archive",
        default=None,
        help="folder (committed) holding each finished run's result.json as <method>-seed<s>.json: runs found "
        "there are restored and skipped, so a study resumes on a fresh clone",
    )
    p.add_argument("--eval_prompts", type=int, default=64, help="held-out prompts")
    p.add_argument("--k", type=int, default=8, help="samples per held-out prompt (avg@k, pass@k)")
    p.add_argument("--se_num_samples", type=int, default=4, help="samples per prompt for the SE ranking")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each 1 thread with --threads 1)")
    p.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--set", nargs="*", default=[], metavar="FLAG=VALUE", help="override a REGIME flag (sweeps)")
    p.add_argument("--keep_models", action="store_true", help="keep the trained weights (default: deleted after eval)")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads per process (0: library default)")
    p.add_argument("--name", default=None, help="stem of the JSON / table / figure in --out (entropy_collapse)")
    p.add_argument("--report", default=None, metavar="JSON", help="only render the table and figure of a study JSON")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 methods, 1 seed, 2 steps, 4 prompts, k=2")
    p.add_argument("--run_one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)  # worker entry point
    args = p.parse_args(argv)
    preset = PRESETS.get(args.preset, {})
    args.regime = dict(preset.get("regime", REGIME))
    args.methods = args.methods or preset.get("methods")
    args.steps = preset.get("steps", 24) if args.steps is None else args.steps
    args.seeds = preset.get("seeds") if args.seeds is None else args.seeds
    args.name = args.name or preset.get("name", "entropy_collapse")
    args.archive = args.archive or preset.get("archive")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--set takes FLAG=VALUE (e.g. cov_ratio=0.05), got {item!r}")
        args.regime[key.lstrip("-")] = value
    if args.quick:
        args.methods = args.methods or QUICK_METHODS
        args.seeds = args.seeds or 1
        args.steps, args.eval_prompts, args.k = 2, 4, 2
        args.regime["max_completion_length"], args.se_num_samples = "8", 2
    args.methods = args.methods or list(DEFAULT_METHODS)
    args.seeds = 3 if args.seeds is None else args.seeds
    if args.steps < 2 or args.steps % STEPS_PER_GENERATION:
        p.error("--steps must be even and >= 2 (two optimizer steps per rollout batch)")
    if args.seeds < 1 or args.jobs < 1:
        p.error("--seeds and --jobs must be >= 1")
    return args


def num_train_prompts(steps: int) -> int:
    """What one run consumes (each prompt once); at least one rollout batch per curriculum stage (2 stages)."""
    return max(steps // STEPS_PER_GENERATION * PROMPTS_PER_ROLLOUT, 2 * PROMPTS_PER_ROLLOUT)


def splits(args):
    from sec_trl.data import make_arithmetic_splits

    return make_arithmetic_splits(num_train_prompts(args.steps), args.eval_prompts, seed=0)


def seeds_of(args) -> list[int]:
    return list(range(args.first_seed, args.first_seed + args.seeds))


def eval_seed(seed: int) -> int:
    return 1000 + seed  # the same evaluation samples for every method of a seed


def train_command(args, method: str, seed: int, run_dir: Path, out: Path) -> list[str]:
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "train.py"), "--config", str(RECIPE),
        "--output_dir", str(run_dir),
        "--seed", str(seed),
        "--max_steps", str(args.steps),
        "--arithmetic_num_train", str(num_train_prompts(args.steps)),
        "--arithmetic_num_test", str(args.eval_prompts),
        "--arithmetic_seed", "0",
        # one checkpoint at the last step, model only: it carries trainer_state.json (the log history)
        "--save_strategy", "steps", "--save_steps", str(args.steps), "--save_only_model", "true",
        "--se_ranking_dir", str(out / f"se_ranking-seed{seed}"),
        "--se_num_samples", str(args.se_num_samples),
    ]  # fmt: skip
    for key, value in args.regime.items():
        cmd += [f"--{key}", value]
    cmd += METHODS[method]
    if args.model:
        cmd += ["--model_name_or_path", args.model]
    return cmd


def step_records(log_history: list[dict]) -> list[dict]:
    """One record per optimizer step: entropy, reward (None on steps that reuse a rollout batch), covariance, k."""
    steps: dict[int, dict] = {}
    for entry in log_history:
        if "step" not in entry or "entropy" not in entry:
            continue
        rec = {
            "step": int(entry["step"]),
            "entropy": float(entry["entropy"]),
            "reward": float(entry["reward"]) if "reward" in entry else None,
            "cov": float(entry["cov/logp_advantage"]) if "cov/logp_advantage" in entry else None,
        }
        for metric in K_METRICS.values():
            if metric in entry:
                rec["k"] = float(entry[metric])
        for key, metric in EXTRA_METRICS.items():
            if metric in entry:
                rec[key] = float(entry[metric])
        steps[rec["step"]] = rec
    return [steps[s] for s in sorted(steps)]


def read_history(run_dir: Path) -> list[dict]:
    states = sorted(run_dir.glob("**/trainer_state.json"))
    if not states:
        raise RuntimeError(f"no trainer_state.json under {run_dir}")
    return json.loads(states[-1].read_text())["log_history"]


def evaluate(args, model, seed: int) -> dict:
    from sec_trl.evaluate import evaluate_model

    res = evaluate_model(
        model,
        None,
        splits(args)["test"],
        k=args.k,
        max_new_tokens=int(args.regime["max_completion_length"]),
        batch_size=8,
        seed=eval_seed(seed),
    )
    k = args.k
    return {
        "k": k,
        "num_prompts": res["num_prompts"],
        "avg_at_k": res[f"avg@{k}"],
        "pass_at_k": res[f"pass@{k}"],
        "per_prompt_correct": res["per_prompt_correct"],
        "mean_completion_length": res["mean_completion_length"],
        "seconds": res["seconds"],
    }


def run_dir_of(out: Path, method: str, seed: int) -> Path:
    """`<out>/runs/<method>-seed<s>`: the run's checkpoint folder and `result.json`; its logs sit beside it."""
    return out / "runs" / f"{method}-seed{seed}"


def run_one(args, method: str, seed: int) -> dict:
    """Train and evaluate one (method, seed) in this process; write and return its result."""
    from sec_trl.ranking.cache import write_json_atomic

    out = Path(args.out).resolve()
    run_dir = run_dir_of(out, method, seed)
    result_path = run_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    if run_dir.exists():  # an interrupted run starts over: a run is the unit of resumption
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    cmd = train_command(args, method, seed, run_dir, out)
    log_path = run_dir.with_name(f"{run_dir.name}.log")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    train_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed (exit {proc.returncode}); see {log_path}")
    steps = step_records(read_history(run_dir))
    model_dir = run_dir if (run_dir / "config.json").exists() else sorted(run_dir.glob("checkpoint-*"))[-1]
    result = {
        "method": method,
        "seed": seed,
        "steps": steps,
        "eval": evaluate(args, str(model_dir), seed),
        "train_seconds": train_s,
        "command": " ".join(cmd[3:]).replace(str(ROOT) + "/", "").replace(str(out), "<out>"),
    }
    if not args.keep_models:
        for weights in run_dir.glob("**/*.safetensors"):
            weights.unlink()
    write_json_atomic(result_path, result)
    return result


def config_of(args) -> dict:
    return {
        "model": args.model or "embedded SmolLM2-135M-Instruct",
        "recipe": str(RECIPE.relative_to(ROOT)),
        "regime": args.regime,
        "steps": args.steps,
        "train_prompts": num_train_prompts(args.steps),
        "prompts_per_rollout": PROMPTS_PER_ROLLOUT,
        "eval_prompts": args.eval_prompts,
        "k": args.k,
        "seeds": seeds_of(args),
        "eval_seeds": [eval_seed(s) for s in seeds_of(args)],
        "se_num_samples": args.se_num_samples,
        "threads": args.threads,
        "methods": {m: METHODS[m] for m in args.methods},
        "reference_method": REFERENCE,
        "preset": args.preset,
    }


def sec_trl_study_json(args, out: Path) -> dict:
    """`{"config", "base", "runs": [{"method", "seed", "steps": [{"step", "entropy", "reward", "cov"[, "k"]}],
    "eval": {"k", "num_prompts", "avg_at_k", "pass_at_k", "per_prompt_correct", ...}, ...}]}` of the finished runs."""
    runs = []
    for seed in seeds_of(args):
        for method in args.methods:
            path = run_dir_of(out, method, seed) / "result.json"
            if path.exists():
                runs.append(json.loads(path.read_text()))
    base_path = out / "base.json"
    base = json.loads(base_path.read_text()) if base_path.exists() else None
    return {"config": config_of(args), "base": base, "runs": runs}


def restore_archive(args, out: Path) -> Path | None:
    """Copy the archived results (committed, `<archive>/<method>-seed<s>.json`, `base.json`) into `out`'s run dirs,
    so that those runs are skipped: the study resumes from the repository on a fresh machine."""
    if not args.archive:
        return None
    archive = (ROOT / args.archive) if not Path(args.archive).is_absolute() else Path(args.archive)
    archive.mkdir(parents=True, exist_ok=True)
    for path in archive.glob("*.json"):
        if path.name == "base.json":
            target = out / "base.json"
        else:
            method, _, seed = path.stem.rpartition("-seed")
            target = run_dir_of(out, method, int(seed)) / "result.json"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return archive


def archive_run(archive: Path, out: Path, method: str, seed: int, json_path: Path) -> None:
    """A finished run's result (and the study JSON so far) into the archive, ready to commit."""
    src = out / "base.json" if method == "base" else run_dir_of(out, method, seed) / "result.json"
    shutil.copyfile(src, archive / ("base.json" if method == "base" else f"{method}-seed{seed}.json"))
    shutil.copyfile(json_path, archive.parent / json_path.name)


def worker_command(args, method: str, seed: int) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run_one", method, str(seed), "--out", str(args.out)]
    cmd += ["--steps", str(args.steps), "--eval_prompts", str(args.eval_prompts), "--k", str(args.k)]
    cmd += ["--se_num_samples", str(args.se_num_samples), "--threads", str(args.threads), "--seeds", str(args.seeds)]
    cmd += ["--first_seed", str(args.first_seed)]
    cmd += ["--set", *(f"{k}={v}" for k, v in args.regime.items()), "--name", args.name]
    if args.model:
        cmd += ["--model", args.model]
    if args.keep_models:
        cmd.append("--keep_models")
    return cmd


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.report:
        return report_of(Path(args.report))
    from sec_trl.ranking.cache import write_json_atomic  # here, not at import: --report stays light

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads > 0:  # inherited by the training subprocesses
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    if args.run_one:
        method, seed = args.run_one[0], int(args.run_one[1])
        if method == "base":
            result = evaluate(args, args.model or "embedded", seed)
            write_json_atomic(out / "base.json", result)
            return result
        return run_one(args, method, seed)

    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    json_path = out / f"{args.name}.json"
    order = [m for m in RUN_ORDER if m in args.methods]
    archive = restore_archive(args, out)
    jobs = [] if (out / "base.json").exists() else [("base", 0)]
    jobs += [(m, s) for s in seeds_of(args) for m in order if not (run_dir_of(out, m, s) / "result.json").exists()]
    print(f"{len(jobs)} job(s) to run ({args.jobs} at a time); results in {out}", flush=True)
    lock, failures, t0 = threading.Lock(), [], time.perf_counter()

    def job(method: str, seed: int) -> None:
        start = time.perf_counter()
        log = run_dir_of(out, method, seed).with_name(f"{method}-seed{seed}.worker.log")
        with open(log, "w") as fh:
            proc = subprocess.run(worker_command(args, method, seed), stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        with lock:
            if proc.returncode != 0:
                failures.append(f"{method} seed {seed} (see {log})")
                print(f"FAILED {method} seed {seed}; log {log}", flush=True)
                return
            write_json_atomic(json_path, sec_trl_study_json(args, out))
            if archive is not None:
                archive_run(archive, out, method, seed, json_path)
            print(f"done {method} seed {seed} in {time.perf_counter() - start:.0f} s "
                  f"(elapsed {time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for fut in as_completed([pool.submit(job, m, s) for m, s in jobs]):
            fut.result()
    data = sec_trl_study_json(args, out)
    write_json_atomic(json_path, data)
    if failures:
        raise SystemExit(f"{len(failures)} run(s) failed: {'; '.join(failures)}; start the study again to retry them")
    return report_of(json_path)


def report_of(path: Path) -> dict:
    """The pre-registered token study's analysis (token_study_report) for its JSONs, else the exploratory report."""
    data = json.loads(Path(path).read_text())
    if data["config"].get("preset") == "token_study" or Path(path).stem.startswith("token_study"):
        from token_study_report import report
    else:
        from study_report import report
    return report(Path(path))


if __name__ == "__main__":
    main()
