"""Helpers shared by the benchmark scripts: the machine line, device synchronisation, CPU threads."""

from __future__ import annotations

import platform

import torch


THREADS_HELP = (
    "torch CPU threads (0: torch's default). 1 by default: on a shared machine, more threads than free cores make "
    "every parallel region wait for a descheduled thread, which swamps the timings (seen here: 30x slower, erratic)"
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        dev = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        dev = f"cpu ({torch.get_num_threads()} torch threads)"
    return f"machine: {cpu_model()}; torch {torch.__version__}; device {dev}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
