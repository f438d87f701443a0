"""Per-token policy losses of SENT and of its two covariance baselines, as pure tensor functions.

Every function has one signature, `f(per_token_logps, old_per_token_logps, advantages, entropies, mask, *,
**settings)`: tensors of shape `(B, T)` (B completions, T completion positions; `entropies` may be None where the
function does not need them) plus keyword-only plain numbers, and returns `(per_token_loss, info)`:

- `per_token_loss` has shape `(B, T)`, is differentiable w.r.t. `per_token_logps`, and is exactly 0 on padding
  (`mask == False`), so that any of TRL's aggregations (`grpo`, `bnpo`, `dr_grpo`, `dapo`) can be applied to it.
- `info` holds the boolean `(B, T)` masks the function selected and a few detached scalars for logging.

Conventions shared by all functions:

- `mask` is boolean (a float/int 0/1 mask is converted with `mask.bool()`); all selections are boolean masks.
- All work stays on the input device, with no host sync and no Python loop over tokens: a data-dependent count
  `k` stays a 0-d tensor; `torch.topk` runs with a bound on `k` known from the shapes, and the selection is read
  off the `k`-th value (see `_select`).
- Ties are deterministic (docs/method.md, "Tie rule"): the low-entropy set breaks entropy ties by flat position
  (earlier `(b, t)` in row-major order first); covariance selections (SENT's high and low groups, KL-Cov) break
  covariance ties by **lower entropy first, then position**. Without the entropy step, a batch whose advantages
  are all equal (covariance identically 0) would put the strong KL on flat position 0 every time.
- `advantages` may be `(B,)` (one per completion, as in GRPO) or `(B, T)`.
- A batch in which every token is masked yields an all-zero loss (never NaN) with zero gradient.
"""

from __future__ import annotations

import math

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


def _static_count(fraction: float, count: int) -> int:
    """`max(1, floor(fraction * count))` on Python numbers: the same float64 arithmetic as `_count_from_fraction`.

    Used for an upper bound known from the shapes alone (`count` = all positions), so that `torch.topk` gets a Python
    `int` without reading any tensor back to the host.
    """
    return max(1, math.floor(count * fraction))


def _kth_best(key: torch.Tensor, k: torch.Tensor, k_bound: int, largest: bool) -> torch.Tensor:
    """The `k`-th largest (or smallest) entry of the flat `key`, as a 1-element tensor; `1 <= k <= k_bound <= n`.

    `k` is a tensor, so it cannot be handed to `torch.topk` / `torch.kthvalue` without a host sync. Either way below
    reads a position known from the shapes alone:

    - small bound (covariance selections): the sorted `torch.topk` of `k_bound` entries, then a gather at `k - 1`;
    - large bound (e.g. `cov_ratio=0.3`): `k_bound - k` sentinels that beat every entry are appended, plus `k` that
      lose to every entry; the `k_bound`-th best of that array is the `k`-th best of `key`, and `torch.kthvalue`
      finds it in linear time.
    """
    n = key.numel()
    if k_bound * 32 <= n:
        values = torch.topk(key, k_bound, largest=largest, sorted=True).values
        return values.gather(0, (k - 1).clamp(min=0))
    beat, lose = (torch.inf, -torch.inf) if largest else (-torch.inf, torch.inf)
    position = torch.arange(k_bound, device=key.device)
    sentinels = torch.full((k_bound,), lose, dtype=key.dtype, device=key.device)
    sentinels = sentinels.masked_fill(position < k_bound - k, beat)
    # k_bound-th largest of n + k_bound entries = their (n + 1)-th smallest
    return torch.kthvalue(torch.cat([key, sentinels]), n + 1 if largest else k_bound).values.reshape(1)


def _select(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    k: torch.Tensor,
    k_bound: int,
    *,
    largest: bool,
    then_lowest: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean mask of the `k` candidates with the largest (or smallest) `scores` (all candidates if fewer).

    Ties are broken deterministically: by the smallest `then_lowest` (if given), then by the earliest flat (row-major)
    position. `k` is a 0-d tensor that never exceeds `k_bound`, a Python `int` known from the shapes, so there is no
    host sync and no full sort:

    1. `v`, the `k`-th best score among the candidates (`_kth_best`, non-candidates holding the worst value; or
       given by the caller).
    2. Every candidate strictly better than `v` is selected; of the candidates equal to `v` the `k - #better` first
       ones are, in the order (`then_lowest`, position): a nested call on `then_lowest` (whose own ties go by
       position), or a cumulative count over the flat positions.

    A covariance of exactly 0 may carry either sign (`0 * -x`); -0.0 == 0.0 here, as everywhere in torch.
    """
    flat = scores.reshape(-1)
    cand = candidates.reshape(-1)
    kk = min(k_bound, flat.numel())
    if kk == 0:
        return torch.zeros_like(candidates)
    k = k.reshape(1).clamp(max=kk)
    if v is None:
        key = flat.masked_fill(~cand, -torch.inf if largest else torch.inf)  # non-candidates last
        v = _kth_best(key, k.clamp(min=1), kk, largest)
    better = ((flat > v) if largest else (flat < v)) & cand
    tied = (flat == v) & cand
    needed = k - better.count_nonzero()
    if then_lowest is None:
        tie_pick = tied & (torch.cumsum(tied, 0) <= needed)
    else:
        tie_pick = _select(then_lowest.reshape(-1), tied, needed, kk, largest=False)
    return ((better | tie_pick) & (k > 0)).view_as(candidates)


def _low_entropy_set(
    entropies: torch.Tensor, mask: torch.Tensor, n_valid: torch.Tensor, q: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SENT's `L`: the `k = max(1, floor(q * N))` valid tokens of lowest entropy, ties by earliest position; and the
    largest entropy inside `L` (NaN when there is no valid token).

    The `k`-th smallest valid entropy `v` comes from one `torch.kthvalue` at a position known from the shapes: the
    `n - N` padding entries are set to -inf, and `N - k` of `M = floor((1 - q) n) + 2` appended sentinels are -inf,
    the others +inf (`N - k <= (1 - q) N + 1 < M`). Exactly `n - k` entries are then -inf, so the `n`-th smallest of
    the `n + M` entries is the `k`-th smallest valid entropy. (A sorted top-k of 80 % of the entries costs a sort.)
    """
    n = mask.numel()
    if n == 0:
        return mask.clone(), entropies.new_tensor(float("nan"))
    flat, valid = entropies.reshape(-1), mask.reshape(-1)
    k = _count_from_fraction(q, n_valid)
    n_sentinels = math.floor((1.0 - q) * n) + 2
    low_sentinels = (n_valid - k).clamp(min=0)
    sentinels = flat.new_full((n_sentinels,), torch.inf)
    sentinels = sentinels.masked_fill(torch.arange(n_sentinels, device=flat.device) < low_sentinels, -torch.inf)
    v = torch.kthvalue(torch.cat([flat.masked_fill(~valid, -torch.inf), sentinels]), n).values.reshape(1)
    low = _select(entropies, mask, k, n, largest=False, v=v)
    return low, torch.where(n_valid > 0, v.reshape(()), float("nan"))


def _centered_covariance(advantages: torch.Tensor, logps: torch.Tensor, over: torch.Tensor) -> torch.Tensor:
    """Per-token `(A_t - mean(A)) * (logp_t - mean(logp))`, means over the tokens in `over`; logp is detached.

    The means multiply by a 0/1 float mask (on the CPU several times faster than a masked fill), so `logps` and
    `advantages` must be finite everywhere, padding included, as TRL's own `(loss * mask).sum()` assumes too.
    """
    logps = logps.detach()
    advantages = advantages.detach()
    weights = over.to(logps.dtype)
    count = over.count_nonzero().clamp(min=1)
    mean_a = (advantages * weights).sum() / count
    mean_l = (logps * weights).sum() / count
    return (advantages - mean_a) * (logps - mean_l)


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
       `L` gets `kl_coef * low_entropy_kl_coef`, and tokens outside `L` get 0. Covariance ties go to the token of
       lower entropy, then to the earlier position.

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
    n_valid = mask.count_nonzero()

    low_entropy, threshold = _low_entropy_set(entropies, mask, n_valid, low_entropy_quantile)
    cov = _centered_covariance(advantages, per_token_logps, over=low_entropy)
    k = _count_from_fraction(cov_ratio, low_entropy.count_nonzero())
    k_bound = _static_count(cov_ratio, _static_count(low_entropy_quantile, mask.numel()))
    high_cov = _select(cov, low_entropy, k, k_bound, largest=True, then_lowest=entropies)
    low_cov = _select(cov, low_entropy, k, k_bound, largest=False, then_lowest=entropies)
    low_cov = low_cov & ~high_cov  # high wins on overlap

    # masked_fill rather than torch.where: fewer passes, measurably faster on the CPU
    coef = torch.zeros_like(per_token_logps)
    if low_entropy_kl_coef != 0:
        coef = coef.masked_fill(low_entropy, kl_coef * low_entropy_kl_coef)
    coef = coef.masked_fill(low_cov, kl_coef * low_cov_coef).masked_fill(high_cov, kl_coef * high_cov_coef)

    log_ratio = per_token_logps - old_per_token_logps
    # |logp - old| has zero value and zero gradient when the update is on-policy (log_ratio == 0).
    loss = -advantages * torch.exp(log_ratio) + coef * log_ratio.abs()
    loss = loss.masked_fill(~mask, 0)

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
    entropies: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    cov_ratio: float = 2e-4,
    kl_coef: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL-Cov (Cui et al. 2025, arXiv 2505.22617): KL penalty on the highest-covariance tokens.

    `cov_t = (A_t - mean(A)) * (logp_t - mean(logp))` over all `N` valid tokens (logp detached); the top
    `max(1, floor(cov_ratio * N))` tokens by cov get `-A_t r_t + kl_coef |logp_t - old_t|`, the others `-A_t r_t`.
    No PPO clipping. Covariance ties go to the token of lower `entropies` (when not None; the trainer always passes
    them), then to the earlier position.

    Shapes as in :func:`sent_per_token_loss`. `info` has the boolean mask `high_cov` and `kl_coef_per_token`.
    """
    mask = mask.bool()
    advantages = _expand_advantages(advantages, per_token_logps)
    cov = _centered_covariance(advantages, per_token_logps, over=mask)
    k = _count_from_fraction(cov_ratio, mask.count_nonzero())
    ties = None if entropies is None else entropies.detach()
    high_cov = _select(cov, mask, k, _static_count(cov_ratio, mask.numel()), largest=True, then_lowest=ties)
    coef = torch.zeros_like(per_token_logps).masked_fill(high_cov, kl_coef)

    log_ratio = per_token_logps - old_per_token_logps
    loss = -advantages * torch.exp(log_ratio) + coef * log_ratio.abs()
    loss = loss.masked_fill(~mask, 0)
    return loss, {"high_cov": high_cov, "kl_coef_per_token": coef}


def clip_cov_per_token_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    entropies: torch.Tensor | None,
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

    Shapes as in :func:`sent_per_token_loss`; `entropies` is not used (the draw is random; it may be None). `info`
    has the boolean masks `cov_clipped` (the tokens whose gradient was stopped) and `ppo_clipped`.
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
    k = _count_from_fraction(cov_ratio, mask.count_nonzero())
    cov_clipped = _select(
        priorities.to(mask.device), candidates, k, _static_count(cov_ratio, mask.numel()), largest=False
    )

    loss = torch.maximum(unclipped, clipped)
    loss = torch.where(mask & ~cov_clipped, loss, torch.zeros_like(loss))
    return loss, {"cov_clipped": cov_clipped, "ppo_clipped": ppo_clipped}
