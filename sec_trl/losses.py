"""Per-token policy losses of SENT and of its two covariance baselines, as pure tensor functions.

Every function takes tensors of shape `(B, T)` (B completions, T completion positions) plus plain numbers, and
returns `(per_token_loss, info)`:

- `per_token_loss` has shape `(B, T)`, is differentiable w.r.t. `per_token_logps`, and is exactly 0 on padding
  (`mask == False`), so that any of TRL's aggregations (`grpo`, `bnpo`, `dr_grpo`, `dapo`) can be applied to it.
- `info` holds the boolean `(B, T)` masks the function selected and a few detached scalars for logging.

Conventions shared by all functions:

- `mask` is boolean (a float/int 0/1 mask is converted with `mask.bool()`); all selections are boolean masks.
- All work stays on the input device: token selection uses a stable sort and a rank comparison against a 0-d
  tensor, so there is no host round trip and no Python loop over tokens. Ties are broken by flat position
  (earlier `(b, t)` in row-major order wins), which makes every selection deterministic.
- `advantages` may be `(B,)` (one per completion, as in GRPO) or `(B, T)`.
- A batch in which every token is masked yields an all-zero loss (never NaN) with zero gradient.
"""

from __future__ import annotations

import torch


__all__ = [
    "clip_cov_per_token_loss",
    "kl_cov_per_token_loss",
    "sent_per_token_loss",
]


def _expand_advantages(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    return advantages.expand_as(like)


def _count_from_fraction(fraction: float, count: torch.Tensor) -> torch.Tensor:
    """`max(1, floor(fraction * count))` as a 0-d int64 tensor on `count`'s device (no host sync).

    float64 so that e.g. `0.8 * 5` floors to 4, exactly as Python's `int(0.8 * 5)` does.
    """
    return torch.floor(count.to(torch.float64) * fraction).to(torch.int64).clamp(min=1)


def _bottom_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the `k` candidates with the smallest `scores` (all candidates if there are fewer).

    `k` is a 0-d tensor. Non-candidates are pushed to the end with +inf; ties are broken by flat position.
    """
    flat = torch.where(candidates, scores, torch.full_like(scores, float("inf"))).flatten()
    order = torch.argsort(flat, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return (rank.view_as(scores) < k) & candidates


def _top_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the `k` candidates with the largest `scores` (ties: earlier flat position wins)."""
    return _bottom_k_mask(-scores, candidates, k)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x, torch.zeros_like(x)).sum() / mask.sum().clamp(min=1)


def _centered_covariance(advantages: torch.Tensor, logps: torch.Tensor, over: torch.Tensor) -> torch.Tensor:
    """Per-token `(A_t - mean(A)) * (logp_t - mean(logp))`, means over the tokens in `over`; logp is detached."""
    logps = logps.detach()
    advantages = advantages.detach()
    return (advantages - _masked_mean(advantages, over)) * (logps - _masked_mean(logps, over))


def sent_per_token_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    entropies: torch.Tensor,
    mask: torch.Tensor,
    *,
    low_entropy_quantile: float = 0.8,
    cov_ratio: float = 2e-4,
    kl_coef: float = 0.1,
    high_cov_coef: float = 2.0,
    low_cov_coef: float = 0.5,
    low_entropy_kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SENT's token loss ("low-entropy KL-Cov"): covariance-targeted KL inside the low-entropy tokens.

    With `r_t = exp(logp_t - old_t)` and per-token coefficient `c_t`:

        loss_t = -A_t * r_t + c_t * |logp_t - old_t|     (valid tokens; no PPO clipping, as in KL-Cov)

    `c_t` is chosen as follows, over the `N` valid tokens:

    1. Low-entropy set `L`: the `max(1, floor(low_entropy_quantile * N))` valid tokens with the lowest entropy.
    2. Inside `L` only: `cov_t = (A_t - mean_L(A)) * (logp_t - mean_L(logp))` (logp detached).
    3. `k = max(1, floor(cov_ratio * |L|))`; the `k` highest-cov tokens of `L` get `kl_coef * high_cov_coef`,
       the `k` lowest-cov tokens of `L` get `kl_coef * low_cov_coef` (a token in both counts as high), the rest of
       `L` gets `kl_coef * low_entropy_kl_coef`, and tokens outside `L` get 0.

    Args:
        per_token_logps: `(B, T)` log-probabilities of the sampled tokens under the current policy (with grad).
        old_per_token_logps: `(B, T)` log-probabilities under the policy that generated the batch.
        advantages: `(B,)` or `(B, T)`.
        entropies: `(B, T)` policy entropy at each position (detached inside).
        mask: `(B, T)` valid completion tokens.

    Returns:
        `(per_token_loss, info)`; `info` has the boolean masks `low_entropy`, `high_cov`, `low_cov`, the `(B, T)`
        coefficients `kl_coef_per_token`, and the 0-d `entropy_threshold` (largest entropy inside `L`, NaN when
        the batch has no valid token).
    """
    mask = mask.bool()
    entropies = entropies.detach()
    advantages = _expand_advantages(advantages, per_token_logps)
    n_valid = mask.sum()

    low_entropy = _bottom_k_mask(entropies, mask, _count_from_fraction(low_entropy_quantile, n_valid))
    cov = _centered_covariance(advantages, per_token_logps, over=low_entropy)
    k = _count_from_fraction(cov_ratio, low_entropy.sum())
    high_cov = _top_k_mask(cov, low_entropy, k)
    low_cov = _bottom_k_mask(cov, low_entropy, k) & ~high_cov  # high wins on overlap

    coef = torch.zeros_like(per_token_logps, dtype=per_token_logps.dtype)
    coef = torch.where(low_entropy, kl_coef * low_entropy_kl_coef, coef)
    coef = torch.where(low_cov, kl_coef * low_cov_coef, coef)
    coef = torch.where(high_cov, kl_coef * high_cov_coef, coef)

    log_ratio = per_token_logps - old_per_token_logps
    # |logp - old| has zero value and zero gradient when the update is on-policy (log_ratio == 0).
    loss = -advantages * torch.exp(log_ratio) + coef * log_ratio.abs()
    loss = torch.where(mask, loss, torch.zeros_like(loss))

    # Largest entropy admitted into L (NaN when there is no valid token); a shape check only, no host sync.
    threshold = entropies.new_tensor(float("nan"))
    if entropies.numel() > 0:
        threshold = torch.where(low_entropy.any(), torch.where(low_entropy, entropies, -torch.inf).amax(), threshold)
    info = {
        "low_entropy": low_entropy,
        "high_cov": high_cov,
        "low_cov": low_cov,
        "kl_coef_per_token": coef,
        "entropy_threshold": threshold,
    }
    return loss, info


def kl_cov_per_token_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    cov_ratio: float = 2e-4,
    kl_coef: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL-Cov (Cui et al. 2025, arXiv 2505.22617): KL penalty on the highest-covariance tokens.

    `cov_t = (A_t - mean(A)) * (logp_t - mean(logp))` over all `N` valid tokens (logp detached); the top
    `max(1, floor(cov_ratio * N))` tokens by cov get `-A_t r_t + kl_coef |logp_t - old_t|`, the others `-A_t r_t`.
    No PPO clipping.

    Shapes as in :func:`sent_per_token_loss`. `info` has the boolean mask `high_cov` and `kl_coef_per_token`.
    """
    mask = mask.bool()
    advantages = _expand_advantages(advantages, per_token_logps)
    cov = _centered_covariance(advantages, per_token_logps, over=mask)
    high_cov = _top_k_mask(cov, mask, _count_from_fraction(cov_ratio, mask.sum()))
    coef = torch.where(high_cov, kl_coef, 0.0).to(per_token_logps.dtype)

    log_ratio = per_token_logps - old_per_token_logps
    loss = -advantages * torch.exp(log_ratio) + coef * log_ratio.abs()
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    return loss, {"high_cov": high_cov, "kl_coef_per_token": coef}


def clip_cov_per_token_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    cov_ratio: float = 2e-4,
    clip_cov_lower: float = 1.0,
    clip_cov_upper: float = 5.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clip-Cov (Cui et al. 2025, arXiv 2505.22617): stop the gradient of a few random high-covariance tokens.

    The base loss is PPO's clipped surrogate `-min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)`.
    `cov_t = (A_t - mean(A)) * (logp_t - mean(logp))` over all `N` valid tokens (logp detached). Among valid
    tokens with `clip_cov_lower < cov_t < clip_cov_upper` that are not already clipped by PPO, `max(1,
    floor(cov_ratio * N))` are drawn uniformly at random (from `generator`) and their loss is set to 0, which stops
    their gradient.

    Shapes as in :func:`sent_per_token_loss`. `info` has the boolean masks `cov_clipped` (the tokens whose gradient
    was stopped) and `ppo_clipped`.
    """
    mask = mask.bool()
    advantages = _expand_advantages(advantages, per_token_logps)
    ratio = torch.exp(per_token_logps - old_per_token_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    ppo_clipped = (clipped > unclipped) & mask

    cov = _centered_covariance(advantages, per_token_logps, over=mask)
    candidates = (cov > clip_cov_lower) & (cov < clip_cov_upper) & mask & ~ppo_clipped
    # A uniformly random subset of fixed size = the candidates with the smallest i.i.d. uniform priorities.
    priorities = torch.rand(mask.shape, generator=generator, device=generator.device if generator else mask.device)
    cov_clipped = _bottom_k_mask(priorities.to(mask.device), candidates, _count_from_fraction(cov_ratio, mask.sum()))

    loss = torch.maximum(unclipped, clipped)
    loss = torch.where(mask & ~cov_clipped, loss, torch.zeros_like(loss))
    return loss, {"cov_clipped": cov_clipped, "ppo_clipped": ppo_clipped}
