"""The one builder of the tiny causal LMs used by the tests (and `benchmarks/bench_step.py`'s presets).

Every model gets the real SmolLM2 tokenizer (vocabulary, special tokens, chat template) and random weights from a
fixed seed, and is saved with its tokenizer so that `from_pretrained(path)` and train.py load it like a Hub model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


# 2 layers, hidden size 16: a forward + backward on a handful of tokens takes milliseconds on one CPU core
TINY_LLAMA = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=512,
)


def causal_lm_config(tokenizer, *, arch: str = "llama", tie_word_embeddings: bool = True, **sizes):
    """A `LlamaConfig` (or `Qwen2Config` with `arch="qwen2"`) on `tokenizer`'s vocabulary and special tokens.

    `sizes` overrides `TINY_LLAMA` (hidden_size, num_hidden_layers, ... or any other config field).
    """
    from transformers import LlamaConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    return config_cls(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
        **{**TINY_LLAMA, **sizes},
    )


def save_causal_lm(
    tokenizer_dir: str | Path,
    path: str | Path,
    *,
    seed: int = 0,
    edit: Callable | None = None,
    arch: str = "llama",
    tie_word_embeddings: bool = True,
    **sizes,
) -> str:
    """Build a randomly initialised causal LM (`torch.manual_seed(seed)`), save it with the tokenizer of
    `tokenizer_dir` to `path`, and return `str(path)`.

    `edit(model, tokenizer)`, if given, runs under `torch.no_grad()` before saving (e.g. to fix the logits).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = causal_lm_config(tokenizer, arch=arch, tie_word_embeddings=tie_word_embeddings, **sizes)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if edit is not None:
        with torch.no_grad():
            edit(model, tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def fixed_logits(boosts: dict[str, float]) -> Callable:
    """An `edit` for `save_causal_lm(..., tie_word_embeddings=False)`: next-token logits (nearly) independent of the
    context, about 4 * boosts[token] for the boosted tokens and -8 for every other token.

    Every embedding gets a large constant first coordinate and the LM head reads only that coordinate, so the small
    random layers barely move the logits.
    """

    def edit(model, tokenizer):
        model.model.embed_tokens.weight[:, 0] = 8.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = -2.0
        for token, weight in boosts.items():
            model.lm_head.weight[tokenizer.convert_tokens_to_ids(token), 0] = weight

    return edit
