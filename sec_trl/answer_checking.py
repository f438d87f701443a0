"""Bounded-time equivalence checking of final answers in untrusted model output.

Extraction (reading the final answer out of a completion) is :mod:`sec_trl.answer_extraction`, whose public names
are re-exported here; the math-verify worker process is :mod:`sec_trl.answer_worker`.

Everything here treats a completion as hostile input:

- Only the last :data:`MAX_TAIL_CHARS` characters of a text are ever looked at, so a 100 kB completion costs the
  same as a 4 kB one.
- Cheap, exact fast paths run in the calling process without sympy: normalised string equality and plain numbers
  (integers, decimals, ``a/b``, ``\\frac{a}{b}``) compared as :class:`fractions.Fraction`. Numbers are only ever
  parsed from short digit strings, so nothing like ``9^{9^{9^{9}}}`` is evaluated here. Typical arithmetic
  answers never leave this process.
- Everything else goes to ``math-verify`` running in one small persistent worker subprocess, with math-verify's own
  (signal based, main-thread-only) timeouts disabled. The caller waits at most ``timeout`` seconds for each answer
  (plus, right after a timeout, the ~1 s start-up of the replacement worker); on timeout the worker is killed
  (SIGKILL) and a fresh one is started, and the answer scores as not equal. This bound holds in any thread,
  which matters because TRL runs async reward functions on a daemon event-loop thread, where signal-based
  timeouts cannot work.
- No code from a completion is ever run: the worker parses answers with math-verify's LaTeX parser only
  (``latex2sympy2_extended``, a grammar-based parser); math-verify's plain-expression extractor, which goes
  through ``sympy.parse_expr`` (``eval``), is not used: it would evaluate completion text. The worker talks JSON
  (never pickle) to the parent.

Why a hand-written worker and not a process-pool library (``concurrent.futures``, ``multiprocessing.Pool``,
``pebble``): the checker needs all three of (1) a timeout that holds in *any* thread (TRL calls reward functions
from an event-loop thread, so no ``signal.alarm`` in the caller), (2) SIGKILL and restart of a worker stuck in C code
(a sympy big-integer power holds the GIL and ignores everything else), with the replacement starting in the
background, and (3) an address-space cap (``RLIMIT_AS``) on the worker only. ``concurrent.futures`` cannot kill a
running task; ``multiprocessing.Pool`` hangs on a killed worker and pickles; ``pebble`` (not a dependency) kills on
timeout but starts a fresh process per task or per pool restart, with no memory cap and pickle transport. The worker
here is ~150 lines of socket and ``subprocess`` code with JSON transport.

Both sides are cleaned first (:func:`~sec_trl.answer_extraction.clean_text`: zero-width characters and the BOM
dropped, superscript digits written as ``^{}``, Unicode NFKC), so a gold answer ``"4\\u200b"``, ``"\\ufeff4"`` or
a fullwidth ``"４"`` equals ``4``.

Anything unparseable, timed out, too long (:data:`MAX_ANSWER_CHARS`) or too deeply nested
(:data:`MAX_NESTING_DEPTH`) scores as *not equal*.

Example:
    >>> extract_final_answer("so the total is \\\\boxed{\\\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> checker = AnswerChecker(timeout=5.0)
    >>> checker.check("... The answer is 0.5.", "\\\\frac{1}{2}")
    True
    >>> checker.close()
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from fractions import Fraction

from sec_trl.answer_extraction import (
    MAX_ANSWER_CHARS,
    MAX_BARE_ANSWER_CHARS,
    MAX_NESTING_DEPTH,
    MAX_TAIL_CHARS,
    answer_of,
    clean_text,
    extract_final_answer,
    nesting_depth,
    normalize_answer,
    parse_number,
    reference_answer,
)
from sec_trl.answer_worker import WorkerDied, WorkerProcess


logger = logging.getLogger(__name__)

__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_BARE_ANSWER_CHARS",
    "MAX_NESTING_DEPTH",
    "MAX_TAIL_CHARS",
    "AnswerChecker",
    "extract_final_answer",
    "get_default_checker",
]

# Two numbers of which at least one is a decimal and that differ by more than this are not equal for math-verify
# either (it compares floats after rounding both to 6 decimals, which moves each by at most 5e-7).
_DECIMAL_TOLERANCE = Fraction(1, 10**5)


def _fast_verdict(gold: str | None, pred: str | None) -> bool | None:
    """True/False when decidable without sympy, None when math-verify must decide."""
    if not gold or not pred:
        return False
    if len(gold) > MAX_ANSWER_CHARS or len(pred) > MAX_ANSWER_CHARS:
        return False
    g, p = normalize_answer(gold), normalize_answer(pred)
    if not g or not p:
        return False
    if g == p:
        return True
    gv, pv = parse_number(g), parse_number(p)
    if gv is not None and pv is not None:
        (x, x_exact), (y, y_exact) = gv, pv
        if x == y:
            return True
        if (x_exact and y_exact) or abs(x - y) > _DECIMAL_TOLERANCE:
            return False
        return None
    if nesting_depth(gold) > MAX_NESTING_DEPTH or nesting_depth(pred) > MAX_NESTING_DEPTH:
        return False
    return None


def _cleaned(answer: str | None) -> str | None:
    """:func:`clean_text` for strings (zero-width characters and BOM dropped, NFKC), anything else unchanged."""
    return clean_text(answer) if isinstance(answer, str) else answer


_live_checkers: weakref.WeakSet[AnswerChecker] = weakref.WeakSet()
_shutting_down = False


class _NotCached(Exception):
    """Raised through the verdict cache when there is no verdict to remember (the worker died or did not start)."""


def _verdict_cache(checker: AnswerChecker, size: int):
    """``functools.lru_cache`` over the checker's worker verdicts, keyed by ``(gold, pred, symmetric)``.

    The cached function holds the checker weakly, so the cache does not keep the checker (and its worker) alive.
    """
    ref = weakref.ref(checker)

    @functools.lru_cache(maxsize=size)
    def verdict(gold: str, pred: str, symmetric: bool) -> bool:
        owner = ref()
        answer = None if owner is None else owner._ask_worker(gold, pred, symmetric)
        if answer is None:
            raise _NotCached
        return answer

    return verdict


class AnswerChecker:
    """Thread-safe, time-bounded math answer equivalence (math-verify in a persistent worker subprocess).

    Args:
        timeout: seconds the caller waits for the worker on one answer pair; past it the worker is killed and
            restarted and the pair scores as not equal. Fast-path pairs never wait.
        startup_timeout: seconds to wait for a (re)started worker to import math-verify and report ready. A worker
            that fails to start raises :class:`RuntimeError` (a broken environment must not silently score 0).
        memory_limit_mb: address-space limit of the worker (``RLIMIT_AS``; best effort, POSIX only; 0 disables).
        cache_size: verdicts remembered per (gold, prediction) pair, timeouts included, so that a repeated
            pathological answer costs one timeout, not one per occurrence.

    Only pairs that the fast path cannot decide reach the worker, one at a time under a lock; a worker that times
    out or dies is replaced at once (the replacement starts in the background). A pair therefore costs at most
    ``timeout`` seconds, plus the rest of a replacement worker's start-up (about 1 s) if the previous pair timed
    out, plus waiting for the lock while other threads' pairs are checked. Workers are killed at interpreter exit.
    POSIX only (the worker's socket is handed over with ``pass_fds``).

    ``stats`` counts ``fast`` (decided without the worker), ``cached``, ``worker`` (sent to the worker),
    ``timeouts``, ``worker_deaths`` and ``over_budget`` (pairs scored not equal because the caller's ``deadline``
    had passed, see :meth:`decide`).

    Example:
        >>> checker = AnswerChecker(timeout=5.0)
        >>> checker.equivalent("\\\\frac{1}{2}", "0.5"), checker.equivalent("1/2", "\\\\boxed{0.5}")
        (True, True)
        >>> checker.check("so the result is \\\\boxed{-3}", "3")
        False
        >>> checker.check_batch(["\\\\boxed{4}", "The answer is 12.0", "no idea"], ["4", "12", "7"])
        [True, True, False]
        >>> checker.close()
    """

    def __init__(
        self,
        timeout: float = 5.0,
        *,
        startup_timeout: float = 120.0,
        memory_limit_mb: int = 4096,
        cache_size: int = 10_000,
    ):
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.startup_timeout = float(startup_timeout)
        self.memory_limit_mb = int(memory_limit_mb)
        self.cache_size = int(cache_size)
        self.stats = {"fast": 0, "cached": 0, "worker": 0, "timeouts": 0, "worker_deaths": 0, "over_budget": 0}
        self._lock = threading.Lock()
        self._deadline: float | None = None  # of the decide() call holding the lock (see `deadline` there)
        self._worker: WorkerProcess | None = None
        self._verdicts = _verdict_cache(self, self.cache_size)
        self._request_id = 0
        _live_checkers.add(self)

    # -- public API ---------------------------------------------------------------------------------------------

    def check(self, completion: str, reference: str) -> bool:
        """Whether the final answer of ``completion`` equals the gold ``reference`` answer.

        The completion's answer comes from :func:`extract_final_answer`. The reference is taken verbatim, except
        that a reference containing ``\\boxed{}`` contributes the last box's content and one containing ``####``
        (GSM8K) the text after the last ``####``. math-verify is called with the reference as gold. ``None``,
        missing, unparseable, oversized or timed-out answers give False.

        Examples:
            >>> checker = get_default_checker()
            >>> checker.check("... so $x = \\\\boxed{\\\\dfrac{1}{2}}$", "0.5")
            True
            >>> checker.check("The answer is 3", "#### 3")
            True
            >>> checker.check("I give up", "3")
            False
        """
        return self.check_batch([completion], [reference])[0]

    def equivalent(self, a: str, b: str) -> bool:
        """Whether two texts, each a completion or a bare answer string, carry the same final answer.

        Each side's answer is its last ``\\boxed{}``, else its last "answer is"/"answer:" marker (as in
        :func:`extract_final_answer`); else, if the text is a short bare answer (at most
        :data:`MAX_BARE_ANSWER_CHARS` characters, one line, and one token or no prose word of 3+ letters outside
        LaTeX commands and ``\\text{}``), the whole text; else its last number. The comparison is symmetric
        (math-verify is asked in both directions when needed). For clustering many completions, extract once
        with :func:`extract_final_answer` and compare the extracted strings.

        Examples:
            >>> checker = get_default_checker()
            >>> [checker.equivalent("\\\\frac{1}{2}", x) for x in ("0.5", "1/2", "\\\\dfrac12", "2/4")]
            [True, True, True, True]
            >>> checker.equivalent("\\\\boxed{4}", "4"), checker.equivalent("12", "12.0")
            (True, True)
            >>> checker.equivalent("-3", "3"), checker.equivalent("2", "3")
            (False, False)
        """
        return self.decide([(answer_of(a), answer_of(b), True)])[0]

    def check_batch(
        self, completions: Sequence[str], references: Sequence[str], *, extract=None, deadline: float | None = None
    ) -> list[bool]:
        """:meth:`check` over pairs. Fast-path pairs are decided in this process; the worker sees each distinct
        remaining (reference, answer) pair once, and the verdict cache serves repeats across calls. ``extract``
        reads a completion's answer (default :func:`extract_final_answer`; the evaluation's paper protocol passes
        :func:`~sec_trl.answer_extraction.extract_paper_answer`). ``deadline``: as in :meth:`decide`."""
        if len(completions) != len(references):
            raise ValueError(f"got {len(completions)} completions but {len(references)} references")
        extract = extract_final_answer if extract is None else extract
        items = [
            (reference_answer(r), extract(c) if isinstance(c, str) else None, False)
            for c, r in zip(completions, references, strict=True)
        ]
        return self.decide(items, deadline=deadline)

    def start(self) -> None:
        """Start the worker now and wait until it is ready (otherwise the first slow-path pair pays ~1 s)."""
        with self._lock:
            self._ensure_worker()

    def close(self) -> None:
        """Kill the worker. The checker stays usable: a later slow-path pair starts a new worker."""
        acquired = self._lock.acquire(timeout=self.timeout + 1.0)
        try:
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.kill()
        finally:
            if acquired:
                self._lock.release()

    def __enter__(self) -> AnswerChecker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            try:
                worker.kill()
            except Exception:  # best effort during garbage collection
                pass

    def decide(
        self, items: Sequence[tuple[str | None, str | None, bool]], *, deadline: float | None = None
    ) -> list[bool]:
        """Verdicts for already-extracted answers: ``items`` are ``(gold, pred, symmetric)`` triples.

        Each pair is decided by the in-process fast path when it can be (normalised string equality, plain numbers
        compared exactly), else by math-verify in the worker, once per distinct pair (the verdict cache serves
        repeats). ``symmetric`` asks math-verify in both directions. ``None``, empty, oversized, too deeply nested,
        unparseable or timed-out answers give False. This is what :meth:`check_batch` and :meth:`equivalent` call
        after extraction; use it directly to compare answers extracted once (e.g. when clustering).

        ``deadline`` (a :func:`time.monotonic` value) bounds the call's total wait, however many pairs reach the
        worker: each worker pair waits at most ``min(timeout, deadline - now)``, and once the deadline has passed
        the remaining worker pairs score False without being sent (counted in ``stats["over_budget"]``; such
        verdicts are not cached). A worker replaced after a timeout may add its start-up (~1 s) once.

        Example:
            >>> get_default_checker().decide([("\\\\frac{1}{2}", "0.5", True), ("2", None, True)])
            [True, False]
        """
        results: list[bool | None] = []
        pending: dict[tuple[str, str, bool], list[int]] = {}
        for i, (gold, pred, symmetric) in enumerate(items):
            gold, pred = _cleaned(gold), _cleaned(pred)
            verdict = _fast_verdict(gold, pred)
            results.append(verdict)
            if verdict is None:
                pending.setdefault((gold.strip(), pred.strip(), symmetric), []).append(i)
            else:
                self.stats["fast"] += 1
        for key, indices in pending.items():
            verdict = self._slow_verdict(*key, deadline=deadline)
            for i in indices:
                results[i] = verdict
        return [bool(r) for r in results]

    # -- internals ----------------------------------------------------------------------------------------------

    def _slow_verdict(self, gold: str, pred: str, symmetric: bool, deadline: float | None = None) -> bool:
        if deadline is None:
            self._lock.acquire()
        elif not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self.stats["over_budget"] += 1  # other threads' pairs used up the time
            return False
        try:
            self._deadline = deadline
            hits = self._verdicts.cache_info().hits
            try:
                verdict = self._verdicts(gold, pred, symmetric)
            except _NotCached:  # the worker died or did not start, or the budget ran out: not equal, not remembered
                return False
            self.stats["cached"] += self._verdicts.cache_info().hits - hits
            return verdict
        finally:
            self._deadline = None
            self._lock.release()

    def _remaining(self) -> float | None:
        """Seconds left before the current call's deadline (None: no deadline)."""
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _wait_for_start_within_budget(self) -> bool:
        """With a deadline: whether a (re)starting worker became ready in the time left (it is not killed if not:
        it keeps starting for the next call)."""
        remaining = self._remaining()
        if remaining is None:
            return True
        if self._worker is None and not _shutting_down:
            try:
                self._worker = self._spawn()
            except OSError:
                return True  # _ensure_worker tries again and reports
        worker = self._worker
        if worker is None or worker.ready or worker.owner_pid != os.getpid():
            return True
        if worker.proc.poll() is not None:
            return True  # dead: _ensure_worker replaces it
        return worker.conn.poll(max(0.0, remaining))

    def _ensure_worker(self) -> WorkerProcess:
        worker = self._worker
        if worker is not None and worker.owner_pid != os.getpid():
            worker = self._worker = None  # forked child: leave the parent's worker alone
        if worker is not None and worker.proc.poll() is not None:  # died while idle (OOM killer, kill -9, ...)
            self.stats["worker_deaths"] += 1
            worker.kill()
            worker = self._worker = None
        if worker is None:
            if _shutting_down:
                raise WorkerDied("interpreter is shutting down")
            worker = self._worker = self._spawn()
        try:
            worker.wait_ready(self.startup_timeout)
        except WorkerDied as exc:
            self._worker = None
            worker.kill()
            raise RuntimeError(
                f"the math-verify answer-checking worker failed to start ({exc}); "
                f"check that `{sys.executable} -c 'import math_verify'` works"
            ) from exc
        return worker

    def _spawn(self) -> WorkerProcess:
        # The worker's own alarm only matters if this process dies mid-request; keep it well past our timeout.
        return WorkerProcess(alarm_seconds=int(self.timeout) + 30, memory_limit_mb=self.memory_limit_mb)

    def _replace_worker(self) -> None:
        """Kill the current worker and start its successor in the background (it imports while we return)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()
        if not _shutting_down:
            try:
                self._worker = self._spawn()
            except OSError:  # e.g. out of processes: try again, lazily, on the next pair
                self._worker = None

    def _ask_worker(self, gold: str, pred: str, symmetric: bool) -> bool | None:
        """The worker's verdict. A timeout gives False (cached: the same pair would time out again); a worker that
        died or failed to start gives None (not cached; the caller scores it False)."""
        remaining = self._remaining()
        if remaining is not None and (remaining <= 0 or not self._wait_for_start_within_budget()):
            self.stats["over_budget"] += 1
            return None
        try:
            worker = self._ensure_worker()
        except WorkerDied:
            return None
        remaining = self._remaining()
        wait = self.timeout if remaining is None else max(0.0, min(self.timeout, remaining))
        self.stats["worker"] += 1
        self._request_id += 1
        request = {"id": self._request_id, "gold": gold, "pred": pred, "symmetric": symmetric}
        try:
            worker.conn.send_bytes(json.dumps(request).encode())
            if not worker.conn.poll(wait):
                if wait < self.timeout:  # cut short by the deadline: not a verdict on the pair, not cached
                    self.stats["over_budget"] += 1
                    self._replace_worker()
                    return None
                self.stats["timeouts"] += 1
                logger.warning("answer check timed out after %.1f s; scoring as not equal", self.timeout)
                self._replace_worker()
                return False
            reply = json.loads(worker.conn.recv_bytes())
            if reply.get("id") != self._request_id:
                raise ValueError("out-of-order reply")
        except (EOFError, OSError, ValueError) as exc:
            self.stats["worker_deaths"] += 1
            logger.warning("answer-checking worker died (%s); scoring as not equal", exc)
            self._replace_worker()
            return None
        return bool(reply.get("ok"))


_default_checker: AnswerChecker | None = None
_default_lock = threading.Lock()


def get_default_checker() -> AnswerChecker:
    """The process-wide :class:`AnswerChecker` (timeout 5 s), created on first use.

    Example:
        >>> get_default_checker() is get_default_checker()
        True
    """
    global _default_checker
    with _default_lock:
        if _default_checker is None:
            _default_checker = AnswerChecker()
        return _default_checker


def _shutdown() -> None:
    global _shutting_down
    _shutting_down = True
    for checker in list(_live_checkers):
        try:
            checker.close()
        except Exception:  # best effort at exit
            pass


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would never be released in the child.
    for checker in list(_live_checkers):
        checker._lock = threading.Lock()
    global _default_lock
    _default_lock = threading.Lock()


atexit.register(_shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
