"""The two samplers of the ranking and the evaluation: transformers (``model.generate``) and vLLM.

Both take prompts (strings or chat messages, rendered as training renders them: :func:`prompt_token_ids` with the
training's ``chat_template_kwargs``) and return, per prompt, ``n`` :class:`Sample` s: text, token ids,
log-likelihood (the sum of the sampled tokens' log-probabilities under the raw model; computed only with
``logliks=True``) and truncation. Seeding is the same contract for both: :meth:`reseed` starts a run of the torch
generator (transformers draws every batch from it, in order), and ``sample(..., seeds=...)`` gives one seed per prompt
(vLLM seeds each request with it, so its batching cannot change the samples). The seeds come from the streams of
:mod:`sec_trl.generation`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import LogitsProcessor

from sec_trl.generation import (
    eos_token_ids,
    load_model,
    prompt_token_ids,
    require_vllm,
    sampling_config,
    vllm_sampling_params,
)


__all__ = ["LogLikelihoodRecorder", "Sample", "TransformersSampler", "VLLMSampler", "prompt_token_ids"]


@dataclass
class Sample:
    """One sampled completion: its text (special tokens removed), its length in tokens (EOS included), whether it was
    cut at ``max_new_tokens``, its log-likelihood (the sum over those tokens; None when not asked for, NaN when the
    engine reported none) and its token ids (EOS included)."""

    text: str
    num_tokens: int
    truncated: bool
    loglik: float | None = None
    token_ids: list[int] | None = None


class LogLikelihoodRecorder(LogitsProcessor):
    """A logits processor that records each generated token's log-probability under the raw model.

    Custom processors run before generate's sampling warpers (temperature, top-p), so ``scores`` here are the
    model's logits (the sampler's generation config switches every other processor off). The token chosen at step
    t is only known at step t+1 (it is the last column of ``input_ids``), so only the previous step's
    log-softmax (``rows x vocab``) is kept; :meth:`finish` reads the last token from the output sequences.
    """

    def __init__(self) -> None:
        self._previous = None
        self._token_logprobs: list = []

    def __call__(self, input_ids, scores):
        import torch

        if self._previous is not None:
            self._token_logprobs.append(self._previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self._previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated):
        """``(rows, T)`` log-probabilities of the ``generated`` tokens (``rows x T``, prompt removed)."""
        import torch

        steps = generated.shape[1]
        if steps == 0:
            return torch.zeros(generated.shape, dtype=torch.float32, device=generated.device)
        if self._previous is not None and len(self._token_logprobs) < steps:
            last = generated[:, len(self._token_logprobs) : len(self._token_logprobs) + 1]
            self._token_logprobs.append(self._previous.gather(1, last).squeeze(1))
        self._previous = None
        out = torch.stack(self._token_logprobs[:steps], dim=1)
        self._token_logprobs = []
        return out


class TransformersSampler:
    """``model.generate`` with left padding and ``num_return_sequences=n``: each call is one padded batch, drawn from
    torch's generator (seeded by :meth:`reseed`). ``logliks=True`` records the sampled tokens' log-probabilities
    (:class:`LogLikelihoodRecorder`: one log-softmax per step); without it nothing is added to ``generate``."""

    backend = "transformers"
    batches_itself = False  # a call is one padded batch: the caller's batch size sets padding and memory

    def __init__(self, model, tokenizer, *, chat_template_kwargs: dict | None = None, logliks: bool = False) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.chat_template_kwargs = chat_template_kwargs
        self.logliks = logliks
        eos = self.eos = eos_token_ids(model.generation_config, tokenizer)
        if tokenizer.pad_token_id is None:  # the batch is padded by the tokenizer; EOS pads where none is set
            tokenizer.pad_token_id = eos[0]
        self.pad = int(tokenizer.pad_token_id)
        self.generation_seconds = 0.0

    @classmethod
    def from_pretrained(cls, path: str, *, device, dtype=None, trust_remote_code: bool = False, **kwargs):
        """The sampler on the model and tokenizer of ``path`` (:func:`sec_trl.generation.load_model`)."""
        model, tokenizer = load_model(path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, **kwargs)

    def close(self) -> None:
        """Free the model and its accelerator memory (train.py ranks before the trainer loads its own)."""
        self.model = None
        _free_accelerator_memory()

    def reseed(self, seed: int) -> None:
        """Reset torch's random state: the following calls draw from ``seed``'s stream, in order."""
        import torch

        torch.manual_seed(seed)

    def sample(
        self, prompts: Sequence[Any], seeds: Sequence[int] | None = None, *, n, temperature, top_p, max_new_tokens
    ) -> list[list[Sample]]:
        """``n`` samples for each prompt, in prompt order (``seeds``: unused, the batch draws from torch's stream)."""
        import torch
        from transformers import LogitsProcessorList

        ids = [prompt_token_ids(self.tokenizer, prompt, self.chat_template_kwargs) for prompt in prompts]
        # The tokenizer pads on the left (decoder-only generation continues the right end of every row).
        batch = self.tokenizer.pad(
            {"input_ids": ids}, padding_side="left", return_attention_mask=True, return_tensors="pt"
        )
        input_ids, device = batch["input_ids"], next(self.model.parameters()).device
        recorder = LogLikelihoodRecorder() if self.logliks else None
        config = sampling_config(
            bos=self.model.generation_config.bos_token_id,
            eos=self.eos,
            pad=self.pad,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            n=n,
        )
        start = time.perf_counter()
        with torch.no_grad():
            sequences = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=batch["attention_mask"].to(device),
                generation_config=config,
                **({"logits_processor": LogitsProcessorList([recorder])} if recorder is not None else {}),
            )
            generated = sequences[:, input_ids.shape[1] :]
            token_logprobs = recorder.finish(generated).double().cpu() if recorder is not None else None
        self.generation_seconds += time.perf_counter() - start
        samples = self._to_samples(generated.cpu(), token_logprobs)
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _to_samples(self, generated, token_logprobs) -> list[Sample]:
        """Cut every row at its first EOS (kept), sum the log-probabilities up to there, decode."""
        import torch

        is_eos = torch.isin(generated, torch.tensor(self.eos))
        steps = generated.shape[1]
        # length = up to and including the first EOS; rows without EOS were cut off at max_new_tokens
        has_eos = is_eos.any(dim=1)
        first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, steps, dtype=torch.long))
        lengths = torch.where(has_eos, first_eos + 1, first_eos)
        logliks = [None] * generated.shape[0]
        if token_logprobs is not None:
            mask = torch.arange(steps)[None, :] < lengths[:, None]
            # where(), not a product: a position after EOS may hold a pad token the model gives -inf (-inf * 0 = NaN)
            logliks = torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs)).sum(dim=1).tolist()
        texts = self.tokenizer.batch_decode(
            [generated[r, : int(first_eos[r])].tolist() for r in range(generated.shape[0])], skip_special_tokens=True
        )
        return [
            Sample(
                texts[r], int(lengths[r]), not bool(has_eos[r]), logliks[r], generated[r, : int(lengths[r])].tolist()
            )
            for r in range(generated.shape[0])
        ]


class VLLMSampler:
    """``vllm.LLM(model=...).generate`` on prompt token ids with one ``SamplingParams(n, temperature, top_p,
    max_tokens, seed)`` per prompt, each seeded from ``seeds``. A sample is truncated when vLLM's ``finish_reason`` is
    ``"length"``; ``num_tokens`` is ``len(output.token_ids)``. With ``logliks=True`` it asks for ``logprobs=0`` and the
    log-likelihood is vLLM's ``cumulative_logprob`` (vLLM's default ``logprobs_mode`` reports the raw model's, like
    the transformers path), else the sum of the reported token log-probabilities, else NaN."""

    backend = "vllm"
    batches_itself = True  # vLLM schedules its own batches: the prompts of a call only pace a progress bar

    def __init__(
        self,
        model_path: str,
        tokenizer=None,
        *,
        chat_template_kwargs: dict | None = None,
        logliks: bool = False,
        trust_remote_code: bool = False,
        **engine_kwargs,
    ) -> None:
        require_vllm()
        from transformers import AutoTokenizer
        from vllm import LLM

        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.tokenizer = tokenizer
        self.chat_template_kwargs = chat_template_kwargs
        self.logliks = logliks
        self.llm = LLM(model=model_path, tokenizer=model_path, trust_remote_code=trust_remote_code, **engine_kwargs)
        self.generation_seconds = 0.0

    def close(self) -> None:
        """Free the engine and its GPU memory (train.py ranks before the trainer starts its own vLLM)."""
        self.llm = None
        _free_accelerator_memory()

    def reseed(self, seed: int) -> None:
        """Nothing to do: every request is seeded from ``sample``'s ``seeds``."""

    def sample(
        self, prompts: Sequence[Any], seeds: Sequence[int], *, n, temperature, top_p, max_new_tokens
    ) -> list[list[Sample]]:
        """``n`` samples for each prompt, in prompt order, prompt ``i`` seeded with ``seeds[i]``."""
        ids = [prompt_token_ids(self.tokenizer, prompt, self.chat_template_kwargs) for prompt in prompts]
        extra = {"logprobs": 0} if self.logliks else {}
        params = vllm_sampling_params(n, temperature, top_p, max_new_tokens, list(seeds), **extra)
        start = time.perf_counter()
        results = self.llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        self.generation_seconds += time.perf_counter() - start
        return [[self._sample(o) for o in result.outputs] for result in results]

    def _sample(self, o) -> Sample:
        loglik = None
        if self.logliks:
            loglik = o.cumulative_logprob
            if loglik is None and o.logprobs is not None:
                loglik = sum(step[token].logprob for step, token in zip(o.logprobs, o.token_ids, strict=False))
            loglik = float("nan") if loglik is None else float(loglik)
        return Sample(o.text, len(o.token_ids), o.finish_reason == "length", loglik, list(o.token_ids))


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
