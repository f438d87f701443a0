"""sec_trl: SENT (semantic- and token-entropy control) for RL on LLM reasoning, on Hugging Face TRL."""

from .config import SETGRPOConfig
from .losses import clip_cov_per_token_loss, kl_cov_per_token_loss, sent_per_token_loss
from .trainer import SETGRPOTrainer


__version__ = "0.1.0"

__all__ = [
    "SETGRPOConfig",
    "SETGRPOTrainer",
    "clip_cov_per_token_loss",
    "kl_cov_per_token_loss",
    "sent_per_token_loss",
]
