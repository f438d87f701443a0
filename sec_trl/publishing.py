"""What may be shown or published: names, local paths, secrets and atomic writes, in one place.

Everything sec_trl writes for others to read goes through here: the model card (`sec_trl.model_card`), the staged
copy of a Hub upload (`sec_trl.hub`), the logs and messages (train.py, the ranking, the evaluation), the ranking's
cache and report (`sec_trl.ranking`) and the evaluation report (`sec_trl.evaluation`).

- **Names** (:func:`display_name`, :func:`model_display_name`, :func:`shown_path`): a Hub id (`org/name`) is shown as
  is; a local path (absolute, `~`, `./x`, `C:\\x`, a data file, anything that exists here) only by its last
  component (:func:`local_name`, `"local"` when it has none). A path given to a message is shown relative to the
  current directory when it lies inside it, so that a printed command works from there.
- **Local paths** (:func:`is_local_path`, :func:`local_roots`, :func:`scrub_text`, :func:`scrub_json`,
  :func:`holds_local_root`): the directories whose appearance would tell where a run lived (home, the current and
  temporary directories, the caches, the output directory), found in text and in parsed JSON and replaced by their
  base name.
- **Secrets** (:func:`looks_secret`, :func:`secrets_of`, :func:`redact`, :func:`check_clean`): `hub_token`, any
  `*token*` field whose value looks like an access token, `HF_TOKEN` / `HUGGING_FACE_HUB_TOKEN`; replaced by
  `[REDACTED]`, and a last check refuses text that still holds one (or a forbidden path).
- **Atomic writes** (:func:`atomic_path`, :func:`write_text_atomic`, :func:`write_json_atomic`): a temporary file
  in the same folder renamed into place, so that a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


REDACTED = "[REDACTED]"
LOCAL_PLACEHOLDER = "local"
"""How a local path with no last component (`/`, `.` that cannot be resolved) is shown."""

LOCAL_PREFIXES = ("/", "~", "\\", ".")
"""Starts of a local path: absolute POSIX, home, Windows root or UNC, relative (`./x`, `../x`, `.\\x`); a Hub id
never starts with `.`."""
LOCAL_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow", ".txt", ".gguf", ".safetensors", ".bin")
"""File endings that name a local data or weights file, not a Hub repository."""
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
SECRET_PREFIXES = ("hf_", "api_", "sk-", "ghp_", "github_pat_")
SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_SECRET_CHARS = re.compile(r"[A-Za-z0-9_\-.=+/]+")
CACHE_ENV_VARS = ("HF_HOME", "XDG_CACHE_HOME", "SEC_TRL_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE")
PATH_KEYS = ("base_model_name_or_path", "_name_or_path", "name_or_path")
"""JSON keys (transformers' and peft's configs) that name the model a file was saved from."""


# --------------------------------------------------------------------------------------------------------------------
# local paths and how they are shown


def is_absolute_path(text: str) -> bool:
    """Whether ``text`` is shaped like an absolute path on some machine: `/x`, `~`, `~/x`, `C:\\x` or `C:/x`."""
    return text.startswith(("/", "~")) or _WINDOWS_DRIVE.match(text) is not None


def looks_like_local_path(name: str) -> bool:
    """Whether ``name``, by its form alone, is a local path rather than a Hub id: it starts like one
    (:data:`LOCAL_PREFIXES`, a Windows drive), holds a backslash or more than one `/` (a Hub id has exactly one), or
    ends like a data or weights file (:data:`LOCAL_FILE_SUFFIXES`). `org/name` is not a local path."""
    name = str(name).strip()
    return (
        name.startswith(LOCAL_PREFIXES)
        or _WINDOWS_DRIVE.match(name) is not None
        or "\\" in name
        or name.count("/") > 1
        or name.lower().endswith(LOCAL_FILE_SUFFIXES)
    )


def is_local_path(name: str) -> bool:
    """:func:`looks_like_local_path`, or something of that name exists here (a relative `data` folder)."""
    name = str(name).strip()
    return looks_like_local_path(name) or os.path.exists(os.path.expanduser(name))


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is a valid Hub repository id (`name` or `org/name`), by `huggingface_hub`'s own rule."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def is_local_name(name: str) -> bool:
    """Whether a model or dataset name names something local: :func:`is_local_path`, or a path separator in what is
    not a valid Hub id (`my models/x`)."""
    name = str(name).strip()
    return is_local_path(name) or (("/" in name or "\\" in name) and not is_hub_id(name))


def local_name(path: str | os.PathLike) -> str:
    """A local path by its last component only (Windows separators too, `~` expanded, `.` resolved), or
    :data:`LOCAL_PLACEHOLDER` when it has none."""
    path = Path(os.path.expanduser(str(path).strip().replace("\\", "/")))
    base = path.name or (path.resolve().name if path.exists() else "")
    return base or LOCAL_PLACEHOLDER


def display_name(name_or_path: str) -> str:
    """How a model or dataset is named in logs, reports and cards: a Hub id (or other text) as is, a local path
    (:func:`is_local_name`) by its last component only."""
    text = str(name_or_path)
    return local_name(text) if is_local_name(text) else text


def model_display_name(name_or_path: str | None) -> str:
    """A model's name in logs, metadata and cards: the embedded model (None, an alias, or its cache directory) by
    its name, else :func:`display_name`."""
    from .embedded import EMBEDDED_MODEL_NAME, default_cache_dir, is_embedded_model

    if is_embedded_model(name_or_path):
        return EMBEDDED_MODEL_NAME
    if os.path.realpath(str(name_or_path)) == os.path.realpath(default_cache_dir()):
        return EMBEDDED_MODEL_NAME
    return display_name(str(name_or_path))


def shown_path(path: str | os.PathLike) -> str:
    """A local path as logs and messages show it: relative to the current directory when it lies inside it (so a
    printed command works from there), else its base name only; never an absolute path."""
    text = str(path).rstrip("/\\") or str(path)
    absolute = os.path.abspath(os.path.expanduser(text))
    cwd = os.getcwd()
    if absolute == cwd or absolute.startswith(cwd.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, cwd)
    return Path(text).name or text


def home_dir() -> str | None:
    """The home directory, unless it is `/` (then it is no secret)."""
    home = os.path.expanduser("~")
    return home if len(home) > 1 and home != "/" else None


# --------------------------------------------------------------------------------------------------------------------
# scrubbing local paths out of text and JSON


def local_roots(extra: Iterable[str | os.PathLike | None] = ()) -> list[str]:
    """Absolute directories whose appearance in a published file would tell where the run lived: home, the current
    and temporary directories, the caches (:data:`CACHE_ENV_VARS`) and ``extra``; longest first."""
    roots = [os.path.expanduser("~"), os.getcwd(), tempfile.gettempdir()]
    roots += [os.environ[env] for env in CACHE_ENV_VARS if os.environ.get(env)]
    roots += [str(x) for x in extra if x]
    cleaned = {os.path.abspath(os.path.expanduser(r)).rstrip("/") for r in roots}
    return sorted((r for r in cleaned if len(r) > 1), key=len, reverse=True)


def is_path_on_this_machine(value: str, roots: Sequence[str]) -> bool:
    """Whether the string ``value`` is an absolute path (:func:`is_absolute_path`) under one of ``roots``, or whose
    top folder exists here (`/usr/...`): a path to scrub from JSON, where other strings starting with `/` are left."""
    if not is_absolute_path(value):
        return False
    expanded = os.path.abspath(os.path.expanduser(value))
    first = "/" + expanded.strip("/").split("/")[0]
    return any(expanded == r or expanded.startswith(r + "/") for r in roots) or (
        first != "/" and os.path.exists(first)
    )


def scrub_json(value: Any, roots: Sequence[str], replacements: Mapping[str, str] | None = None, key=None) -> Any:
    """``value`` (parsed JSON) with every local path (:func:`is_path_on_this_machine`) replaced: under a key of
    ``replacements`` by its replacement (e.g. `base_model_name_or_path` by the base model's Hub id), else by its
    :func:`local_name`."""
    replacements = replacements or {}
    if isinstance(value, dict):
        return {k: scrub_json(v, roots, replacements, k) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_json(v, roots, replacements, key) for v in value]
    if isinstance(value, str) and is_path_on_this_machine(value, roots):
        return replacements.get(key) or local_name(value)
    return value


_PATH_END = r"(?=[/\\\"'\s,;)\]}]|$)"


def root_pattern(root: str) -> re.Pattern:
    """``root`` as a path in text: not inside a URL or a longer name (``example.com/work/x`` is not ``/work``)."""
    return re.compile(r"(?<![\w./-])" + re.escape(root) + _PATH_END)


def holds_local_root(text: str, roots: Sequence[str]) -> bool:
    """Whether ``text`` names one of ``roots`` (:func:`root_pattern`)."""
    return any(root_pattern(root).search(text) for root in roots)


def scrub_text(text: str, roots: Sequence[str]) -> str:
    """``text`` with every path under one of ``roots`` replaced by its :func:`local_name`."""
    for root in roots:
        pattern = re.compile(root_pattern(root).pattern + r"(?:/[^\s\"'`,;)\]}]*)?")
        text = pattern.sub(lambda m: local_name(m.group(0).rstrip("/")), text)
    return text


# --------------------------------------------------------------------------------------------------------------------
# secrets


def looks_secret(value: Any) -> bool:
    """Whether a string looks like an access token: a known token prefix (`hf_`, ...), or a long opaque
    letters-and-digits run."""
    if not isinstance(value, str):
        return False
    value = value.strip()
    if len(value) < 8 or any(c.isspace() for c in value):
        return False
    if value.startswith(SECRET_PREFIXES):
        return True
    return (
        len(value) >= 20
        and _SECRET_CHARS.fullmatch(value) is not None
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


def secrets_of(args: Any) -> list[str]:
    """Values that must never be published (in a card, a log or an upload): `hub_token`, every `*token*` field of
    `args` that looks secret, and the `HF_TOKEN` / `HUGGING_FACE_HUB_TOKEN` environment variables. `args` may be
    None."""
    secrets = []
    hub_token = getattr(args, "hub_token", None)
    if isinstance(hub_token, str) and hub_token.strip():
        secrets.append(hub_token)
    if args is None:
        names = []
    else:
        names = [f.name for f in dataclasses.fields(args)] if dataclasses.is_dataclass(args) else list(vars(args))
    for name in names:
        if "token" in name.lower():
            value = getattr(args, name, None)
            if looks_secret(value):
                secrets.append(value)
    for var in SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value.strip()) >= 8:
            secrets.append(value.strip())
    return list(dict.fromkeys(secrets))


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each secret (4 characters or more; longest first) replaced by
    :data:`REDACTED`."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def check_clean(text: str, forbidden: Iterable[str | None], what: str = "The text") -> None:
    """Raise `ValueError` if any forbidden string (a local path, a token) occurs in `text`.

    A check, not an `assert`: it also runs under `python -O`. The error names ``what`` and the line, never the
    string itself.
    """
    for index, item in enumerate(forbidden):
        if not item or not item.strip():
            continue
        position = text.find(item)
        if position >= 0:
            line = text.count("\n", 0, position) + 1
            raise ValueError(
                f"{what} contains forbidden string #{index} ({len(item)} characters: a local path or a token) on "
                f"line {line}; refusing to write or publish it."
            )


# --------------------------------------------------------------------------------------------------------------------
# atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` (hidden, ending in ``suffix``, e.g. ``.png`` for matplotlib) to write to;
    renamed onto ``path`` when the block ends without an error, removed when it raises. The file gets the usual
    mode (0666 less the umask), not ``mkstemp``'s 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 1) -> None:
    """Write ``data`` as JSON (``indent``, a final newline) to ``path`` through :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")
