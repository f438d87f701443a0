"""The two samplers of the ranking: ``transformers`` (``model.generate``, several processes) and vLLM (one process).

Both return, per prompt, ``num_samples`` :class:`Sample` s: the decoded text, the sequence log-likelihood (the sum
of the sampled tokens' log-probabilities under the raw model) and the number of tokens that sum covers.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import LogitsProcessor

from sec_trl.generation import (
    eos_token_ids,
    prompt_token_ids,
    resolve_dtype,
    sampling_config,
    stream_seed,
    vllm_sampling_params,
)
from sec_trl.ranking.params import RankingParams


__all__ = [
    "LogLikelihoodRecorder",
    "Sample",
    "TransformersSampler",
    "VLLMSampler",
    "load_tokenizer",
    "prompt_seed",
    "prompt_token_ids",
    "require_vllm",
    "shard_seed",
]

# Domain tags of the two seed streams, so that shard s and prompt s never share a seed.
_SHARD_STREAM, _PROMPT_STREAM = 0, 1


def shard_seed(seed: int, shard: int) -> int:
    """The seed of ``torch.manual_seed`` at the start of shard ``shard`` (63 bits, from ``SeedSequence``)."""
    return stream_seed(seed, _SHARD_STREAM, shard, 63)


def prompt_seed(seed: int, index: int) -> int:
    """The vLLM ``SamplingParams.seed`` of the prompt in row ``index`` (31 bits, from ``SeedSequence``)."""
    return stream_seed(seed, _PROMPT_STREAM, index, 31)


@dataclass
class Sample:
    """One sampled response: text, sequence log-likelihood (sum), the tokens it covers, whether it was cut off."""

    text: str
    loglik: float
    num_tokens: int
    truncated: bool
    token_ids: list[int] | None = None  # the completion's tokens, EOS included (transformers backend only)


def load_tokenizer(path: str, trust_remote_code: bool):
    """``AutoTokenizer.from_pretrained(path)``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


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
    """Samples with ``model.generate`` (left padding, ``num_return_sequences``)."""

    backend = "transformers"

    def __init__(self, model_path: str, params: RankingParams, device) -> None:
        from transformers import AutoModelForCausalLM

        self.params = params
        self.device = device
        self.tokenizer = load_tokenizer(model_path, params.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=resolve_dtype(params.dtype, device), trust_remote_code=params.trust_remote_code
        )
        self.model = model.to(device).eval()
        eos = self.eos = eos_token_ids(model.generation_config, self.tokenizer)
        if self.tokenizer.pad_token_id is None:  # the batch is padded by the tokenizer; EOS pads where none is set
            self.tokenizer.pad_token = self.tokenizer.convert_ids_to_tokens(eos[0])
        self.pad = int(self.tokenizer.pad_token_id)
        self.generation_seconds = 0.0

    def close(self) -> None:
        """Free the model and its accelerator memory before training starts."""
        self.model = None
        _free_accelerator_memory()

    def begin_shard(self, seed: int, first_index: int) -> None:
        """Start a shard: reset torch's random state to the shard's seed (``first_index`` is not needed here)."""
        import torch

        torch.manual_seed(seed)

    def sample(self, prompts: Sequence[Any]) -> list[list[Sample]]:
        """``num_samples`` samples for each prompt (strings or chat messages), in prompt order."""
        ids = [prompt_token_ids(self.tokenizer, prompt, self.params.chat_template_kwargs) for prompt in prompts]
        # The tokenizer pads on the left (decoder-only generation continues the right end of every row).
        batch = self.tokenizer.pad(
            {"input_ids": ids}, padding_side="left", return_attention_mask=True, return_tensors="pt"
        )
        generated, token_logprobs = self._generate(batch["input_ids"], batch["attention_mask"])
        return self._to_samples(generated, token_logprobs, len(prompts))

    def _generate(self, input_ids, attention_mask):
        """The generated tokens (prompt removed) and their log-probabilities under the raw model, on the CPU."""
        import torch
        from transformers import LogitsProcessorList

        p = self.params
        recorder = LogLikelihoodRecorder()
        start = time.perf_counter()
        with torch.no_grad():
            sequences = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                generation_config=sampling_config(
                    bos=self.model.generation_config.bos_token_id,
                    eos=self.eos,
                    pad=self.pad,
                    temperature=p.temperature,
                    top_p=p.top_p,
                    max_new_tokens=p.max_new_tokens,
                    n=p.num_samples,
                ),
                logits_processor=LogitsProcessorList([recorder]),
            )
            generated = sequences[:, input_ids.shape[1] :]
            token_logprobs = recorder.finish(generated)
        self.generation_seconds += time.perf_counter() - start
        return generated.cpu(), token_logprobs.double().cpu()

    def _to_samples(self, generated, token_logprobs, num_prompts: int) -> list[list[Sample]]:
        """Cut every row at its first EOS (kept), sum the log-probabilities up to there, decode, group by prompt."""
        import torch

        is_eos = torch.isin(generated, torch.tensor(self.eos))
        steps = generated.shape[1]
        # length = up to and including the first EOS; rows without EOS were cut off at max_new_tokens
        has_eos = is_eos.any(dim=1)
        first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, steps, dtype=torch.long))
        lengths = torch.where(has_eos, first_eos + 1, first_eos)
        mask = torch.arange(steps)[None, :] < lengths[:, None]
        # where(), not a product: a position after EOS may hold a pad token the model gives -inf (-inf * 0 = NaN)
        logliks = torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs)).sum(dim=1)
        texts = self.tokenizer.batch_decode(
            [generated[r, : int(first_eos[r])].tolist() for r in range(generated.shape[0])], skip_special_tokens=True
        )
        samples = [
            Sample(
                texts[r],
                float(logliks[r]),
                int(lengths[r]),
                not bool(has_eos[r]),
                generated[r, : int(lengths[r])].tolist(),
            )
            for r in range(generated.shape[0])
        ]
        n = self.params.num_samples
        return [samples[i * n : (i + 1) * n] for i in range(num_prompts)]


class VLLMSampler:
    """Samples with ``vllm.LLM(...).generate`` and ``SamplingParams(n=num_samples, ...)``, one seed per prompt.

    The sequence log-likelihood is vLLM's ``cumulative_logprob`` (the sampled tokens' log-probabilities; vLLM's
    default ``logprobs_mode`` reports them from the raw model, like the transformers path). Each prompt gets its own
    seed derived from ``(seed, row index)``, so results do not depend on batching.
    """

    backend = "vllm"

    def __init__(self, model_path: str, params: RankingParams, device, num_processes: int = 1) -> None:
        require_vllm()
        from vllm import LLM

        self.params = params
        self.tokenizer = load_tokenizer(model_path, params.trust_remote_code)
        kwargs = {}
        if num_processes > 1:
            # Data-parallel under accelerate launch, as TRL's colocate mode: one engine per process on its own GPU,
            # inside the launcher's process group (tensor_parallel_size 1). Every prompt is seeded from its row
            # index, so the samples do not depend on which process draws them.
            kwargs = {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 1}
        self.llm = LLM(
            model=model_path,
            tokenizer=model_path,
            trust_remote_code=params.trust_remote_code,
            dtype=params.dtype,
            seed=params.seed,
            gpu_memory_utilization=params.vllm_gpu_memory_utilization,
            **kwargs,
        )
        self.generation_seconds = 0.0
        self._next_index = 0

    def close(self) -> None:
        """Free the engine and its GPU memory (train.py ranks before the trainer starts its own vLLM)."""
        self.llm = None
        _free_accelerator_memory()

    def begin_shard(self, seed: int, first_index: int) -> None:
        """Start a shard whose first row is ``first_index`` (each prompt is seeded from its row index)."""
        self._next_index = first_index

    def sample(self, prompts: Sequence[Any]) -> list[list[Sample]]:
        """``num_samples`` samples for each prompt; ``num_tokens`` is ``len(output.token_ids)``, the tokens
        ``cumulative_logprob`` sums over."""
        p = self.params
        ids = [prompt_token_ids(self.tokenizer, prompt, self.params.chat_template_kwargs) for prompt in prompts]
        seeds = [prompt_seed(p.seed, self._next_index + i) for i in range(len(ids))]
        sampling = vllm_sampling_params(p.num_samples, p.temperature, p.top_p, p.max_new_tokens, seeds, logprobs=0)
        self._next_index += len(ids)
        start = time.perf_counter()
        results = self.llm.generate([{"prompt_token_ids": x} for x in ids], sampling, use_tqdm=False)
        self.generation_seconds += time.perf_counter() - start
        out = []
        for result in results:
            samples = []
            for o in result.outputs:
                loglik = o.cumulative_logprob
                if loglik is None and o.logprobs is not None:
                    loglik = sum(step[token].logprob for step, token in zip(o.logprobs, o.token_ids, strict=False))
                samples.append(
                    Sample(
                        o.text,
                        float("nan") if loglik is None else float(loglik),
                        len(o.token_ids),
                        o.finish_reason == "length",
                    )
                )
            out.append(samples)
        return out


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def require_vllm() -> None:
    """Raise a clear ``ImportError`` when ``--use_vllm`` is asked for and vLLM is not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "--use_vllm was given but vLLM is not installed. Install it on a CUDA machine with `pip install vllm` "
            "(or `pip install sec_trl[vllm]`), or drop --use_vllm to sample with transformers."
        )
