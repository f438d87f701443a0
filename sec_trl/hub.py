"""Pushing to the Hub from the main process only, after the files are safely on disk, without local paths.

Trainer's own push creates the repository when the trainer is built (so an offline run fails before doing any
work), pushes TRL's generic model card, and uploads `training_args.bin`, which holds local paths. Here the run
always saves locally first; pushes follow `hub_strategy` and a failure is reported once, never fatal to training.

Every upload goes through :func:`stage_for_upload`: a staging copy of the folder (weights hard-linked, not copied)
in which JSON files have their local paths replaced (`adapter_config.json`'s `base_model_name_or_path` by the base
model's Hub id or name, any other absolute path by its base name), the semantic-entropy cache and
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
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .model_card import REPO_ID_PLACEHOLDER, secrets_of
from .script_args import shown_path


logger = logging.getLogger(__name__)

# never uploaded: local paths (training_args.bin), temporary and hidden files, the ranking's sample cache
IGNORE_PATTERNS = ["training_args.bin", "_*", ".*", "*.tmp", "se_ranking/shards/*"]
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


def local_roots(extra: Iterable[str | os.PathLike | None] = ()) -> list[str]:
    """Absolute directories whose appearance in an uploaded file would leak where the run lived."""
    roots = [os.path.expanduser("~"), os.getcwd(), tempfile.gettempdir()]
    for env in ("HF_HOME", "XDG_CACHE_HOME", "SEC_TRL_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE"):
        if os.environ.get(env):
            roots.append(os.environ[env])
    roots += [str(x) for x in extra if x]
    cleaned = {os.path.abspath(os.path.expanduser(r)).rstrip("/") for r in roots}
    return sorted((r for r in cleaned if len(r) > 1), key=len, reverse=True)


def _is_local_path(value: str, roots: Sequence[str]) -> bool:
    if not value.startswith(("/", "~")) and not (len(value) > 2 and value[1] == ":" and value[2] in "\\/"):
        return False
    expanded = os.path.abspath(os.path.expanduser(value))
    first = "/" + expanded.strip("/").split("/")[0]
    return any(expanded == r or expanded.startswith(r + "/") for r in roots) or (
        first != "/" and os.path.exists(first)
    )


def _scrub(value: Any, roots: Sequence[str], base_model: str | None, key: str | None = None) -> Any:
    """``value`` (parsed JSON) with every local path replaced: the base model's path by ``base_model``, others by
    their base name."""
    if isinstance(value, dict):
        return {k: _scrub(v, roots, base_model, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, roots, base_model, key) for v in value]
    if isinstance(value, str) and _is_local_path(value, roots):
        if key in ("base_model_name_or_path", "_name_or_path", "name_or_path") and base_model:
            return base_model
        return Path(value.rstrip("/")).name
    return value


def _scrub_text(text: str, roots: Sequence[str]) -> str:
    """``text`` with every path under a local root replaced by its base name."""
    for root in roots:
        pattern = re.compile(_path_pattern(root).pattern[: -len(_PATH_END)] + r"(?:/[^\s\"'`,;)\]}]*)?")
        text = pattern.sub(lambda m: Path(m.group(0).rstrip("/")).name or "local", text)
    return text


def find_leaks(folder: str | os.PathLike, roots: Sequence[str], secrets: Sequence[str] = ()) -> list[str]:
    """``"file: what"`` for every text file under ``folder`` that holds a local root or a secret."""
    leaks = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES or path.stat().st_size > _MAX_TEXT_BYTES:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(secret in text for secret in secrets):
            leaks.append(f"{path.relative_to(folder)}: a token")
        elif any(_path_pattern(root).search(text) for root in roots):
            leaks.append(f"{path.relative_to(folder)}: a local path")
    return leaks


def _path_pattern(root: str) -> re.Pattern:
    """``root`` as a path in text: not inside a URL or a longer name (``example.com/work/x`` is not ``/work``)."""
    return re.compile(r"(?<![\w./-])" + re.escape(root) + _PATH_END)


_PATH_END = r"(?=[/\\\"'\s,;)\]}]|$)"


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
    folder, staging = Path(folder), Path(staging)
    roots = local_roots([folder.resolve(), getattr(args, "output_dir", None)])
    patterns = [*IGNORE_PATTERNS, *ignore]
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or _ignored(relative, patterns):
            continue
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix, small = path.suffix.lower(), path.stat().st_size <= _MAX_TEXT_BYTES
        if suffix == ".json" and small:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                target.write_text(_scrub_text(path.read_text(encoding="utf-8", errors="replace"), roots))
                continue
            target.write_text(json.dumps(_scrub(data, roots, base_model), indent=2, ensure_ascii=False) + "\n")
        elif suffix in TEXT_SUFFIXES and small:  # e.g. the README.md peft writes into each adapter checkpoint
            target.write_text(_scrub_text(path.read_text(encoding="utf-8", errors="replace"), roots))
        else:
            try:
                os.link(path, target)  # no copy of multi-GB weights
            except OSError:
                shutil.copyfile(path, target)
    leaks = find_leaks(staging, roots, secrets_of(args))
    if leaks:
        raise ValueError(f"Refusing to upload: {len(leaks)} file(s) would publish local data: {leaks[:5]}")
    return staging


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


def _upload(args, folder: str, path_in_repo: str, ignore: list[str], base_model: str | None) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=args.hub_token)
    repo_id = api.create_repo(
        args.hub_model_id or Path(args.output_dir).name, private=bool(args.hub_private_repo), exist_ok=True
    ).repo_id
    with tempfile.TemporaryDirectory(prefix="_sec_trl-upload-", dir=os.path.dirname(os.path.abspath(folder))) as tmp:
        staged = stage_for_upload(folder, tmp, ignore=ignore, base_model=hub_base_model(base_model), args=args)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(staged),
            path_in_repo=path_in_repo,
            commit_message=f"sec_trl: {path_in_repo if path_in_repo != '.' else 'model'}",
        )
    return repo_id


class HubStrategyCallback(TrainerCallback):
    """`hub_strategy` for checkpoints: `every_save` (the model at the repo root), `checkpoint` (the latest checkpoint
    in `last-checkpoint/`, for resuming), `all_checkpoints` (each in `checkpoint-N/`); `end` pushes nothing here.
    After the first failure (offline, no token) it reports once and stops trying; the final push decides the exit
    code."""

    def __init__(self, base_model: str | None = None):
        self.failure: BaseException | None = None
        self.base_model = base_model

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
            _upload(args, folder, target, ignore, self.base_model)
        except Exception as exc:  # keep training: everything is on disk
            self.failure = exc
            logger.warning(push_failure_message(exc, args.output_dir, repo_id=args.hub_model_id))


def push_output_dir(args, base_model: str | None = None) -> bool:
    """Upload the final model and card (not the checkpoints). Returns False, after saying why, when it fails."""
    try:
        repo_id = _upload(args, args.output_dir, ".", ["checkpoint-*"], base_model)
        print(f"Pushed to https://huggingface.co/{repo_id}")
        return True
    except Exception as exc:  # offline, no token, no permission: say so, the local copy is complete
        print(push_failure_message(exc, args.output_dir, repo_id=args.hub_model_id), file=sys.stderr)
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sec_trl.hub --output_dir DIR --hub_model_id ID``: push a finished run (final model and card)."""
    parser = argparse.ArgumentParser(prog="python -m sec_trl.hub", description=main.__doc__)
    parser.add_argument("--output_dir", required=True, help="the run's output directory")
    parser.add_argument("--hub_model_id", required=True, help="the repository to push to (user/name)")
    parser.add_argument("--hub_private_repo", action="store_true", help="create the repository as private")
    parser.add_argument("--base_model", default=None, help="base model Hub id for adapter_config.json")
    ns = parser.parse_args(argv)
    if not os.path.isdir(ns.output_dir):
        parser.error(f"--output_dir {ns.output_dir!r} is not a directory")
    args = argparse.Namespace(
        output_dir=ns.output_dir, hub_model_id=ns.hub_model_id, hub_private_repo=ns.hub_private_repo, hub_token=None
    )
    return 0 if push_output_dir(args, ns.base_model) else 1


if __name__ == "__main__":
    sys.exit(main())
