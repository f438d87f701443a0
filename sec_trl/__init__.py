"""sec_trl: SENT (semantic- and token-entropy control) for RL on LLM reasoning, on Hugging Face TRL.

The public names are imported on first use (as TRL and transformers do), so that `python -m sec_trl.rank` and
`python -m sec_trl.evaluate` do not import the trainer and everything behind it.
"""

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0"

_EXPORTS = {
    "SETGRPOConfig": ".config",
    "SETGRPOTrainer": ".trainer",
    "clip_cov_per_token_loss": ".losses",
    "kl_cov_per_token_loss": ".losses",
    "sent_per_token_loss": ".losses",
}

__all__ = [
    "SETGRPOConfig",
    "SETGRPOTrainer",
    "clip_cov_per_token_loss",
    "kl_cov_per_token_loss",
    "sent_per_token_loss",
]

if TYPE_CHECKING:
    from .config import SETGRPOConfig
    from .losses import clip_cov_per_token_loss, kl_cov_per_token_loss, sent_per_token_loss
    from .trainer import SETGRPOTrainer


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
