"""Answer extraction, time-bounded answer checking (real math-verify in a worker process) and the TRL rewards."""

import doctest
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sec_trl import answer_checking, answer_extraction, rewards
from sec_trl.answer_checking import (
    MAX_ANSWER_CHARS,
    MAX_TAIL_CHARS,
    AnswerChecker,
    extract_final_answer,
    get_default_checker,
)
from sec_trl.rewards import accuracy_reward, completion_text, format_reward, make_accuracy_reward


TIMEOUT = 2.0  # the adversarial checkers: every time-out here is a pair that would hang, so it fires whatever the load
# the `checker` fixture decides real pairs (sympy in the worker): a time-out there would be a wrong verdict, so it
# gets a limit no loaded machine reaches
VERDICT_TIMEOUT = 60.0
# Hostile inputs must END: a missing timeout or a quadratic scan of 100 kB hangs for minutes or hours. This bound
# is deliberately generous, so that a loaded machine never fails it; whether the time-out really fired is checked
# from the checker's counters, not from the clock. The precise cost of a check belongs in a benchmark.
HANG_LIMIT = 60.0


@pytest.fixture(scope="module")
def checker():
    c = AnswerChecker(timeout=VERDICT_TIMEOUT)
    c.start()
    yield c
    c.close()


# ---------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the result is \\boxed{42}.", "42"),
        ("\\boxed{1} first, then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # the last box wins
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),  # nested braces
        ("\\boxed{ \\{1, 2\\} }", "\\{1, 2\\}"),  # escaped braces do not group
        ("$\\boxed {x^{2}}$", "x^{2}"),
        ("\\fbox{7}", "7"),
        ("The answer is 12.", "12"),
        ("The final answer is $\\frac{3}{4}$. Thanks!", "\\frac{3}{4}"),
        ("**Answer:** 12.5", "12.5"),
        ("Answer:\n\n  -7\n", "-7"),
        ("3 apples and 4 pears give 7 fruits", "7"),  # last number
        ("it costs 1,234.50 dollars", "1234.50"),
        ("5-3 is two", "3"),  # the minus of a difference is not a sign
        ("I do not know.", None),
        ("", None),
        ("\\boxed{}", None),  # an empty box is no answer
        ("The final answer within \\boxed{} is 8.", "8"),  # a mentioned, empty box is skipped
        ("\\boxed{3} and then \\boxed{ }", "3"),  # the last non-empty box wins
        ("\\boxed{3} but \\boxed{4", "3"),  # the unclosed box is skipped
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_extract_reads_only_the_tail():
    text = "\\boxed{5}" + " filler" * (MAX_TAIL_CHARS // 7 + 10)
    assert extract_final_answer(text) is None
    assert extract_final_answer(" filler" * 10_000 + "\\boxed{5}") == "5"
    assert extract_final_answer(None) is None


# ---------------------------------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{1}{2}", "1/2", True),
        ("0.5", "1/2", True),
        ("\\dfrac12", "2/4", True),
        ("\\boxed{4}", "4", True),
        ("The answer is 4.", "\\boxed{4}", True),
        ("12", "12.0", True),
        ("1,000", "1000", True),
        ("-3", "3", False),
        ("-1/2", "1/2", False),  # the sign of a fraction counts (fast path)
        ("-\\frac{1}{2}", "\\frac{1}{2}", False),
        ("-\\frac{1}{2}", "-0.5", True),
        ("2", "3", False),
        ("0.33", "1/3", False),
        ("0.333333", "1/3", True),  # math-verify rounds decimals to 6 places (worker)
        ("x^2+2x+1", "(x+1)^2", True),  # symbolic (worker)
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("(1,2)", "(1, 2)", True),
        ("\\{1,2\\}", "\\{2,1\\}", True),
        ("x = 5", "5", True),
        ("50\\%", "0.5", True),
        ("\\text{east}", "east", True),
        ("x+1", "x+2", False),
        ("A", "B", False),
        ("", "", False),
    ],
)
def test_equivalent(checker, a, b, expected):
    assert checker.equivalent(a, b) is expected
    assert checker.equivalent(b, a) is expected  # symmetric


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("... so $x = \\boxed{\\dfrac{1}{2}}$", "0.5", True),
        ("The answer is 3", "#### 3", True),  # GSM8K-style reference
        ("\\boxed{3}", "Thus the answer is $\\boxed{3}$.", True),  # MATH-style solution as reference
        ("\\boxed{-3}", "3", False),
        ("\\boxed{(x+1)^2}", "x^2+2x+1.", True),  # a reference ending its sentence: the full stop is not maths
        ("I give up", "3", False),
        ("\\boxed{3}", None, False),
        ("\\boxed{3}", "", False),
        (None, "3", False),
    ],
)
def test_check(checker, completion, reference, expected):
    assert checker.check(completion, reference) is expected


def test_division_by_zero_is_an_answer_not_a_crash(checker):
    """A model may well write 1/0: the reward must score it, not raise (ZeroDivisionError in the fast path)."""
    assert checker.check("\\boxed{1/0}", "1") is False
    assert checker.check("so \\boxed{\\frac{3}{0}}", "3") is False
    assert checker.equivalent("1/0", "1") is False


def test_answer_length_limit_is_inclusive(checker):
    """MAX_ANSWER_CHARS: "an extracted answer LONGER than this is scored as not equal"."""
    at_limit, over = "1" * MAX_ANSWER_CHARS, "1" * (MAX_ANSWER_CHARS + 1)
    assert checker.check(f"\\boxed{{{at_limit}}}", at_limit) is True
    assert checker.check(f"\\boxed{{{over}}}", over) is False


def test_typical_arithmetic_answers_never_start_the_worker():
    c = AnswerChecker(timeout=TIMEOUT)
    completions = ["\\boxed{12}", "The answer is 0.5.", "\\boxed{\\frac{3}{4}}", "so 7 in total", "\\boxed{-2}"]
    references = ["12", "\\frac{1}{2}", "0.75", "8", "2"]
    assert c.check_batch(completions, references) == [True, True, True, False, False]
    assert c.stats["worker"] == 0 and c._worker is None
    c.close()


def test_check_batch_matches_check_and_dedupes(checker):
    completions = ["\\boxed{(x+1)^2}"] * 6 + ["\\boxed{1/2}", "no answer"]
    references = ["x^2+2x+1"] * 6 + ["0.5", "1"]
    before = checker.stats["worker"]
    assert checker.check_batch(completions, references) == [True] * 7 + [False]
    assert checker.stats["worker"] - before <= 1  # six identical pairs, at most one worker call
    assert [checker.check(c, r) for c, r in zip(completions, references, strict=True)] == [True] * 7 + [False]
    with pytest.raises(ValueError):
        checker.check_batch(["1"], [])


# ---------------------------------------------------------------------------------------------------------------
# Adversarial completions: bounded time in any thread, never run code
# ---------------------------------------------------------------------------------------------------------------

_NESTED = "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}"
ADVERSARIAL = {
    "100kB_text": ("lorem ipsum dolor " * 6000, "3"),
    "100kB_then_box": ("x" * 100_000 + " \\boxed{3}", "4"),
    "100kB_open_braces": ("{" * 100_000, "3"),
    "power_tower": ("\\boxed{9^{9^{9^{9}}}}", "3"),  # hangs sympy: must time out in the worker
    "nested_5000": (_NESTED, "1"),
    "nested_5000_tail": (_NESTED[-MAX_TAIL_CHARS:], "1"),
    "no_answer": ("I have no idea what to do here", "3"),
    "unbalanced_open": ("\\boxed{\\frac{1}{2}", "5"),
    "unbalanced_close": ("}}}{{{\\boxed{{{}", "1/2"),
    "unbalanced_braces_only": ("\\boxed{" * 3000, "1"),
}


def _score_all(c):
    """Check every adversarial pair (all must be False); returns the pairs that timed out in the worker."""
    timed_out = []
    for name, (completion, reference) in ADVERSARIAL.items():
        before = c.stats["timeouts"]
        assert c.check(completion, reference) is False, name
        if c.stats["timeouts"] > before:
            timed_out.append(name)
    return timed_out


def test_adversarial_completions_are_bounded_in_main_thread():
    c = AnswerChecker(timeout=TIMEOUT)
    c.start()
    try:
        start = time.monotonic()
        # only the power tower reaches the worker and hangs sympy there: it is cut off by the time-out
        assert _score_all(c) == ["power_tower"]
        assert time.monotonic() - start < HANG_LIMIT
    finally:
        c.close()


def test_adversarial_completions_are_bounded_off_the_main_thread():
    """TRL runs async reward functions on a daemon event-loop thread, where signal-based timeouts cannot work."""
    c = AnswerChecker(timeout=TIMEOUT)
    c.start()
    try:
        result = []
        thread = threading.Thread(target=lambda: result.extend(_score_all(c)), daemon=True)
        thread.start()
        thread.join(timeout=HANG_LIMIT)
        assert not thread.is_alive(), f"the checks did not end within {HANG_LIMIT} s"
        assert result == ["power_tower"]

        # And several threads at once (one worker, a lock): each pathological pair still ends, two fresh time-outs
        # (the cached power tower is not asked again).
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(c.check, f"\\boxed{{{k}^{{{k}^{{{k}^{{{k}}}}}}}}}", "3") for k in (7, 8)]
            futures += [pool.submit(c.check, completion, ref) for completion, ref in ADVERSARIAL.values()]
            assert [f.result(timeout=HANG_LIMIT) for f in futures] == [False] * len(futures)
        assert c.stats["timeouts"] == 1 + 2
    finally:
        c.close()


def test_worker_restarts_after_timeout():
    checker = AnswerChecker(timeout=TIMEOUT)
    try:
        checker.start()
        pid = checker._worker.proc.pid
        assert checker.check("\\boxed{" + "{" * 15 + "1" + "}" * 15 + "}", "1") is False  # exponential parse time
        assert checker.stats["timeouts"] == 1  # it was cut off, not decided
        # The next pair needs the worker (symbolic) and gets a fresh one.
        checker.timeout = VERDICT_TIMEOUT  # a real verdict from here on, whatever the load
        assert checker.check("\\boxed{(x+1)^2}", "x^2+2x+1") is True
        assert checker._worker.proc.pid != pid
        assert checker.equivalent("\\sqrt{8}", "2\\sqrt{2}") is True
    finally:
        checker.close()


def test_worker_survives_being_killed(checker):
    checker.start()
    pid = checker._worker.proc.pid
    os.kill(pid, signal.SIGKILL)
    checker._worker.proc.wait(timeout=5)
    assert checker.equivalent("\\sin^2 x + \\cos^2 x", "1") is True
    assert checker._worker.proc.pid != pid


def test_completion_code_is_never_run(tmp_path, checker):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    completions = [
        f"\\boxed{{{payload}}}",
        f"The answer is {payload}",
        f"{payload}",
        f"\\boxed{{exec(\"open('{marker}', 'w')\")}}",
    ]
    assert checker.check_batch(completions, ["12345"] * len(completions)) == [False] * len(completions)
    assert checker.equivalent(payload, "12345") is False
    assert not marker.exists()


def test_close_then_reuse_and_exit_cleanup(tmp_path):
    c = AnswerChecker(timeout=TIMEOUT)
    assert c.equivalent("x^2", "x \\cdot x") is True
    pid = c._worker.proc.pid
    c.close()
    assert c._worker is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert c.equivalent("x^2", "x \\cdot x") is True  # restarts on demand
    c.close()

    # At interpreter exit the worker is killed (load the module by path: no torch import in the child).
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ac', {answer_checking.__file__!r})\n"
        "ac = importlib.util.module_from_spec(spec); sys.modules['ac'] = ac; spec.loader.exec_module(ac)\n"
        "c = ac.AnswerChecker(timeout=2.0); c.start(); print(c._worker.proc.pid)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    child_pid = int(out.stdout.strip())
    # the exit handler kills the worker and reaps it before the interpreter ends: gone once the parent is
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


def test_default_checker_and_timeout_validation():
    assert get_default_checker() is get_default_checker()
    assert get_default_checker().timeout == 5.0
    with pytest.raises(ValueError):
        AnswerChecker(timeout=0)


# ---------------------------------------------------------------------------------------------------------------
# Reward functions
# ---------------------------------------------------------------------------------------------------------------


def test_accuracy_reward_on_strings():
    completions = ["so \\boxed{\\frac{1}{2}}", "\\boxed{-3}", "The answer is 12.", "nothing", "\\boxed{7}"]
    # no gold answer: None, as TRL's rewards (GRPO leaves the sample out)
    assert accuracy_reward(completions, answer=["0.5", "3", 12, "1", None]) == [1.0, 0.0, 1.0, 0.0, None]
    assert accuracy_reward.__name__ == "accuracy_reward"


def test_accuracy_reward_on_conversational_completions():
    completions = [
        [{"role": "assistant", "content": "The answer is \\boxed{4}."}],
        [
            {"role": "assistant", "content": "let me call a tool"},
            {"role": "tool", "content": "\\boxed{5}"},
            {"role": "assistant", "content": [{"type": "text", "text": "So it is \\boxed{6}"}]},
        ],
        [{"role": "assistant", "content": None}],
    ]
    assert accuracy_reward(completions, answer=["4", "6", "1"], prompts=["p"] * 3, trainer_state=None) == [
        1.0,
        1.0,
        0.0,
    ]
    assert completion_text(completions[1]) == "So it is \\boxed{6}"


def test_accuracy_reward_validates_lengths():
    with pytest.raises(ValueError):
        accuracy_reward(["\\boxed{1}"], answer=["1", "2"])
    with pytest.raises(TypeError):
        accuracy_reward(["\\boxed{1}"], answer="1")


def test_make_accuracy_reward_custom_column():
    reward = make_accuracy_reward(answer_column="solution", timeout=TIMEOUT)
    assert reward.__name__ == "accuracy_reward"
    completions = ["\\boxed{0.25}", [{"role": "assistant", "content": "Answer: 3"}], "\\boxed{2}"]
    assert reward(completions, solution=["\\frac14", "3", "3"], answer=["9", "9", "9"]) == [1.0, 1.0, 0.0]
    with pytest.raises(KeyError, match="solution"):
        reward(["\\boxed{1}"], answer=["1"])
    assert make_accuracy_reward()(["\\boxed{1}"], answer=["1"]) == [1.0]
    # TRL's async GRPO trainer pickles reward functions into a spawned process: no closures.
    restored = pickle.loads(pickle.dumps(reward))
    assert restored.__name__ == "accuracy_reward" and restored.answer_column == "solution"
    assert restored(["\\boxed{3}"], solution=["3"]) == [1.0]
    with pytest.raises(ValueError):
        make_accuracy_reward(timeout=0)


def test_accuracy_reward_bounded_on_adversarial_batch():
    reward = make_accuracy_reward(timeout=TIMEOUT + 0.5)  # a timeout of its own: a checker of its own
    checker = rewards.checker_for(TIMEOUT + 0.5)
    completions = [c for c, _ in ADVERSARIAL.values() if "9^" not in c]
    start = time.monotonic()
    assert reward(completions, answer=["1"] * len(completions)) == [0.0] * len(completions)
    assert time.monotonic() - start < HANG_LIMIT
    # none of these needs the worker: all decided by the fast path, no worker started
    assert checker.stats["worker"] == 0 and checker._worker is None


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}}.", 1.0),
        ("$\\boxed {4}$", 1.0),
        ([{"role": "assistant", "content": "\\boxed{4}"}], 1.0),
        ("The answer is 4.", 0.0),
        ("\\boxed{1} or \\boxed{2}", 0.0),
        ("\\boxed{\\boxed{1}}", 0.0),
        ("\\boxed{ }", 0.0),
        ("\\boxed{4", 0.0),
        ("x" * 100_000 + "\\boxed{4}", 1.0),
        ("{" * 100_000 + "\\boxed{4", 0.0),
    ],
)
def test_format_reward(completion, expected):
    start = time.monotonic()
    assert format_reward([completion]) == [expected]
    assert time.monotonic() - start < HANG_LIMIT  # linear in the 100 kB inputs; a quadratic scan would take hours


def test_docstring_examples():
    for module in (answer_checking, answer_extraction, rewards):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
