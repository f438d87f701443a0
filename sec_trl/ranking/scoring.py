"""Scoring one prompt: cluster its samples by final answer, compute its semantic entropy and sample accuracy."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

from sec_trl.generation.samplers import Sample
from sec_trl.ranking.params import RankingParams


logger = logging.getLogger(__name__)

__all__ = ["prompt_entropy", "score_prompt"]


def prompt_entropy(
    index: int, cluster_ids: Sequence[int], samples: Sequence[Sample], estimator: str
) -> tuple[float, str]:
    """``(SE, estimator used)`` of one prompt's clustered samples.

    ``weighted`` uses the length-normalised log-likelihoods (``loglik / num_tokens``: the mean token
    log-probability, as Farquhar et al. 2024 and Kuhn et al. 2023). With sums, responses hundreds of tokens long
    differ by hundreds of nats and the softmax is one-hot, so SE would be ~0 whatever the clusters. A prompt whose
    log-likelihoods are not finite (or a sample without tokens) falls back to the discrete estimator, with a
    warning, and reports ``discrete_fallback``.
    """
    from sec_trl.semantic_entropy import discrete_semantic_entropy, weighted_semantic_entropy

    if estimator != "weighted":
        return discrete_semantic_entropy(cluster_ids), estimator
    try:
        se = weighted_semantic_entropy(cluster_ids, [s.loglik for s in samples], [s.num_tokens for s in samples])
    except ValueError as exc:
        logger.warning(
            "Prompt %d: %s; using the discrete estimator for this prompt (se_estimator=discrete_fallback).", index, exc
        )
        return discrete_semantic_entropy(cluster_ids), "discrete_fallback"
    return se, estimator


def score_prompt(index: int, samples: Sequence[Sample], reference: str | None, params: RankingParams, checker) -> dict:
    """Cluster one prompt's samples and compute its SE and sample accuracy (a JSON-able row of a shard)."""
    from sec_trl.semantic_entropy import cluster_answers, final_answers

    texts = [s.text for s in samples]
    answers = final_answers(texts)
    # one time budget for the prompt's answer checking: the clustering, then the sample accuracy with what is left
    deadline = time.monotonic() + params.answer_time_budget
    ids = cluster_answers(
        texts,
        params.cluster_method,
        checker=checker,
        lexical_threshold=params.lexical_threshold,
        answers=answers,
        time_budget=params.answer_time_budget,
    )
    se, estimator = prompt_entropy(index, ids, samples, params.estimator)
    accuracy = None
    if reference is not None:
        verdicts = checker.check_batch(texts, [reference] * len(texts), deadline=deadline)
        accuracy = sum(verdicts) / len(verdicts)
    row = {
        "index": index,
        "semantic_entropy": se,
        "num_clusters": len(set(ids)),
        "sample_accuracy": accuracy,
        "estimator": estimator,
        "cluster_ids": ids,
        "answers": answers,
        "logliks": [x if math.isfinite(x) else None for x in (s.loglik for s in samples)],
        "num_tokens": [s.num_tokens for s in samples],
        "truncated": [s.truncated for s in samples],
    }
    if params.save_completions:
        row["completions"] = texts
    return row
