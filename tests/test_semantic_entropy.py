"""Semantic entropy estimators and answer clustering (no model)."""

import math

import pytest

from sec_trl.answer_checking import AnswerChecker
from sec_trl.semantic_entropy import (
    cluster_answers,
    discrete_semantic_entropy,
    weighted_semantic_entropy,
)


class CountingChecker(AnswerChecker):
    """The real checker, counting the pairs that its fast path could not decide (math-verify requests)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.slow_pairs = []

    def _slow_verdict(self, gold, pred, symmetric, **kwargs):
        self.slow_pairs.append((gold, pred))
        return super()._slow_verdict(gold, pred, symmetric, **kwargs)


@pytest.fixture(scope="module")
def checker():
    c = CountingChecker(timeout=10.0)
    yield c
    c.close()


# ------------------------------------------------------------------------------------------------------------------
# Estimators
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 8])
def test_one_cluster_is_zero(n):
    assert discrete_semantic_entropy([0] * n) == 0.0
    assert weighted_semantic_entropy([0] * n, [-3.0 * i for i in range(n)]) == 0.0


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_all_distinct_is_ln_n(n):
    assert discrete_semantic_entropy(list(range(n))) == pytest.approx(math.log(n), abs=1e-12)
    assert weighted_semantic_entropy(list(range(n)), [-7.5] * n) == pytest.approx(math.log(n), abs=1e-12)


def test_known_mixture_by_hand():
    # sizes 2, 1, 1 of N = 4: -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = 1/2 ln 2 + 1/2 ln 4 = 3/2 ln 2
    assert discrete_semantic_entropy([0, 0, 1, 2]) == pytest.approx(1.5 * math.log(2), abs=1e-12)
    # sizes 3, 1: -(3/4 ln 3/4 + 1/4 ln 1/4)
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert discrete_semantic_entropy(["a", "b", "a", "a"]) == pytest.approx(expected, abs=1e-12)


def test_discrete_depends_only_on_cluster_sizes():
    # bit-identical for equal size multisets, whatever the ids and their order (exact ties in a ranking)
    assert discrete_semantic_entropy([0, 0, 1]) == discrete_semantic_entropy([0, 1, 1])
    assert discrete_semantic_entropy([5, 9, 9, 2, 2, 2]) == discrete_semantic_entropy([0, 0, 0, 1, 1, 2])


@pytest.mark.parametrize("ids", [[0, 0, 1, 2], [0, 1, 0, 1, 2, 3, 3, 3], [0, 0, 0, 1]])
def test_weighted_equals_discrete_with_equal_logliks(ids):
    for loglik in (0.0, -12.3, -4000.0):
        assert weighted_semantic_entropy(ids, [loglik] * len(ids)) == pytest.approx(
            discrete_semantic_entropy(ids), abs=1e-12
        )


def test_weighted_hand_case():
    # softmax of ln(0.2), ln(0.3), ln(0.5) is (0.2, 0.3, 0.5): clusters {0, 1} -> 0.5 and {2} -> 0.5: ln 2
    logliks = [math.log(0.2), math.log(0.3), math.log(0.5)]
    assert weighted_semantic_entropy([0, 0, 1], logliks) == pytest.approx(math.log(2), abs=1e-12)
    # masses 0.2 and 0.8
    expected = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert weighted_semantic_entropy([0, 1, 1], logliks) == pytest.approx(expected, abs=1e-12)
    # invariant to a common shift, stable for very negative log-likelihoods (naive exp() would underflow to 0/0)
    shifted = [x - 5000.0 for x in logliks]
    assert weighted_semantic_entropy([0, 1, 1], shifted) == pytest.approx(expected, abs=1e-9)


def test_weighted_dominant_sample():
    # one sample carries essentially all the mass: entropy ~ 0 even though the discrete estimator says ln 2
    assert weighted_semantic_entropy([0, 1], [0.0, -200.0]) == pytest.approx(0.0, abs=1e-60)


def test_weighted_with_lengths_uses_mean_token_logliks_by_hand():
    # two samples of 2 and 4 tokens: means -1/2 = -0.5 and -6/4 = -1.5, softmax p = 1 / (1 + e^-1)
    p = 1.0 / (1.0 + math.exp(-1.0))
    expected = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert weighted_semantic_entropy([0, 1], [-1.0, -6.0], lengths=[2, 4]) == pytest.approx(expected, abs=1e-12)
    # without lengths the sums -1 and -6 are the scores: softmax q = 1 / (1 + e^-5)
    q = 1.0 / (1.0 + math.exp(-5.0))
    expected_sums = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    assert weighted_semantic_entropy([0, 1], [-1.0, -6.0]) == pytest.approx(expected_sums, abs=1e-12)
    # lengths of 1 are the sums themselves
    assert weighted_semantic_entropy([0, 1], [-1.0, -6.0], [1, 1]) == weighted_semantic_entropy([0, 1], [-1.0, -6.0])


def test_weighted_chain_of_thought_lengths_issue_example():
    """Issue 12's case: 8 samples of 426-1760 tokens in clusters of sizes {4, 2, 1, 1}.

    The mean token log-likelihoods lie within 0.08 nats of each other, so the sums differ by hundreds of nats: the
    softmax over sums is one-hot (SE ~0), over the means it is nearly uniform (SE ~1.200, near the discrete 1.213).
    """
    ids = [0, 0, 0, 0, 1, 1, 2, 3]
    lengths = [426, 980, 1310, 1760, 612, 1455, 803, 1120]
    means = [-0.30, -0.28, -0.30, -0.29, -0.33, -0.32, -0.34, -0.35]
    sums = [m * n for m, n in zip(means, lengths, strict=True)]
    # by hand: discrete -(1/2 ln 1/2 + 1/4 ln 1/4 + 2 * 1/8 ln 1/8)
    discrete = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 2 * 0.125 * math.log(0.125))
    assert discrete_semantic_entropy(ids) == pytest.approx(discrete, abs=1e-12) and round(discrete, 3) == 1.213
    # by hand: softmax of the means, summed per cluster
    weights = [math.exp(m) for m in means]
    masses = [sum(w for w, c in zip(weights, ids, strict=True) if c == k) / sum(weights) for k in range(4)]
    by_hand = -sum(p * math.log(p) for p in masses)
    weighted = weighted_semantic_entropy(ids, sums, lengths)
    assert weighted == pytest.approx(by_hand, abs=1e-12)
    assert round(weighted, 3) == 1.200
    # the sums: the 426-token sample (sum -127.8, the next is -263.9) holds all but e^-136 of the mass
    assert weighted_semantic_entropy(ids, sums) < 1e-30


@pytest.mark.parametrize("lengths", [[1, 0], [1, -3], [1.5, 2], [1, True], [1, 2, 3]])
def test_weighted_rejects_bad_lengths(lengths):
    with pytest.raises(ValueError, match="lengths"):
        weighted_semantic_entropy([0, 1], [-1.0, -2.0], lengths)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_weighted_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        weighted_semantic_entropy([0, 1, 2], [-1.0, bad, -2.0])


def test_estimator_input_errors():
    with pytest.raises(ValueError, match="at least one"):
        discrete_semantic_entropy([])
    with pytest.raises(ValueError, match="2 cluster ids but 3"):
        weighted_semantic_entropy([0, 1], [0.0, 0.0, 0.0])


# ------------------------------------------------------------------------------------------------------------------
# Clustering
# ------------------------------------------------------------------------------------------------------------------

MATH_TABLE = [
    # (completions, expected cluster ids)
    (
        ["so \\boxed{\\frac{1}{2}}", "0.5", "The answer is 1/2.", "\\boxed{\\dfrac12}", "\\boxed{0.50}"],
        [0, 0, 0, 0, 0],
    ),
    (["\\boxed{3}", "\\boxed{2}", "The answer is 3.", "\\boxed{-3}", "3.0"], [0, 1, 0, 2, 0]),
    (["\\boxed{1,234}", "It is 1234", "\\boxed{1234.5}"], [0, 0, 1]),
    (
        [
            "\\boxed{\\frac{\\sqrt{2}}{2}}",
            "\\boxed{\\sqrt{2}/2}",
            "\\boxed{\\frac{1}{\\sqrt{2}}}",
            "\\boxed{\\sqrt{3}}",
        ],
        [0, 0, 0, 1],
    ),
    (["\\boxed{(x+1)^2}", "\\boxed{x^2+2x+1}", "\\boxed{x^2+1}"], [0, 0, 1]),
    (["\\boxed{\\{1, 2\\}}", "\\boxed{\\{2, 1\\}}", "\\boxed{\\{1, 3\\}}"], [0, 0, 1]),
    (["\\boxed{\\pi}", "\\boxed{3.14}", "\\boxed{\\pi}"], [0, 1, 0]),
]


@pytest.mark.parametrize(("completions", "expected"), MATH_TABLE)
def test_cluster_math_table(completions, expected, checker):
    assert cluster_answers(completions, "math", checker=checker) == expected


def test_cluster_chat_message_completions(checker):
    completions = [
        [{"role": "assistant", "content": "\\boxed{4}"}],
        [{"role": "assistant", "content": "The answer is 4.0"}],
        [{"role": "assistant", "content": "\\boxed{5}"}],
    ]
    assert cluster_answers(completions, checker=checker) == [0, 0, 1]


def test_ids_numbered_by_first_appearance(checker):
    assert cluster_answers(["\\boxed{9}", "\\boxed{2}", "\\boxed{9}", "\\boxed{7}", "2"], checker=checker) == [
        0,
        1,
        0,
        2,
        1,
    ]


def test_no_answer_completions_are_singletons(checker):
    # empty, prose without a number, and an empty box: no extractable answer -> each its own cluster
    completions = ["", "I do not know", "I do not know", "\\boxed{}", "\\boxed{5}", "5"]
    for method in ("math", "exact"):
        assert cluster_answers(completions, method, checker=checker) == [0, 1, 2, 3, 4, 4]
    assert discrete_semantic_entropy(cluster_answers(["", "", "", ""], checker=checker)) == pytest.approx(math.log(4))
    assert cluster_answers(["", "  ", "x"], "lexical") == [0, 1, 2]


def test_cluster_exact_is_string_equality():
    completions = ["\\boxed{1/2}", "\\boxed{ 1/2 }", "0.5", "The answer is $1/2$.", "\\boxed{\\frac{1}{2}}"]
    assert cluster_answers(completions, "exact") == [0, 0, 1, 0, 2]


def test_cluster_lexical_threshold():
    texts = ["the cat sat on the mat", "The cat sat on a mat", "dogs bark loudly at night", "a cat sat"]
    # {the,cat,sat,on,mat} vs {the,cat,sat,on,a,mat}: 5/6; "a cat sat" vs the first: 2/6, vs the second... not a rep
    assert cluster_answers(texts, "lexical") == [0, 0, 1, 2]
    assert cluster_answers(texts, "lexical", lexical_threshold=0.3) == [0, 0, 1, 0]
    assert cluster_answers(texts, "lexical", lexical_threshold=1.0) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="lexical_threshold"):
        cluster_answers(texts, "lexical", lexical_threshold=0.0)


def test_answers_are_read_like_the_reward_reads_them(checker):
    # cluster_answers reads a completion's answer with extract_final_answer, exactly as accuracy_reward does: a bare
    # "1/2" completion (no box, no "answer is") reads as its last number, 2. Pre-extracted answers can be passed.
    assert cluster_answers(["1/2", "\\boxed{2}"], checker=checker) == [0, 0]
    assert cluster_answers(["1/2", "0.5"], checker=checker, answers=["1/2", "0.5"]) == [0, 0]
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        cluster_answers(["1/2", "0.5"], answers=["1/2"])


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown cluster method"):
        cluster_answers(["1"], "semantic")


def test_cheap_keys_need_no_math_verify():
    checker = CountingChecker(timeout=10.0)
    try:
        completions = [
            "0.5",
            "so \\boxed{1/2}",
            "\\boxed{\\frac{1}{2}}",
            "Answer: 0.50",
            "3",
            "3.0",
            "\\boxed{-3}",
            "\\boxed{x}",
        ]
        completions = completions * 8
        ids = cluster_answers(completions, checker=checker)
        assert ids[:8] == [0, 0, 0, 0, 1, 1, 2, 3]
        # number keys and string-equal keys are decided in-process: only "x" against the 3 numeric representatives
        # could reach math-verify, and numbers vs a bare letter is decided by the checker's fast path or once each.
        assert len(checker.slow_pairs) <= 3
        assert checker.stats["worker"] + checker.stats["cached"] == len(checker.slow_pairs)
    finally:
        checker.close()


def test_expensive_checks_are_bounded_by_keys_times_clusters():
    checker = CountingChecker(timeout=10.0)
    try:
        forms = ["\\boxed{\\sqrt{2}}", "\\boxed{2^{1/2}}", "\\boxed{\\pi}", "\\boxed{x+1}", "\\boxed{1+x}"]
        completions = [forms[(7 * i) % len(forms)] for i in range(40)]
        ids = cluster_answers(completions, checker=checker)
        by_form = {c: i for c, i in zip(completions, ids, strict=True)}
        assert by_form[forms[0]] == by_form[forms[1]]
        assert by_form[forms[3]] == by_form[forms[4]]
        assert len({by_form[forms[0]], by_form[forms[2]], by_form[forms[3]]}) == 3
        num_keys, num_clusters = len(forms), len(set(ids))
        # each new key is compared with at most every existing cluster representative, once
        assert len(checker.slow_pairs) <= num_keys * num_clusters
        assert len(checker.slow_pairs) < len(completions) * (len(completions) - 1) // 2 // 10
    finally:
        checker.close()
