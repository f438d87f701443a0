"""Sampling k completions per prompt, with transformers ``generate`` or vLLM, seeded so that sharding the prompts
over processes does not change any sample.

Seeds: with transformers, prompts are generated in batches of ``batch_size`` whose boundaries are global (batch b
holds prompts ``[b * batch_size, (b + 1) * batch_size)`` of the whole dataset) and each batch is seeded from
``(seed, index of its first prompt)``; a process's shard is a run of whole batches (:func:`shard_bounds`). So each
batch sees the same prompts, padding and seed in a 1-process and an N-process run. With vLLM each prompt has its own
``SamplingParams.seed`` derived from ``(seed, prompt index)``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sec_trl.generation import eos_token_ids, prompt_token_ids, sampling_config, stream_seed, vllm_sampling_params


EVALUATION_STREAM = 2  # the ranking uses streams 0 (shards) and 1 (prompts)


VLLM_INSTALL_HINT = "pip install 'sec_trl[vllm]'"


@dataclass
class Completion:
    """One sampled completion: its text (special tokens removed), its length in tokens (EOS included) and whether
    it was cut at ``max_new_tokens``."""

    text: str
    num_tokens: int
    truncated: bool


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


def derive_seed(seed: int, index: int, bits: int = 31) -> int:
    """A seed for the item at global ``index`` of a run seeded with ``seed`` (stable across machines/processes)."""
    return stream_seed(seed, EVALUATION_STREAM, index, bits)


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


class _ChunkedSampler:
    """Samples ``prompts`` chunk by chunk (``_chunk``), reporting progress after each chunk."""

    def chunk_size(self, settings: SamplingSettings) -> int:
        raise NotImplementedError

    def sample(
        self,
        prompts: Sequence[Any],
        first_index: int,
        settings: SamplingSettings,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Completion]]:
        """k completions for each of ``prompts`` (global indices from ``first_index``, a batch boundary)."""
        out: list[list[Completion]] = []
        size = self.chunk_size(settings)
        for lo in range(0, len(prompts), size):
            chunk = prompts[lo : lo + size]
            out.extend(self._chunk(chunk, first_index + lo, settings))
            if progress is not None:
                progress(len(chunk))
        return out


class TransformersSampler(_ChunkedSampler):
    """``model.generate`` with left padding and ``num_return_sequences=k``, one seeded batch at a time.

    ``chat_template_kwargs``: extra ``apply_chat_template`` arguments (the training's
    ``GRPOConfig.chat_template_kwargs``), so message prompts become the token ids the model was trained on."""

    def __init__(self, model, tokenizer, chat_template_kwargs: dict | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.chat_template_kwargs = chat_template_kwargs
        eos = self.eos = eos_token_ids(model.generation_config, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad = int(pad) if pad is not None else eos[0]
        self._bos = model.generation_config.bos_token_id

    def chunk_size(self, settings: SamplingSettings) -> int:
        return settings.batch_size  # one seeded generate call per batch

    def _chunk(self, prompts: Sequence[Any], first_index: int, s: SamplingSettings) -> list[list[Completion]]:
        import torch

        ids = [prompt_token_ids(self.tokenizer, p, self.chat_template_kwargs) for p in prompts]
        # the tokenizer pads on the left (decoder-only generation continues the right end of every row)
        if self.tokenizer.pad_token_id is None:  # EOS pads where the tokenizer names no pad token
            self.tokenizer.pad_token_id = self.pad
        batch = self.tokenizer.pad({"input_ids": ids}, padding_side="left", return_tensors="pt")
        input_ids, attention, width = batch["input_ids"], batch["attention_mask"], batch["input_ids"].shape[1]
        device = next(self.model.parameters()).device
        torch.manual_seed(derive_seed(s.seed, first_index))
        config = sampling_config(
            bos=self._bos,
            eos=self.eos,
            pad=self.pad,
            temperature=s.temperature,
            top_p=s.top_p,
            max_new_tokens=s.max_new_tokens,
            n=s.k,
        )
        with torch.no_grad():
            sequences = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config
            )
        rows = sequences[:, width:].tolist()
        groups = []
        for i in range(len(prompts)):
            group = []
            for tokens in rows[i * s.k : (i + 1) * s.k]:
                end = next((j + 1 for j, t in enumerate(tokens) if t in self.eos), None)
                truncated = end is None
                end = len(tokens) if end is None else end
                text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
                group.append(Completion(text, end, truncated))
            groups.append(group)
        return groups


def require_vllm() -> None:
    """Raise ``ImportError`` naming the install extra when vLLM is not importable."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            f"--use_vllm true needs vLLM, which is not installed. Install it on a CUDA machine with "
            f"`{VLLM_INSTALL_HINT}` (or `pip install vllm`), or drop --use_vllm to sample with transformers."
        )


class VLLMSampler(_ChunkedSampler):
    """``vllm.LLM(model=...).generate`` on prompt token ids with ``SamplingParams(n=k, temperature, top_p,
    max_tokens, seed)``; one seed per prompt, derived from ``(seed, prompt index)``. A completion is truncated when
    vLLM's ``finish_reason`` is ``"length"``."""

    vllm_chunk_size = 256
    """Prompts per ``generate`` call (vLLM batches them itself; chunks only pace the progress bar)."""

    def __init__(self, model_path: str, tokenizer, seed: int = 0, chat_template_kwargs=None, **llm_kwargs):
        require_vllm()
        from vllm import LLM

        self.tokenizer = tokenizer
        self.chat_template_kwargs = chat_template_kwargs
        self.llm = LLM(model=model_path, tokenizer=model_path, seed=seed, **llm_kwargs)

    def chunk_size(self, settings: SamplingSettings) -> int:
        return self.vllm_chunk_size

    def _chunk(self, prompts: Sequence[Any], first_index: int, s: SamplingSettings) -> list[list[Completion]]:
        ids = [prompt_token_ids(self.tokenizer, p, self.chat_template_kwargs) for p in prompts]
        seeds = [derive_seed(s.seed, first_index + i) for i in range(len(ids))]
        params = vllm_sampling_params(s.k, s.temperature, s.top_p, s.max_new_tokens, seeds)
        results = self.llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        return [
            [Completion(o.text, len(o.token_ids), o.finish_reason == "length") for o in result.outputs]
            for result in results
        ]
