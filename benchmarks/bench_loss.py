"""The token losses alone: `sec_trl.losses` against a re-implementation of the reference code's approach.

The SENT reference code (a fork of verl) moves the selection inputs to the host with `.cpu()`, selects with
`torch.topk` over the flattened valid tokens (indices from `torch.nonzero`), builds the per-token KL coefficients
there and moves them back to the device. `reference_style_sent_loss` below does the same, **with the reference's
integer-mask defect fixed** (the covariance is taken on the low-entropy tokens through a boolean selection), so
that both implementations compute the same loss and can be checked equal before they are timed.
`reference_style_kl_cov_loss` is verl's KL-Cov in the same style (host top-k, index assignment of the loss).

For every shape: both losses are checked equal (forward: the per-token loss; backward: the gradient w.r.t. the
log-probabilities; the selected KL coefficients exactly), then forward + backward of each is timed interleaved
(A, B, B, A, A, B, ...: the order alternates per repeat), and the median times and their ratio are printed.
Inputs are continuous random values, so no two entropies or covariances tie (ties are the one place where the
two selections may legitimately differ: `torch.topk` does not specify its tie order, `sec_trl` breaks covariance ties
by lower entropy, then position).

    python benchmarks/bench_loss.py                                  # 64 x 1024, CUDA if available
    python benchmarks/bench_loss.py --shapes 64x1024 16x4096 256x1024 --device cpu --repeats 20

On the CPU the host round trip of the reference style costs nothing (`.cpu()` of a CPU tensor is a no-op), so the
CPU numbers compare the selection algorithms only (host `torch.topk` on the compacted valid tokens against
`sec_trl`'s device-side top-k of a static bound / `kthvalue` with sentinels over all positions); the
transfer and synchronisation costs the device-side design avoids only show with `--device cuda`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _common import THREADS_HELP, machine_line, set_threads, sync

from sec_trl.losses import kl_cov_per_token_loss, sent_per_token_loss


# SENT reference-run values (docs/method.md)
LOW_ENTROPY_QUANTILE = 0.8
COV_RATIO = 2e-4
KL_COEF = 0.1
HIGH_COV_COEF = 2.0
LOW_COV_COEF = 0.5
LOW_ENTROPY_KL_COEF = 0.0


# ------------------------------------------------------------------------------------ reference-style losses
def reference_style_sent_loss(
    per_token_logps,
    old_per_token_logps,
    advantages,
    entropies,
    mask,
    *,
    low_entropy_quantile=LOW_ENTROPY_QUANTILE,
    cov_ratio=COV_RATIO,
    kl_coef=KL_COEF,
    high_cov_coef=HIGH_COV_COEF,
    low_cov_coef=LOW_COV_COEF,
    low_entropy_kl_coef=LOW_ENTROPY_KL_COEF,
):
    """SENT's per-token loss the way the reference code computes it (host top-k), integer-mask defect fixed.

    Returns `(per_token_loss, coef)` with `coef` the `(B, T)` KL coefficients on the loss's device.
    """
    device, dtype = per_token_logps.device, per_token_logps.dtype
    B, T = per_token_logps.shape
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    advantages = advantages.expand(B, T)
    valid = mask.bool()

    # to the host: flat indices of the valid tokens and their entropy / advantage / logp (each .cpu() syncs)
    valid_idx = torch.nonzero(valid.reshape(-1), as_tuple=True)[0].cpu()
    valid_ent = entropies.detach()[valid].cpu()
    valid_adv = advantages.detach()[valid].cpu()
    valid_logp = per_token_logps.detach()[valid].cpu()

    coef = torch.zeros(B * T, dtype=dtype)  # built on the host
    n_valid = len(valid_ent)
    if n_valid > 0:
        n_low = max(1, int(n_valid * low_entropy_quantile))
        low_pos = torch.topk(valid_ent, n_low, largest=False).indices
        # the fix: a boolean selection of the low-entropy tokens (the reference indexes with an integer mask here)
        low = torch.zeros(n_valid, dtype=torch.bool)
        low[low_pos] = True
        low_adv, low_logp, low_idx = valid_adv[low], valid_logp[low], valid_idx[low]
        cov = (low_adv - low_adv.mean()) * (low_logp - low_logp.mean())
        k = max(1, int(len(cov) * cov_ratio))
        coef[low_idx] = kl_coef * low_entropy_kl_coef
        coef[low_idx[torch.topk(cov, k, largest=False).indices]] = kl_coef * low_cov_coef
        coef[low_idx[torch.topk(cov, k, largest=True).indices]] = kl_coef * high_cov_coef  # high wins on overlap
    coef = coef.view(B, T).to(device)  # back to the device

    log_ratio = per_token_logps - old_per_token_logps
    loss = -advantages * torch.exp(log_ratio) + coef * log_ratio.abs()
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss, coef


def reference_style_kl_cov_loss(per_token_logps, old_per_token_logps, advantages, mask, *, cov_ratio, kl_coef):
    """verl's KL-Cov: host top-k over the valid tokens' covariance, then index assignment of the KL'd loss."""
    B, T = per_token_logps.shape
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    advantages = advantages.expand(B, T)
    valid = mask.bool()
    log_ratio = per_token_logps - old_per_token_logps
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_kl = -advantages * ratio + kl_coef * log_ratio.abs()

    valid_idx = torch.nonzero(valid.reshape(-1), as_tuple=True)[0]
    valid_adv = advantages.detach()[valid].cpu()
    valid_logp = per_token_logps.detach()[valid].cpu()
    if len(valid_adv) > 0:
        cov = (valid_adv - valid_adv.mean()) * (valid_logp - valid_logp.mean())
        k = max(1, int(len(cov) * cov_ratio))
        large = valid_idx[torch.topk(cov, k, largest=True).indices.to(valid_idx.device)]
        rows, cols = large // T, large % T
        pg_losses = pg_losses.clone()
        pg_losses[rows, cols] = pg_losses_kl[rows, cols]
    return torch.where(valid, pg_losses, torch.zeros_like(pg_losses))


# ----------------------------------------------------------------------------------------------- the harness
def make_inputs(B, T, device, seed):
    """Continuous random inputs shaped like one loss computation; right-padded rows of random length."""
    g = torch.Generator().manual_seed(seed)
    logps = -5.0 * torch.rand(B, T, generator=g)
    old = logps + 0.05 * torch.randn(B, T, generator=g)  # off-policy: the KL term has value and gradient
    entropies = 3.0 * torch.rand(B, T, generator=g)
    advantages = torch.randn(B, generator=g)
    lengths = torch.randint(max(1, T // 4), T + 1, (B, 1), generator=g)
    mask = torch.arange(T)[None] < lengths
    inputs = {
        "logps": logps,
        "old": old,
        "entropies": entropies,
        "advantages": advantages,
        "mask": mask,
    }
    return {k: v.to(device) for k, v in inputs.items()}


def _variants(inputs):
    """name -> (ours, reference): callables taking a leaf `logps` and returning `(per_token_loss, kl_coef_or_None)`."""
    x = inputs
    kl_cov_kwargs = dict(cov_ratio=COV_RATIO, kl_coef=KL_COEF)

    def ours_sent(logps):
        loss, info = sent_per_token_loss(logps, x["old"], x["advantages"], x["entropies"], x["mask"])
        return loss, info["kl_coef_per_token"]

    def ref_sent(logps):
        return reference_style_sent_loss(logps, x["old"], x["advantages"], x["entropies"], x["mask"])

    def ours_kl_cov(logps):
        loss, _ = kl_cov_per_token_loss(logps, x["old"], x["advantages"], None, x["mask"], **kl_cov_kwargs)
        return loss, None

    def ref_kl_cov(logps):
        return reference_style_kl_cov_loss(logps, x["old"], x["advantages"], x["mask"], **kl_cov_kwargs), None

    return {"sent": (ours_sent, ref_sent), "kl_cov": (ours_kl_cov, ref_kl_cov)}


def _forward_backward(fn, inputs):
    """Token-mean of the per-token loss (TRL's `bnpo`), backward; returns (per_token_loss, coef, grad)."""
    logps = inputs["logps"].detach().clone().requires_grad_(True)
    per_token, coef = fn(logps)
    mask = inputs["mask"]
    loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    loss.backward()
    return per_token.detach(), coef, logps.grad


def check_equal(ours, reference, inputs):
    a_loss, a_coef, a_grad = _forward_backward(ours, inputs)
    b_loss, b_coef, b_grad = _forward_backward(reference, inputs)
    if a_coef is not None:
        torch.testing.assert_close(a_coef, b_coef, rtol=0, atol=0, msg="the selected KL coefficients differ")
    torch.testing.assert_close(a_loss, b_loss, msg=lambda m: f"forward differs: {m}")
    torch.testing.assert_close(a_grad, b_grad, msg=lambda m: f"gradient differs: {m}")


def time_interleaved(fns, inputs, device, repeats, warmup):
    """Median forward+backward time (ms) of each callable, measured interleaved, order alternating per repeat."""
    names = list(fns)
    times = {name: [] for name in names}
    for i in range(warmup + repeats):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            logps = inputs["logps"].detach().clone().requires_grad_(True)
            mask = inputs["mask"]
            sync(device)
            start = time.perf_counter()
            per_token, _ = fns[name](logps)
            ((per_token * mask).sum() / mask.sum().clamp(min=1)).backward()
            sync(device)
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}, times


def parse_shape(text):
    try:
        b, t = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 64x1024, got {text!r}") from None
    return b, t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=[(64, 1024)], help="BxT, e.g. 64x1024")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--losses", nargs="+", choices=["sent", "kl_cov"], default=["sent", "kl_cov"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run for the tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes, args.repeats, args.warmup = [(8, 256)], 3, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    set_threads(args.threads)

    print(machine_line(device))
    print(f"repeats {args.repeats} (+{args.warmup} warm-up), interleaved; forward + backward of the token-mean loss")
    print(f"{'loss':<7} {'shape':>9} {'valid':>7} {'sec_trl ms':>11} {'reference ms':>13} {'ref/ours':>9}")
    rows = []
    for B, T in args.shapes:
        inputs = make_inputs(B, T, device, args.seed)
        variants = _variants(inputs)
        for loss_name in args.losses:
            ours, reference = variants[loss_name]
            check_equal(ours, reference, inputs)
            medians, _ = time_interleaved(
                {"sec_trl": ours, "reference": reference}, inputs, device, args.repeats, args.warmup
            )
            ratio = medians["reference"] / medians["sec_trl"]
            rows.append((loss_name, f"{B}x{T}", ratio))
            print(
                f"{loss_name:<7} {f'{B}x{T}':>9} {int(inputs['mask'].sum()):>7} {medians['sec_trl']:>11.3f} "
                f"{medians['reference']:>13.3f} {ratio:>9.2f}"
            )
    print("outputs checked equal (forward, gradient, selected coefficients) before timing")
    for loss_name, shape, ratio in rows:
        print(f"ratio (reference / sec_trl) = {ratio:.2f}  [{loss_name}, {shape}, {device.type}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
