"""The hand-written mutants (`tests/mutation/mutants.py`) still apply to the code: no test runs, about a second.

A refactor that moves or rewrites the mutated lines makes a mutant stale (its `old` text no longer occurs), and a
stale mutant silently stops testing anything. This fails CI instead, naming each stale mutant; rewrite it against
the current code (tests/README.md, "Mutation testing").
"""

import importlib.util
import sys
from pathlib import Path

import pytest


MUTATION = Path(__file__).resolve().parent / "mutation"


def _runner():
    sys.path.insert(0, str(MUTATION))  # run_mutants imports `mutants` from its own folder
    try:
        spec = importlib.util.spec_from_file_location("run_mutants", MUTATION / "run_mutants.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(MUTATION))
    return module


run_mutants = _runner()
MUTANTS = run_mutants.MUTANTS
ROOT = run_mutants.ROOT


def test_every_mutant_applies_to_the_current_code():
    assert run_mutants.check_mutants(MUTANTS) == []


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m["id"] for m in MUTANTS])
def test_old_occurs_often_enough_and_new_differs(mutant):
    text = (ROOT / mutant["file"]).read_text()
    assert mutant["new"] != mutant["old"]
    assert text.count(mutant["old"]) >= mutant["occurrence"] + 1, (
        f"{mutant['id']} is stale: {mutant['old']!r} is no longer in {mutant['file']} "
        f"{mutant['occurrence'] + 1} time(s)"
    )


def _stale(tmp_path, source, **mutant):
    (tmp_path / "sec_trl").mkdir(exist_ok=True)
    (tmp_path / "sec_trl" / "m.py").write_text(source)
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "tests" / "test_m.py").write_text("")
    base = dict(id="X1", file="sec_trl/m.py", tests=["tests/test_m.py"], occurrence=0, slow=None)
    return run_mutants.check_mutants([{**base, **mutant}], root=tmp_path)


SOURCE = 'def f(x):\n    """x + 1, then x + 1 again."""\n    return x + 1  # x + 1\n'


def test_the_check_names_each_kind_of_problem(tmp_path):
    assert _stale(tmp_path, SOURCE, old="return x + 1", new="return x") == []
    (problem,) = _stale(tmp_path, SOURCE, old="return x + 2", new="return x")
    assert problem.startswith("X1 (sec_trl/m.py): stale, 'return x + 2' occurs 0 time(s)")
    (problem,) = _stale(tmp_path, SOURCE, old="return x + 1", new="return x", occurrence=1)
    assert "occurs 1 time(s), the mutant needs occurrence 1" in problem
    (problem,) = _stale(tmp_path, SOURCE, old="x + 1", new="x + 1")
    assert "`new` equals `old`" in problem
    (problem,) = _stale(tmp_path, SOURCE, old="return x + 1", new="return x +")
    assert "does not compile" in problem
    # the first `x + 1` is in the docstring, the third in a comment: neither changes the code
    for occurrence in (0, 3):
        (problem,) = _stale(tmp_path, SOURCE, old="x + 1", new="x - 1", occurrence=occurrence)
        assert "only comments or docstrings" in problem
    assert _stale(tmp_path, SOURCE, old="x + 1", new="x - 1", occurrence=2) == []
    (problem,) = _stale(tmp_path, SOURCE, old="return x + 1", new="return x", tests=["tests/test_gone.py::t"])
    assert "no such test file tests/test_gone.py::t" in problem


def test_the_runner_stops_on_a_stale_mutant_before_running_anything(monkeypatch, capsys):
    stale = {**MUTANTS[0], "old": "this text is in no file"}
    monkeypatch.setattr(run_mutants, "MUTANTS", [stale, *MUTANTS[1:]])
    monkeypatch.setattr(run_mutants, "run_tests", lambda *a: pytest.fail("tests ran despite a stale mutant"))
    with pytest.raises(SystemExit) as exit_info:
        run_mutants.main([])
    assert exit_info.value.code == 2
    assert f"{stale['id']} ({stale['file']}): stale" in capsys.readouterr().err
