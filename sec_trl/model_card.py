"""Model cards for SENT runs, rendered from `model_cards/sent_model_card.md.j2`.

    from sec_trl.model_card import render_model_card

    trainer.save_model(args.output_dir)
    render_model_card(output_dir=args.output_dir, args=args, log_history=trainer.state.log_history,
                      base_model="Qwen/Qwen2.5-0.5B-Instruct", dataset_name="open-r1/DAPO-Math-17k-Processed",
                      hub_model_id=args.hub_model_id)

writes `README.md` (YAML metadata for the Hub, the method and its citations, the SENT and curriculum settings, the
training curves, how to load the model) and the images it links, under `assets/`, into the output directory, so that
uploading the folder uploads a card whose images resolve.

Privacy: the card never contains local filesystem paths or tokens. A base model or dataset given as a local path is
shown by its base name with "(local)" and left out of the metadata; the output directory is never shown; tokens
(`hub_token`, any `*token*` field whose value looks like a secret, `HF_TOKEN`) are redacted; and a final check
(`assert_card_is_clean`) refuses to write a card that still contains the output directory, the home directory or a
token.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "model_cards" / "sent_model_card.md.j2"
CARD_FILENAME = "README.md"
ASSETS_DIRNAME = "assets"
SE_HISTOGRAM_FILENAME = "se_histogram.png"
CARD_TAGS = ("trl", "grpo", "sent", "sec_trl")
REDACTED = "[REDACTED]"
REPO_ID_PLACEHOLDER = "<repo_id>"

SENT_CITATION = """\
@article{cao2025sent,
    title  = {Efficient Reinforcement Learning with Semantic and Token Entropy for LLM Reasoning},
    author = {Cao and Bai and Peng and Wang and Yang and Huo and Zhang and Gao},
    year   = {2025},
    eprint = {arXiv:2512.04359},
}"""

TRL_CITATION = """\
@software{vonwerra2020trl,
    title   = {{TRL: Transformers Reinforcement Learning}},
    author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan \
and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallou{\\'e}dec, Quentin},
    license = {Apache-2.0},
    url     = {https://github.com/huggingface/trl},
    year    = {2020},
}"""

# (config field, what it means): read off the config object; a field the config lacks is left out of the card.
SENT_SETTINGS: tuple[tuple[str, str], ...] = (
    ("token_regularizer", "token-side loss: `sent`, `kl_cov`, `clip_cov` or `none` (TRL's GRPO loss)"),
    ("low_entropy_quantile", "fraction of valid tokens, lowest entropy first, forming the low-entropy set"),
    ("cov_ratio", "fraction of tokens selected by covariance (SENT: of the low-entropy set)"),
    ("kl_cov_coef", "base coefficient of the `abs(logp - old_logp)` penalty"),
    ("high_cov_coef", "multiplier of `kl_cov_coef` on the highest-covariance low-entropy tokens"),
    ("low_cov_coef", "multiplier of `kl_cov_coef` on the lowest-covariance low-entropy tokens"),
    ("low_entropy_kl_coef", "multiplier of `kl_cov_coef` on the rest of the low-entropy set"),
    ("beta", "KL coefficient to the reference model"),
    ("loss_type", "loss aggregation"),
    ("steps_per_generation", "micro-batches fed by one rollout batch"),
    ("gradient_accumulation_steps", "micro-batches per optimizer step"),
    ("num_iterations", "passes over each rollout batch"),
    ("num_generations", "completions sampled per prompt (GRPO group size)"),
    ("learning_rate", "peak learning rate"),
    ("max_completion_length", "maximum completion length, in tokens"),
    ("temperature", "sampling temperature of the rollouts"),
)
CURRICULUM_SETTINGS: tuple[tuple[str, str], ...] = (
    ("curriculum", "prompts fed from low to high semantic entropy, in stages"),
    ("curriculum_stages", "number of contiguous semantic-entropy stages"),
    ("curriculum_epochs_per_stage", "passes over each stage before the next one starts"),
    ("curriculum_shuffle_within_stage", "prompts shuffled (seeded) inside each stage"),
)

# (log_history key, title, PNG file name)
TRAINING_CURVES: tuple[tuple[str, str, str], ...] = (
    ("reward", "Reward", "reward.png"),
    ("entropy", "Token entropy", "entropy.png"),
    ("semantic_entropy/mean", "Online semantic entropy", "semantic_entropy.png"),
)

FRAMEWORKS = ("sec_trl", "trl", "transformers", "torch", "datasets", "peft")
LOCAL_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\", "\\")
LOCAL_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow", ".txt", ".gguf", ".safetensors", ".bin")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_SECRET_PREFIXES = ("hf_", "api_", "sk-", "ghp_", "github_pat_")
_SECRET_CHARS = re.compile(r"[A-Za-z0-9_\-.=+/]+")
_SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


# --------------------------------------------------------------------------------------------------------------------
# privacy


def _looks_secret(value: Any) -> bool:
    """Whether a string looks like an access token: a known token prefix, or a long opaque letters-and-digits run."""
    if not isinstance(value, str):
        return False
    value = value.strip()
    if len(value) < 8 or any(c.isspace() for c in value):
        return False
    if value.startswith(_SECRET_PREFIXES):
        return True
    return (
        len(value) >= 20
        and _SECRET_CHARS.fullmatch(value) is not None
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


def _secrets_of(args: Any) -> list[str]:
    """Values that must never appear in a card: `hub_token`, every `*token*` field that looks secret, `HF_TOKEN`."""
    secrets = []
    hub_token = getattr(args, "hub_token", None)
    if isinstance(hub_token, str) and hub_token.strip():
        secrets.append(hub_token)
    names = [f.name for f in dataclasses.fields(args)] if dataclasses.is_dataclass(args) else list(vars(args))
    for name in names:
        if "token" in name.lower():
            value = getattr(args, name, None)
            if _looks_secret(value):
                secrets.append(value)
    for var in _SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value.strip()) >= 8:
            secrets.append(value.strip())
    return list(dict.fromkeys(secrets))


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every occurrence of each secret (4 characters or more; longest first) replaced by `[REDACTED]`."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def assert_card_is_clean(text: str, forbidden: Iterable[str | None]) -> None:
    """Raise `ValueError` if any forbidden string (a local path, a token) occurs in `text`.

    A check, not an `assert`: it also runs under `python -O`. The error names the line, never the string itself.
    """
    for index, item in enumerate(forbidden):
        if not item or not item.strip():
            continue
        position = text.find(item)
        if position >= 0:
            line = text.count("\n", 0, position) + 1
            raise ValueError(
                f"The model card contains forbidden string #{index} ({len(item)} characters: a local path or a "
                f"token) on line {line}; refusing to write or publish it."
            )


def _home_dir() -> str | None:
    home = os.path.expanduser("~")
    return home if len(home) > 1 and home != "/" else None


def _is_local_path(name: str) -> bool:
    return (
        name.startswith(LOCAL_PREFIXES)
        or _WINDOWS_DRIVE.match(name) is not None
        or name.lower().endswith(LOCAL_FILE_SUFFIXES)
        or os.path.exists(os.path.expanduser(name))
    )


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _local_basename(name: str) -> str:
    path = Path(os.path.expanduser(name.replace("\\", "/")))
    base = path.name or (path.resolve().name if path.exists() else "")
    return base or "local"


def _describe_source(name: str | None, missing: str) -> dict[str, Any]:
    """How a model or dataset appears in the card: a Hub id goes to the metadata; a local path by base name only."""
    if name is None or not str(name).strip():
        return {"hub_id": None, "shown": missing, "short": None, "local_abs": None}
    name = str(name).strip()
    if _is_local_path(name):
        base = _local_basename(name)
        return {
            "hub_id": None,
            "shown": f"{base} (local)",
            "short": base,
            "local_abs": os.path.abspath(os.path.expanduser(name)),
        }
    if _is_hub_id(name):
        return {"hub_id": name, "shown": name, "short": name.split("/")[-1], "local_abs": None}
    if "/" in name or "\\" in name:  # a relative path that is not on this machine: still a path, not a Hub id
        base = _local_basename(name)
        return {"hub_id": None, "shown": f"{base} (local)", "short": base, "local_abs": None}
    short = re.sub(r"\s*\(.*\)\s*$", "", name)  # "SmolLM2-135M-Instruct (embedded)" -> "SmolLM2-135M-Instruct"
    return {"hub_id": None, "shown": name, "short": short if short and " " not in short else None, "local_abs": None}


# --------------------------------------------------------------------------------------------------------------------
# training curves


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(log_history: Sequence[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) for the entries that logged `key` (reward, for one, is logged only on generating steps)."""
    points = [
        (entry["step"], float(entry[key]))
        for entry in log_history
        if _is_number(entry.get("step")) and _is_number(entry.get(key))
    ]
    return sorted(points, key=lambda point: point[0])


def plot_training_curves(log_history: Sequence[dict], path: str | os.PathLike) -> list[str]:
    """One PNG per logged metric (reward, token entropy, online semantic entropy) against the optimizer step.

    Args:
        log_history: `trainer.state.log_history`, a list of dicts with `step` and metric keys.
        path: the directory to write into (created if needed).

    Returns:
        The file names written, relative to `path`, in the order reward, entropy, semantic entropy; a metric with no
        logged value has no file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    directory = Path(path)
    written = []
    for key, title, filename in TRAINING_CURVES:
        points = _series(log_history, key)
        if not points:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        steps = [step for step, _ in points]
        values = [value for _, value in points]
        fig = Figure(figsize=(5.5, 3.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(steps, values, marker="o", markersize=3, linewidth=1.5, color="#4C72B0")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        target = directory / filename
        tmp = directory / f".{filename}.tmp-{os.getpid()}.png"
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, target)
        written.append(filename)
    return written


def _fmt_number(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"


def _metric_summary(log_history: Sequence[dict]) -> list[dict[str, Any]]:
    rows = []
    for key, _, _ in TRAINING_CURVES:
        points = _series(log_history, key)
        if points:
            first, last = _fmt_number(points[0][1]), _fmt_number(points[-1][1])
            rows.append({"key": key, "count": len(points), "first": first, "last": last})
    return rows


# --------------------------------------------------------------------------------------------------------------------
# the card


def _fmt_setting(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    value = getattr(value, "value", value)  # enums (e.g. a scheduler type) by their value
    return str(value).replace("|", "\\|").replace("\n", " ")


def _settings_rows(args: Any, table: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    rows = []
    for name, help_text in table:
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        shown = REDACTED if "token" in name.lower() and _looks_secret(value) else _fmt_setting(value)
        rows.append({"name": name, "value": shown, "help": help_text})
    return rows


def _framework_versions(is_adapter: bool) -> list[tuple[str, str]]:
    versions = []
    for name in FRAMEWORKS:
        if name == "peft" and not is_adapter:
            continue
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return versions


def _copy_se_histogram(se_histogram: str | os.PathLike | None, assets: Path) -> str | None:
    """The histogram's card-relative path: copied into `assets/`, or the one a previous render left there."""
    target = assets / SE_HISTOGRAM_FILENAME
    if se_histogram is not None:
        source = Path(os.path.expanduser(str(se_histogram)))
        if source.is_file():
            assets.mkdir(parents=True, exist_ok=True)
            if not (target.exists() and os.path.samefile(source, target)):
                shutil.copyfile(source, target)
        else:
            logger.warning("The semantic-entropy histogram %s does not exist; the model card has none.", source.name)
    return f"{ASSETS_DIRNAME}/{SE_HISTOGRAM_FILENAME}" if target.is_file() else None


def render_model_card(
    *,
    output_dir: str | os.PathLike,
    args: Any,
    log_history: Sequence[dict],
    base_model: str | None,
    dataset_name: str | None,
    hub_model_id: str | None,
    se_histogram: str | os.PathLike | None = None,
    license: str | None = None,
    model_name: str | None = None,
    tags: Iterable[str] | None = None,
    template_path: str | os.PathLike | None = None,
) -> str:
    """Render the SENT model card into `output_dir/README.md`, with its images in `output_dir/assets/`.

    Args:
        output_dir: the folder holding the saved model (never shown in the card).
        args: the training config (`SETGRPOConfig`); the SENT and curriculum settings are read off it.
        log_history: `trainer.state.log_history`.
        base_model: the base model, as a Hub id (goes to the metadata and is linked) or a local path (shown by its
            base name with "(local)"); any other text is shown as is.
        dataset_name: the training dataset, the same way.
        hub_model_id: the repository the folder is pushed to, used in "How to load"; `None` falls back to
            `args.hub_model_id`, then to a placeholder.
        se_histogram: a PNG of the prompts' semantic entropy (`python -m sec_trl.rank` writes `se_histogram.png`),
            copied into `assets/`. `None` keeps one that an earlier render copied there.
        license: a license identifier for the metadata (e.g. `apache-2.0`).
        model_name: the card's title; defaults to the repository name, else `<base model>-SENT`.
        tags: extra metadata tags, added to trl, grpo, sent, sec_trl.
        template_path: a Jinja2 template to use instead of `model_cards/sent_model_card.md.j2`.

    Returns:
        The card's text, as written.

    Raises:
        ValueError: the card would contain the output directory, the home directory, a local source path or a token.
    """
    from huggingface_hub import ModelCard

    template = _template_file(template_path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    assets = out / ASSETS_DIRNAME
    secrets = _secrets_of(args)

    base = _describe_source(base_model, missing="not recorded")
    data = _describe_source(dataset_name, missing="not recorded")
    repo_id = hub_model_id or getattr(args, "hub_model_id", None)
    repo_id = _redact(repo_id, secrets) if repo_id and not _is_local_path(repo_id) else None
    is_adapter = (out / "adapter_config.json").is_file()
    if model_name is None:
        default_name = f"{base['short']}-SENT" if base["short"] else "SENT model"
        model_name = repo_id.split("/")[-1] if repo_id else default_name

    card = ModelCard.from_template(
        _card_metadata(base, data, tags, license),
        template_path=str(template),
        model_name=model_name,
        base_model_hub_id=base["hub_id"],
        base_model_shown=base["shown"],
        dataset_hub_id=data["hub_id"],
        dataset_shown=data["shown"],
        is_adapter=is_adapter,
        license=license,
        **_training_context(args, log_history, assets),
        se_histogram=_copy_se_histogram(se_histogram, assets),
        repo_id=repo_id or REPO_ID_PLACEHOLDER,
        repo_id_known=repo_id is not None,
        framework_versions=_framework_versions(is_adapter),
        sent_citation=SENT_CITATION,
        trl_citation=TRL_CITATION,
    )
    text = _redact(str(card), secrets)

    out_abs = os.path.abspath(out)
    forbidden = [out_abs, os.path.realpath(out_abs), _home_dir(), getattr(args, "hub_token", None), *secrets]
    forbidden += [source["local_abs"] for source in (base, data) if source["local_abs"] not in (None, "/")]
    assert_card_is_clean(text, forbidden)

    (out / CARD_FILENAME).write_text(text, encoding="utf-8")
    return text


def _training_context(args: Any, log_history: Sequence[dict], assets: Path) -> dict:
    """The template values read off the training config and log: settings tables, the inert-KL note, the curves
    (plotted into ``assets``), the metric summary and the example's token budget."""
    regularizer = getattr(args, "token_regularizer", None)
    titles = {filename: title for _, title, filename in TRAINING_CURVES}
    return {
        "kl_term_is_inert": bool(getattr(args, "kl_term_is_inert", False)) and regularizer in ("sent", "kl_cov"),
        "sent_settings": _settings_rows(args, SENT_SETTINGS),
        "curriculum_settings": _settings_rows(args, CURRICULUM_SETTINGS),
        "curves": [
            {"title": titles[filename], "path": f"{ASSETS_DIRNAME}/{filename}"}
            for filename in plot_training_curves(log_history, assets)
        ],
        "metric_summary": _metric_summary(log_history),
        "example_max_new_tokens": getattr(args, "max_completion_length", None) or 256,
    }


def _template_file(template_path: str | os.PathLike | None) -> Path:
    """The Jinja2 template to render: ``template_path``, else the one in ``model_cards/`` (which must exist)."""
    template = Path(template_path) if template_path is not None else TEMPLATE_PATH
    if not template.is_file():
        raise FileNotFoundError(
            f"Model card template {template.name} not found: it ships in the repository's model_cards/ folder "
            "(install sec_trl from a checkout, `pip install -e .`, or pass template_path)."
        )
    return template


def _card_metadata(base: dict, data: dict, tags: Iterable[str] | None, license: str | None):
    """The card's YAML metadata: library, pipeline, tags (``CARD_TAGS`` first), base model and dataset Hub ids."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*CARD_TAGS, *(tags or [])])),
        base_model=base["hub_id"],
        datasets=[data["hub_id"]] if data["hub_id"] else None,
        license=license,
    )


# --------------------------------------------------------------------------------------------------------------------
# pushing


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


def push_failure_message(exc: BaseException, output_dir_name: str, repo_id: str | None = None) -> str:
    """What to print when `--push_to_hub` fails: the checkpoint is safe locally, and how to push it later.

    Args:
        exc: the exception raised by the push.
        output_dir_name: the output directory; only its name is shown (a full path is reduced to its name).
        repo_id: the target repository (`args.hub_model_id`), if known.
    """
    name = Path(str(output_dir_name).rstrip("/\\")).name or str(output_dir_name)
    repo = repo_id or REPO_ID_PLACEHOLDER
    detail = (str(exc).strip().splitlines() or [""])[0][:200]
    return "\n".join(
        [
            f"Pushing to the Hub failed: {_failure_reason(exc)} ({type(exc).__name__}: {detail}).",
            f"Nothing is lost: the trained model and its model card are saved locally in the output directory "
            f"'{name}'.",
            "To push it later, once online, log in (`hf auth login`, or set HF_TOKEN) and upload the folder:",
            f'    hf upload {repo} {name} --exclude "checkpoint-*"',
            f"    (huggingface_hub < 1.0: huggingface-cli upload {repo} {name})",
            "or, from Python, in the session that still holds the trainer: trainer.push_to_hub()",
        ]
    )
