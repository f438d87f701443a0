"""Checks that run before anything expensive: before the semantic-entropy ranking and before a model is loaded.

Each raises ``ValueError`` naming the flag and the fix, so that a bad run stops in seconds with nothing written,
instead of after an hour of ranking or a model load.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

# report_to backend -> (modules, any of which makes it importable; the pip extra / package that provides it)
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install 'sec_trl[tensorboard]'"),
    "wandb": (("wandb",), "pip install 'sec_trl[wandb]'"),
    "trackio": (("trackio",), "pip install 'sec_trl[trackio]'"),
    "mlflow": (("mlflow",), "pip install mlflow"),
    "comet_ml": (("comet_ml",), "pip install comet_ml"),
    "clearml": (("clearml",), "pip install clearml"),
    "neptune": (("neptune",), "pip install neptune"),
    "dvclive": (("dvclive",), "pip install dvclive"),
    "swanlab": (("swanlab",), "pip install swanlab"),
    "codecarbon": (("codecarbon",), "pip install codecarbon"),
    "azure_ml": (("azureml",), "pip install azureml-core"),
    "flyte": (("flytekit",), "pip install flytekit"),
    "dagshub": (("dagshub",), "pip install dagshub"),
}

BUILTIN_REWARDS = ("accuracy", "format")


# --------------------------------------------------------------------------------------------------------------------
# trackers


def report_to_names(report_to: str | Sequence[str] | None) -> list[str]:
    """``--report_to`` as a list of backend names (one name, a list, or unset)."""
    return [report_to] if isinstance(report_to, str) else list(report_to or [])


def check_report_to(report_to: str | Sequence[str] | None) -> None:
    """Every ``--report_to`` backend can be imported; else ``ValueError`` with the install command."""
    for name in report_to_names(report_to):
        if name in ("none", "all") or name not in TRACKERS:
            continue  # "all" means what is installed; an unknown name is transformers' own error
        modules, install = TRACKERS[name]
        if not any(importlib.util.find_spec(module) is not None for module in modules):
            raise ValueError(
                f"--report_to {name}: the {modules[0]!r} package is not installed. Install it ({install}) or drop "
                f"{name!r} from --report_to (e.g. --report_to none)."
            )


# --------------------------------------------------------------------------------------------------------------------
# reward functions


def build_reward_funcs(names: Sequence[str], answer_column: str, args: Any = None) -> list:
    """TRL's `reward_funcs` from ``--reward_funcs`` names, each checked before any model is loaded.

    - ``accuracy``: :func:`sec_trl.rewards.make_accuracy_reward` reading ``answer_column``;
    - ``format``: :func:`sec_trl.rewards.format_reward`;
    - a Hub model id or a local directory (has a ``/``, or is a directory): a reward model, passed to TRL as is
      (TRL loads it with ``AutoModelForSequenceClassification``); dots are fine (``org/Model-3.1-8B``);
    - a dotted import path ``module.function`` (no ``/``): **imports and runs your code**; the object must be a
      callable that accepts ``completions`` as a keyword argument (TRL calls ``f(prompts=, completions=, ...)``).
    """
    from .rewards import format_reward, make_accuracy_reward

    timeout = getattr(args, "answer_timeout", 5.0)  # SETGRPOConfig.answer_timeout
    funcs: list = []
    for name in names:
        if name == "accuracy":
            funcs.append(make_accuracy_reward(answer_column, timeout=timeout))
        elif name == "format":
            funcs.append(format_reward)
        elif "/" in name or os.path.isdir(name):
            funcs.append(name)  # a reward model: TRL loads it
        elif "." in name:
            funcs.append(import_reward_function(name))
        else:
            raise ValueError(
                f"reward_funcs: unknown reward {name!r}; use {' or '.join(map(repr, BUILTIN_REWARDS))}, a dotted "
                "import path such as 'my_module.my_reward' or 'trl.rewards.accuracy_reward', or a reward model's "
                "Hub id / local directory."
            )
    return funcs


def check_reward_weights(reward_weights: Sequence[float] | None, reward_funcs: Sequence[Any]) -> None:
    """``--reward_weights`` has one weight per reward function (TRL only checks this once the model has loaded)."""
    if reward_weights is None or len(reward_weights) == len(reward_funcs):
        return
    raise ValueError(
        f"reward_weights has {len(reward_weights)} values {list(reward_weights)} but there are {len(reward_funcs)} "
        f"reward functions; give one weight per --reward_funcs entry, in the same order, or drop --reward_weights."
    )


def import_reward_function(path: str) -> Callable:
    """``module.attribute`` imported (the current directory is importable, as in TRL's scripts) and checked."""
    module_path, attribute = path.rsplit(".", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_path)
    except ImportError as e:
        raise ValueError(f"reward_funcs: cannot import module {module_path!r} for {path!r}: {e}") from e
    if not hasattr(module, attribute):
        raise ValueError(f"reward_funcs: module {module_path!r} has no attribute {attribute!r}.")
    func = getattr(module, attribute)
    check_reward_callable(func, path)
    return func


def check_reward_callable(func: Any, shown: str) -> None:
    """``func`` can be called as TRL calls reward functions: keyword ``completions`` (plus other columns)."""
    if inspect.isclass(func) or not callable(func):
        kind = "a class" if inspect.isclass(func) else f"a {type(func).__name__}"
        raise ValueError(
            f"reward_funcs: {shown!r} is {kind}, not a reward function. TRL calls each reward function as "
            "f(prompts=..., completions=..., completion_ids=..., **dataset_columns) and expects one float (or None) "
            "per completion."
        )
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let TRL try it
        return
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    if "completions" not in names and not takes_kwargs:
        raise ValueError(
            f"reward_funcs: {shown!r} does not accept a 'completions' keyword argument (its parameters: "
            f"{sorted(names)}). TRL calls reward functions as f(prompts=..., completions=..., **dataset_columns)."
        )


# What TRL's GRPOTrainer passes to every reward function besides the dataset's columns (TRL 1.16
# `_calculate_rewards`; `environments` only with environments), and the columns it does not pass as keywords.
TRL_REWARD_KWARGS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")
TRL_REWARD_OPTIONAL_KWARGS = ("environments",)
NOT_PASSED_COLUMNS = ("prompt", "completion", "completion_ids")
# Kept by `remove_unused_columns=True` (GRPOTrainer's signature columns); every other column is dropped.
SIGNATURE_COLUMNS = ("prompt", "image", "images")


def check_reward_columns(
    funcs: Sequence, names: Sequence[str], columns: Sequence[str], args: Any = None, script_args: Any = None
) -> None:
    """Every reward function can be called with what TRL will pass it: each required parameter (no default, not one
    of :data:`TRL_REWARD_KWARGS`) names a column of the training data, and a function without ``**kwargs`` accepts
    every column TRL passes. Else ``ValueError`` naming the column and the flag that fixes it, before the model
    loads (TRL would fail at the first reward computation). ``funcs`` as built by :func:`build_reward_funcs`, with
    ``names`` their ``--reward_funcs`` entries; ``args``: the training config (``remove_unused_columns``)."""
    removes = bool(getattr(args, "remove_unused_columns", False))
    kept = [c for c in columns if not removes or c in SIGNATURE_COLUMNS]
    passed = [c for c in kept if c not in NOT_PASSED_COLUMNS]
    for func, shown in zip(funcs, names, strict=True):
        if isinstance(func, str) or not callable(func):
            continue  # a reward model: TRL feeds it the prompt and completion text
        try:
            params = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):
            continue
        keyword = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        required = [p.name for p in keyword if p.default is p.empty and p.name not in TRL_REWARD_KWARGS]
        missing = [name for name in required if name not in passed and name not in TRL_REWARD_OPTIONAL_KWARGS]
        if missing:
            raise ValueError(_missing_reward_column_message(shown, missing, columns, removes, script_args))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            accepted = {p.name for p in keyword}
            unexpected = [k for k in (*TRL_REWARD_KWARGS, *passed) if k not in accepted]
            if unexpected:
                raise ValueError(
                    f"reward_funcs: {shown!r} takes no **kwargs and does not accept {unexpected}, which TRL passes to "
                    f"every reward function (f(prompts=, completions=, completion_ids=, trainer_state=, log_extra=, "
                    f"log_metric=, **dataset_columns); the training data's columns: {list(columns)}). Add **kwargs "
                    "to its parameters."
                )


def _missing_reward_column_message(shown, missing, columns, removes, script_args) -> str:
    column = missing[0]
    head = f"reward_funcs: {shown!r} has the required parameter {column!r}, which TRL fills from the dataset column "
    head += "of that name, but "
    if removes and column in columns:
        return (
            head + "--remove_unused_columns true drops it before the rewards run: set --remove_unused_columns false."
        )
    head += f"the training data has the columns {list(columns)}. "
    if getattr(script_args, "uses_generated_data", False):
        return head + f"Add --dataset_answer_column {column} to give the generated data's answer column that name."
    answer = getattr(script_args, "dataset_answer_column", None)
    return head + (
        f"A user dataset's columns keep their names (--dataset_answer_column {answer} included): rename the column "
        f"holding the reference answers to {column!r} in your data, or use --reward_funcs accuracy (it reads "
        "--dataset_answer_column)."
    )


# --------------------------------------------------------------------------------------------------------------------
# curriculum


def check_curriculum_fits(num_prompts: int, args, dataset=None) -> None:
    """Every curriculum stage holds at least one generation batch, and a semantic-entropy column already in
    ``dataset`` is numeric, finite and non-negative (else ``ValueError`` naming the fields)."""
    from .curriculum import placeholder_sampler, validate_semantic_entropy_column

    if dataset is not None and args.curriculum_se_column in dataset.column_names:
        validate_semantic_entropy_column(dataset, args.curriculum_se_column)
    try:
        placeholder_sampler(num_prompts, args)
    except ValueError as e:
        raise ValueError(
            f"--curriculum true with {num_prompts} training prompts, curriculum_stages={args.curriculum_stages} and "
            f"generation_batch_size={args.generation_batch_size} (num_generations={args.num_generations}): {e}"
        ) from e


def curriculum_plan(num_prompts: int, args):
    """The run's :class:`sec_trl.curriculum.CurriculumPlan` (optimizer steps -> stages) on ``num_prompts``."""
    from .curriculum import CurriculumPlan, placeholder_sampler

    return CurriculumPlan.from_sampler(placeholder_sampler(num_prompts, args), args)


def check_curriculum_replay(num_prompts: int, args):
    """A ``max_steps`` longer than one pass of the curriculum replays it from stage 0: a ``ValueError`` naming the
    pass length and the fixes, unless ``curriculum_replay`` accepts it (``num_train_epochs`` left at TRL's default
    is refused, and an explicit one > 1 warned about, by ``SETGRPOConfig`` itself). Returns the plan."""
    plan = curriculum_plan(num_prompts, args)
    if args.max_steps is not None and args.max_steps > 0 and plan.passes > 1 and not args.curriculum_replay:
        raise ValueError(
            f"--max_steps {args.max_steps} is longer than one pass of the curriculum ({plan.steps_per_pass} optimizer "
            f"steps with {num_prompts} prompts: stage 0 to stage {plan.num_stages - 1} once), so the run would "
            f"replay the whole curriculum from stage 0 ({plan.passes:.3g} passes). Use --max_steps "
            f"{plan.steps_per_pass} or less, more passes over each stage with --curriculum_epochs_per_stage, or "
            "--curriculum_replay true to replay it."
        )
    return plan


def warn_if_curriculum_is_cut(num_prompts: int, args) -> int | None:
    """Warn when the run (``max_steps``, or a ``num_train_epochs`` below 1) ends before the curriculum's last stage
    starts; return the optimizer step (1-based) at which that stage starts (None with one stage)."""
    if args.curriculum_stages < 2:
        return None
    plan = curriculum_plan(num_prompts, args)
    start_step = plan.stage_steps()[-1][0]
    if plan.total_steps < start_step:
        what = f"max_steps={args.max_steps}" if args.max_steps > 0 else f"num_train_epochs={args.num_train_epochs:g}"
        logger.warning(
            "%s ends the run before the curriculum's last stage (stage %d of %d starts at optimizer step %d; the "
            "run has %d): the highest-semantic-entropy prompts are never trained on. Raise --max_steps, or use "
            "fewer --curriculum_stages / --curriculum_epochs_per_stage.",
            what,
            plan.num_stages - 1,
            plan.num_stages,
            start_step,
            plan.total_steps,
        )
    return start_step


# --------------------------------------------------------------------------------------------------------------------
# prompt length


def model_context_length(model_config: Any, tokenizer: Any = None) -> int | None:
    """The positions the model can attend over: ``max_position_embeddings`` (or ``n_positions``, ...) of its config
    (the text config of a multimodal one), else the tokenizer's ``model_max_length`` when it is a real limit
    (transformers puts ~1e30 there when the tokenizer does not know one); None when neither says."""
    configs = [model_config, getattr(model_config, "text_config", None)]
    for config in configs:
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 10**7:
        return value
    return None


def _text_bytes(prompt: Any) -> tuple[int, int]:
    """(UTF-8 bytes of a prompt's text, number of messages): a cheap bound on its token count."""
    if isinstance(prompt, str):
        return len(prompt.encode("utf-8")), 1
    size = 0
    for message in prompt:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
        size += len(str(content or "").encode("utf-8"))
    return size, len(prompt)


def check_prompt_lengths(
    prompts: Sequence[Any],
    tokenizer: Any,
    context: int | None,
    max_completion_length: int,
    chat_template_kwargs: dict | None = None,
) -> None:
    """Every prompt, as TRL tokenizes it (chat template, generation prompt, ``chat_template_kwargs``), plus
    ``max_completion_length`` fits the model's ``context`` positions; else ``ValueError`` naming the first row that
    does not, its length, and the fixes. TRL 1.16's GRPO has no ``max_prompt_length``: a prompt is never
    truncated, and a too-long one trains with position ids past the model's table (transformers only warns).

    Only prompts that may be too long are tokenized: a token covers at least one byte of the text, so a prompt
    whose text bytes plus the chat template's tokens fit is skipped unread."""
    from .generation import prompt_token_ids

    if context is None:
        return
    budget = context - max_completion_length
    if budget < 1:
        raise ValueError(
            f"--max_completion_length {max_completion_length} leaves no room for a prompt in the model's context of "
            f"{context} positions; lower --max_completion_length below {context}."
        )
    overhead: int | None = None  # the chat template's own tokens per message, a default system prompt included
    over: list[tuple[int, int]] = []
    for row, prompt in enumerate(prompts):
        size, messages = _text_bytes(prompt)
        try:
            if isinstance(prompt, str):
                bound = size + 4
            else:
                if overhead is None:
                    empty = [{"role": "user", "content": ""}]
                    overhead = len(prompt_token_ids(tokenizer, empty, chat_template_kwargs)) + 16
                bound = size + overhead * messages
            if bound <= budget:
                continue
            length = len(prompt_token_ids(tokenizer, prompt, chat_template_kwargs))
        except Exception:  # a prompt this tokenizer cannot render: TRL's own error, at generation
            continue
        if length > budget:
            over.append((row, length))
    if over:
        row, length = over[0]
        longest_row, longest = max(over, key=lambda item: item[1])
        raise ValueError(
            f"{len(over)} of {len(prompts)} training prompts do not fit the model's context of {context} positions "
            f"with --max_completion_length {max_completion_length}: row {row} has {length} "
            f"prompt tokens ({length} + {max_completion_length} > {context}; the longest, row {longest_row}, has "
            f"{longest}). TRL's GRPO never truncates prompts (GRPOConfig has no --max_prompt_length): drop or shorten "
            f"those rows (keep prompts at most {budget} tokens), "
            + (f"lower --max_completion_length to {context - longest} or less, " if longest < context else "")
            + "or use a model with a longer context."
        )


# --------------------------------------------------------------------------------------------------------------------
# resume


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` is not a complete Trainer checkpoint, or None when it is.

    Trainer writes ``trainer_state.json`` last (after the weights, optimizer, scheduler and RNG states), so a
    checkpoint whose save was interrupted has none, or an unreadable one; leftover ``*.tmp`` files mark an
    interrupted write too.
    """
    folder = Path(folder)
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the save was interrupted)"
    try:
        json.loads(state.read_text())
    except ValueError:
        return "trainer_state.json is truncated (the save was interrupted)"
    temps = sorted(p.name for p in folder.glob("*.tmp"))
    if temps:
        return f"unfinished temporary file(s) {temps[:3]}"
    return None


def latest_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir`` (incomplete ones are skipped with a warning)."""
    from transformers.trainer_utils import get_last_checkpoint, sort_checkpoints

    if not os.path.isdir(output_dir) or get_last_checkpoint(str(output_dir)) is None:
        return None
    for folder in reversed(sort_checkpoints(str(output_dir))):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("Skipping incomplete checkpoint %s: %s.", Path(folder).name, problem)
    return None


def resolve_resume(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """What to pass to ``trainer.train(resume_from_checkpoint=...)``: None (start fresh), or a complete checkpoint.

    ``true`` / ``latest`` / ``yes`` / ``1``: the newest complete checkpoint in ``output_dir`` (an interrupted save
    is skipped); ``ValueError`` when there is none. A path: that checkpoint, which must be complete.
    """
    if not resolve_resume_requested(resume_from_checkpoint):
        return None
    if resume_from_checkpoint is True or str(resume_from_checkpoint).lower() in ("true", "latest", "yes", "1"):
        found = latest_complete_checkpoint(output_dir)
        if found is None:
            raise ValueError(
                f"--resume_from_checkpoint {resume_from_checkpoint}: no complete checkpoint-N folder in --output_dir "
                f"{Path(output_dir).name!r}. Check --output_dir, or drop --resume_from_checkpoint to start afresh."
            )
        logger.info("Resuming from %s.", Path(found).name)
        return found
    problem = checkpoint_problem(resume_from_checkpoint)
    if problem is not None:
        raise ValueError(
            f"--resume_from_checkpoint {Path(str(resume_from_checkpoint)).name}: not a complete checkpoint "
            f"({problem}). Use --resume_from_checkpoint true to take the newest complete one."
        )
    return str(resume_from_checkpoint)


# --------------------------------------------------------------------------------------------------------------------
# output folders


WRITE_PROBE_PREFIX = ".sec_trl-write-probe-"


def check_writable(path: str | os.PathLike, flag: str, *, what: str = "the run's outputs") -> None:
    """``path`` is a folder this process can write into, or can be created: else ``ValueError`` naming ``flag``
    and the fix, before anything is loaded or sampled (a read-only folder would otherwise fail at the first save,
    after the whole run).

    Nothing is created: the folder itself when it exists, else its nearest existing parent, must be a folder in which
    a probe file (``.sec_trl-write-probe-*``) can be written and removed. This catches what ``os.access`` misses: a
    read-only file system, a file where a folder is expected, and (for root) nothing that is merely ``chmod``-ed."""
    import tempfile

    from .publishing import shown_path

    target = os.path.abspath(os.path.expanduser(os.fspath(path)))
    existing = target
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    shown = shown_path(target)
    fix = f"Give {flag} a folder you can write to"
    if not os.path.isdir(existing):
        if existing == target:
            problem = "it is a file, not a folder"
        else:
            problem = f"{shown_path(existing)} is a file, so no folder can be created under it"
        raise ValueError(f"{flag} {shown}: cannot write {what} there: {problem}. {fix}.")
    try:
        fd, probe = tempfile.mkstemp(prefix=WRITE_PROBE_PREFIX, dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        where = shown if existing == target else f"{shown_path(existing)} (its nearest existing folder)"
        reason = e.strerror or type(e).__name__
        raise ValueError(
            f"{flag} {shown}: cannot write {what} there: writing a file into {where} fails ({reason}). {fix}, or "
            f"make {shown_path(existing)} writable (e.g. chmod u+w, or remount it read-write)."
        ) from None


def check_output_folders(folders: Sequence[tuple[str, str | os.PathLike | None, str]]) -> None:
    """:func:`check_writable` for every ``(flag, folder, what)`` whose folder is set, each folder once."""
    seen: set[str] = set()
    for flag, folder, what in folders:
        if folder is None or str(folder) == "":
            continue
        key = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        if key in seen:
            continue
        seen.add(key)
        check_writable(folder, flag, what=what)


# --------------------------------------------------------------------------------------------------------------------
# an earlier run in output_dir


SAVED_MODEL_FILES = (
    "config.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "trainer_state.json",
)
"""Files that mark a run's saved model (or its state) at the top of an output folder."""


def earlier_run(output_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(checkpoint folder names, saved-model file names)`` an earlier run left in ``output_dir`` (both empty when
    the folder is new, empty, or holds anything else: a ranking cache, a card, evaluation results)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return [], []
    checkpoints = sorted(
        (p.name for p in folder.glob("checkpoint-*") if p.is_dir()),
        key=lambda name: (len(name), name),
    )
    files = [name for name in SAVED_MODEL_FILES if (folder / name).is_file()]
    return checkpoints, files


def check_earlier_run(
    output_dir: str | os.PathLike, resume_from_checkpoint: str | bool | None, overwrite: bool, *, log: bool = True
) -> list[str]:
    """A fresh run never deletes or overwrites an earlier run unasked.

    Without ``--resume_from_checkpoint``, an ``output_dir`` holding ``checkpoint-*`` folders or a saved model stops
    the run here (``ValueError`` naming ``--resume_from_checkpoint true`` and ``--overwrite_output_dir true``), before
    the model loads: Trainer's ``save_total_limit`` would delete those checkpoints (or the newest old one would be
    kept and this run's deleted) and the final save would replace the model, without a word. With
    ``--overwrite_output_dir true``, returns the earlier run's checkpoint folders, which :func:`clear_earlier_run`
    deletes (this run's own checkpoints, resume and rotation must not mix with them), after logging what is replaced.
    """
    resuming = resolve_resume_requested(resume_from_checkpoint)
    if resuming and overwrite:
        raise ValueError(
            "--resume_from_checkpoint and --overwrite_output_dir true contradict each other: resume continues the run "
            "in --output_dir, overwrite replaces it. Give one of them."
        )
    if resuming:
        return []
    checkpoints, files = earlier_run(output_dir)
    if not checkpoints and not files:
        return []
    from .publishing import shown_path

    found = ", ".join(
        [*([f"{len(checkpoints)} checkpoint(s) ({', '.join(checkpoints[-3:])})"] if checkpoints else []), *files]
    )
    shown = shown_path(output_dir)
    if not overwrite:
        raise ValueError(
            f"--output_dir {shown} already holds an earlier run ({found}); a fresh run would delete its checkpoints "
            "and replace its model. Continue it with --resume_from_checkpoint true, replace it with "
            "--overwrite_output_dir true, or give another --output_dir."
        )
    parts = []
    if checkpoints:
        parts.append(f"its {', '.join(checkpoints)} deleted once the model has loaded, just before training")
    if files:
        parts.append(f"its {', '.join(files)} replaced by this run's final save")
    if log:  # once, not on every process of a multi-process run
        logger.warning("--overwrite_output_dir true: replacing the earlier run in %s: %s.", shown, "; ".join(parts))
    return [os.path.join(os.fspath(output_dir), name) for name in checkpoints]


def clear_earlier_run(checkpoints: Sequence[str]) -> None:
    """Delete the earlier run's checkpoint folders found by :func:`check_earlier_run` (main process only; train.py
    calls it once the model has loaded, right before training)."""
    import shutil

    for folder in checkpoints:
        if os.path.isdir(folder):
            shutil.rmtree(folder)
            logger.info("--overwrite_output_dir true: deleted the earlier run's %s.", Path(folder).name)


def resolve_resume_requested(resume_from_checkpoint: str | bool | None) -> bool:
    """Whether ``--resume_from_checkpoint`` asks to resume (as :func:`resolve_resume` reads it)."""
    return resume_from_checkpoint not in (None, False, "", "false", "False", "no", "0")
