"""Pushing to the Hub from the main process only, after the files are safely on disk, without local paths.

`SETGRPOTrainer` publishes through this module whatever starts the upload: `push_to_hub=True` (checkpoints as
`hub_strategy` says), `trainer.push_to_hub()`, `trainer.save_model()` with `push_to_hub=True`, and train.py. Trainer's
own push would create the repository when the trainer is built (so an offline run fails before doing any work),
and uploads `output_dir` as it is, `training_args.bin` (local paths) included. Here a push never starts before the
files are saved, and a failed checkpoint push is reported once, never fatal to training.

Every upload goes through :func:`stage_for_upload` / :func:`stage_parts`: a staging copy (weights hard-linked, not
copied) in which JSON files have their local paths replaced (`adapter_config.json`'s `base_model_name_or_path` by
the base model's Hub id or name, any other absolute path by its base name), the semantic-entropy cache and
`training_args.bin` are left out, and a final scan refuses the upload if any text file still holds a local path or
a token.

A failed push can be repeated later, from the directory the run was started in:

    python -m sec_trl.hub --output_dir outputs/my-run --hub_model_id me/my-run
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model_card import REPO_ID_PLACEHOLDER
from .publishing import PATH_KEYS, holds_local_root, scrub_json, scrub_text, secrets_of, shown_path
from .publishing import local_roots as local_roots


logger = logging.getLogger(__name__)

# never uploaded: local paths (training_args.bin), temporary and hidden files, the ranking's sample cache
IGNORE_PATTERNS = ["training_args.bin", "_*", ".*", "*.tmp", "se_ranking/shards/*"]
# what a checkpoint holds besides the model: pushed into `last-checkpoint/` or `checkpoint-N/` (to resume from), never
# to the repository root, which gets the model, its tokenizer and the SENT card of `output_dir`
CHECKPOINT_STATE_PATTERNS = [
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*",
    "global_step*",
    "latest",
    "zero_to_fp32.py",
    "trainer_state.json",
    "entropy_ctrl_state.json",
    "sec_trl_ref_model.pt",
    "README.md",  # peft's generic adapter card: the root gets the SENT card instead
]
CARD_FILES = ["README.md", "assets/*"]
TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".txt", ".yaml", ".yml", ".jinja", ".j2", ".py", ".csv")
_MAX_TEXT_BYTES = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------------------------------
# staging: a path-free copy of what will be uploaded


def _ignored(relative: str, patterns: Sequence[str]) -> bool:
    parts = relative.split("/")
    return any(
        fnmatch.fnmatch(relative, pattern) or any(fnmatch.fnmatch(part, pattern) for part in parts)
        for pattern in patterns
        if "/" not in pattern
    ) or any(fnmatch.fnmatch(relative, pattern) for pattern in patterns if "/" in pattern)


def find_leaks(folder: str | os.PathLike, roots: Sequence[str], secrets: Sequence[str] = ()) -> list[str]:
    """``"file: what"`` for every text file under ``folder`` that holds a local root or a secret."""
    leaks = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES or path.stat().st_size > _MAX_TEXT_BYTES:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(secret in text for secret in secrets):
            leaks.append(f"{path.relative_to(folder)}: a token")
        elif holds_local_root(text, roots):
            leaks.append(f"{path.relative_to(folder)}: a local path")
    return leaks


@dataclass(frozen=True)
class Part:
    """Files of ``folder`` to upload under ``prefix`` ("" = the repository root): all but ``ignore`` (and
    :data:`IGNORE_PATTERNS`), or only those matching ``only`` when given. Patterns are fnmatch patterns on the path
    relative to ``folder``; one without ``/`` also matches any single path component."""

    folder: str | os.PathLike
    prefix: str = ""
    ignore: Sequence[str] = ()
    only: Sequence[str] | None = None


def stage_for_upload(
    folder: str | os.PathLike,
    staging: str | os.PathLike,
    *,
    ignore: Sequence[str] = (),
    base_model: str | None = None,
    args: Any = None,
) -> Path:
    """Copy ``folder`` into ``staging`` as it will be uploaded: ignored files left out, weights hard-linked, JSON
    scrubbed of local paths. Raises ``ValueError`` (naming the file) when a local path or token would remain."""
    return stage_parts([Part(folder, ignore=tuple(ignore))], staging, base_model=base_model, args=args)


def stage_parts(
    parts: Sequence[Part],
    staging: str | os.PathLike,
    *,
    base_model: str | None = None,
    args: Any = None,
    secrets: Sequence[str] = (),
) -> Path:
    """:func:`stage_for_upload` for several folders in one staging tree (one commit): each part's files under its
    prefix. A later part does not overwrite a file an earlier part staged."""
    staging = Path(staging)
    roots = local_roots([*(Path(part.folder).resolve() for part in parts), getattr(args, "output_dir", None)])
    for part in parts:
        folder = Path(part.folder)
        patterns = [*IGNORE_PATTERNS, *part.ignore]
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if not path.is_file() or _ignored(relative, patterns):
                continue
            if part.only is not None and not any(fnmatch.fnmatch(relative, pattern) for pattern in part.only):
                continue
            target = staging / part.prefix / relative
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _stage_file(path, target, roots, base_model)
    leaks = find_leaks(staging, roots, [*secrets_of(args), *(s for s in secrets if s)])
    if leaks:
        raise ValueError(f"Refusing to upload: {len(leaks)} file(s) would publish local data: {leaks[:5]}")
    return staging


def _stage_file(path: Path, target: Path, roots: Sequence[str], base_model: str | None) -> None:
    suffix, small = path.suffix.lower(), path.stat().st_size <= _MAX_TEXT_BYTES
    if suffix == ".json" and small:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            target.write_text(scrub_text(path.read_text(encoding="utf-8", errors="replace"), roots))
            return
        replacements = dict.fromkeys(PATH_KEYS, base_model) if base_model else None
        target.write_text(json.dumps(scrub_json(data, roots, replacements), indent=2, ensure_ascii=False) + "\n")
    elif suffix in TEXT_SUFFIXES and small:  # e.g. the README.md peft writes into each adapter checkpoint
        target.write_text(scrub_text(path.read_text(encoding="utf-8", errors="replace"), roots))
    else:
        try:
            os.link(path, target)  # no copy of multi-GB weights
        except OSError:
            shutil.copyfile(path, target)


def hub_base_model(base_model: str | None) -> str | None:
    """What `adapter_config.json` should name as the base model once uploaded: the embedded model's Hub source, a
    Hub id as is, a local path by its name."""
    from .embedded import EMBEDDED_MODEL_NAME, EMBEDDED_MODEL_SOURCE

    if base_model is None:
        return None
    if base_model == EMBEDDED_MODEL_NAME:
        return EMBEDDED_MODEL_SOURCE
    return base_model


# --------------------------------------------------------------------------------------------------------------------
# when a push fails


def _failure_reason(exc: BaseException) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if "OfflineModeIsEnabled" in names:
        return "offline mode is on (HF_HUB_OFFLINE is set), so the Hub was not contacted"
    if status in (401, 403):
        return f"the Hub refused the credentials (HTTP {status}): log in with a token that has write access"
    if status is not None:
        return f"the Hub answered HTTP {status}"
    if isinstance(exc, (OSError, TimeoutError)) or any(
        word in name for name in names for word in ("Connect", "Timeout", "Network", "Transport")
    ):
        return "the Hub could not be reached (no network connection?)"
    return "the upload did not complete"


def push_failure_message(exc: BaseException, output_dir: str, repo_id: str | None = None) -> str:
    """What to print when `--push_to_hub` fails: the checkpoint is safe locally, and how to push it later.

    Args:
        exc: the exception raised by the push.
        output_dir: the output directory. It is shown relative to the current directory (so the printed command
            works from where the user stands); an absolute path outside it is reduced to its name.
        repo_id: the target repository (`args.hub_model_id`), if known.
    """
    shown = shown_path(output_dir)
    repo = repo_id or REPO_ID_PLACEHOLDER
    detail = (str(exc).strip().splitlines() or [""])[0][:200]
    return "\n".join(
        [
            f"Pushing to the Hub failed: {_failure_reason(exc)} ({type(exc).__name__}: {detail}).",
            f"Nothing is lost: the trained model and its model card are saved locally in the output directory "
            f"'{shown}'.",
            "To push it later, once online, log in (`hf auth login`, or set HF_TOKEN) and run, from this directory:",
            f"    python -m sec_trl.hub --output_dir {shown} --hub_model_id {repo}",
            "(it uploads the final model and card, without checkpoints, training_args.bin or local paths).",
        ]
    )


# --------------------------------------------------------------------------------------------------------------------
# uploading


class HubPushError(RuntimeError):
    """A push failed; the message (:func:`push_failure_message`) says why, that nothing is lost, and how to push
    later. The original exception is its ``__cause__``."""


def _strategy(args) -> str:
    return str(getattr(args.hub_strategy, "value", args.hub_strategy))


def upload(
    args,
    parts: Sequence[Part],
    *,
    base_model: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
):
    """Create the repository if needed (``args.hub_model_id``, else the output directory's name) and upload
    ``parts`` as one commit of their staged, path-free copy. Returns ``(repo_id, CommitInfo)``; raises what the Hub
    client raises (offline, no token, ...) or ``ValueError`` when the staged copy would publish local data."""
    from huggingface_hub import HfApi

    token = token if token is not None else getattr(args, "hub_token", None)
    private = private if private is not None else getattr(args, "hub_private_repo", None)
    revision = revision if revision is not None else getattr(args, "hub_revision", None)
    api = HfApi(token=token)
    name = getattr(args, "hub_model_id", None) or Path(args.output_dir).absolute().name
    repo_id = api.create_repo(name, private=bool(private), exist_ok=True).repo_id
    # staged inside output_dir (same file system, so weights are hard-linked); "_*" is never uploaded
    os.makedirs(args.output_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="_sec_trl-upload-", dir=args.output_dir) as tmp:
        staged = stage_parts(parts, tmp, base_model=hub_base_model(base_model), args=args, secrets=[token or ""])
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(staged),
            commit_message=commit_message or "sec_trl: model",
            revision=revision,
        )
    return repo_id, info


def output_dir_parts(args) -> list[Part]:
    """The final model and card: ``output_dir`` without its checkpoints."""
    return [Part(args.output_dir, ignore=("checkpoint-*",))]


def checkpoint_parts(args, checkpoint_folder: str | os.PathLike) -> list[Part]:
    """What a checkpoint push uploads, as transformers' `hub_strategy` defines it (nothing for `end`): the
    checkpoint's model and tokenizer at the repository root with the SENT card of ``output_dir``; with `checkpoint`
    also the whole checkpoint in `last-checkpoint/` (for resuming), with `all_checkpoints` in `checkpoint-N/`."""
    strategy = _strategy(args)
    if strategy == "end":
        return []
    parts = [Part(checkpoint_folder, ignore=tuple(CHECKPOINT_STATE_PATTERNS)), Part(args.output_dir, only=CARD_FILES)]
    if strategy == "checkpoint":
        parts.append(Part(checkpoint_folder, prefix="last-checkpoint"))
    elif strategy == "all_checkpoints":
        parts.append(Part(checkpoint_folder, prefix=Path(checkpoint_folder).name))
    return parts


def push_output_dir(args, base_model: str | None = None) -> bool:
    """Upload the final model and card (not the checkpoints). Returns False, after saying why, when it fails."""
    try:
        repo_id, _ = upload(args, output_dir_parts(args), base_model=base_model)
        print(f"Pushed to https://huggingface.co/{repo_id}")
        return True
    except Exception as exc:  # offline, no token, no permission: say so, the local copy is complete
        print(push_failure_message(exc, args.output_dir, repo_id=args.hub_model_id), file=sys.stderr)
        return False


def make_parser():
    """``TrlParser`` over :class:`~sec_trl.script_args.HubPushArguments`: flags or ``--config push.yaml``."""
    from trl import TrlParser

    from .script_args import HubPushArguments

    return TrlParser(
        HubPushArguments,
        prog="python -m sec_trl.hub",
        description="Push a finished run's final model and card to the Hub, staged without local paths or tokens "
        "(flags, or --config push.yaml with the same fields; a flag overrides the file).",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sec_trl.hub --output_dir DIR --hub_model_id ID [--config push.yaml]``: push a finished run (final
    model and card). A user's mistake ends with one ``error:`` line and exit code 2 (see :mod:`sec_trl.errors`)."""
    from .errors import user_errors

    with user_errors("sec_trl.hub"):
        (ns,) = make_parser().parse_args_and_config(args=list(argv) if argv is not None else None)
        if not os.path.isdir(ns.output_dir):
            raise NotADirectoryError(
                f"--output_dir {ns.output_dir!r} is not a directory: give the folder the run saved its final model "
                "and README.md into (train.py's --output_dir), from the directory the run was started in."
            )
    args = argparse.Namespace(
        output_dir=ns.output_dir, hub_model_id=ns.hub_model_id, hub_private_repo=ns.hub_private_repo, hub_token=None
    )
    return 0 if push_output_dir(args, ns.base_model) else 1


if __name__ == "__main__":
    sys.exit(main())
