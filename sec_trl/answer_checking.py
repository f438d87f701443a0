"""Bounded-time final-answer extraction and equivalence checking for untrusted model output.

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
  through ``sympy.parse_expr`` (``eval``), is not used. The worker talks JSON (never pickle) to the parent.

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
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from fractions import Fraction
from multiprocessing.connection import Connection


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

#: Only the last this-many characters of a completion (or of any text handed to the checker) are read.
MAX_TAIL_CHARS = 4096
#: An extracted answer longer than this is scored as not equal without being parsed.
MAX_ANSWER_CHARS = 1000
#: An extracted answer whose bracket nesting (``{``, ``(`` and ``[`` together) is deeper than this is scored as not
#: equal without being parsed. math-verify's parse time grows exponentially with bare ``{...}`` nesting (about 2.5 s at
#: depth 12 on one CPU), so such answers could only time out anyway; real answers nest a few levels.
MAX_NESTING_DEPTH = 20
#: Texts up to this length, on one line and without prose, count as a bare answer in :meth:`AnswerChecker.equivalent`.
MAX_BARE_ANSWER_CHARS = 100

# Fast-path numbers: at most this many characters (so at most ~64 digits are ever converted to int).
_MAX_NUMBER_CHARS = 64
# Two numbers of which at least one is a decimal and that differ by more than this are not equal for math-verify
# either (it compares floats after rounding both to 6 decimals, which moves each by at most 5e-7).
_DECIMAL_TOLERANCE = Fraction(1, 10**5)

# ----------------------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_MARKER_RE = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:)", re.IGNORECASE)
_LAST_NUMBER_RE = re.compile(
    r"(?:(?<![0-9A-Za-z)\]}])-)?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?", re.ASCII
)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")


def _tail(text: str) -> str:
    return text[-MAX_TAIL_CHARS:]


def _match_braces(text: str) -> dict[int, int]:
    """Map the index of every ``{`` that is closed to the index of its ``}``, in one linear pass.

    LaTeX-escaped braces (``\\{``, ``\\}``) and ``\\\\`` are skipped; they do not group.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in ``text`` whose braces balance, in order."""
    starts = [m.end() - 1 for m in _BOXED_RE.finditer(text)]
    if not starts:
        return []
    pairs = _match_braces(text)
    return [text[s + 1 : pairs[s]] for s in starts if s in pairs]


def _strip_answer(answer: str) -> str:
    """Strip whitespace, bold markers, math delimiters and a final full stop around an answer."""
    s = answer.strip()
    while True:
        before = s
        s = s.strip().strip("*").strip()
        if s.endswith("."):
            s = s[:-1].rstrip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)]
                break
        if s == before:
            return s


def _marker_answer(text: str) -> str | None:
    """The text after the last "answer is" / "answer:" marker, up to the end of its line or sentence."""
    matches = list(_ANSWER_MARKER_RE.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    rest = text[last.end() :].lstrip().lstrip("*").lstrip()
    line = rest.split("\n", 1)[0]
    end = _SENTENCE_END_RE.search(line)
    if end is not None:
        line = line[: end.start()]
    answer = _strip_answer(line)
    return answer or None


def _last_number(text: str) -> str | None:
    matches = list(_LAST_NUMBER_RE.finditer(text))
    return matches[-1].group(0).replace(",", "") if matches else None


def extract_final_answer(text: str) -> str | None:
    """Extract the final answer from a completion.

    Only the last :data:`MAX_TAIL_CHARS` (4096) characters of ``text`` are read. In order:

    1. ``\\boxed{...}`` (or ``\\fbox{...}``): the content of the **last non-empty** one in the window whose braces
       balance (nesting allowed; ``\\{``/``\\}`` are literal braces and do not group), stripped of whitespace.
       Empty boxes are ignored: small models often *mention* the box ("the answer within \\boxed{} is 8") and
       then answer in prose, which the rules below still read.
    2. Otherwise the last ``answer is`` / ``answer:`` marker (case-insensitive, so "The final answer is",
       "**Answer:**" ...): the rest of its line (or the next non-empty line if the marker ends its line), cut at the
       first full stop followed by a space or the end of line, with ``**``, ``$``...``$``, ``\\(``...``\\)`` and
       ``\\[``...``\\]`` stripped.
    3. Otherwise the last number: an optional minus sign (not after a letter, digit or closing bracket, so the
       ``-`` of ``5-3`` is not a sign), digits with optional ``,`` thousands groups (removed) and an optional
       decimal part.
    4. Otherwise ``None``.

    This is a heuristic for completion texts: on a bare answer string such as ``\\frac{1}{2}`` rule 3 gives
    ``'2'``. :meth:`AnswerChecker.check` therefore takes the reference answer verbatim, and
    :meth:`AnswerChecker.equivalent` treats short bare answers as answers.

    Examples:
        >>> extract_final_answer("First \\\\boxed{1}, then \\\\boxed{\\\\frac{1}{2}}.")
        '\\\\frac{1}{2}'
        >>> extract_final_answer("\\\\boxed{\\\\{1, 2\\\\}}")
        '\\\\{1, 2\\\\}'
        >>> extract_final_answer("The answer is 12.")
        '12'
        >>> extract_final_answer("**Final Answer:** $x^2 + 1$")
        'x^2 + 1'
        >>> extract_final_answer("3 apples and 4 pears make 7 fruits in total")
        '7'
        >>> extract_final_answer("The total is 1,234.5 dollars")
        '1234.5'
        >>> extract_final_answer("I do not know") is None
        True
        >>> extract_final_answer("\\\\boxed{}") is None
        True
        >>> extract_final_answer("The final answer within \\\\boxed{} is 8.")
        '8'
    """
    if not isinstance(text, str):
        return None
    window = _tail(text)
    boxed = _boxed_contents(window)
    boxed = [content.strip() for content in boxed if content.strip()]
    if boxed:
        return boxed[-1]
    marker = _marker_answer(window)
    if marker is not None:
        return marker
    return _last_number(window)


# Parts of a bare answer that may contain words: \text{...} and friends.
_TEXT_GROUP_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{[^{}]*\}")
_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


def _looks_like_bare_answer(text: str) -> bool:
    """A short single line that is a single token, or has no prose word (3+ letters outside a LaTeX command)."""
    if len(text) > MAX_BARE_ANSWER_CHARS or "\n" in text:
        return False
    if not any(c.isspace() for c in text):
        return True
    return _PROSE_WORD_RE.search(_TEXT_GROUP_RE.sub("", text)) is None


def _answer_of(text: str | None) -> str | None:
    """The answer in a text that is either a completion or a bare answer string (see ``AnswerChecker.equivalent``)."""
    if not isinstance(text, str):
        return None
    window = _tail(text)
    boxed = _boxed_contents(window)
    if boxed:
        return boxed[-1].strip() or None
    marker = _marker_answer(window)
    if marker is not None:
        return marker
    stripped = _strip_answer(window)
    if stripped and _looks_like_bare_answer(stripped):
        return stripped
    return _last_number(window)


def _reference_answer(reference: str | None) -> str | None:
    """The gold answer: the last ``\\boxed{}`` if the reference has one, the text after ``####`` (GSM8K style) if it
    has that, else the whole reference (stripped)."""
    if reference is None:
        return None
    window = _tail(str(reference))
    boxed = _boxed_contents(window)
    if boxed:
        return boxed[-1].strip() or None
    if "####" in window:
        window = window.rsplit("####", 1)[1]
    return _strip_answer(window) or None


# ----------------------------------------------------------------------------------------------------------------
# Fast path (no sympy, no big numbers)
# ----------------------------------------------------------------------------------------------------------------

_SPACING_RE = re.compile(r"\\(?:left|right|displaystyle)(?![A-Za-z])|\\[,;:! ]|~")
_WHITESPACE_RE = re.compile(r"\s+")
_INT = r"[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+"
_DECIMAL_RE = re.compile(rf"([+-]?)(?:({_INT})(\.[0-9]*)?|(\.[0-9]+))", re.ASCII)
_SLASH_FRACTION_RE = re.compile(rf"([+-]?)({_INT})/({_INT})", re.ASCII)
_LATEX_FRACTION_RE = re.compile(r"([+-]?)\\frac(?:\{([+-]?[0-9]+)\}\{([+-]?[0-9]+)\}|([0-9])([0-9]))", re.ASCII)


def _normalize(answer: str) -> str:
    """Canonical string form for the string-equality fast path (never used for parsing)."""
    s = _strip_answer(answer)
    s = _SPACING_RE.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = _WHITESPACE_RE.sub("", s)
    return s.rstrip(".")


def _as_number(s: str) -> tuple[Fraction, bool] | None:
    """``(value, exact)`` for a plain integer, decimal or integer fraction; ``None`` for anything else.

    ``exact`` is False for decimals (math-verify compares those after rounding to 6 places).
    """
    if len(s) > _MAX_NUMBER_CHARS:
        return None
    m = _DECIMAL_RE.fullmatch(s)
    if m is not None:
        sign, integer, frac, bare_frac = m.groups()
        digits = (integer or "0").replace(",", "") + (frac or bare_frac or "")
        value = Fraction(digits.rstrip(".") or "0")
        return (-value if sign == "-" else value), not (frac or bare_frac)
    m = _SLASH_FRACTION_RE.fullmatch(s)
    if m is not None:
        sign, num, den = m.groups()
        num, den = int(num.replace(",", "")), int(den.replace(",", ""))
    else:
        m = _LATEX_FRACTION_RE.fullmatch(s)
        if m is None:
            return None
        sign, num, den, num1, den1 = m.groups()
        num, den = int(num if num is not None else num1), int(den if den is not None else den1)
    if den == 0:
        return None
    value = Fraction(num, den)
    return (-value if sign == "-" else value), True


def _nesting_depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c in "{([":
            depth += 1
            best = max(best, depth)
        elif c in "})]":
            depth = max(0, depth - 1)
    return best


def _fast_verdict(gold: str | None, pred: str | None) -> bool | None:
    """True/False when decidable without sympy, None when math-verify must decide."""
    if not gold or not pred:
        return False
    if len(gold) > MAX_ANSWER_CHARS or len(pred) > MAX_ANSWER_CHARS:
        return False
    g, p = _normalize(gold), _normalize(pred)
    if not g or not p:
        return False
    if g == p:
        return True
    gv, pv = _as_number(g), _as_number(p)
    if gv is not None and pv is not None:
        (x, x_exact), (y, y_exact) = gv, pv
        if x == y:
            return True
        if (x_exact and y_exact) or abs(x - y) > _DECIMAL_TOLERANCE:
            return False
        return None
    if _nesting_depth(gold) > MAX_NESTING_DEPTH or _nesting_depth(pred) > MAX_NESTING_DEPTH:
        return False
    return None


# ----------------------------------------------------------------------------------------------------------------
# Worker subprocess
# ----------------------------------------------------------------------------------------------------------------

# The worker is this very file, loaded by path under a private name: importing `sec_trl.answer_checking` would run
# `sec_trl/__init__.py` (torch, TRL) in the child for nothing.
_WORKER_BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_sec_trl_answer_worker', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "mod._worker_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))\n"
)


def _worker_main(fd: int, alarm_seconds: int, memory_limit_mb: int) -> None:  # pragma: no cover - runs in the child
    """Serve ``{"id", "gold", "pred", "symmetric"}`` requests on ``fd`` until EOF. Runs in the worker process."""
    import signal
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it kills us at exit
    # Orphan guard: if the parent dies while we are stuck in C code (big-integer power, ...), SIGALRM with its
    # default action ends us even though the GIL is held. Re-armed for every request.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    if memory_limit_mb > 0:
        try:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    warnings.simplefilter("ignore")
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)

    conn = Connection(fd)
    from functools import lru_cache

    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]

    @lru_cache(maxsize=1024)
    def parse_answer(answer: str):
        return tuple(parse("\\boxed{" + answer + "}", extraction_config=config, parsing_timeout=None))

    def equal(gold: str, pred: str, symmetric: bool) -> bool:
        g, p = parse_answer(gold), parse_answer(pred)
        if not g or not p:
            return False
        if verify(list(g), list(p), timeout_seconds=None):
            return True
        return symmetric and verify(list(p), list(g), timeout_seconds=None)

    equal("\\frac{1}{2}", "0.5", True)  # warm up the LaTeX grammar and sympy before reporting ready
    conn.send_bytes(json.dumps({"ready": os.getpid()}).encode())
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        signal.alarm(alarm_seconds)
        try:
            ok = bool(equal(request["gold"], request["pred"], bool(request.get("symmetric"))))
        except BaseException:  # RecursionError, MemoryError, anything: not equal
            ok = False
        signal.alarm(0)
        try:
            conn.send_bytes(json.dumps({"id": request["id"], "ok": ok}).encode())
        except OSError:
            return


class _WorkerDied(Exception):
    pass


class _Worker:
    """One worker process plus its end of the socket pair. Not thread-safe: the checker's lock guards it."""

    def __init__(self, alarm_seconds: int, memory_limit_mb: int):
        parent_sock, child_sock = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, os.path.abspath(__file__), str(child_sock.fileno())]
                + [str(alarm_seconds), str(memory_limit_mb)],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.owner_pid = os.getpid()
        self.ready = False

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        try:
            if not self.conn.poll(timeout):
                raise _WorkerDied(f"no ready message within {timeout:.0f} s")
            json.loads(self.conn.recv_bytes())
        except (EOFError, OSError, ValueError) as exc:
            raise _WorkerDied(f"exited during start-up (exit code {self.proc.poll()})") from exc
        self.ready = True

    def kill(self) -> None:
        if self.owner_pid != os.getpid():  # inherited through fork: the parent's worker, not ours to kill
            return
        try:
            self.conn.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not take 5 s
            logger.warning("answer-checking worker %d did not exit after SIGKILL", self.proc.pid)


_live_checkers: weakref.WeakSet[AnswerChecker] = weakref.WeakSet()
_shutting_down = False


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
    ``timeouts`` and ``worker_deaths``.

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
        self.stats = {"fast": 0, "cached": 0, "worker": 0, "timeouts": 0, "worker_deaths": 0}
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._cache: OrderedDict[tuple[str, str, bool], bool] = OrderedDict()
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
        return self._decide([(_answer_of(a), _answer_of(b), True)])[0]

    def check_batch(self, completions: Sequence[str], references: Sequence[str]) -> list[bool]:
        """:meth:`check` over pairs. Fast-path pairs are decided in this process; the worker sees each distinct
        remaining (reference, answer) pair once, and the verdict cache serves repeats across calls."""
        if len(completions) != len(references):
            raise ValueError(f"got {len(completions)} completions but {len(references)} references")
        items = [
            (_reference_answer(r), extract_final_answer(c) if isinstance(c, str) else None, False)
            for c, r in zip(completions, references, strict=True)
        ]
        return self._decide(items)

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

    # -- internals ----------------------------------------------------------------------------------------------

    def _decide(self, items: list[tuple[str | None, str | None, bool]]) -> list[bool]:
        results: list[bool | None] = []
        pending: dict[tuple[str, str, bool], list[int]] = {}
        for i, (gold, pred, symmetric) in enumerate(items):
            verdict = _fast_verdict(gold, pred)
            results.append(verdict)
            if verdict is None:
                pending.setdefault((gold.strip(), pred.strip(), symmetric), []).append(i)
            else:
                self.stats["fast"] += 1
        for key, indices in pending.items():
            verdict = self._slow_verdict(*key)
            for i in indices:
                results[i] = verdict
        return [bool(r) for r in results]

    def _slow_verdict(self, gold: str, pred: str, symmetric: bool) -> bool:
        key = (gold, pred, symmetric)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.stats["cached"] += 1
                return cached
            verdict = self._ask_worker(gold, pred, symmetric)
            if verdict is not None:
                self._cache[key] = verdict
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return bool(verdict)

    def _ensure_worker(self) -> _Worker:
        worker = self._worker
        if worker is not None and worker.owner_pid != os.getpid():
            worker = self._worker = None  # forked child: leave the parent's worker alone
        if worker is not None and worker.proc.poll() is not None:  # died while idle (OOM killer, kill -9, ...)
            self.stats["worker_deaths"] += 1
            worker.kill()
            worker = self._worker = None
        if worker is None:
            if _shutting_down:
                raise _WorkerDied("interpreter is shutting down")
            worker = self._worker = self._spawn()
        try:
            worker.wait_ready(self.startup_timeout)
        except _WorkerDied as exc:
            self._worker = None
            worker.kill()
            raise RuntimeError(
                f"the math-verify answer-checking worker failed to start ({exc}); "
                f"check that `{sys.executable} -c 'import math_verify'` works"
            ) from exc
        return worker

    def _spawn(self) -> _Worker:
        # The worker's own alarm only matters if this process dies mid-request; keep it well past our timeout.
        return _Worker(alarm_seconds=int(self.timeout) + 30, memory_limit_mb=self.memory_limit_mb)

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
        try:
            worker = self._ensure_worker()
        except _WorkerDied:
            return None
        self.stats["worker"] += 1
        self._request_id += 1
        request = {"id": self._request_id, "gold": gold, "pred": pred, "symmetric": symmetric}
        try:
            worker.conn.send_bytes(json.dumps(request).encode())
            if not worker.conn.poll(self.timeout):
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
