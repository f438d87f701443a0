"""Command-line arguments shared by the three entry points, with TRL's script names.

``train.py``, ``python -m sec_trl.rank`` and ``python -m sec_trl.evaluate`` all parse with ``trl.TrlParser`` (so
``--config recipe.yaml`` works everywhere) and name the model and data the way TRL's and open-r1's scripts do:
``--model_name_or_path``, ``--dataset_name``, ``--dataset_config``, ``--dataset_train_split``,
``--dataset_test_split``, ``--dataset_prompt_column``, ``--dataset_answer_column``, ``--output_dir``. Prompt formatting
(``--system_prompt``, ``--answer_instruction``, ``--wrap_string_prompts``) has one default everywhere, so a model is
ranked and evaluated on the prompts it is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .data import ANSWER_COLUMN, BOXED_INSTRUCTION, PromptFormat
from .publishing import display_name


@dataclass
class DatasetArguments:
    """Which data, which columns, and how prompts are formatted (TRL's `ScriptArguments` names)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset name, or a local .json/.jsonl/.parquet/.csv file or save_to_disk directory. "
            "Unset: the generated arithmetic dataset (see --arithmetic_*)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on (and to rank)."})
    dataset_test_split: str | None = field(
        default=None,
        metadata={
            "help": "Held-out split for evaluation (train.py with --eval_strategy, sec_trl.evaluate). Unset: the "
            "generated arithmetic test split for the generated data; no evaluation split for other datasets "
            "(sec_trl.evaluate then uses 'test')."
        },
    )
    dataset_prompt_column: str = field(
        default="prompt",
        metadata={"help": "Column holding the prompt (a string or a list of chat messages); renamed to 'prompt'."},
    )
    dataset_answer_column: str = field(
        default=ANSWER_COLUMN,
        metadata={
            "help": "Column holding the reference answer. It keeps its name, so reward functions that read e.g. "
            "'solution' (trl.rewards.accuracy_reward, open-r1) work unchanged."
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System message put first in every prompt that has none (unset: no system message)."},
    )
    answer_instruction: str | None = field(
        default=BOXED_INSTRUCTION,
        metadata={
            "help": "Appended to plain-string prompts that do not mention \\boxed (the accuracy reward reads the last "
            "\\boxed{}). 'none' appends nothing."
        },
    )
    wrap_string_prompts: bool = field(
        default=True,
        metadata={
            "help": "Turn plain-string prompts into one user chat message so the chat template applies. False: "
            "string prompts stay raw text (TRL's standard format)."
        },
    )
    arithmetic_num_train: int = field(default=512, metadata={"help": "Generated arithmetic: training prompts."})
    arithmetic_num_test: int = field(default=128, metadata={"help": "Generated arithmetic: held-out prompts."})
    arithmetic_seed: int = field(default=0, metadata={"help": "Generated arithmetic: seed."})

    def prompt_format(self) -> PromptFormat:
        return PromptFormat(
            system_prompt=self.system_prompt,
            answer_instruction=self.answer_instruction,
            wrap_string_prompts=self.wrap_string_prompts,
        )

    @property
    def uses_generated_data(self) -> bool:
        return self.dataset_name is None

    def dataset_shown(self) -> str:
        """The dataset's name for logs and model cards: a Hub id as is, a local path by its base name only."""
        if self.dataset_name is None:
            return "generated arithmetic"
        return display_name(self.dataset_name)

    def load(self, split: str = "train"):
        """The ``train`` or ``test`` split, validated and formatted (no model is needed). ``test`` returns None when
        there is no held-out split (a user dataset without ``--dataset_test_split``)."""
        from .data import load_prompt_dataset, make_arithmetic_splits

        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if self.dataset_name is None:
            splits = make_arithmetic_splits(self.arithmetic_num_train, self.arithmetic_num_test, self.arithmetic_seed)
            dataset = format_generated(splits[split], self.prompt_format())
            if self.dataset_answer_column != ANSWER_COLUMN:  # e.g. 'solution', for TRL's own accuracy_reward
                dataset = dataset.rename_column(ANSWER_COLUMN, self.dataset_answer_column)
            return dataset
        name = self.dataset_train_split if split == "train" else self.dataset_test_split
        if name is None:
            return None
        return load_prompt_dataset(
            self.dataset_name,
            split=name,
            config=self.dataset_config,
            prompt_column=self.dataset_prompt_column,
            answer_column=self.dataset_answer_column,
            prompt_format=self.prompt_format(),
        )


def format_generated(dataset, prompt_format: PromptFormat):
    """The generated arithmetic prompts (already conversational, with the instruction) with the system prompt."""
    if not prompt_format.changes_conversations:
        return dataset
    return dataset.map(lambda row: {"prompt": prompt_format.apply(row["prompt"])}, desc="Adding the system prompt")


@dataclass
class ModelArguments:
    """The model to load, with TRL's `ModelConfig` names (the ranking and evaluation scripts; train.py uses
    `ModelConfig` itself)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A local directory or a Hub model id. Unset: the embedded SmolLM2-135M-Instruct."},
    )
    model_revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit)."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "'auto' (float32 on the CPU, the checkpoint's dtype on a GPU), 'float32', 'bfloat16', 'float16'.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom model code from the model repository (off by default)."}
    )
