"""Prompt datasets: a procedural arithmetic dataset and loading/validation of user datasets.

Every dataset handed to the trainer has a ``prompt`` column (what TRL's GRPO trainer reads) and an
``answer`` column (the reference final answer, a string, passed to the reward function).

Plain-string prompts: TRL accepts them (its "standard" format) but then applies no chat template, so an
Instruct model sees raw text without its ChatML turn markers. :func:`validate_prompt_dataset` therefore
wraps a string prompt into a single user message by default (``wrap_string_prompts=True``), appending
:data:`BOXED_INSTRUCTION` when the text does not already mention ``\\boxed`` (the reward reads the answer
from the last ``\\boxed{}``). Conversational prompts (lists of ``{"role", "content"}`` messages) are kept
exactly as given.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict, List, Value, load_dataset, load_from_disk


PROMPT_COLUMN = "prompt"
ANSWER_COLUMN = "answer"
PROMPT_COLUMN_FLAG = "--dataset_prompt_column"
ANSWER_COLUMN_FLAG = "--dataset_answer_column"

BOXED_INSTRUCTION = "Put your final answer within \\boxed{}."
"""Appended to arithmetic questions (and, by default, to plain-string user prompts lacking ``\\boxed``)."""

LOCAL_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}

# Column names commonly used for the prompt / answer, used to suggest a fix when the expected column is missing.
_PROMPT_CANDIDATES = ("question", "problem", "query", "input", "instruction", "messages", "text", "content")
_ANSWER_CANDIDATES = ("solution", "final_answer", "ground_truth", "target", "label", "output", "response")


# --------------------------------------------------------------------------------------------------------------------
# Procedural arithmetic
# --------------------------------------------------------------------------------------------------------------------

ARITHMETIC_LEVELS = {
    1: "one-digit addition (a + b, a, b in 1..9)",
    2: "one-digit multiplication or subtraction (a * b, a - b with a >= b)",
    3: "two-digit addition or subtraction (a + b, a - b with a >= b, a, b in 10..99)",
    4: "two-digit times one-digit (a * b), or two operations (a + b * c, a * b - c, ...)",
}
DEFAULT_LEVELS = (1, 2, 3, 4)


def _arithmetic_question(level: int, rng: random.Random) -> tuple[str, int]:
    """One (expression, value) pair of the given difficulty level."""
    r = rng.randint
    if level == 1:
        a, b = r(1, 9), r(1, 9)
        return f"{a} + {b}", a + b
    if level == 2:
        if rng.random() < 0.5:
            a, b = r(2, 9), r(2, 9)
            return f"{a} * {b}", a * b
        a, b = r(1, 9), r(1, 9)
        a, b = max(a, b), min(a, b)
        return f"{a} - {b}", a - b
    if level == 3:
        a, b = r(10, 99), r(10, 99)
        if rng.random() < 0.5:
            return f"{a} + {b}", a + b
        a, b = max(a, b), min(a, b)
        return f"{a} - {b}", a - b
    if level == 4:
        kind = rng.randrange(4)
        if kind == 0:
            a, b = r(11, 99), r(2, 9)
            return f"{a} * {b}", a * b
        a, b, c = r(2, 20), r(2, 9), r(2, 9)
        if kind == 1:
            return f"{a} + {b} * {c}", a + b * c
        if kind == 2:
            return f"{b} * {c} - {a}", b * c - a
        return f"({a} + {b}) * {c}", (a + b) * c
    raise ValueError(f"Unknown arithmetic level {level!r}; known levels: {sorted(ARITHMETIC_LEVELS)}")


def arithmetic_question_text(expression: str) -> str:
    """The user message for one arithmetic expression."""
    return f"What is {expression}? {BOXED_INSTRUCTION}"


def _level_plan(num_prompts: int, levels: Sequence[int], rng: random.Random) -> list[int]:
    """``num_prompts`` level ids, as balanced as possible over ``levels``, in a seeded random order."""
    plan = [levels[i % len(levels)] for i in range(num_prompts)]
    rng.shuffle(plan)
    return plan


def _generate(
    num_prompts: int,
    levels: Sequence[int],
    rng: random.Random,
    *,
    unique: bool,
    exclude: set[str] = frozenset(),
) -> dict[str, list]:
    levels = tuple(levels)
    if not levels:
        raise ValueError("levels must name at least one arithmetic level")
    for lv in levels:
        if lv not in ARITHMETIC_LEVELS:
            raise ValueError(f"Unknown arithmetic level {lv!r}; known levels: {sorted(ARITHMETIC_LEVELS)}")
    rows: dict[str, list] = {PROMPT_COLUMN: [], ANSWER_COLUMN: [], "level": []}
    seen: set[str] = set()
    for level in _level_plan(num_prompts, levels, rng):
        for _ in range(10_000):
            expr, value = _arithmetic_question(level, rng)
            if expr not in exclude and not (unique and expr in seen):
                break
        else:
            raise ValueError(
                f"Could not find enough distinct level-{level} arithmetic questions ({ARITHMETIC_LEVELS[level]}); "
                f"ask for fewer prompts or add harder levels."
            )
        seen.add(expr)
        rows[PROMPT_COLUMN].append([{"role": "user", "content": arithmetic_question_text(expr)}])
        rows[ANSWER_COLUMN].append(str(value))
        rows["level"].append(level)
    return rows


def make_arithmetic_dataset(
    num_prompts: int, seed: int = 0, levels: Sequence[int] = DEFAULT_LEVELS, *, unique: bool = False
) -> Dataset:
    """A seeded procedural arithmetic dataset (same arguments -> identical dataset).

    Columns: ``prompt`` (one user message asking for the answer in ``\\boxed{}``), ``answer`` (the integer, as a
    string) and ``level`` (see :data:`ARITHMETIC_LEVELS`; levels are balanced and the rows shuffled). With
    ``unique=True`` no question repeats (level 1 has only 81 distinct questions).
    """
    if num_prompts < 0:
        raise ValueError(f"num_prompts must be >= 0, got {num_prompts}")
    rng = random.Random(f"sec_trl-arithmetic-{seed}")
    return Dataset.from_dict(_generate(num_prompts, levels, rng, unique=unique))


def make_arithmetic_splits(
    num_train: int, num_test: int, seed: int = 0, levels: Sequence[int] = DEFAULT_LEVELS
) -> DatasetDict:
    """``DatasetDict(train=..., test=...)`` whose questions are disjoint.

    The test split has no repeated question; the train split may repeat questions (the easy levels have few
    distinct ones) but never contains a test question.
    """
    rng = random.Random(f"sec_trl-arithmetic-splits-{seed}")
    test = _generate(num_test, levels, rng, unique=True)
    test_exprs = {_expression_of(p) for p in test[PROMPT_COLUMN]}
    train = _generate(num_train, levels, rng, unique=False, exclude=test_exprs)
    return DatasetDict(train=Dataset.from_dict(train), test=Dataset.from_dict(test))


def _expression_of(prompt: list[dict]) -> str:
    text = prompt[-1]["content"]
    return text[len("What is ") : text.index("?")]


# --------------------------------------------------------------------------------------------------------------------
# User datasets
# --------------------------------------------------------------------------------------------------------------------


def load_prompt_dataset(
    name_or_path: str,
    *,
    split: str = "train",
    config: str | None = None,
    prompt_column: str = PROMPT_COLUMN,
    answer_column: str = ANSWER_COLUMN,
    wrap_string_prompts: bool = True,
) -> Dataset:
    """Load a prompt dataset and return it validated, with ``prompt`` and ``answer`` columns.

    ``name_or_path`` is one of:

    - a local ``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv`` file (one split; ``split`` is ignored),
    - a local directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``split`` picks the
      split of a DatasetDict), or any other local directory of data files ``datasets.load_dataset`` understands,
    - a Hugging Face Hub dataset name (``datasets.load_dataset(name, config, split=split)``).

    Validation (:func:`validate_prompt_dataset`) runs here, before any model is loaded, and raises ``ValueError``
    naming the column and the flag that fixes it.
    """
    ds = load_raw_dataset(name_or_path, split=split, config=config)
    return validate_prompt_dataset(
        ds,
        prompt_column,
        answer_column,
        source=str(name_or_path),
        wrap_string_prompts=wrap_string_prompts,
    )


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~"))
        or Path(name).suffix.lower() in LOCAL_FILE_BUILDERS
        or "\\" in name
        or name.count("/") > 1
    )


def load_raw_dataset(name_or_path: str, *, split: str, config: str | None) -> Dataset:
    """One split of a dataset, as stored, without validation (:func:`load_prompt_dataset` validates it).

    ``name_or_path`` is a local ``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv`` file, a ``save_to_disk`` directory
    (``split`` picks a DatasetDict's split), another local directory of data files, or a Hub dataset name. Used by
    the ranking command line for datasets without reference answers.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        builder = LOCAL_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"Unsupported dataset file type {path.suffix!r} for {str(path)!r}; "
                f"supported: {', '.join(sorted(LOCAL_FILE_BUILDERS))}, or a directory written by save_to_disk."
            )
        return load_dataset(builder, data_files={"train": str(path)}, split="train")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = load_from_disk(str(path))
            if isinstance(loaded, DatasetDict):
                if split not in loaded:
                    raise ValueError(
                        f"Dataset directory {str(path)!r} has no split {split!r}; splits present: {sorted(loaded)}. "
                        f"Choose one with --dataset_split (or the split= argument)."
                    )
                loaded = loaded[split]
            return loaded
        return load_dataset(str(path), config, split=split)
    if _looks_like_path(name_or_path):
        raise FileNotFoundError(
            f"Dataset path {name_or_path!r} does not exist. Give an existing local "
            f"{'/'.join(sorted(LOCAL_FILE_BUILDERS))} file, a save_to_disk directory, or a Hub dataset name."
        )
    try:
        return load_dataset(name_or_path, config, split=split)
    except Exception as e:  # network, unknown dataset, unknown split/config ... keep the cause, add the context
        raise RuntimeError(
            f"Could not load dataset {name_or_path!r} (config={config!r}, split={split!r}) from the Hugging Face Hub: "
            f"{type(e).__name__}: {e}. If you meant a local file or directory, give a path that exists."
        ) from e


def _suggest(columns: Iterable[str], candidates: Sequence[str], exclude: str | None = None) -> str | None:
    lower = {c.lower(): c for c in columns if c != exclude}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def _missing_column_error(kind: str, column: str, flag: str, columns: list[str], suggestion: str | None, source: str):
    hint = f" (maybe {flag} {suggestion})" if suggestion else ""
    return ValueError(
        f"Dataset{source} has no {kind} column {column!r}; columns present: {columns}. "
        f"Set the {kind} column name with {flag} <column>{hint}."
    )


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _prompt_problem(prompt) -> str | None:
    """Why ``prompt`` is not a valid prompt, or None when it is (a non-empty string or a list of messages)."""
    if isinstance(prompt, str):
        return None if prompt.strip() else "empty string"
    if not isinstance(prompt, list):
        return f"a {type(prompt).__name__}, not a string or a list of messages"
    if not prompt:
        return "an empty list of messages"
    for j, msg in enumerate(prompt):
        if not isinstance(msg, dict):
            return f"message {j} is a {type(msg).__name__}, not a {{'role', 'content'}} dict"
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(role, str) or not role:
            return f"message {j} has no 'role' string"
        if isinstance(content, str):
            continue
        if isinstance(content, list) and content:  # multimodal-style [{"type": "text", "text": ...}, ...]
            continue
        return f"message {j} has no 'content' string"
    return None


def _normalise_answer(value) -> str | None:
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, float):
        if value != value:  # NaN, e.g. an empty CSV cell read as float
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None


def validate_prompt_dataset(
    ds: Dataset,
    prompt_column: str = PROMPT_COLUMN,
    answer_column: str = ANSWER_COLUMN,
    *,
    source: str | None = None,
    wrap_string_prompts: bool = True,
    boxed_instruction: str | None = BOXED_INSTRUCTION,
) -> Dataset:
    """Check a prompt dataset and return it normalised; raise ``ValueError`` saying what is wrong and how to fix it.

    Checks: the prompt and answer columns exist (the message lists the columns present and the flag that sets the
    name: ``--dataset_prompt_column`` / ``--dataset_answer_column``), the dataset is not empty, every prompt is a
    non-empty string or a non-empty list of ``{"role", "content"}`` messages, every answer is present and non-empty
    (the message counts the bad rows and gives the first row index).

    Returns a dataset whose prompt/answer columns are named ``prompt`` / ``answer`` (renamed if needed; a different,
    pre-existing column with the target name is dropped), answers converted to stripped strings, and, with
    ``wrap_string_prompts``, plain-string prompts turned into ``[{"role": "user", "content": text}]`` with
    ``boxed_instruction`` appended when the text does not mention ``\\boxed`` (pass None to leave the text as is).
    Other columns are kept (TRL passes them to reward functions).
    """
    where = f" {source!r}" if source else ""
    if isinstance(ds, DatasetDict):
        raise ValueError(
            f"Expected a single dataset split{where} but got a DatasetDict with splits {sorted(ds)}; pick one "
            f"(e.g. ds['train'], or --dataset_split)."
        )
    if not isinstance(ds, Dataset):
        raise ValueError(f"Expected a datasets.Dataset{where}, got {type(ds).__name__} (streaming is not supported).")
    columns = list(ds.column_names)
    if prompt_column not in columns:
        suggestion = _suggest(columns, (PROMPT_COLUMN, *_PROMPT_CANDIDATES), exclude=answer_column)
        raise _missing_column_error("prompt", prompt_column, PROMPT_COLUMN_FLAG, columns, suggestion, where)
    if answer_column not in columns:
        suggestion = _suggest(columns, (ANSWER_COLUMN, *_ANSWER_CANDIDATES), exclude=prompt_column)
        raise _missing_column_error("answer", answer_column, ANSWER_COLUMN_FLAG, columns, suggestion, where)
    if prompt_column == answer_column:
        raise ValueError(
            f"The prompt and answer columns are both {prompt_column!r}; set them apart with "
            f"{PROMPT_COLUMN_FLAG} / {ANSWER_COLUMN_FLAG}."
        )
    if len(ds) == 0:
        raise ValueError(f"Dataset{where} is empty (0 rows); nothing to train on.")

    bad_prompts: list[tuple[int, str, object]] = []
    bad_answers: list[int] = []
    num_strings = 0
    index = 0
    for batch in ds.select_columns([prompt_column, answer_column]).iter(batch_size=1000):
        for prompt, answer in zip(batch[prompt_column], batch[answer_column], strict=True):
            problem = _prompt_problem(prompt)
            if problem is not None:
                bad_prompts.append((index, problem, prompt))
            elif isinstance(prompt, str):
                num_strings += 1
            if _normalise_answer(answer) is None:
                bad_answers.append(index)
            index += 1
    if bad_prompts:
        i, problem, value = bad_prompts[0]
        raise ValueError(
            f"Prompt column {prompt_column!r}{where}: {len(bad_prompts)} of {len(ds)} rows are not a non-empty "
            f"string or a list of {{'role': ..., 'content': ...}} messages; first bad row {i} ({problem}): "
            f"{_short(value)}. Fix the data, or point {PROMPT_COLUMN_FLAG} at the column holding the prompts."
        )
    if bad_answers:
        raise ValueError(
            f"Answer column {answer_column!r}{where}: {len(bad_answers)} of {len(ds)} rows have a missing (None) "
            f"or empty answer; first bad row {bad_answers[0]}. Remove those rows, or point {ANSWER_COLUMN_FLAG} "
            f"at the column holding the reference answers."
        )

    ds = _rename(ds, prompt_column, PROMPT_COLUMN)
    ds = _rename(ds, answer_column, ANSWER_COLUMN)

    needs_answer_fix = getattr(ds.features[ANSWER_COLUMN], "dtype", None) != "string" or _answers_need_strip(ds)
    needs_wrap = wrap_string_prompts and num_strings > 0

    def normalise(example):
        out = {ANSWER_COLUMN: _normalise_answer(example[ANSWER_COLUMN])}
        prompt = example[PROMPT_COLUMN]
        if needs_wrap and isinstance(prompt, str):
            text = prompt.strip()
            if boxed_instruction and "\\boxed" not in text:
                text = f"{text}\n\n{boxed_instruction}"
            out[PROMPT_COLUMN] = [{"role": "user", "content": text}]
        return out

    if needs_answer_fix or needs_wrap:
        # The new column types must be given explicitly: map() would otherwise cast the new values back to the old
        # column types (int/float answers, string prompts), even for columns it removes and re-adds.
        features = ds.features.copy()
        features[ANSWER_COLUMN] = Value("string")
        if needs_wrap:
            features[PROMPT_COLUMN] = List({"role": Value("string"), "content": Value("string")})
        ds = ds.map(normalise, features=features, desc="Normalising prompts/answers")
    return ds


def _answers_need_strip(ds: Dataset) -> bool:
    return any(a != a.strip() for a in ds[ANSWER_COLUMN] if isinstance(a, str))


def _rename(ds: Dataset, source: str, target: str) -> Dataset:
    if source == target:
        return ds
    if target in ds.column_names:
        ds = ds.remove_columns(target)
    return ds.rename_column(source, target)
