"""The loss functions against independent, plainly written references (Python loops over tokens), plus edge cases.

The references below follow docs/method.md and the KL-Cov / Clip-Cov definitions literally, one token at a time,
with the documented tie rule of `sec_trl.losses`: entropy ties by row-major position, covariance ties by (lower
entropy, position), random priorities by position.
"""

import functools
import math

import pytest
import torch

from sec_trl.losses import clip_cov_per_token_loss, kl_cov_per_token_loss, sent_per_token_loss


SHAPES = [(1, 1), (2, 6), (3, 17), (8, 33)]
SEEDS = [0, 1, 2]


# ----------------------------------------------------------------------------------------------- references
def _valid_positions(mask):
    return [(b, t) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if bool(mask[b, t])]


def _adv(advantages, b, t):
    return advantages[b] if advantages.dim() == 1 else advantages[b, t]


def _per_token(logp, old, advantages, mask, coef_of):
    """Stack `-A r + c |logp - old|` token by token (keeps autograd through logp)."""
    rows = []
    for b in range(logp.shape[0]):
        row = []
        for t in range(logp.shape[1]):
            if bool(mask[b, t]):
                log_ratio = logp[b, t] - old[b, t]
                row.append(-_adv(advantages, b, t) * torch.exp(log_ratio) + coef_of((b, t)) * log_ratio.abs())
            else:
                row.append(logp[b, t] * 0.0)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def reference_sent(logp, old, advantages, entropies, mask, q, cov_ratio, kl, hi, lo, rest):
    valid = _valid_positions(mask)
    coef = {}
    if valid:
        n_low = max(1, int(q * len(valid)))
        low = sorted(valid, key=lambda p: (entropies[p].item(), p))[:n_low]
        mean_a = sum(_adv(advantages, *p).item() for p in low) / len(low)
        mean_l = sum(logp[p].item() for p in low) / len(low)
        cov = {p: (_adv(advantages, *p).item() - mean_a) * (logp[p].item() - mean_l) for p in low}
        k = max(1, int(cov_ratio * len(low)))
        for p in low:
            coef[p] = kl * rest
        for p in sorted(low, key=lambda p: (cov[p], entropies[p].item(), p))[:k]:
            coef[p] = kl * lo
        for p in sorted(low, key=lambda p: (-cov[p], entropies[p].item(), p))[:k]:
            coef[p] = kl * hi
    return _per_token(logp, old, advantages, mask, lambda p: coef.get(p, 0.0)), coef


def reference_kl_cov(logp, old, advantages, mask, cov_ratio, kl, entropies=None):
    valid = _valid_positions(mask)
    selected = set()
    if valid:
        mean_a = sum(_adv(advantages, *p).item() for p in valid) / len(valid)
        mean_l = sum(logp[p].item() for p in valid) / len(valid)
        cov = {p: (_adv(advantages, *p).item() - mean_a) * (logp[p].item() - mean_l) for p in valid}
        k = max(1, int(cov_ratio * len(valid)))
        ent = (lambda p: 0.0) if entropies is None else (lambda p: entropies[p].item())
        selected = set(sorted(valid, key=lambda p: (-cov[p], ent(p), p))[:k])
    return _per_token(logp, old, advantages, mask, lambda p: kl if p in selected else 0.0), selected


def reference_clip_cov(logp, old, advantages, mask, priorities, cov_ratio, lower, upper, eps_low, eps_high):
    valid = _valid_positions(mask)
    candidates = []
    if valid:
        mean_a = sum(_adv(advantages, *p).item() for p in valid) / len(valid)
        mean_l = sum(logp[p].item() for p in valid) / len(valid)
        for p in valid:
            a = _adv(advantages, *p).item()
            ratio = math.exp(logp[p].item() - old[p].item())
            ppo_clipped = -a * min(max(ratio, 1 - eps_low), 1 + eps_high) > -a * ratio
            cov = (a - mean_a) * (logp[p].item() - mean_l)
            if lower < cov < upper and not ppo_clipped:
                candidates.append(p)
        k = max(1, int(cov_ratio * len(valid)))
        candidates = sorted(candidates, key=lambda p: (priorities[p].item(), p))[:k]
    chosen = set(candidates)
    rows = []
    for b in range(logp.shape[0]):
        row = []
        for t in range(logp.shape[1]):
            if bool(mask[b, t]) and (b, t) not in chosen:
                a = _adv(advantages, b, t)
                ratio = torch.exp(logp[b, t] - old[b, t])
                row.append(torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)))
            else:
                row.append(logp[b, t] * 0.0)
        rows.append(torch.stack(row))
    return torch.stack(rows), chosen


# ----------------------------------------------------------------------------------------------- inputs
def make_inputs(shape, seed, token_advantages=False, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    B, T = shape
    logp = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 3 * scale).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)  # off-policy: KL term active
    if token_advantages:
        adv = torch.randn(B, T, generator=g, dtype=torch.float64) * scale
    else:
        adv = torch.randn(B, generator=g, dtype=torch.float64) * scale
    entropies = torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]  # right padding, at least one valid token per row
    return logp, old, adv, entropies, mask


def _grad(loss, logp):
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).view_as(loss)
    (g,) = torch.autograd.grad((loss * weights).sum(), logp, retain_graph=True)
    return g


def _mask_of(positions, shape):
    m = torch.zeros(shape, dtype=torch.bool)
    for p in positions:
        m[p] = True
    return m


# ----------------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("token_advantages", [False, True])
@pytest.mark.parametrize(
    "params",
    [
        dict(q=0.8, cov_ratio=2e-4, kl=0.1, hi=2.0, lo=0.5, rest=0.0),  # the reference run
        dict(q=0.5, cov_ratio=0.2, kl=0.3, hi=2.0, lo=0.5, rest=0.25),  # several tokens per group, KL on rest of L
        dict(q=1.0, cov_ratio=0.6, kl=1.0, hi=3.0, lo=0.1, rest=0.0),  # overlapping high/low groups
    ],
)
def test_sent_matches_reference(shape, seed, token_advantages, params):
    logp, old, adv, ent, mask = make_inputs(shape, seed, token_advantages)
    loss, info = sent_per_token_loss(
        logp,
        old,
        adv,
        ent,
        mask,
        low_entropy_quantile=params["q"],
        cov_ratio=params["cov_ratio"],
        kl_coef=params["kl"],
        high_cov_coef=params["hi"],
        low_cov_coef=params["lo"],
        low_entropy_kl_coef=params["rest"],
    )
    expected, coef = reference_sent(logp, old, adv, ent, mask, **params)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(_grad(loss, logp), _grad(expected, logp))
    # the selected low-entropy set and coefficient groups are the reference's
    assert torch.equal(info["low_entropy"], _mask_of(coef.keys(), shape))
    hi_positions = [p for p, c in coef.items() if c == params["kl"] * params["hi"]]
    assert torch.equal(info["high_cov"], _mask_of(hi_positions, shape))
    assert info["low_entropy"].dtype == torch.bool and info["high_cov"].dtype == torch.bool
    assert not (info["high_cov"] & info["low_cov"]).any()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cov_ratio", [2e-4, 0.3])
@pytest.mark.parametrize("with_entropies", [False, True])
def test_kl_cov_matches_reference(shape, seed, cov_ratio, with_entropies):
    logp, old, adv, ent, mask = make_inputs(shape, seed)
    ent = ent if with_entropies else None
    loss, info = kl_cov_per_token_loss(logp, old, adv, ent, mask, cov_ratio=cov_ratio, kl_coef=0.7)
    expected, selected = reference_kl_cov(logp, old, adv, mask, cov_ratio, 0.7, ent)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(_grad(loss, logp), _grad(expected, logp))
    assert torch.equal(info["high_cov"], _mask_of(selected, shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cov_ratio", [2e-4, 0.3])
def test_clip_cov_matches_reference(shape, seed, cov_ratio):
    # scale 3 so that a good share of tokens has covariance inside (1, 5)
    logp, old, adv, _, mask = make_inputs(shape, seed, scale=3.0)
    kwargs = dict(cov_ratio=cov_ratio, clip_cov_lower=1.0, clip_cov_upper=5.0, epsilon_low=0.2, epsilon_high=0.28)
    loss, info = clip_cov_per_token_loss(
        logp, old, adv, None, mask, generator=torch.Generator().manual_seed(seed + 100), **kwargs
    )
    priorities = torch.rand(shape, generator=torch.Generator().manual_seed(seed + 100))
    expected, chosen = reference_clip_cov(
        logp, old, adv, mask, priorities, cov_ratio, 1.0, 5.0, kwargs["epsilon_low"], kwargs["epsilon_high"]
    )
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(_grad(loss, logp), _grad(expected, logp))
    assert torch.equal(info["cov_clipped"], _mask_of(chosen, shape))
    # a clipped token has exactly zero gradient
    if chosen:
        g = _grad(loss, logp)
        assert all(g[p].item() == 0.0 for p in chosen)


def test_clip_cov_selects_some_tokens_in_the_equivalence_inputs():
    """Guards the test above against passing vacuously with no candidate ever selected."""
    logp, old, adv, _, mask = make_inputs((8, 33), 0, scale=3.0)
    _, info = clip_cov_per_token_loss(
        logp, old, adv, None, mask, cov_ratio=0.3, generator=torch.Generator().manual_seed(0)
    )
    assert info["cov_clipped"].sum() > 1


# ----------------------------------------------------------------------------------------------- hand cases
def test_sent_hand_example_2x6():
    # 2 completions x 6 positions; row 1 has 2 padding positions. N_valid = 10.
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    entropies = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.3, 0.7], [0.4, 0.6, 0.5, 1.0, 0.0, 0.0]])
    # low set L: floor(0.5 * 10) = 5 lowest-entropy valid tokens: 0.1, 0.2, 0.3, 0.4, 0.5
    # (the padding entropies 0.0 must be ignored)
    advantages = torch.tensor([1.0, -1.0])
    logp = torch.tensor([[-1.0, -2.0, -0.5, -2.0, -3.0, -2.0], [-1.0, -2.0, -0.2, -2.0, -9.0, -9.0]])
    old = logp - 0.1  # log ratio 0.1 everywhere
    # In L: A = [1, 1, 1, -1, -1] (mean 0.2), logp = [-1, -0.5, -3, -1, -0.2] (mean -1.14)
    # cov = (A - 0.2) * (logp + 1.14) = [0.112, 0.512, -1.488, -0.168, -1.128]
    # k = max(1, floor(0.4 * 5)) = 2: high = (0,2) and (0,0); low = (0,4) and (1,2)
    loss, info = sent_per_token_loss(
        logp, old, advantages, entropies, mask, low_entropy_quantile=0.5, cov_ratio=0.4, kl_coef=0.1
    )
    expected_low = torch.tensor([[1, 0, 1, 0, 1, 0], [1, 0, 1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(info["low_entropy"], expected_low)
    assert torch.equal(info["high_cov"], torch.tensor([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool))
    assert torch.equal(info["low_cov"], torch.tensor([[0, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0]], dtype=torch.bool))
    coef = torch.tensor([[0.2, 0, 0.2, 0, 0.05, 0], [0, 0, 0.05, 0, 0, 0]])
    expected = -advantages[:, None] * math.exp(0.1) + coef * 0.1
    expected = expected * mask
    torch.testing.assert_close(loss, expected)
    assert info["entropy_threshold"].item() == pytest.approx(0.5)


def test_all_masked_gives_zeros_and_zero_grad():
    logp, old, adv, ent, _ = make_inputs((3, 5), 0)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    for fn in (sent_per_token_loss, kl_cov_per_token_loss, clip_cov_per_token_loss):  # one signature
        loss, info = fn(logp, old, adv, ent, mask)
        assert torch.equal(loss, torch.zeros_like(loss)), fn.__name__
        assert not torch.isnan(loss).any()
        (g,) = torch.autograd.grad(loss.sum(), logp)
        assert torch.equal(g, torch.zeros_like(g)) and not torch.isnan(g).any()
        assert all(not m.any() for m in info.values() if m.dtype == torch.bool)
    _, info = sent_per_token_loss(logp, old, adv, ent, mask)
    assert math.isnan(info["entropy_threshold"].item())


def test_single_valid_token_gets_the_strong_coefficient():
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -2.0, -3.0]])
    mask = torch.tensor([[True, False, False]])
    loss, info = sent_per_token_loss(logp, old, torch.tensor([2.0]), torch.ones(1, 3), mask, kl_coef=0.1)
    # L = {(0,0)} (max(1, floor(0.8)) = 1); k = 1; it is both highest and lowest cov -> strong (0.1 * 2.0)
    assert info["low_entropy"].tolist() == [[True, False, False]]
    assert info["high_cov"].tolist() == [[True, False, False]] and not info["low_cov"].any()
    torch.testing.assert_close(loss, torch.tensor([[-2.0 * math.exp(0.5) + 0.2 * 0.5, 0.0, 0.0]]))


def test_quantile_one_takes_every_valid_token():
    logp, old, adv, ent, mask = make_inputs((4, 9), 3)
    _, info = sent_per_token_loss(logp, old, adv, ent, mask, low_entropy_quantile=1.0)
    assert torch.equal(info["low_entropy"], mask)


def test_tied_entropies_break_by_position():
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    ent = torch.full((2, 4), 0.5)
    logp = -torch.ones(2, 4)
    _, info = sent_per_token_loss(logp, logp, torch.tensor([1.0, 0.0]), ent, mask, low_entropy_quantile=0.5)
    # N = 6, |L| = 3: the first three valid positions in row-major order
    assert info["low_entropy"].tolist() == [[True, True, True, False], [False, False, False, False]]


def test_padding_values_never_leak():
    logp, old, adv, ent, mask = make_inputs((3, 8), 5)
    loss_a, info_a = sent_per_token_loss(logp, old, adv, ent, mask, cov_ratio=0.3)
    # garbage (huge entropies, NaN entropies, extreme log-probs) on padding must change nothing
    ent_b = torch.where(mask, ent, torch.tensor(float("nan"), dtype=ent.dtype))
    old_b = torch.where(mask, old, torch.full_like(old, -50.0))
    loss_b, info_b = sent_per_token_loss(logp, old_b, adv, ent_b, mask, cov_ratio=0.3)
    torch.testing.assert_close(loss_a, loss_b)
    assert torch.equal(info_a["high_cov"], info_b["high_cov"]) and torch.equal(info_a["low_cov"], info_b["low_cov"])
    assert (loss_a[~mask] == 0).all()
    (g,) = torch.autograd.grad(loss_b.sum(), logp)
    assert not torch.isnan(g).any() and (g[~mask] == 0).all()


@pytest.mark.parametrize("equal_advantages", [False, True])
def test_extra_padding_changes_nothing(equal_advantages):
    """How much padding a batch carries (set by its longest completion) changes no selection and no loss: every
    count and mean (the covariance's means over the valid tokens, or over SENT's low-entropy set) ignores padding.
    With equal advantages (a group whose rewards all agree) the covariance is exactly 0 with or without padding."""
    logp, old, adv, ent, mask = make_inputs((3, 8), 7)
    if equal_advantages:
        adv = torch.ones_like(adv)

    def padded(x, value):
        return torch.cat([x, torch.full((3, 5), value, dtype=x.dtype)], dim=1)

    wide = (padded(logp, -1.0), padded(old, -50.0), adv, padded(ent, 0.0), padded(mask, False))
    for loss_fn, masks in (
        (functools.partial(sent_per_token_loss, cov_ratio=0.3), ("low_entropy", "high_cov", "low_cov")),
        (functools.partial(kl_cov_per_token_loss, cov_ratio=0.3), ("high_cov",)),
    ):
        loss, info = loss_fn(logp, old, adv, ent, mask)
        wide_loss, wide_info = loss_fn(*wide)
        torch.testing.assert_close(wide_loss[:, :8], loss)
        assert (wide_loss[:, 8:] == 0).all()
        for name in masks:
            assert torch.equal(wide_info[name][:, :8], info[name]) and not wide_info[name][:, 8:].any(), name
    if equal_advantages:  # every covariance 0: KL-Cov's tie rule takes the k lowest-entropy valid tokens
        k = max(1, math.floor(int(mask.sum()) * 0.3))
        lowest = sorted(_valid_positions(mask), key=lambda p: float(ent[p]))[:k]
        assert torch.equal(info["high_cov"], _mask_of(lowest, mask.shape))


def test_sequence_and_token_advantages_agree():
    logp, old, adv, ent, mask = make_inputs((4, 7), 2)
    a, _ = sent_per_token_loss(logp, old, adv, ent, mask, cov_ratio=0.3)
    b, _ = sent_per_token_loss(logp, old, adv[:, None].expand(4, 7).clone(), ent, mask, cov_ratio=0.3)
    torch.testing.assert_close(a, b)


def test_on_policy_kl_term_has_no_value_and_no_gradient():
    """docs/method.md: |logp - old| is exactly zero with zero gradient on-policy; the loss is then -A * 1."""
    logp, _, adv, ent, mask = make_inputs((3, 6), 4)
    loss, _ = sent_per_token_loss(logp, logp.detach(), adv, ent, mask, kl_coef=10.0, cov_ratio=0.5)
    torch.testing.assert_close(loss, torch.where(mask, -adv[:, None].expand(3, 6), torch.zeros_like(loss)))
    (g,) = torch.autograd.grad(loss.sum(), logp)
    torch.testing.assert_close(g, torch.where(mask, -adv[:, None].expand(3, 6), torch.zeros_like(g)))


def test_float_mask_is_accepted():
    logp, old, adv, ent, mask = make_inputs((2, 6), 1)
    a, _ = sent_per_token_loss(logp, old, adv, ent, mask)
    b, _ = sent_per_token_loss(logp, old, adv, ent, mask.float())
    torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------------- tie rule
def _degenerate_inputs(seed, shape=(4, 16), advantage=0.0):
    """Every advantage equal (e.g. all rewards 0): the covariance is identically 0 and every token ties."""
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(shape, generator=g) * 3
    old = logp + 0.1 * torch.randn(shape, generator=g)
    entropies = torch.rand(shape, generator=g) * 2
    mask = torch.ones(shape, dtype=torch.bool)
    return logp, old, torch.full(shape[:1], advantage), entropies, mask


@pytest.mark.parametrize("advantage", [0.0, 1.0])
def test_degenerate_covariance_has_no_positional_bias(advantage):
    """All advantages equal: the strong-KL token is the lowest-entropy one, not flat position 0 every time."""
    picked = []
    for seed in range(8):
        logp, old, adv, ent, mask = _degenerate_inputs(seed, advantage=advantage)
        _, info = sent_per_token_loss(logp, old, adv, ent, mask, cov_ratio=2e-4, low_entropy_quantile=0.8)
        (position,) = info["high_cov"].reshape(-1).nonzero().flatten().tolist()
        assert position == int(ent.reshape(-1).argmin())  # lowest entropy in L (the lowest-entropy token overall)
        assert not info["low_cov"].any()  # the low group picks the same token (k = 1), and high wins the overlap
        _, kl_info = kl_cov_per_token_loss(logp, old, adv, ent, mask, cov_ratio=2e-4)
        assert kl_info["high_cov"].reshape(-1).nonzero().flatten().tolist() == [int(ent.reshape(-1).argmin())]
        picked.append(position)
    assert len(set(picked)) > 1 and set(picked) != {0}


def test_covariance_ties_break_by_entropy_then_position():
    # cov: (A - 0.5) * (logp - mean): rows 0 and 1 have opposite advantages, logp is constant per column pair
    mask = torch.ones(2, 4, dtype=torch.bool)
    adv = torch.tensor([1.0, 0.0])
    logp = torch.tensor([[-1.0, -1.0, -3.0, -3.0], [-3.0, -3.0, -1.0, -1.0]])
    # cov = +0.5 at (0,0), (0,1), (1,0), (1,1); -0.5 at the other four
    ent = torch.tensor([[0.5, 0.3, 0.9, 0.9], [0.3, 0.3, 0.9, 0.9]])
    _, info = kl_cov_per_token_loss(logp, logp, adv, ent, mask, cov_ratio=0.25)  # k = 2
    # the four +0.5 ties: entropies 0.5, 0.3, 0.3, 0.3 -> the 0.3 ones, then by position: (0,1) and (1,0)
    assert info["high_cov"].tolist() == [[False, True, False, False], [True, False, False, False]]
    _, info = sent_per_token_loss(logp, logp, adv, ent, mask, cov_ratio=0.25, low_entropy_quantile=1.0)
    assert info["high_cov"].tolist() == [[False, True, False, False], [True, False, False, False]]
    # the -0.5 ties: entropies 0.9 everywhere -> by position: (0,2) and (0,3)
    assert info["low_cov"].tolist() == [[False, False, True, True], [False, False, False, False]]
    # without entropies, KL-Cov falls back to position
    _, info = kl_cov_per_token_loss(logp, logp, adv, None, mask, cov_ratio=0.25)
    assert info["high_cov"].tolist() == [[True, True, False, False], [False, False, False, False]]


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (16, 64), (64, 128)])
@pytest.mark.parametrize("q", [0.05, 0.5, 0.8, 0.99, 1.0])
@pytest.mark.parametrize("cov_ratio", [2e-4, 0.3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_selections_with_many_ties_match_reference(shape, q, cov_ratio, dtype):
    """Entropies from 3 values, advantages from 2, log-probs from 4: ties everywhere, in every selection.

    float64 resolves covariance ties with a nested selection, 16/32-bit floats with a packed int64 key: both must
    give the reference's (value, entropy, position) order. (64, 128) takes the `kthvalue` path for `L`.
    """
    g = torch.Generator().manual_seed(7)
    ent = (torch.randint(0, 3, shape, generator=g).double() / 2).to(dtype)
    lengths = torch.randint(0, shape[1] + 1, (shape[0],), generator=g)
    mask = torch.arange(shape[1])[None] < lengths[:, None]
    logp = (-torch.randint(0, 4, shape, generator=g).double() / 4).to(dtype)
    if dtype == torch.float64:
        adv = torch.randint(0, 2, (shape[0],), generator=g).to(dtype)
    else:  # equal advantages: the covariance is exactly +-0 in any precision (the reference's float64 agrees)
        adv = torch.ones(shape[0], dtype=dtype)
    _, info = sent_per_token_loss(logp, logp, adv, ent, mask, low_entropy_quantile=q, cov_ratio=cov_ratio)
    ref_args = (logp.double(), logp.double(), adv.double(), ent.double(), mask, q, cov_ratio, 0.1, 2.0, 0.5, 0.0)
    _, coef = reference_sent(*ref_args)
    assert torch.equal(info["low_entropy"], _mask_of(coef.keys(), shape))
    assert torch.equal(info["high_cov"], _mask_of([p for p, c in coef.items() if c == 0.1 * 2.0], shape))
    assert torch.equal(info["low_cov"], _mask_of([p for p, c in coef.items() if c == 0.1 * 0.5], shape))
    _, kl_info = kl_cov_per_token_loss(logp, logp, adv, ent, mask, cov_ratio=cov_ratio)
    _, selected = reference_kl_cov(logp.double(), logp.double(), adv.double(), mask, cov_ratio, 0.1, ent.double())
    assert torch.equal(kl_info["high_cov"], _mask_of(selected, shape))
