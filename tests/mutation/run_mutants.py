"""Hand-written mutation testing of the core modules: apply one small, realistic bug at a time to a temporary copy
of the checkout, run the fast tests that should catch it, and report which bugs survive.

    python tests/mutation/run_mutants.py                 # all mutants (about 15 min on 2 cores)
    python tests/mutation/run_mutants.py --only S1 T3    # some of them
    python tests/mutation/run_mutants.py --list
    python tests/mutation/run_mutants.py --slow          # the mutants only slow tests catch, against those
    python tests/mutation/run_mutants.py --check         # only check that every mutant still applies (1 s)

Nothing in the checkout is modified: the copy (tracked and untracked, non-ignored files) lives in a temporary
directory and is put first on PYTHONPATH, so it shadows an editable install. Each mutant runs its test files with
`-x` (stop at the first failure); a mutant is *killed* when the tests fail (or time out), *survives* when they
pass. The unmutated copy is run first on the union of the test files: it must pass. The results are written to
tests/README.md by hand, with the survivors kept and why (see there).

Before anything runs, every selected mutant is checked (`check_mutants`): its file exists, its `old` text occurs at
least `occurrence + 1` times, `new` differs from `old`, the mutated file still compiles and its code really changes
(not only a comment or a docstring), and its test files exist. Any problem is an error (exit 2, every problem
listed): a refactor that moves the mutated code makes the mutant stale, and a stale mutant must be rewritten, never
skipped. `tests/test_mutants_apply.py` runs the same check in the fast suite.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS  # noqa: E402


ROOT = Path(__file__).resolve().parents[2]
# seconds per mutant run (--timeout): far above any fast test file on an idle machine; a hang counts as killed, but
# is reported as "killed (timeout)": on a machine shared with other jobs, rerun those with a larger --timeout
TIMEOUT = 900


def _match_start(text: str, old: str, occurrence: int) -> int:
    """Index of the `occurrence`-th (0-based) match of `old` in `text`, or -1 when there are fewer matches."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.find(old, start + 1)
        if start < 0:
            return -1
    return start


def mutate(text: str, mutant: dict) -> str | None:
    """`text` with the mutant applied, or None when its `old` does not occur `occurrence + 1` times."""
    start = _match_start(text, mutant["old"], mutant.get("occurrence", 0))
    if start < 0:
        return None
    return text[:start] + mutant["new"] + text[start + len(mutant["old"]) :]


def _code_only(tree: ast.AST) -> str:
    """The AST without docstrings, dumped: equal for two sources that differ only in comments and docstrings."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def check_mutants(mutants: list[dict], root: Path = ROOT) -> list[str]:
    """Every reason a mutant cannot be run as written, one line each (empty: all apply). No test runs."""
    problems = []
    seen = set()
    originals: dict[str, tuple[str, str]] = {}
    for m in mutants:
        where = f"{m['id']} ({m['file']})"
        if m["id"] in seen:
            problems.append(f"{where}: duplicate mutant id")
        seen.add(m["id"])
        path = root / m["file"]
        if not path.is_file():
            problems.append(f"{where}: no such file")
            continue
        if m["new"] == m["old"]:
            problems.append(f"{where}: `new` equals `old`, nothing would change")
            continue
        if m["file"] not in originals:
            text = path.read_text()
            originals[m["file"]] = (text, _code_only(ast.parse(text)) if m["file"].endswith(".py") else text)
        text, code = originals[m["file"]]
        occurrence = m.get("occurrence", 0)
        mutated = mutate(text, m)
        if mutated is None:
            found = text.count(m["old"])
            problems.append(
                f"{where}: stale, {m['old']!r} occurs {found} time(s), the mutant needs occurrence {occurrence} "
                "(0-based): the code changed, rewrite the mutant against it"
            )
            continue
        if m["file"].endswith(".py"):
            try:
                tree = ast.parse(mutated)
            except SyntaxError as exc:
                problems.append(f"{where}: the mutated file does not compile ({exc.msg}, line {exc.lineno})")
                continue
            if _code_only(tree) == code:
                problems.append(f"{where}: the change touches only comments or docstrings, not code")
        for test in [*m["tests"], *(m.get("slow") or [])]:
            if not (root / test.split("::")[0]).is_file():
                problems.append(f"{where}: no such test file {test}")
    return problems


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def apply(copy: Path, mutant: dict) -> str:
    """Replace the `occurrence`-th (0-based) match of `old` by `new` in the copy; return the original text."""
    path = copy / mutant["file"]
    text = path.read_text()
    mutated = mutate(text, mutant)
    if mutated is None:  # check_mutants ran first, so only if the copy differs from the checkout
        raise SystemExit(f"{mutant['id']}: {mutant['old']!r} not found in {mutant['file']} (the code changed?)")
    path.write_text(mutated)
    return text


def run_tests(copy: Path, tests: list[str], timeout: float = TIMEOUT) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    start = time.monotonic()
    try:
        result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)", time.monotonic() - start
    elapsed = time.monotonic() - start
    if result.returncode == 0:
        return "SURVIVED", elapsed
    if result.returncode == 5:
        raise SystemExit(f"no test collected by {tests}")
    return "killed", elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="mutant ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--slow", action="store_true", help="only the mutants with slow tests, run against those")
    parser.add_argument("--tests", nargs="*", help="run these test files for every mutant instead of its own")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help=f"seconds per test run (default {TIMEOUT})")
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies, then exit")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - {m["id"] for m in MUTANTS})
    if unknown:
        parser.error(f"unknown mutant id(s): {' '.join(unknown)} (see --list)")
    mutants = [m for m in MUTANTS if not args.only or m["id"] in args.only]
    if args.tests:
        mutants = [{**m, "tests": args.tests} for m in mutants]
    if args.slow:
        mutants = [{**m, "tests": m["slow"]} for m in mutants if m["slow"]]
    if args.list:
        for m in mutants:
            print(f"{m['id']:>4}  {m['file']:<32} {m['why']}")
        return
    problems = check_mutants(mutants)
    if problems:  # a stale mutant is an error, never a skip: it would count as neither killed nor survived
        print(f"error: {len(problems)} problem(s) with the mutants (tests/mutation/mutants.py):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2)
    if args.check:
        print(f"all {len(mutants)} mutants apply")
        return
    with tempfile.TemporaryDirectory(prefix="sec_trl-mutants-") as tmp:
        copy = Path(tmp)
        copy_checkout(copy)
        if not args.no_baseline:
            tests = sorted({t for m in mutants for t in m["tests"]})
            outcome, elapsed = run_tests(copy, tests, args.timeout)
            print(
                f"baseline (unmutated): {'pass' if outcome == 'SURVIVED' else 'FAIL'} in {elapsed:.0f} s", flush=True
            )
            if outcome != "SURVIVED":
                raise SystemExit("the unmutated tests fail: fix that first")
        results = []
        for m in mutants:
            original = apply(copy, m)
            try:
                outcome, elapsed = run_tests(copy, m["tests"], args.timeout)
            finally:
                (copy / m["file"]).write_text(original)
            results.append((m, outcome))
            print(f"{m['id']:>4}  {outcome:<17} {elapsed:5.0f} s  {m['file']}: {m['why']}", flush=True)
    killed = sum(outcome.startswith("killed") for _, outcome in results)
    print(f"\nkilled {killed} of {len(results)} ({100 * killed / max(len(results), 1):.0f}%)")
    for m, outcome in results:
        if outcome == "SURVIVED":
            print(f"  survived: {m['id']} {m['file']}: {m['why']}")
        elif outcome == "killed (timeout)":
            print(f"  timed out (counted as killed; on a busy machine rerun with a larger --timeout): {m['id']}")


if __name__ == "__main__":
    main()
