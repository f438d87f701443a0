"""The registry of token regularisers: the one place that says what each `token_regularizer` is.

Each entry names its pure loss function (`sec_trl.losses`, one signature for all:
`loss(per_token_logps, old_per_token_logps, advantages, entropies, mask, **settings) -> (per_token_loss, info)`),
the config fields it reads (and the keyword each is passed as), the metrics it logs, whether it clips the importance
ratio and whether it has a `|logp - old_logp|` KL term. Read from here: the config's allowed names and checks
(`sec_trl.config`), the trainer's dispatch and metrics (`sec_trl.trainer`), the model card's settings table
(`sec_trl.model_card`) and the table in `docs/method.md` (`docs_table`, checked by `tests/test_regularizers.py`).

Adding a regulariser: its function in `sec_trl.losses`, its entry below, its fields in `SETGRPOConfig` (and their
description in `FIELD_DESCRIPTIONS`), its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .losses import clip_cov_per_token_loss, kl_cov_per_token_loss, sent_per_token_loss


@dataclass(frozen=True)
class TokenRegularizer:
    """One `token_regularizer`.

    Attributes:
        name: the `token_regularizer` value, also the prefix of its metrics.
        loss: the pure per-token loss (see the module docstring for its signature).
        fields: config field -> keyword of `loss` it is passed as, in the order the model card shows them.
        masks: boolean `(B, T)` entries of `info` logged as `{name}/{mask}_frac`, `_tokens` and `_abs_log_ratio`.
        scalars: 0-d entries of `info` logged as `{name}/{scalar}` (the NaN-ignoring mean over processes).
        clips: the loss clips the importance ratio as PPO does (`epsilon` / `epsilon_high` apply, `clip_ratio/*` is
            logged).
        kl_term: the loss has a `|logp - old_logp|` term, which is inert when every update is on-policy.
        summary: one line, for the docs.
    """

    name: str
    loss: Callable[..., tuple[Any, dict[str, Any]]]
    fields: Mapping[str, str]
    masks: tuple[str, ...]
    clips: bool
    kl_term: bool
    summary: str
    scalars: tuple[str, ...] = ()

    @property
    def metric_names(self) -> tuple[str, ...]:
        per_mask = (
            f"{self.name}/{mask}_{kind}" for mask in self.masks for kind in ("frac", "tokens", "abs_log_ratio")
        )
        return (*per_mask, *(f"{self.name}/{scalar}" for scalar in self.scalars))

    def settings(self, args: Any) -> dict[str, Any]:
        """The keyword arguments of `loss`, read off a `SETGRPOConfig`."""
        return {keyword: config_value(args, field) for field, keyword in self.fields.items()}


def config_value(args: Any, field: str) -> Any:
    """`args.<field>`; an unset `epsilon_high` is `epsilon`, as in `GRPOTrainer` (its `self.epsilon_high`)."""
    value = getattr(args, field)
    if field == "epsilon_high" and value is None:
        return args.epsilon
    return value


REGULARIZERS: dict[str, TokenRegularizer] = {
    entry.name: entry
    for entry in (
        TokenRegularizer(
            name="sent",
            loss=sent_per_token_loss,
            fields={
                "low_entropy_quantile": "low_entropy_quantile",
                "cov_ratio": "cov_ratio",
                "kl_cov_coef": "kl_coef",
                "high_cov_coef": "high_cov_coef",
                "low_cov_coef": "low_cov_coef",
                "low_entropy_kl_coef": "low_entropy_kl_coef",
            },
            masks=("low_entropy", "high_cov", "low_cov"),
            scalars=("entropy_threshold",),
            clips=False,
            kl_term=True,
            summary="SENT: covariance-targeted KL inside the low-entropy tokens",
        ),
        TokenRegularizer(
            name="kl_cov",
            loss=kl_cov_per_token_loss,
            fields={"cov_ratio": "cov_ratio", "kl_cov_coef": "kl_coef"},
            masks=("high_cov",),
            clips=False,
            kl_term=True,
            summary="KL-Cov: KL on the highest-covariance tokens",
        ),
        TokenRegularizer(
            name="clip_cov",
            loss=clip_cov_per_token_loss,
            fields={
                "cov_ratio": "cov_ratio",
                "clip_cov_lower": "clip_cov_lower",
                "clip_cov_upper": "clip_cov_upper",
                "epsilon": "epsilon_low",
                "epsilon_high": "epsilon_high",
            },
            masks=("cov_clipped", "ppo_clipped"),
            clips=True,
            kl_term=False,
            summary="Clip-Cov: PPO's clipped surrogate, gradient stopped on random high-covariance tokens",
        ),
    )
}

NO_REGULARIZER = "none"  # TRL's GRPO loss, unchanged (GRPOTrainer._compute_loss itself)
TOKEN_REGULARIZERS = (*REGULARIZERS, NO_REGULARIZER)
# Regularisers whose loss has no PPO clipping: epsilon / epsilon_high do nothing, clip_ratio/* is not logged.
UNCLIPPED_REGULARIZERS = tuple(name for name, entry in REGULARIZERS.items() if not entry.clips)
# Regularisers with a |logp - old_logp| term, inert when every update is on-policy (SETGRPOConfig.kl_term_is_inert).
KL_TERM_REGULARIZERS = tuple(name for name, entry in REGULARIZERS.items() if entry.kl_term)

# What each config field a regulariser reads means (the model card's settings table, the docs table).
FIELD_DESCRIPTIONS = {
    "low_entropy_quantile": "fraction of valid tokens, lowest entropy first, forming the low-entropy set",
    "cov_ratio": "fraction of tokens selected by covariance (SENT: of the low-entropy set)",
    "kl_cov_coef": "base coefficient of the `abs(logp - old_logp)` penalty",
    "high_cov_coef": "multiplier of `kl_cov_coef` on the highest-covariance low-entropy tokens",
    "low_cov_coef": "multiplier of `kl_cov_coef` on the lowest-covariance low-entropy tokens",
    "low_entropy_kl_coef": "multiplier of `kl_cov_coef` on the rest of the low-entropy set",
    "clip_cov_lower": "lower covariance bound of the tokens whose gradient may be stopped",
    "clip_cov_upper": "upper covariance bound of the tokens whose gradient may be stopped",
    "epsilon": "lower PPO clip range (TRL's)",
    "epsilon_high": "upper PPO clip range (TRL's; unset = `epsilon`)",
}

DOCS_TABLE_BEGIN = "<!-- regularizers table: generated by sec_trl.regularizers.docs_table() -->"
DOCS_TABLE_END = "<!-- end of regularizers table -->"


def docs_table() -> str:
    """The Markdown table of `docs/method.md` (between `DOCS_TABLE_BEGIN` and `DOCS_TABLE_END`)."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows = [
        "| `token_regularizer` | what | loss function | settings | metrics | clips | KL term |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in REGULARIZERS.values():
        settings = ", ".join(f"`{field}`" for field in entry.fields)
        masks = entry.masks[0] if len(entry.masks) == 1 else "{" + ",".join(entry.masks) + "}"
        metrics = ", ".join(
            [f"`{entry.name}/{masks}_{{frac,tokens,abs_log_ratio}}`"] + [f"`{entry.name}/{s}`" for s in entry.scalars]
        )
        rows.append(
            f"| `{entry.name}` | {entry.summary} | `sec_trl.{entry.loss.__name__}` | {settings} | {metrics} "
            f"| {yes(entry.clips)} | {yes(entry.kl_term)} |"
        )
    rows.append(f"| `{NO_REGULARIZER}` | TRL's GRPO loss, unchanged (`GRPOTrainer._compute_loss`) | | | | | |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m sec_trl.regularizers: print the docs table
    print(docs_table())
