"""The train.py command line of a tiny CPU run, shared by the tests that run train.py as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
TRAIN_PY = ROOT / "train.py"

# A tiny run on the CPU: float32, nothing reported, 4 completions per prompt, 6 new tokens, no checkpoints.
BASE_FLAGS = {
    "use_cpu": "true",
    "bf16": "false",
    "report_to": "none",
    "num_generations": "4",
    "per_device_train_batch_size": "4",
    "max_completion_length": "6",
    "save_strategy": "no",
}

# A dotted-path reward that varies within a group (a random tiny model never answers arithmetic correctly)
LENGTH_REWARD = """\
def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]
"""


def train_flags(**overrides) -> list[str]:
    """`BASE_FLAGS` updated with `overrides`, as train.py arguments: `--name value` for each.

    A value may be a string or number, a bool (written `true`/`false`), a list (several values, e.g.
    `lora_target_modules=["q_proj", "v_proj"]`), or None to drop a base flag. Insertion order is kept: base flags
    first, then the new ones.
    """
    flags = {**BASE_FLAGS, **overrides}
    args = []
    for name, value in flags.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        args += [f"--{name}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return args


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def subprocess_env(**extra) -> dict:
    """The environment for a train.py child: offline Hub, no tokenizer threads, plus `extra`."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def run_train(args, cwd, *, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python train.py <args>` in `cwd`, output captured."""
    return subprocess.run(
        [sys.executable, str(TRAIN_PY), *args],
        cwd=cwd,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(launch_args, train_args, cwd, *, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`accelerate launch <launch_args> train.py <train_args>` in `cwd`, on a free port (others may share the box)."""
    env = dict(env or subprocess_env())
    # would turn DeepSpeed off (see accelerate_configs/zero3_cpu.yaml); --use_cpu true is a train.py flag instead
    env.pop("ACCELERATE_USE_CPU", None)
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch_args]
    command += ["--main_process_port", str(free_port()), str(TRAIN_PY), *train_args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# plain DDP on 2 CPU processes (gloo): `--multi_gpu` is the torchrun launcher; train.py's --use_cpu true puts the
# ranks on the CPU. (`accelerate launch --cpu --num_processes 2` starts ONE process: its simple launcher only fans
# out through mpirun.)
DDP_TWO_CPU_PROCESSES = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
