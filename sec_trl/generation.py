"""Generation helpers shared by the ranking and the evaluation samplers (transformers and vLLM), so that a model is
ranked and evaluated on exactly the token ids training feeds it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def process_state(use_cpu: bool = False):
    """accelerate's process state for the ranking and the evaluation. Processes started by ``accelerate launch
    --multi_gpu`` / ``torchrun`` join one process group; without an accelerator (or with ``use_cpu``) it is gloo on
    the CPU, which `PartialState` only sets up when told ``cpu=True`` (``accelerate launch --cpu`` itself starts a
    single process unless MPI is set up)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = torch.cuda.is_available() or (accelerator is not None and accelerator.is_available())
    return PartialState(cpu=use_cpu or parse_flag_from_env("ACCELERATE_USE_CPU") or not has_accelerator)


def resolve_dtype(dtype, device):
    """The ``dtype`` to load a sampling model with: None / ``"auto"`` is float32 on the CPU (no bf16 kernels to rely
    on) and the checkpoint's own dtype on an accelerator; a name (``"bfloat16"``) becomes the ``torch.dtype``."""
    import torch

    if dtype is None or dtype == "auto":
        return torch.float32 if torch.device(device).type == "cpu" else "auto"
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def stream_seed(seed: int, stream: int, index: int, bits: int = 31) -> int:
    """A ``bits``-bit seed for item ``index`` of random stream ``stream`` of a run seeded with ``seed``: independent
    across (seed, stream, index) and stable across machines and processes (``numpy.random.SeedSequence``)."""
    import numpy as np

    word = np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(word) & ((1 << bits) - 1)


def parse_chat_template_kwargs(value: Any, flag: str = "--chat_template_kwargs") -> dict | None:
    """``chat_template_kwargs`` as TRL's ``GRPOConfig`` field takes it: a dict, a JSON object string (the command
    line's form, e.g. ``'{"enable_thinking": false}'``), or None / empty (no extra arguments, returned as None)."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{flag} must be a JSON object such as '{{\"enable_thinking\": false}}', got {value!r}"
            ) from exc
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object (a dict of apply_chat_template arguments), got {value!r}")
    return dict(value) or None


def prompt_token_ids(tokenizer, prompt: Any, chat_template_kwargs: dict | None = None) -> list[int]:
    """The prompt's token ids as TRL's GRPO trainer feeds them: chat messages through the chat template with the
    generation prompt and the training's ``chat_template_kwargs`` (``GRPOConfig.chat_template_kwargs``, which TRL
    passes to ``apply_chat_template``); a plain string as is, without added special tokens (TRL tokenizes its
    standard format with ``add_special_tokens=False``)."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "The prompts are chat messages but the model's tokenizer has no chat template. Use an instruct/chat "
            "model, or keep plain-string prompts as text with --wrap_string_prompts false (PromptFormat("
            "wrap_string_prompts=False) in Python)."
        )
    messages = [{key: value for key, value in m.items() if value is not None} for m in prompt]
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **(chat_template_kwargs or {})
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eos_token_ids(generation_config, tokenizer) -> list[int]:
    """Every end-of-sequence id the model's generation config or its tokenizer names (ValueError if none)."""
    eos: list[int] = []
    for candidate in (generation_config.eos_token_id, tokenizer.eos_token_id):
        for token in candidate if isinstance(candidate, (list, tuple)) else [candidate]:
            if token is not None and int(token) not in eos:
                eos.append(int(token))
    if not eos:
        raise ValueError("The model has no EOS token (neither its generation config nor its tokenizer names one).")
    return eos


def sampling_config(
    *, bos: int | None, eos: list[int], pad: int, temperature: float, top_p: float, max_new_tokens: int, n: int
):
    """A clean ``GenerationConfig`` that samples with exactly ``temperature`` and ``top_p`` (``top_k`` off): a
    checkpoint's own ``generation_config.json`` (top_k, repetition_penalty, ...) cannot add processors."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
    )


def vllm_sampling_params(
    n: int, temperature: float, top_p: float, max_tokens: int, seeds: Sequence[int], **extra: Any
) -> list:
    """One ``vllm.SamplingParams`` per prompt, each with its own seed (so batching cannot change the samples)."""
    from vllm import SamplingParams

    return [
        SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, **extra)
        for seed in seeds
    ]
