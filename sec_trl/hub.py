"""Pushing to the Hub from the main process only, after the files are safely on disk.

Trainer's own push creates the repository when the trainer is built (so an offline run fails before doing any
work), pushes TRL's generic model card, and uploads `training_args.bin`, which holds local paths. Here the run
always saves locally first; pushes follow `hub_strategy` and a failure is reported once, never fatal to training.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import TrainerCallback

from .model_card import push_failure_message


logger = logging.getLogger(__name__)

# never uploaded: local paths (training_args.bin), temporary and hidden files
IGNORE_PATTERNS = ["training_args.bin", "_*", ".*"]


def _upload(args, folder: str, path_in_repo: str, ignore: list[str]) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=args.hub_token)
    repo_id = api.create_repo(
        args.hub_model_id or Path(args.output_dir).name, private=bool(args.hub_private_repo), exist_ok=True
    ).repo_id
    api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        path_in_repo=path_in_repo,
        ignore_patterns=IGNORE_PATTERNS + ignore,
        commit_message=f"sec_trl: {path_in_repo if path_in_repo != '.' else 'model'}",
    )
    return repo_id


class HubStrategyCallback(TrainerCallback):
    """`hub_strategy` for checkpoints: `every_save` (the model at the repo root), `checkpoint` (the latest checkpoint
    in `last-checkpoint/`, for resuming), `all_checkpoints` (each in `checkpoint-N/`); `end` pushes nothing here.
    After the first failure (offline, no token) it reports once and stops trying; the final push decides the exit
    code."""

    def __init__(self):
        self.failure: BaseException | None = None

    def on_save(self, args, state, control, **kwargs):
        strategy = str(getattr(args.hub_strategy, "value", args.hub_strategy))
        if not state.is_world_process_zero or self.failure is not None or strategy == "end":
            return
        name = f"checkpoint-{state.global_step}"
        folder = os.path.join(args.output_dir, name)
        target, ignore = {
            "every_save": (".", ["optimizer.pt", "scheduler.pt", "rng_state*", "global_step*", "trainer_state.json"]),
            "checkpoint": ("last-checkpoint", []),
            "all_checkpoints": (name, []),
        }[strategy]
        try:
            _upload(args, folder, target, ignore)
        except Exception as exc:  # keep training: everything is on disk
            self.failure = exc
            logger.warning(push_failure_message(exc, Path(args.output_dir).name, repo_id=args.hub_model_id))


def push_output_dir(args) -> bool:
    """Upload the final model and card (not the checkpoints). Returns False, after saying why, when it fails."""
    name = Path(args.output_dir).name
    try:
        repo_id = _upload(args, args.output_dir, ".", ["checkpoint-*"])
        print(f"Pushed to https://huggingface.co/{repo_id}")
        return True
    except Exception as exc:  # offline, no token, no permission: say so, the local copy is complete
        import sys

        print(push_failure_message(exc, name, repo_id=args.hub_model_id), file=sys.stderr)
        return False
