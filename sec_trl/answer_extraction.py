"""Reading the final answer out of untrusted model output, in bounded time, without evaluating anything.

Only the last :data:`MAX_TAIL_CHARS` characters of a text are ever looked at, so a 100 kB completion costs the same
as a 4 kB one; everything here is regular expressions and linear scans. Numbers are only ever parsed from short
digit strings (:func:`parse_number`), so nothing like ``9^{9^{9^{9}}}`` is evaluated. The checker
(:mod:`sec_trl.answer_checking`) compares what these functions extract.

Example:
    >>> extract_final_answer("so the total is \\\\boxed{\\\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction


__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_BARE_ANSWER_CHARS",
    "MAX_NESTING_DEPTH",
    "MAX_TAIL_CHARS",
    "answer_of",
    "clean_text",
    "extract_final_answer",
    "extract_paper_answer",
    "match_braces",
    "nesting_depth",
    "normalize_answer",
    "parse_number",
    "reference_answer",
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

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_MARKER_RE = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:)", re.IGNORECASE)
_ANSWER_IS_RE = re.compile(r"\banswer\s+is\b\s*:?", re.IGNORECASE)
_LAST_NUMBER_RE = re.compile(
    r"(?:(?<![0-9A-Za-z)\]}])-)?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?", re.ASCII
)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")


def _tail(text: str) -> str:
    """The part of ``text`` that is read: its last :data:`MAX_TAIL_CHARS` characters, cleaned (:func:`clean_text`)."""
    return clean_text(text[-MAX_TAIL_CHARS:])


# Invisible characters dropped before anything else: zero-width space / non-joiner / joiner, word joiner, BOM.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_SUPERSCRIPTS = "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207a\u207b"
_SUBSCRIPTS = "\u2080\u2081\u2082\u2083\u2084\u2085\u2086\u2087\u2088\u2089\u208a\u208b"
_SCRIPT_PLAIN = str.maketrans(_SUPERSCRIPTS + _SUBSCRIPTS, "0123456789+-" * 2)
_SUPERSCRIPT_RE = re.compile(f"[{_SUPERSCRIPTS}]+")
_SUBSCRIPT_RE = re.compile(f"[{_SUBSCRIPTS}]+")


def clean_text(text: str) -> str:
    """Unicode clean-up of an answer or completion tail before it is read or compared (linear time).

    Drops the invisible U+200B..U+200D, U+2060 and the BOM U+FEFF, writes superscript and subscript digits as
    ``^{...}`` / ``_{...}`` (NFKC alone would turn ``x²`` into ``x2``), maps the minus sign U+2212 to ``-``, then
    applies Unicode NFKC (fullwidth ``４`` becomes ``4``, a no-break space a space). ASCII text is returned as is.

    Examples:
        >>> clean_text("4\u200b"), clean_text("\ufeff4"), clean_text("\uff14"), clean_text("x\u00b2 \u2212 1")
        ('4', '4', '4', 'x^{2} - 1')
    """
    if text.isascii():
        return text
    text = text.translate(_INVISIBLE).replace("\u2212", "-")
    text = _SUPERSCRIPT_RE.sub(lambda m: "^{" + m.group().translate(_SCRIPT_PLAIN) + "}", text)
    text = _SUBSCRIPT_RE.sub(lambda m: "_{" + m.group().translate(_SCRIPT_PLAIN) + "}", text)
    return unicodedata.normalize("NFKC", text)


def match_braces(text: str) -> dict[int, int]:
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
    pairs = match_braces(text)
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


def _marker_answer(text: str, marker=_ANSWER_MARKER_RE) -> str | None:
    """The text after the last "answer is" / "answer:" marker, up to the end of its line or sentence."""
    matches = list(marker.finditer(text))
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


def extract_paper_answer(text: str) -> str | None:
    """The final answer as the SENT paper's evaluation reads it: the last non-empty ``\\boxed{}``, else the
    sentence containing the last "answer is" (the part after the marker, as in :func:`extract_final_answer`'s
    rule 2), else ``None``: unlike :func:`extract_final_answer`, no "answer:" marker and no last-number fallback, so
    a completion cut off mid-reasoning is not credited with a number it happened to end on.

    Bounded like everything here (the last :data:`MAX_TAIL_CHARS` characters, regular expressions and linear scans).

    Examples:
        >>> extract_paper_answer("so \\\\boxed{12}.")
        '12'
        >>> extract_paper_answer("Thus the final answer is $7$. Done.")
        '7'
        >>> extract_paper_answer("Answer: 7") is None, extract_paper_answer("... and 3 + 4 = 7") is None
        (True, True)
    """
    if not isinstance(text, str):
        return None
    window = _tail(text)
    boxed = [content.strip() for content in _boxed_contents(window) if content.strip()]
    if boxed:
        return boxed[-1]
    return _marker_answer(window, _ANSWER_IS_RE)


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


def answer_of(text: str | None) -> str | None:
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


def reference_answer(reference: str | None) -> str | None:
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


_SPACING_RE = re.compile(r"\\(?:left|right|displaystyle)(?![A-Za-z])|\\[,;:! ]|~")
_WHITESPACE_RE = re.compile(r"\s+")
_INT = r"[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+"
_DECIMAL_RE = re.compile(rf"([+-]?)(?:({_INT})(\.[0-9]*)?|(\.[0-9]+))", re.ASCII)
_SLASH_FRACTION_RE = re.compile(rf"([+-]?)({_INT})/({_INT})", re.ASCII)
_LATEX_FRACTION_RE = re.compile(r"([+-]?)\\frac(?:\{([+-]?[0-9]+)\}\{([+-]?[0-9]+)\}|([0-9])([0-9]))", re.ASCII)


def normalize_answer(answer: str) -> str:
    """Canonical string form for the string-equality fast path (never used for parsing)."""
    s = _strip_answer(clean_text(answer))
    s = _SPACING_RE.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = _WHITESPACE_RE.sub("", s)
    return s.rstrip(".")


def parse_number(s: str) -> tuple[Fraction, bool] | None:
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


def nesting_depth(s: str) -> int:
    """The deepest nesting of ``{``, ``(`` and ``[`` (together) in ``s``; unmatched closers are ignored."""
    depth = best = 0
    for c in s:
        if c in "{([":
            depth += 1
            best = max(best, depth)
        elif c in "})]":
            depth = max(0, depth - 1)
    return best
