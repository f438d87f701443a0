"""Semantic entropy of a set of sampled responses: clustering by meaning, and the two SE estimators.

SENT's data curriculum (see ``docs/method.md``, "Data side") samples N responses per prompt, groups responses that mean
the same thing into clusters, and orders prompts by the entropy of the cluster distribution:

- :func:`discrete_semantic_entropy`: ``SE = -sum_k (n_k/N) ln(n_k/N)`` (natural log; ``0`` for one cluster,
  ``ln N`` for N singletons);
- :func:`weighted_semantic_entropy`: each response weighted by its normalised sequence likelihood,
  ``p(C_k) = sum_{i in C_k} softmax(loglik_i / length_i)``, ``SE = -sum_k p(C_k) ln p(C_k)`` (Kuhn et al. 2023,
  Farquhar et al. 2024: length-normalised, the mean token log-likelihood).

:func:`cluster_answers` turns N completions into cluster ids numbered by first appearance (``0, 1, 2, ...``).

Nothing here loads a model. Example:

    >>> ids = cluster_answers(["so \\\\boxed{\\\\frac{1}{2}}", "It is 0.5.", "The answer is 1/2", "\\\\boxed{3}"])
    >>> ids
    [0, 0, 0, 1]
    >>> round(discrete_semantic_entropy(ids), 4)  # -(3/4 ln 3/4 + 1/4 ln 1/4)
    0.5623
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

from sec_trl.answer_checking import AnswerChecker, get_default_checker
from sec_trl.answer_extraction import MAX_ANSWER_CHARS, extract_final_answer, normalize_answer, parse_number
from sec_trl.rewards import completion_text


logger = logging.getLogger(__name__)

__all__ = [
    "CLUSTER_METHODS",
    "DEFAULT_CLUSTER_TIME_BUDGET",
    "DEFAULT_LEXICAL_THRESHOLD",
    "cluster_answers",
    "discrete_semantic_entropy",
    "final_answers",
    "weighted_semantic_entropy",
]

CLUSTER_METHODS = ("math", "exact", "lexical")
"""Values accepted by :func:`cluster_answers` ``method``."""

DEFAULT_LEXICAL_THRESHOLD = 0.5
"""Jaccard overlap of word-token sets at or above which ``method="lexical"`` puts two completions together."""

DEFAULT_CLUSTER_TIME_BUDGET = 60.0
"""Seconds that :func:`cluster_answers` (``method="math"``) may spend waiting for math-verify on one set of
completions, all comparisons together (see its ``time_budget``)."""


# ----------------------------------------------------------------------------------------------------------------
# Estimators
# ----------------------------------------------------------------------------------------------------------------


def _entropy_of_masses(masses: Sequence[float]) -> float:
    """``-sum p ln p`` over the positive masses, summed smallest first (order-independent for equal multisets)."""
    total = -math.fsum(p * math.log(p) for p in sorted(masses) if p > 0.0)
    return max(0.0, total)  # -0.0 and tiny negative rounding never leave this function


def _check_ids(cluster_ids: Sequence[Hashable]) -> list[Hashable]:
    ids = list(cluster_ids)
    if not ids:
        raise ValueError("semantic entropy needs at least one response (got an empty list of cluster ids)")
    return ids


def discrete_semantic_entropy(cluster_ids: Sequence[Hashable]) -> float:
    """``-sum_k (n_k/N) ln(n_k/N)`` over the clusters of ``cluster_ids`` (any hashable ids; natural log).

    The value depends only on the multiset of cluster sizes (it is computed from the sorted sizes, so equal size
    multisets give bit-identical floats, which keeps ties in a ranking exact).

    Examples:
        >>> discrete_semantic_entropy([0, 0, 0])
        0.0
        >>> round(discrete_semantic_entropy([0, 1, 2, 3]), 6) == round(math.log(4), 6)
        True
        >>> discrete_semantic_entropy([0, 0, 1, 1]) == discrete_semantic_entropy(["b", "a", "a", "b"])
        True
    """
    ids = _check_ids(cluster_ids)
    n = len(ids)
    return _entropy_of_masses([count / n for count in Counter(ids).values()])


def weighted_semantic_entropy(
    cluster_ids: Sequence[Hashable],
    sequence_logprobs: Sequence[float],
    lengths: Sequence[int] | None = None,
) -> float:
    """Probability-weighted semantic entropy: ``p(C_k) = sum_{i in C_k} softmax(scores)_i``, ``SE = -sum p ln p``.

    ``sequence_logprobs[i]`` is the log-likelihood of response ``i`` (the sum of its token log-probabilities). With
    ``lengths`` (``lengths[i]`` = the number of tokens that sum covers) each score is the length-normalised
    ``sequence_logprobs[i] / lengths[i]``, the mean token log-likelihood, as Farquhar et al. (2024) and Kuhn et al.
    (2023) compute it; without, the score is the sum itself. Why it matters: sums of responses hundreds of tokens
    long differ by tens to hundreds of nats, so the softmax over sums puts all the mass on one response and the SE
    is ~0 whatever the clusters; means differ by a fraction of a nat.

    The softmax is computed stably (max subtracted, in float64), so scores of -5000 work. Equal scores give exactly
    :func:`discrete_semantic_entropy` up to rounding.

    Raises:
        ValueError: when the sequences differ in length, are empty, a log-likelihood is NaN or infinite, or a length
            is not a positive integer (a NaN/inf would otherwise turn into a silently wrong entropy; callers decide
            how to fall back).

    Examples:
        >>> round(weighted_semantic_entropy([0, 1], [0.0, 0.0]), 6) == round(math.log(2), 6)
        True
        >>> p = 1 / (1 + math.exp(-1.0))  # softmax([-1, -2])[0]
        >>> expected = -(p * math.log(p) + (1 - p) * math.log(1 - p))
        >>> abs(weighted_semantic_entropy([0, 1], [-1.0, -2.0]) - expected) < 1e-12
        True
        >>> # the same mean token log-likelihood (-0.5) over 100 and 400 tokens: equal weights once normalised
        >>> round(weighted_semantic_entropy([0, 1], [-50.0, -200.0], lengths=[100, 400]), 6) == round(math.log(2), 6)
        True
        >>> weighted_semantic_entropy([0, 1], [-50.0, -200.0]) < 1e-60  # the sums: one-hot
        True
        >>> weighted_semantic_entropy([0, 1], [float("nan"), -1.0])
        Traceback (most recent call last):
        ...
        ValueError: sequence_logprobs must be finite; got non-finite values at positions [0]: [nan]
    """
    ids = _check_ids(cluster_ids)
    scores = _sequence_scores(len(ids), sequence_logprobs, lengths)
    top = max(scores)
    weights = [math.exp(x - top) for x in scores]  # the largest is exactly 1.0, so the sum is >= 1
    total = math.fsum(weights)
    masses: dict[Hashable, list[float]] = {}
    for cluster, w in zip(ids, weights, strict=True):
        masses.setdefault(cluster, []).append(w)
    return _entropy_of_masses([math.fsum(ws) / total for ws in masses.values()])


def _sequence_scores(n: int, sequence_logprobs: Sequence[float], lengths: Sequence[int] | None) -> list[float]:
    """The validated softmax inputs of :func:`weighted_semantic_entropy`: the sums, or the sums over the lengths."""
    logprobs = [float(x) for x in sequence_logprobs]
    if len(logprobs) != n:
        raise ValueError(f"got {n} cluster ids but {len(logprobs)} sequence log-probabilities")
    bad = [i for i, x in enumerate(logprobs) if not math.isfinite(x)]
    if bad:
        raise ValueError(
            f"sequence_logprobs must be finite; got non-finite values at positions {bad[:10]}: "
            f"{[logprobs[i] for i in bad[:10]]}"
        )
    if lengths is None:
        return logprobs
    lengths = list(lengths)
    if len(lengths) != n:
        raise ValueError(f"got {n} cluster ids but {len(lengths)} lengths")
    bad = [i for i, x in enumerate(lengths) if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1]
    if bad:
        raise ValueError(
            f"lengths must be integers >= 1 (tokens scored); got {[lengths[i] for i in bad[:10]]} at positions "
            f"{bad[:10]}"
        )
    return [x / length for x, length in zip(logprobs, lengths, strict=True)]


# ----------------------------------------------------------------------------------------------------------------
# Clustering
# ----------------------------------------------------------------------------------------------------------------


def final_answers(completions: Sequence[Any]) -> list[str | None]:
    """The final answer of each completion (string or chat messages), as :func:`extract_final_answer` reads it."""
    return [extract_final_answer(completion_text(c)) for c in completions]


def _math_key(answer: str) -> Hashable:
    """Cheap canonical key: answers with equal keys are equivalent without asking math-verify.

    Plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``) key on their exact rational value, so ``0.5``,
    ``1/2`` and ``\\frac{1}{2}`` share a key; everything else keys on the normalised string (spacing, ``\\left``,
    ``\\dfrac``, math delimiters removed). Both are exactly the checker's own fast-path rules, so a shared key never
    puts together two answers the checker would call different.
    """
    norm = normalize_answer(answer)
    number = parse_number(norm)
    if number is not None:
        value, _exact = number
        return ("number", value)
    return ("text", norm)


def _wordset(text: str) -> frozenset[str]:
    from nltk.tokenize import wordpunct_tokenize  # regex based: needs no downloaded nltk data

    return frozenset(token.lower() for token in wordpunct_tokenize(text))


def cluster_answers(
    completions: Sequence[Any],
    method: str = "math",
    *,
    checker: AnswerChecker | None = None,
    lexical_threshold: float = DEFAULT_LEXICAL_THRESHOLD,
    answers: Sequence[str | None] | None = None,
    time_budget: float | None = DEFAULT_CLUSTER_TIME_BUDGET,
) -> list[int]:
    """Cluster ids for ``completions`` (strings or chat-message lists), numbered by first appearance.

    Methods:

    - ``"math"`` (default): completions whose final answers (:func:`extract_final_answer`: last ``\\boxed{}``,
      else "answer is ...", else the last number) are mathematically equivalent share an id, so
      ``\\boxed{\\frac{1}{2}}``, ``The answer is 0.5`` and ``\\boxed{1/2}`` are one cluster. Answers are read
      exactly as :func:`sec_trl.rewards.accuracy_reward` reads them, so SE measures disagreement in what training
      will score (a bare completion ``1/2``, with no box or marker, reads as its last number ``2``; pass
      ``answers=`` to use another reading). Cost: answers are first grouped by a cheap
      exact key (the rational value of a plain number, else the normalised string), then each *new* key's
      answer is compared with the representative (first answer) of each existing cluster by the checker, which
      decides number/number and string-equal pairs in-process and sends only the rest to math-verify. So at most
      ``(#distinct keys) x (#clusters)`` math-verify calls happen, never ``N^2`` over completions, and the
      checker's cache serves repeated pairs. A key joins the *first* cluster whose representative it matches
      (equivalence judged by math-verify need not be transitive; this makes the result deterministic).
    - ``"exact"``: the normalised extracted answer strings must be equal (``0.5`` and ``1/2`` differ).
    - ``"lexical"``: for free-form text. Each completion's whole text becomes a set of lower-cased nltk
      ``wordpunct_tokenize`` tokens; it joins the existing cluster whose representative (first member) has the
      highest Jaccard overlap with it, if that overlap is ``>= lexical_threshold`` (default 0.5), ties to the
      lower id; otherwise it starts a new cluster.

    No answer: a completion with no extractable answer (empty, truncated before any number, "I don't know"; for
    ``"lexical"``, a text with no tokens) gets its **own singleton cluster**. "No answer" responses do not assert
    a common answer, and one shared "no answer" cluster would make a model that never finishes (e.g. always cut
    off at the token limit) look perfectly consistent (SE = 0), ranking the prompt as the easiest when it is
    among the hardest. Singletons push such prompts to the high-SE end instead. Answers longer than
    ``MAX_ANSWER_CHARS`` (the checker would score them as equal to nothing) are singletons too.

    Args:
        completions: the N sampled responses of one prompt.
        method: ``"math"``, ``"exact"`` or ``"lexical"``.
        checker: the :class:`AnswerChecker` for ``"math"`` (default: the process-wide one).
        lexical_threshold: Jaccard threshold in ``(0, 1]`` for ``"lexical"``.
        answers: already extracted final answers (one per completion, None for none), to skip re-extraction.
        time_budget: ``"math"`` only: seconds the whole clustering may wait for math-verify (default
            :data:`DEFAULT_CLUSTER_TIME_BUDGET`, 60 s; None: no bound). Each comparison already has the checker's
            own timeout, but N distinct hostile answers (``\\boxed{k^{k^{k^{k^{k}}}}}``) cost up to N^2/2 of them;
            the budget bounds the total, independent of N. Once it is spent, the remaining comparisons that need
            math-verify are decided "not equivalent" (those answers get their own clusters, so SE can only go up);
            pairs the fast path decides (numbers, equal strings) are still decided. A warning says how many were
            cut, and the checker counts them in ``stats["over_budget"]``. A worker replaced after a timeout may add
            its start-up (about 1 s) once.

    Examples:
        >>> cluster_answers(["\\\\boxed{2}", "\\\\boxed{3}", "The answer is 2.", "2.0"])
        [0, 1, 0, 0]
        >>> cluster_answers(["1/2", "\\\\boxed{0.5}"], method="exact")
        [0, 1]
        >>> cluster_answers(["", "I do not know", "I do not know"])  # no answer: each its own cluster
        [0, 1, 2]
        >>> cluster_answers(["the cat sat on the mat", "The cat sat on a mat", "dogs bark"], method="lexical")
        [0, 0, 1]
    """
    if method not in CLUSTER_METHODS:
        raise ValueError(f"unknown cluster method {method!r}; choose one of {list(CLUSTER_METHODS)}")
    completions = list(completions)
    if method == "lexical":
        if not 0.0 < lexical_threshold <= 1.0:
            raise ValueError(f"lexical_threshold must be in (0, 1], got {lexical_threshold!r}")
        return _cluster_lexical([completion_text(c) for c in completions], lexical_threshold)
    if answers is None:
        answers = final_answers(completions)
    elif len(answers) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(answers)} answers")
    if method == "exact":
        return _cluster_by_key(answers, lambda a: normalize_answer(a))
    if time_budget is not None and not (isinstance(time_budget, (int, float)) and 0 < time_budget < math.inf):
        raise ValueError(f"time_budget must be a finite number of seconds > 0, or None; got {time_budget!r}")
    return _cluster_math(answers, checker if checker is not None else get_default_checker(), time_budget)


def _usable(answer: str | None) -> bool:
    return isinstance(answer, str) and bool(answer.strip()) and len(answer) <= MAX_ANSWER_CHARS


def _cluster_by_key(answers: Sequence[str | None], key_of) -> list[int]:
    ids: list[int] = []
    key_to_id: dict[Hashable, int] = {}
    next_id = 0
    for answer in answers:
        key = key_of(answer) if _usable(answer) else None
        if key is None or key == "":  # no answer: a singleton
            ids.append(next_id)
            next_id += 1
            continue
        if key not in key_to_id:
            key_to_id[key] = next_id
            next_id += 1
        ids.append(key_to_id[key])
    return ids


def _cluster_math(answers: Sequence[str | None], checker: AnswerChecker, time_budget: float | None) -> list[int]:
    deadline = None if time_budget is None else time.monotonic() + time_budget
    cut_before = checker.stats.get("over_budget", 0)
    ids: list[int] = []
    key_to_id: dict[Hashable, int] = {}
    representatives: list[str | None] = []  # per cluster id: its first answer (None for a no-answer singleton)
    for answer in answers:
        if not _usable(answer):
            ids.append(len(representatives))
            representatives.append(None)
            continue
        key = _math_key(answer)
        if key == ("text", ""):  # normalises to nothing, e.g. "$ $": no answer
            ids.append(len(representatives))
            representatives.append(None)
            continue
        cluster = key_to_id.get(key)
        if cluster is None:
            for i, rep in enumerate(representatives):
                # The checker's symmetric comparison of two extracted answers (what `equivalent` does after
                # extraction): fast path in-process, math-verify in its worker only when that cannot decide.
                if rep is not None and checker.decide([(rep, answer, True)], deadline=deadline)[0]:
                    cluster = i
                    break
            if cluster is None:
                cluster = len(representatives)
                representatives.append(answer)
            key_to_id[key] = cluster
        ids.append(cluster)
    cut = checker.stats.get("over_budget", 0) - cut_before
    if cut:
        logger.warning(
            "Clustering %d answers ran out of its %.1f s time budget for math-verify: %d comparisons were decided "
            "'not equivalent' without checking (time_budget; hostile or very slow answers).",
            len(answers),
            time_budget,
            cut,
        )
    return ids


def _cluster_lexical(texts: Sequence[str], threshold: float) -> list[int]:
    from nltk.metrics.distance import jaccard_distance

    ids: list[int] = []
    representatives: list[frozenset[str] | None] = []
    for text in texts:
        words = _wordset(text)
        best, best_overlap = None, -1.0
        if words:
            for i, rep in enumerate(representatives):
                if rep is None:
                    continue
                overlap = 1.0 - jaccard_distance(words, rep)  # both non-empty: no 0/0
                if overlap >= threshold and overlap > best_overlap:
                    best, best_overlap = i, overlap
        if best is None:
            best = len(representatives)
            representatives.append(words or None)
        ids.append(best)
    return ids
