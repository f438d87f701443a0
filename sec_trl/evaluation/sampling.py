"""Sampling k completions per prompt with the samplers of :mod:`sec_trl.generation.samplers` (transformers
``generate`` or vLLM), seeded so that sharding the prompts over processes does not change any sample.

Seeds: with transformers, prompts are generated in batches of ``batch_size`` whose boundaries are global (batch b
holds prompts ``[b * batch_size, (b + 1) * batch_size)`` of the whole dataset) and each batch is seeded from
``(seed, index of its first prompt)``; a process's shard is a run of whole batches (:func:`shard_bounds`). So each
batch sees the same prompts, padding and seed in a 1-process and an N-process run. With vLLM each prompt has its own
``SamplingParams.seed`` derived from ``(seed, prompt index)``. Both come from the evaluation's stream of
:mod:`sec_trl.generation` (:func:`~sec_trl.generation.evaluation_seed`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sec_trl.generation import evaluation_seed


@dataclass
class SamplingSettings:
    """How completions are sampled (the CLI's --k, --temperature, --top_p, --max_new_tokens, --batch_size, --seed)."""

    k: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self):
        for name in ("k", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (sampling), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def shard_bounds(num_prompts: int, batch_size: int, num_processes: int, process_index: int) -> tuple[int, int]:
    """``[start, end)`` of the prompts process ``process_index`` samples: a contiguous run of whole global batches,
    as even as possible over processes (a process may get none when there are fewer batches than processes).

    Examples:
        >>> [shard_bounds(10, 4, 2, p) for p in range(2)]
        [(0, 4), (4, 10)]
        >>> [shard_bounds(3, 1, 2, p) for p in range(2)]
        [(0, 1), (1, 3)]
    """
    num_batches = -(-num_prompts // batch_size)
    first = process_index * num_batches // num_processes
    last = (process_index + 1) * num_batches // num_processes
    return min(first * batch_size, num_prompts), min(last * batch_size, num_prompts)


VLLM_CHUNK_SIZE = 256
"""Prompts per vLLM ``generate`` call (vLLM batches them itself; chunks only pace the progress bar)."""


def sample_prompts(
    sampler,
    prompts: Sequence[Any],
    first_index: int,
    settings: SamplingSettings,
    progress: Callable[[int], None] | None = None,
) -> list:
    """``k`` :class:`~sec_trl.generation.samplers.Sample` s for each of ``prompts`` (global indices from
    ``first_index``, a batch boundary), chunk by chunk, reporting progress after each: transformers generates batches
    of ``batch_size``, each from the seed of its first prompt's index; vLLM seeds every prompt from its own index."""
    out: list = []
    size = VLLM_CHUNK_SIZE if sampler.batches_itself else settings.batch_size
    for lo in range(0, len(prompts), size):
        chunk, index = prompts[lo : lo + size], first_index + lo
        sampler.reseed(evaluation_seed(settings.seed, index))
        out.extend(
            sampler.sample(
                chunk,
                [evaluation_seed(settings.seed, index + i) for i in range(len(chunk))],
                n=settings.k,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_new_tokens=settings.max_new_tokens,
            )
        )
        if progress is not None:
            progress(len(chunk))
    return out
