"""The one generation layer of the ranking (``sec_trl.rank``) and the evaluation (``sec_trl.evaluate``): a model is
ranked and evaluated on exactly the token ids training feeds it, with one table of random streams.

This module holds the light helpers (no torch / transformers import at module level): the process state, the dtype
rule, the seed streams, the chat template and its kwargs, EOS ids, the vLLM checks and engine arguments. The two
samplers (transformers ``generate`` and vLLM), which return per prompt the text, token ids, log-likelihood and
truncation of each sample, are in :mod:`sec_trl.generation.samplers`.
"""

from __future__ import annotations

import importlib.util
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


def load_model(
    path: str, tokenizer=None, *, device, dtype=None, trust_remote_code: bool = False, revision: str | None = None
):
    """``(model, tokenizer)`` from a local directory or Hub id: the model in ``dtype`` (:func:`resolve_dtype`) on
    ``device``, in eval mode; the tokenizer given, or (None) the path's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device or "cpu")
    kwargs = {"trust_remote_code": trust_remote_code, **({"revision": revision} if revision else {})}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device), **kwargs)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    return model.to(device).eval(), tokenizer


# The random streams of every run, one table: an item of one stream never shares a seed with another stream's.
SHARD_STREAM = 0
"""Ranking, transformers: ``torch.manual_seed`` at the start of shard ``s`` (63 bits); its batches follow in order."""
PROMPT_STREAM = 1
"""Ranking, vLLM: the ``SamplingParams.seed`` of dataset row ``i`` (31 bits)."""
EVALUATION_STREAM = 2
"""Evaluation: ``torch.manual_seed`` of the batch whose first prompt is ``i``, and vLLM's seed of prompt ``i``."""


def shard_seed(seed: int, shard: int) -> int:
    """The ranking's ``torch.manual_seed`` at the start of shard ``shard`` (63 bits, from ``SeedSequence``)."""
    return stream_seed(seed, SHARD_STREAM, shard, 63)


def prompt_seed(seed: int, index: int) -> int:
    """The ranking's vLLM ``SamplingParams.seed`` of the prompt in row ``index`` (31 bits)."""
    return stream_seed(seed, PROMPT_STREAM, index, 31)


def evaluation_seed(seed: int, index: int, bits: int = 31) -> int:
    """The evaluation's seed of the item at global ``index`` (a batch's first prompt, or one prompt for vLLM)."""
    return stream_seed(seed, EVALUATION_STREAM, index, bits)


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


def require_vllm() -> None:
    """Raise ``ImportError`` naming the install extra when ``--use_vllm`` is asked for and vLLM is not importable."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "--use_vllm true needs vLLM, which is not installed. Install it on a CUDA machine with "
            "`pip install 'sec_trl[vllm]'` (or `pip install vllm`), or drop --use_vllm to sample with transformers."
        )


def data_parallel_engine_kwargs(num_processes: int) -> dict:
    """``vllm.LLM`` arguments for ``num_processes`` processes: under ``accelerate launch``, as TRL's colocate mode,
    one engine per process on its own GPU inside the launcher's process group (``external_launcher``, tensor-parallel
    size 1); a plain engine for one process. Seeds follow prompt indices, so the samples do not depend on the count."""
    if num_processes > 1:
        return {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 1}
    return {}
