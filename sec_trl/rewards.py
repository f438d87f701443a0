"""TRL reward functions for math reasoning: answer accuracy (math-verify, time-bounded) and boxed-answer format.

TRL calls a reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns)``, where
``columns`` holds every dataset column (one value per completion) plus TRL extras (``trainer_state``, ...), and
logs it under its ``__name__``. A completion is either a string (standard format) or a list of message dicts
(conversational format); for the latter the ``content`` of the last ``assistant`` message is scored (the last
message if none has that role; a list of content parts is joined from its ``text`` parts).

A missing gold answer (``None``, a float NaN as pandas writes it, a blank string) or one with nothing to compare
(``\\boxed{}``) gives ``None``, as TRL's own ``accuracy_reward`` does: GRPO leaves that sample out of the reward
(TRL logs a warning when every reward function returned None for a sample). One warning per column is logged.

Example:
    >>> accuracy_reward(["... so the answer is \\\\boxed{\\\\frac{1}{2}}", "I think 3"], answer=["0.5", "4"])
    [1.0, 0.0]
    >>> accuracy_reward(["\\\\boxed{4}"], answer=[None])
    [None]
    >>> conversation = [{"role": "assistant", "content": "The answer is 12."}]
    >>> accuracy_reward([conversation], answer=[12])
    [1.0]
    >>> solution_reward = make_accuracy_reward("solution")
    >>> solution_reward.__name__, solution_reward(["\\\\boxed{4}"], solution=["4"])
    ('accuracy_reward', [1.0])
    >>> format_reward(["\\\\boxed{4}", "4", "\\\\boxed{1} or \\\\boxed{2}", "\\\\boxed{ }"])
    [1.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sec_trl.answer_checking import AnswerChecker, get_default_checker
from sec_trl.answer_extraction import match_braces, reference_answer


logger = logging.getLogger(__name__)

__all__ = ["RewardTimeoutError", "accuracy_reward", "format_reward", "make_accuracy_reward", "with_timeout"]

_DEFAULT_TIMEOUT = 5.0
_checkers: dict[float, AnswerChecker] = {}
_checkers_lock = threading.Lock()
_warned: set[str] = set()


def checker_for(timeout: float) -> AnswerChecker:
    """One shared checker (one worker process) per distinct timeout; the default timeout uses the default checker."""
    if timeout == _DEFAULT_TIMEOUT:
        return get_default_checker()
    with _checkers_lock:
        checker = _checkers.get(timeout)
        if checker is None:
            checker = _checkers[timeout] = AnswerChecker(timeout=timeout)
        return checker


def completion_text(completion: Any) -> str:
    """The text of a completion in standard (``str``) or conversational (list of message dicts) format.

    Examples:
        >>> completion_text("plain")
        'plain'
        >>> completion_text([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"},
        ...                  {"role": "assistant", "content": [{"type": "text", "text": "b"}]}])
        'b'
        >>> completion_text(None)
        ''
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    messages = [m for m in completion if isinstance(m, dict)]
    if not messages:
        return ""
    assistant = [m for m in messages if m.get("role") == "assistant"]
    content = (assistant or messages)[-1].get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return str(content)


def _is_missing(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return reference_answer(str(value)) is None  # blank, or an empty \boxed{}: nothing to compare with


def _accuracy(
    completions: Sequence[Any], answers: Sequence[Any], checker: AnswerChecker, column: str
) -> list[float | None]:
    if isinstance(answers, (str, bytes)) or not hasattr(answers, "__iter__"):
        raise TypeError(
            f"reward column {column!r} must hold one gold answer per completion, got {type(answers).__name__}"
        )
    answers = list(answers)
    if len(answers) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(answers)} values in column {column!r}")
    missing = [i for i, a in enumerate(answers) if _is_missing(a)]
    if missing and column not in _warned:
        _warned.add(column)
        logger.warning(
            "%d of %d gold answers in column %r are missing or empty; the accuracy reward is None for those "
            "completions, so GRPO leaves them out, as with TRL's rewards (warned once per column)",
            len(missing),
            len(answers),
            column,
        )
    missing_set = set(missing)
    keep = [i for i in range(len(answers)) if i not in missing_set]
    verdicts = checker.check_batch([completion_text(completions[i]) for i in keep], [str(answers[i]) for i in keep])
    rewards: list[float | None] = [None] * len(answers)
    for i, ok in zip(keep, verdicts, strict=True):
        rewards[i] = 1.0 if ok else 0.0
    return rewards


def accuracy_reward(completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 where the completion's final answer equals the gold ``answer``, else 0.0.

    The final answer is extracted with :func:`sec_trl.answer_checking.extract_final_answer` (last ``\\boxed{}``,
    else "answer is ...", else the last number, within the last 4096 characters) and compared with the gold answer
    by :meth:`AnswerChecker.check` of the process-wide default checker (5 s per answer, math-verify in a worker
    process): ``\\frac{1}{2}``, ``0.5`` and ``1/2`` are equal. An unparseable or timed-out completion scores 0.0; a
    missing gold answer gives None (the sample is left out, as with TRL's rewards).
    For a dataset whose gold answers sit in another column, use :func:`make_accuracy_reward`.

    Examples:
        >>> accuracy_reward(["\\\\boxed{\\\\frac{1}{2}}", "\\\\boxed{-3}", "no answer", "\\\\boxed{7}"],
        ...                 answer=["1/2", "3", "3", None])
        [1.0, 0.0, 0.0, None]
    """
    return _accuracy(completions, answer, get_default_checker(), "answer")


def make_accuracy_reward(
    answer_column: str = "answer", timeout: float = _DEFAULT_TIMEOUT
) -> Callable[..., list[float]]:
    """An :func:`accuracy_reward` that reads the gold answers from dataset column ``answer_column`` and gives each
    answer check at most ``timeout`` seconds.

    The result is named ``accuracy_reward`` (TRL logs rewards by ``__name__``) and is a picklable callable object,
    not a closure (TRL's async GRPO trainer pickles reward functions into a spawned process). Functions with the
    same ``timeout`` share one checker (one worker process) per process.

    Examples:
        >>> reward = make_accuracy_reward("solution", timeout=3.0)
        >>> reward.__name__
        'accuracy_reward'
        >>> reward(["The answer is 0.25", "\\\\boxed{2}"], solution=["\\\\frac14", "3"], prompts=["p", "q"])
        [1.0, 0.0]
    """
    return _AccuracyReward(answer_column, timeout)


class _AccuracyReward:
    """1.0 where the completion's final answer equals the gold answer in column ``answer_column``, else 0.0."""

    __name__ = "accuracy_reward"

    def __init__(self, answer_column: str = "answer", timeout: float = _DEFAULT_TIMEOUT):
        if not isinstance(answer_column, str) or not answer_column:
            raise ValueError(f"answer_column must be a non-empty column name, got {answer_column!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.answer_column = answer_column
        self.timeout = float(timeout)

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        if self.answer_column not in kwargs:
            columns = sorted(k for k in kwargs if k not in ("prompts", "completion_ids", "trainer_state"))
            raise KeyError(
                f"accuracy_reward reads gold answers from dataset column {self.answer_column!r}, which is not among "
                f"the reward kwargs {columns}; pass make_accuracy_reward(answer_column=...) the right column"
            )
        return _accuracy(completions, kwargs[self.answer_column], checker_for(self.timeout), self.answer_column)

    def __repr__(self) -> str:
        return f"make_accuracy_reward(answer_column={self.answer_column!r}, timeout={self.timeout:g})"


_BOXED_START_RE = re.compile(r"\\boxed\s*\{")


def _has_single_boxed_answer(text: str) -> bool:
    starts = list(_BOXED_START_RE.finditer(text))
    if len(starts) != 1:
        return False
    open_index = starts[0].end() - 1
    close_index = match_braces(text).get(open_index)
    return close_index is not None and text[open_index + 1 : close_index].strip() != ""


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 where the completion holds exactly one ``\\boxed{...}`` answer, else 0.0.

    Exactly one ``\\boxed`` followed by ``{`` (whitespace allowed between) anywhere in the completion text, whose
    braces close, with non-blank content. Two boxes (also nested ones), an unclosed box or an empty box give 0.0.
    The whole completion is scanned (linear time; a 100 kB completion takes milliseconds).

    Examples:
        >>> format_reward(["so \\\\boxed{\\\\frac{1}{2}}.", "\\\\boxed{1", "\\\\boxed{\\\\boxed{1}}", "It is 3"])
        [1.0, 0.0, 0.0, 0.0]
    """
    return [1.0 if _has_single_boxed_answer(completion_text(c)) else 0.0 for c in completions]


# --------------------------------------------------------------------------------------------------------------------
# reward timeout


class RewardTimeoutError(RuntimeError):
    """A reward function did not return within ``reward_timeout`` seconds (see :func:`with_timeout`)."""


def with_timeout(func: Callable, timeout: float, name: str | None = None) -> Callable:
    """``func`` bounded to ``timeout`` seconds per call: a synchronous reward runs in a helper thread that the caller
    waits for with ``join(timeout)`` (so it works in any thread, unlike ``signal.alarm``); an ``async`` one is awaited
    under ``asyncio.wait_for``. Past the timeout the call is abandoned and :class:`RewardTimeoutError` raised, naming
    the reward and the setting; the helper thread cannot be killed and is left to finish (a daemon thread: it does
    not keep the process alive). The result is picklable when ``func`` is, and keeps its name."""
    if not timeout > 0:
        raise ValueError(f"reward_timeout must be > 0 seconds, got {timeout!r}")
    from trl.trainer.utils import get_callable_name, is_async_callable

    name = name or get_callable_name(func)
    wrapper = _TimedAsyncReward if is_async_callable(func) else _TimedReward
    return wrapper(func, float(timeout), name)


class _TimedReward:
    def __init__(self, func: Callable, timeout: float, name: str):
        self.func, self.timeout, self.__name__ = func, timeout, name

    def _timed_out(self, kwargs: dict) -> RewardTimeoutError:
        count = len(kwargs.get("completions") or [])
        return RewardTimeoutError(
            f"reward function {self.__name__!r} did not return within reward_timeout={self.timeout:g} s (a batch of "
            f"{count} completions); the call was abandoned and the run stops. Fix the reward (a hang, a network "
            "call without its own timeout, a lock) or raise --reward_timeout; checkpoints saved so far are kept "
            "(--resume_from_checkpoint true continues from the newest)."
        )

    def __call__(self, *args: Any, **kwargs: Any):
        outcome: dict[str, Any] = {}

        def target():
            try:
                outcome["value"] = self.func(*args, **kwargs)
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=target, name=f"reward {self.__name__}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise self._timed_out(kwargs)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def __repr__(self) -> str:
        return f"with_timeout({self.func!r}, {self.timeout:g})"


class _TimedAsyncReward(_TimedReward):
    async def __call__(self, *args: Any, **kwargs: Any):
        import asyncio

        try:
            return await asyncio.wait_for(self.func(*args, **kwargs), self.timeout)
        except asyncio.TimeoutError:
            raise self._timed_out(kwargs) from None
