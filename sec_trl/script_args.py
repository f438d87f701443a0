"""Command-line arguments shared by the entry points: TRL's own dataclasses, extended.

``train.py``, ``python -m sec_trl.rank``, ``python -m sec_trl.evaluate`` and ``python -m sec_trl.hub`` all parse with
``trl.TrlParser`` (so ``--config file.yaml`` works everywhere, flags override it) and name the model and data the way
TRL's and open-r1's scripts do. :class:`DatasetArguments` *is* a ``trl.ScriptArguments`` (``--dataset_name``,
``--dataset_config``, ``--dataset_train_split``, ``--dataset_test_split``, ``--dataset_streaming``,
``--ignore_bias_buffers``) with the columns and the prompt format added; :class:`ModelArguments` *is* a
``trl.ModelConfig`` whose loading fields are the evaluation's flags. Prompt formatting (``--system_prompt``,
``--answer_instruction``, ``--wrap_string_prompts``) has one default everywhere, so a model is ranked and evaluated
on the prompts it is trained on.

Where sec_trl differs from TRL's field of the same name, the name and meaning are TRL's and the difference is in the
field's help (and in docs/training.md): ``dataset_test_split`` defaults to unset (no held-out split for a user's
dataset) instead of ``"test"``; ``dtype`` defaults to ``"auto"`` (float32 on the CPU, the checkpoint's dtype on an
accelerator) instead of ``"float32"``; ``dataset_streaming`` and ``ignore_bias_buffers`` are accepted as false only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments

from .data import ANSWER_COLUMN, BOXED_INSTRUCTION, PromptFormat
from .publishing import display_name


@dataclass
class DatasetArguments(ScriptArguments):
    """Which data, which columns, and how prompts are formatted: `trl.ScriptArguments` (its dataset fields, with
    sec_trl's help and ``dataset_test_split`` unset by default) plus the columns, the prompt format and the generated
    arithmetic data."""

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
            "help": "Held-out split for evaluation (train.py with --eval_strategy, sec_trl.evaluate). Unset (TRL's "
            "default is 'test'): the generated arithmetic test split for the generated data; no evaluation split "
            "for other datasets (sec_trl.evaluate then uses 'test')."
        },
    )
    dataset_streaming: bool = field(
        default=False,
        metadata={
            "help": "TRL's streaming switch; must stay false: the ranking, the curriculum and the evaluation need "
            "the whole dataset (its length and random access)."
        },
    )
    ignore_bias_buffers: bool = field(
        default=False,
        metadata={"help": "TRL's DDP debug switch for DPO-style bias buffers; not used by sec_trl, must stay false."},
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

    def __post_init__(self) -> None:
        for name, why in UNSUPPORTED_SCRIPT_ARGUMENTS.items():
            if getattr(self, name):
                raise ValueError(f"--{name} {getattr(self, name)!r} is not supported: {why} Leave --{name} false.")

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


UNSUPPORTED_SCRIPT_ARGUMENTS = {
    "dataset_streaming": "sec_trl loads the dataset whole (the ranking, the curriculum sampler and the evaluation "
    "need its length and random access); a large Hub dataset is downloaded and cached once instead.",
    "ignore_bias_buffers": "it is TRL's DDP workaround for DPO-style models with boolean bias buffers, which no "
    "sec_trl script applies.",
}
"""`trl.ScriptArguments` fields that sec_trl accepts (so TRL and open-r1 recipes that set them false parse) but cannot
honour: set true, they stop the command before anything loads, with the reason."""


def format_generated(dataset, prompt_format: PromptFormat):
    """The generated arithmetic prompts (already conversational, with the instruction) with the system prompt."""
    if not prompt_format.changes_conversations:
        return dataset
    return dataset.map(lambda row: {"prompt": prompt_format.apply(row["prompt"])}, desc="Adding the system prompt")


EVALUATION_MODEL_FLAGS = ("model_name_or_path", "model_revision", "dtype")
"""The `trl.ModelConfig` fields `python -m sec_trl.evaluate` takes as flags: how the model is loaded. Its other fields
(PEFT, quantization, attention implementation) are training settings, left out of the evaluation's command line."""


def _only_these_model_flags(*names: str):
    """Class decorator (under ``@dataclass``): every `trl.ModelConfig` field not in ``names`` and not redefined by the
    class stays an attribute with TRL's default, but is neither a flag nor a constructor argument (``init=False``:
    ``HfArgumentParser`` skips it), so the evaluation's ``--help`` lists only flags it applies."""

    def hide(cls):
        annotations = cls.__dict__.get("__annotations__", {})
        for f in dataclasses.fields(ModelConfig):
            if f.name in names or f.name in annotations:
                continue
            if f.default is dataclasses.MISSING:  # every ModelConfig field has a plain default (TRL 1.16)
                raise TypeError(f"trl.ModelConfig.{f.name} has no plain default; list it in {cls.__name__}'s flags")
            annotations[f.name] = f.type
            setattr(cls, f.name, field(default=f.default, init=False, repr=False))
        cls.__annotations__ = annotations
        return cls

    return hide


@dataclass
@_only_these_model_flags(*EVALUATION_MODEL_FLAGS)
class ModelArguments(ModelConfig):
    """The model to load: a `trl.ModelConfig` (TRL's names and meanings) whose flags are its loading fields
    (:data:`EVALUATION_MODEL_FLAGS`), with the embedded model when unset, ``dtype`` defaulting to ``"auto"`` (TRL's
    default is ``"float32"``) and ``trust_remote_code`` (a `GRPOConfig` field in TRL 1.16, not a `ModelConfig` one).
    Used by ``python -m sec_trl.evaluate``; train.py takes the whole `ModelConfig`."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A local directory or a Hub model id. Unset: the embedded SmolLM2-135M-Instruct."},
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "'auto' (float32 on the CPU, the checkpoint's dtype on a GPU; TRL's ModelConfig defaults to "
            "'float32'), 'float32', 'bfloat16', 'float16'.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom model code from the model repository (off by default)."}
    )


@dataclass
class HubPushArguments:
    """``python -m sec_trl.hub``: push a finished run's final model and card. The names are `TrainingArguments`' (a
    training recipe's ``output_dir``, ``hub_model_id`` and ``hub_private_repo`` mean the same here)."""

    output_dir: str = field(
        metadata={"help": "The run's output directory (its final model and README.md; checkpoints are not pushed)."}
    )
    hub_model_id: str = field(metadata={"help": "The repository to push to (user/name)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the repository as private."})
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "The base model's Hub id, written into adapter_config.json (a LoRA run) in place of a local "
            "path. Unset: a Hub id already there is kept, a local path becomes its base name."
        },
    )
