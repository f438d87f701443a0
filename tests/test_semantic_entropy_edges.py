"""Boundaries of the semantic-entropy estimators and of the clustering rules, each stated in a docstring of
`sec_trl/semantic_entropy.py` and each found unpinned by the mutation pass (tests/README.md)."""

import math

import pytest

from sec_trl.answer_checking import MAX_ANSWER_CHARS
from sec_trl.semantic_entropy import cluster_answers, weighted_semantic_entropy


def test_weighted_entropy_survives_log_likelihoods_far_apart():
    """The softmax subtracts the maximum ("computed stably"): exp(x - min) overflows on a spread of ~709 nats."""
    assert weighted_semantic_entropy([0, 1], [-5000.0, -1.0]) == 0.0  # the second response holds all the mass
    p = 1 / (1 + math.exp(-1.0))  # softmax([-4000, -4001])[0]
    expected = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert weighted_semantic_entropy([0, 1, 2], [-4000.0, -4001.0, -9000.0]) == pytest.approx(expected)


@pytest.mark.parametrize("method", ["math", "exact"])
def test_answers_up_to_the_length_limit_cluster_longer_ones_are_singletons(method):
    """Answers longer than MAX_ANSWER_CHARS are singletons; an answer of exactly that length is still an answer."""
    at_limit, over = "7" * MAX_ANSWER_CHARS, "7" * (MAX_ANSWER_CHARS + 1)
    assert cluster_answers([f"\\boxed{{{at_limit}}}"] * 2, method=method) == [0, 0]
    assert cluster_answers([f"\\boxed{{{over}}}"] * 2, method=method) == [0, 1]


def test_lexical_threshold_is_inclusive():
    # {a, b, c} and {a, b, d}: Jaccard overlap 2 / 4 = 0.5, the default threshold ("at or above")
    assert cluster_answers(["a b c", "a b d"], method="lexical") == [0, 0]
    assert cluster_answers(["a b c", "a b d"], method="lexical", lexical_threshold=0.51) == [0, 1]


def test_lexical_ties_go_to_the_lower_cluster_id():
    # "a b c d" and "a b e f" overlap 2 / 6 < 0.5: two clusters. "a b c e" overlaps each by 3 / 5 = 0.6: a tie
    assert cluster_answers(["a b c d", "a b e f", "a b c e"], method="lexical") == [0, 1, 0]
    assert cluster_answers(["a b e f", "a b c d", "a b c e"], method="lexical") == [0, 1, 0]
