"""TRL 1.15's fused LM head on the CPU, for the tests: a plain-torch version of TRL's `ChunkedLogProbFunction`.

TRL 1.15's `GRPOTrainer` computes every forward's per-token log-probabilities and entropies through a fused LM head
(`trl.trainer.utils.add_fused_lm_head`) whose kernel, `trl.kernels.ChunkedLogProbFunction`, is Triton only: without
the `triton` package `trl.trainer.utils._ChunkedLogProbFunction` is None (`'NoneType' object has no attribute
'apply'` at the first forward), and with it Triton finds no driver for CPU tensors (`0 active drivers`). Triton's
interpreter (`TRITON_INTERPRET=1`) runs it, exactly, at about a second per token on this vocabulary: hours for the
trainer tests. TRL 1.16 folds the same tiles in torch on the CPU, so nothing is replaced there.

`install()` (called by `conftest.py`) puts `TorchChunkedLogProb` in TRL 1.15's `trl.trainer.utils` for tensors that
are not on CUDA/XPU; TRL's own kernel still serves those. Only TRL's kernel is replaced: the trainer, its forward, the
loss and the config are TRL 1.15's. `tests/test_trl_versions.py` pins this function to TRL's kernel (on TRL 1.15:
the Triton kernel under `TRITON_INTERPRET=1`; on 1.16: TRL's torch fold) on every output and gradient.
"""

from __future__ import annotations

from importlib.metadata import version

from packaging.version import Version


OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def kernel_needs_stand_in() -> bool:
    """TRL older than 1.16: its fused LM head has no CPU path."""
    return Version(version("trl")).release[:2] < (1, 16)  # without importing TRL: conftest.py calls this


class TorchChunkedLogProb:
    """`ChunkedLogProbFunction.apply`'s arguments and results, computed from the full logits with torch autograd."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None, logit_scale=1.0,
              outputs=OUTPUTS[1:]):  # fmt: skip
        import torch

        device = hidden.device
        # TRL's kernel: the projection in the autocast dtype (else the input's), then everything in fp32
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else hidden.dtype
        logits = hidden.to(dtype) @ weight.to(dtype).t()
        if bias is not None:
            logits = logits + bias.to(dtype)
        z = logits.float() * logit_scale
        if final_logit_softcapping is not None:
            z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
        z = z / temperature
        log_p = torch.log_softmax(z, dim=-1)
        log_probs = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
        with torch.no_grad():
            log_sum_sq_probs = torch.logsumexp(2 * log_p, dim=-1) if "log_sum_sq_probs" in outputs else None
            mean_logits = z.mean(-1) if "mean_logits" in outputs else None
            # the first maximum, like `argmax`: a tie with an earlier token is not a top-1 prediction
            is_top1 = (z.argmax(-1) == targets) if "is_top1" in outputs else None
        return log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1


class _CpuOrTrlKernel:
    """TRL's kernel for CUDA/XPU tensors (when Triton is there), the torch version for everything else."""

    def __init__(self, trl_kernel):
        self.trl_kernel = trl_kernel

    def apply(self, hidden, *args, **kwargs):
        if self.trl_kernel is not None and hidden.device.type in ("cuda", "xpu"):
            return self.trl_kernel.apply(hidden, *args, **kwargs)
        return TorchChunkedLogProb.apply(hidden, *args, **kwargs)


def install() -> bool:
    """On TRL < 1.16, route the fused LM head's CPU tensors to `TorchChunkedLogProb`; True when it did."""
    if not kernel_needs_stand_in():
        return False
    from trl.trainer import utils

    if not isinstance(utils._ChunkedLogProbFunction, _CpuOrTrlKernel):
        utils._ChunkedLogProbFunction = _CpuOrTrlKernel(utils._ChunkedLogProbFunction)
    return True
