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
token. The rules (what is a local path, how it is shown, what is a secret) are `sec_trl.publishing`'s, shared with
the Hub staging, the logs and the reports.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from . import resources
from .publishing import (
    REDACTED,
    check_clean,
    home_dir,
    is_hub_id,
    is_local_name,
    is_local_path,
    local_name,
    looks_secret,
    model_display_name,
    redact,
    write_text_atomic,
)
from .publishing import secrets_of as secrets_of
from .training_curves import TRAINING_CURVES as TRAINING_CURVES
from .training_curves import _evaluation_rows, _metric_summary
from .training_curves import _series as _series
from .training_curves import plot_training_curves as plot_training_curves


logger = logging.getLogger(__name__)

TEMPLATE_NAME = "sent_model_card.md.j2"  # in model_cards/, shipped in the wheel (sec_trl.resources)
CARD_FILENAME = "README.md"
ASSETS_DIRNAME = "assets"
SE_HISTOGRAM_FILENAME = "se_histogram.png"
CARD_TAGS = ("trl", "grpo", "sent", "sec_trl")
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
# The token regulariser's own settings come first, from the registry (`sent_settings`).
SENT_SETTINGS: tuple[tuple[str, str], ...] = (
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


FRAMEWORKS = ("sec_trl", "trl", "transformers", "torch", "datasets", "peft")


# --------------------------------------------------------------------------------------------------------------------
# privacy (the rules live in sec_trl.publishing)


def assert_card_is_clean(text: str, forbidden: Iterable[str | None]) -> None:
    """Raise `ValueError` if any forbidden string (a local path, a token) occurs in `text`
    (:func:`sec_trl.publishing.check_clean`; the error names the line, never the string itself)."""
    check_clean(text, forbidden, what="The model card")


def _describe_source(name: str | None, missing: str) -> dict[str, Any]:
    """How a model or dataset appears in the card: a Hub id goes to the metadata; a local path by base name only."""
    if name is None or not str(name).strip():
        return {"hub_id": None, "shown": missing, "short": None, "local_abs": None}
    name = str(name).strip()
    if is_local_name(name):
        base = local_name(name)
        local_abs = os.path.abspath(os.path.expanduser(name)) if is_local_path(name) else None
        return {"hub_id": None, "shown": f"{base} (local)", "short": base, "local_abs": local_abs}
    if is_hub_id(name):
        return {"hub_id": name, "shown": name, "short": name.split("/")[-1], "local_abs": None}
    short = re.sub(r"\s*\(.*\)\s*$", "", name)  # "SmolLM2-135M-Instruct (embedded)" -> "SmolLM2-135M-Instruct"
    return {"hub_id": None, "shown": name, "short": short if short and " " not in short else None, "local_abs": None}


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
        shown = REDACTED if "token" in name.lower() and looks_secret(value) else _fmt_setting(value)
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


def _default_model_name(repo_id: str | None, base: dict[str, Any]) -> str:
    if repo_id:
        return repo_id.split("/")[-1]
    return f"{base['short']}-SENT" if base["short"] else "SENT model"


def sent_settings(args: Any) -> tuple[tuple[str, str], ...]:
    """The card's "SENT settings": `token_regularizer`, the fields the configured regulariser reads (from the
    registry, `sec_trl.regularizers`), then `SENT_SETTINGS`."""
    from .regularizers import FIELD_DESCRIPTIONS, NO_REGULARIZER, REGULARIZERS

    names = ", ".join(f"`{name}`" for name in REGULARIZERS)
    regularizer = REGULARIZERS.get(getattr(args, "token_regularizer", None))
    own = tuple((name, FIELD_DESCRIPTIONS[name]) for name in (regularizer.fields if regularizer else ()))
    choice = ("token_regularizer", f"token-side loss: {names} or `{NO_REGULARIZER}` (TRL's GRPO loss)")
    return (choice, *own, *SENT_SETTINGS)


def _run_variables(args, log_history, assets: Path, se_histogram, tracker_links) -> dict[str, Any]:
    """The template variables that describe the run: settings, curves, evaluation, histogram, trackers."""
    from .regularizers import KL_TERM_REGULARIZERS

    titles = {filename: title for _, title, filename in TRAINING_CURVES}
    regularizer = getattr(args, "token_regularizer", None)
    return {
        "kl_term_is_inert": bool(getattr(args, "kl_term_is_inert", False)) and regularizer in KL_TERM_REGULARIZERS,
        "sent_settings": _settings_rows(args, sent_settings(args)),
        "curriculum_settings": _settings_rows(args, CURRICULUM_SETTINGS),
        "se_histogram": _copy_se_histogram(se_histogram, assets),
        "curves": [
            {"title": titles[filename], "path": f"{ASSETS_DIRNAME}/{filename}"}
            for filename in plot_training_curves(log_history, assets)
        ],
        "metric_summary": _metric_summary(log_history),
        "evaluation": _evaluation_rows(log_history),
        "tracker_links": [{"name": name, "url": url} for name, url in tracker_links if url],
        "example_max_new_tokens": getattr(args, "max_completion_length", None) or 256,
        "sent_citation": SENT_CITATION,
        "trl_citation": TRL_CITATION,
    }


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
    tracker_links: Sequence[tuple[str, str]] = (),
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
        tracker_links: (name, URL) of the experiment-tracker runs (Weights & Biases, Trackio, Comet), linked from
            the card as TRL's cards do.

    Returns:
        The card's text, as written.

    Raises:
        ValueError: the card would contain the output directory, the home directory, a local source path or a token.
    """
    from huggingface_hub import ModelCard, ModelCardData

    template = Path(template_path) if template_path is not None else resources.template_path(TEMPLATE_NAME)
    if not template.is_file():
        raise FileNotFoundError(
            f"Model card template {template.name} not found: sec_trl ships it in its model_cards/ folder "
            "(reinstall sec_trl), or pass template_path."
        )

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    secrets = secrets_of(args)
    base = _describe_source(base_model, missing="not recorded")
    data = _describe_source(dataset_name, missing="not recorded")
    repo_id = hub_model_id or getattr(args, "hub_model_id", None)
    repo_id = redact(repo_id, secrets) if repo_id and not is_local_path(repo_id) else None
    is_adapter = (out / "adapter_config.json").is_file()
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*CARD_TAGS, *(tags or [])])),
        base_model=base["hub_id"],
        datasets=[data["hub_id"]] if data["hub_id"] else None,
        license=license,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name or _default_model_name(repo_id, base),
        base_model_hub_id=base["hub_id"],
        base_model_shown=base["shown"],
        dataset_hub_id=data["hub_id"],
        dataset_shown=data["shown"],
        is_adapter=is_adapter,
        license=license,
        repo_id=repo_id or REPO_ID_PLACEHOLDER,
        repo_id_known=repo_id is not None,
        framework_versions=_framework_versions(is_adapter),
        **_run_variables(args, log_history, out / ASSETS_DIRNAME, se_histogram, tracker_links),
    )
    return _write_clean_card(str(card), out, args, secrets, [base, data])


def _write_clean_card(text: str, out: Path, args: Any, secrets: list[str], sources: list[dict]) -> str:
    """Redact tokens, refuse a card that still names a local path or token, then write it."""
    text = redact(text, secrets)
    out_abs = os.path.abspath(out)
    forbidden = [out_abs, os.path.realpath(out_abs), home_dir(), getattr(args, "hub_token", None), *secrets]
    forbidden += [source["local_abs"] for source in sources if source["local_abs"] not in (None, "/")]
    assert_card_is_clean(text, forbidden)
    write_text_atomic(out / CARD_FILENAME, text)
    return text


# --------------------------------------------------------------------------------------------------------------------
# what the trainer records for the card


def card_model_name(name_or_path: str | None) -> str | None:
    """How a model appears in the card: the embedded copy (by alias or by its cache path) by its name, a Hub id as
    is, a local path by its base name (never the path)."""
    return None if name_or_path is None else model_display_name(str(name_or_path))


def tracker_links() -> list[tuple[str, str]]:
    """(name, URL) of the active experiment-tracker runs, found the way TRL's model cards find them."""
    from transformers import is_wandb_available
    from trl.trainer.utils import get_comet_experiment_url, get_trackio_space_url

    links = []
    if is_wandb_available():
        import wandb

        if wandb.run is not None:
            links.append(("Weights & Biases", wandb.run.url))
    for name, get_url in (("Trackio", get_trackio_space_url), ("Comet", get_comet_experiment_url)):
        try:
            url = get_url()
        except Exception:  # a tracker that is installed but not running
            url = None
        if url:
            links.append((name, url))
    return links
