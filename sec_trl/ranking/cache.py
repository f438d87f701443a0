"""The ranking's shard cache: what a result was computed from (the fingerprint), shards on disk, atomic writes.

A shard file holds the scored rows of ``shard_size`` consecutive prompts and the hash of the fingerprint it was
computed under; a shard from another fingerprint is never used. Each fingerprint has its own folder,
``<output_dir>/shards/<first 16 hex digits of the fingerprint hash>/`` (:func:`cache_dir`), so a run with other
inputs never deletes or replaces another run's samples: rerunning the original command finds its shards again.
:func:`prepare_cache` logs what changed relative to the latest other cache; :func:`prune_caches` (``--prune_cache``)
deletes the other folders, and deleting ``<output_dir>/shards/`` by hand removes every cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from sec_trl.publishing import shown_path, write_json_atomic
from sec_trl.ranking.params import (
    FINGERPRINT_FILENAME,
    FINGERPRINTED_UNLESS_DEFAULT,
    FINGERPRINTED_WHEN_SET,
    NOT_FINGERPRINTED,
    SHARD_DIRNAME,
    RankingParams,
)


logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_CHANGES",
    "RANKING_FORMAT_VERSION",
    "build_fingerprint",
    "cache_dir",
    "dataset_content_hash",
    "hash_json",
    "load_shard",
    "model_fingerprint",
    "prepare_cache",
    "prune_caches",
    "read_json",
    "save_dataset_atomically",
    "shard_path",
]

RANKING_FORMAT_VERSION = 3
"""Bump when sampling/scoring changes in a way that makes old cached shards wrong, and say why in
:data:`FORMAT_CHANGES` (the log quotes it when it invalidates an older cache)."""

FORMAT_CHANGES = {
    2: "the weighted estimator now length-normalises the log-likelihoods (mean token log-probability, Farquhar "
    "et al. 2024), shards record each sample's token count, and the sampling seeds come from "
    "numpy.random.SeedSequence instead of sha256, so every sample is drawn anew",
    3: "plain-string prompts are tokenized without added special tokens, as TRL's trainer and sec_trl.evaluate "
    "tokenize them, so the ranking samples from exactly the prompts training sees",
}
"""Why each cache format version invalidated the one before it."""


def _sec_trl_version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("sec_trl")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def read_json(path: Path) -> Any | None:
    """The JSON content of ``path``; None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def hash_json(data: Any) -> str:
    """sha256 of ``data``'s canonical JSON (sorted keys): the fingerprint hash."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(name_or_path: str) -> dict:
    """Identity of a model without loading it: its name/path, the sha256 of its ``config.json``, and the name, size
    and modification time of every file in its directory (weights, tokenizer, chat template).

    A Hub name is looked up in the local Hub cache (its snapshot directory, whose name is the commit hash); when
    that fails, only the name is recorded and a warning says the cache cannot notice changed weights.
    """
    directory = Path(name_or_path).expanduser()
    if not directory.is_dir():
        directory = None
        try:
            from transformers.utils import cached_file

            config_file = cached_file(name_or_path, "config.json")
            if config_file:
                directory = Path(config_file).parent
        except Exception as exc:  # offline and not cached, gated, ...
            logger.warning(
                "Could not locate model %r locally (%s); the ranking cache records only its name and cannot notice "
                "changed weights.",
                name_or_path,
                type(exc).__name__,
            )
    info: dict[str, Any] = {"name_or_path": str(name_or_path)}
    if directory is None:
        return info
    info["resolved"] = str(directory.resolve())
    config = directory / "config.json"
    info["config_sha256"] = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    files = []
    for f in sorted(directory.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            st = f.stat()
            files.append([f.name, st.st_size, st.st_mtime_ns])
    info["files"] = files
    return info


def dataset_content_hash(dataset, columns: Sequence[str]) -> str:
    """sha256 of the given columns' values, row by row (independent of how the dataset was built or stored).

    Used instead of ``Dataset._fingerprint``, which is random for datasets produced by unhashable transforms and
    differs between identical data loaded in different ways; the content hash is exactly what the results depend
    on. (``_fingerprint`` is still recorded in ``ranking_meta.json``.)
    """
    h = hashlib.sha256()
    h.update(json.dumps(list(columns)).encode())
    for batch in dataset.select_columns(list(columns)).iter(batch_size=1000):
        h.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return h.hexdigest()


def shard_path(shard_dir: Path, shard: int) -> Path:
    """The file of shard ``shard``."""
    return shard_dir / f"shard-{shard:06d}.json"


def load_shard(shard_dir: Path, shard: int, fingerprint_hash: str, start: int, end: int) -> dict | None:
    """A finished shard's data, or None when it is missing or not from this fingerprint (never raises)."""
    path = shard_path(shard_dir, shard)
    if not path.exists():
        return None
    data = read_json(path)
    ok = (
        isinstance(data, dict)
        and data.get("fingerprint") == fingerprint_hash
        and data.get("shard") == shard
        and [row.get("index") for row in data.get("rows", [])] == list(range(start, end))
    )
    if not ok:
        # shown relative to the output folder (shards/<fingerprint>/shard-N.json): logs hold no absolute path
        shown = "/".join(path.parts[-3:])
        logger.warning("Ignoring cache shard %s: unreadable or from other parameters; it will be regenerated.", shown)
        return None
    return data


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [prefix or "<root>"]


CACHE_ID_CHARS = 16
"""Hex digits of the fingerprint hash that name a cache folder (64 bits: distinct fingerprints do not collide)."""


def cache_dir(output_dir: Path, fingerprint_hash: str) -> Path:
    """The shard folder of one fingerprint: ``<output_dir>/shards/<hash[:16]>/``."""
    return Path(output_dir) / SHARD_DIRNAME / fingerprint_hash[:CACHE_ID_CHARS]


def _other_caches(output_dir: Path, keep: Path | None) -> list[Path]:
    root = Path(output_dir) / SHARD_DIRNAME
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and d != keep)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _adopt_legacy_cache(output_dir: Path) -> None:
    """Move caches of the one-cache layout (``shards/*.json`` and ``shards.previous/``, before per-fingerprint
    folders) into their fingerprint's folder, so that they stay usable and are not mixed with the new layout."""
    root = output_dir / SHARD_DIRNAME
    legacy = [f for f in root.glob("*.json")] if root.is_dir() else []
    if legacy:
        stored = read_json(root / FINGERPRINT_FILENAME)
        name = (stored or {}).get("hash") or "unknown-fingerprint"
        target = root / str(name)[:CACHE_ID_CHARS]
        target.mkdir(exist_ok=True)
        for f in legacy:
            os.replace(f, target / f.name)
        logger.info(
            "Moved the ranking cache in %s into %s (one folder per fingerprint).", shown_path(root), target.name
        )
    previous = output_dir / f"{SHARD_DIRNAME}.previous"
    if previous.is_dir():
        stored = read_json(previous / FINGERPRINT_FILENAME)
        target = root / str((stored or {}).get("hash") or "unknown-previous")[:CACHE_ID_CHARS]
        if target.exists():
            shutil.rmtree(previous)  # the same fingerprint's shards are already kept
        else:
            root.mkdir(parents=True, exist_ok=True)
            os.replace(previous, target)


def prepare_cache(output_dir: Path, fingerprint: dict, fingerprint_hash: str) -> Path:
    """Main process only: the shard folder of ``fingerprint`` (:func:`cache_dir`), created if new.

    Other fingerprints' folders are left alone (a run with other inputs never deletes another's samples); when this
    fingerprint is new and others exist, the log says what changed relative to the latest one (and, for an older
    cache format, why that format is invalid: :data:`FORMAT_CHANGES`).
    """
    output_dir = Path(output_dir)
    _adopt_legacy_cache(output_dir)
    shard_dir = cache_dir(output_dir, fingerprint_hash)
    if shard_dir.is_dir():
        for stale in shard_dir.glob(".*.tmp-*"):  # temp files of a run killed mid-write
            stale.unlink(missing_ok=True)
    stored = read_json(shard_dir / FINGERPRINT_FILENAME)
    if stored is not None and stored.get("hash") == fingerprint_hash:
        return shard_dir
    others = [d for d in _other_caches(output_dir, shard_dir) if (d / FINGERPRINT_FILENAME).is_file()]
    if others:
        latest = max(others, key=lambda d: (d / FINGERPRINT_FILENAME).stat().st_mtime_ns)
        old = (read_json(latest / FINGERPRINT_FILENAME) or {}).get("fingerprint")
        changed = _diff_keys(old, fingerprint) if old is not None else ["<unreadable fingerprint file>"]
        _log_format_change(old, latest)
        logger.warning(
            "The latest ranking cache in %s was computed with different inputs (changed: %s); these inputs get a new "
            "cache, %s. The other %d cache(s) are kept (%.1f MiB in %s): rerunning with their inputs reuses them; "
            "--prune_cache, or deleting their folders, removes them.",
            shown_path(latest),
            ", ".join(changed[:12]) + (" ..." if len(changed) > 12 else ""),
            shard_dir.name,
            len(others),
            sum(_folder_bytes(d) for d in others) / 2**20,
            shown_path(shard_dir.parent),
        )
    shard_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(shard_dir / FINGERPRINT_FILENAME, {"hash": fingerprint_hash, "fingerprint": fingerprint})
    return shard_dir


def prune_caches(output_dir: Path, fingerprint_hash: str) -> int:
    """Delete every ranking cache folder in ``output_dir`` but ``fingerprint_hash``'s; returns how many."""
    others = _other_caches(Path(output_dir), cache_dir(output_dir, fingerprint_hash))
    for folder in others:
        shutil.rmtree(folder)
    if others:
        logger.info(
            "--prune_cache: deleted %d other ranking cache(s) in %s.", len(others), shown_path(others[0].parent)
        )
    return len(others)


def save_dataset_atomically(dataset, output_dir: Path) -> None:
    """``save_to_disk`` into a temporary sibling, then move the files into ``output_dir`` (``state.json`` last)."""
    tmp = Path(tempfile.mkdtemp(prefix=".dataset-tmp-", dir=output_dir))
    try:
        dataset.save_to_disk(str(tmp))
        new_files = {f.name for f in tmp.iterdir()}
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == "state.json"):
            os.replace(f, output_dir / f.name)
        for old in output_dir.glob("data-*.arrow"):
            if old.name not in new_files:
                old.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _log_format_change(stored_fingerprint: Any, shard_dir: Path) -> None:
    """Say why a cache of an older format is invalid (the reasons of every version bump since it was written)."""
    old = stored_fingerprint.get("format") if isinstance(stored_fingerprint, dict) else None
    if old == RANKING_FORMAT_VERSION or not isinstance(old, int):
        return
    reasons = [f"format {v}: {why}" for v, why in sorted(FORMAT_CHANGES.items()) if old < v <= RANKING_FORMAT_VERSION]
    logger.warning(
        "The ranking cache in %s has cache format %d; this version writes format %d, so its shards are invalid (%s).",
        shown_path(shard_dir),
        old,
        RANKING_FORMAT_VERSION,
        "; ".join(reasons) or "a newer format than this version knows",
    )


def build_fingerprint(view, model_path: str, params: RankingParams, has_answers: bool) -> dict:
    """What a ranking's results depend on: the cache format, library versions, the model's identity
    (:func:`model_fingerprint`), the prompts' content hash and every parameter that changes an output value."""
    return {
        "format": RANKING_FORMAT_VERSION,
        "versions": _library_versions(),
        "model": model_fingerprint(model_path),
        "dataset": {
            "num_rows": len(view),
            "content_sha256": dataset_content_hash(view, view.column_names),
            "has_answers": has_answers,
        },
        "params": {
            k: v
            for k, v in asdict(params).items()
            if k not in NOT_FINGERPRINTED
            and not (k in FINGERPRINTED_WHEN_SET and v is None)
            and not (k in FINGERPRINTED_UNLESS_DEFAULT and v == _PARAM_DEFAULTS[k])
        },
    }


_PARAM_DEFAULTS = {f.name: f.default for f in fields(RankingParams)}


def _library_versions() -> dict:
    """The versions the results depend on (part of the fingerprint)."""
    import torch
    import transformers

    versions = {"sec_trl": _sec_trl_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    return versions
