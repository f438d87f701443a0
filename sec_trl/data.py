"""Prompt datasets: a procedural arithmetic dataset and loading/validation of user datasets.

Every dataset handed to the trainer has a ``prompt`` column (what TRL's GRPO trainer reads) and the user's answer
column under its own name (``answer``, ``solution``, ...: TRL and open-r1 reward functions read it by name), its
values stripped strings.

Prompt formatting is explicit and shared by training, ranking and evaluation (:class:`PromptFormat`, set by
``--system_prompt``, ``--answer_instruction`` and ``--wrap_string_prompts``), so that a model is ranked and evaluated
on the prompts it is trained on:

- plain-string prompts: TRL accepts them (its "standard" format) but then applies no chat template, so an Instruct
  model would see raw text without its turn markers. By default (``wrap_string_prompts``) a string prompt becomes a
  single user message, with the answer instruction (:data:`BOXED_INSTRUCTION`; the reward reads the answer from the
  last ``\\boxed{}``) appended when the text does not already mention ``\\boxed``;
- conversational prompts (lists of ``{"role", "content"}`` messages) are kept exactly as given;
- ``system_prompt``, when set, is put first in every prompt that has no system message of its own.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, List, Value, load_dataset, load_from_disk

# The generated arithmetic dataset lives in sec_trl.arithmetic; its names stay importable from here.
from .arithmetic import ANSWER_COLUMN, BOXED_INSTRUCTION, PROMPT_COLUMN
from .arithmetic import ARITHMETIC_LEVELS as ARITHMETIC_LEVELS
from .arithmetic import DEFAULT_LEVELS as DEFAULT_LEVELS
from .arithmetic import arithmetic_question_text as arithmetic_question_text
from .arithmetic import make_arithmetic_dataset as make_arithmetic_dataset
from .arithmetic import make_arithmetic_splits as make_arithmetic_splits
from .errors import UserFacingError
from .publishing import looks_like_local_path


logger = logging.getLogger(__name__)


PROMPT_COLUMN_FLAG = "--dataset_prompt_column"
ANSWER_COLUMN_FLAG = "--dataset_answer_column"


LOCAL_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}

# Column names commonly used for the prompt / answer, used to suggest a fix when the expected column is missing.
_PROMPT_CANDIDATES = ("question", "problem", "query", "input", "instruction", "messages", "text", "content")
_ANSWER_CANDIDATES = ("solution", "final_answer", "ground_truth", "target", "label", "output", "response")


# --------------------------------------------------------------------------------------------------------------------
# Prompt formatting (shared by train.py, python -m sec_trl.rank and python -m sec_trl.evaluate)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptFormat:
    """How prompts are formatted before a model sees them; the same in training, ranking and evaluation.

    Attributes:
        system_prompt: put first, as a ``system`` message, in every prompt that has no system message (None: none).
        answer_instruction: appended (after a blank line) to plain-string prompts that do not mention ``\\boxed``
            (None or empty: nothing is appended).
        wrap_string_prompts: turn a plain-string prompt into one ``user`` message, so the chat template applies.
            With False, string prompts stay strings (TRL's "standard" format, no chat template) and neither the
            system prompt nor the instruction is added to them.
    """

    system_prompt: str | None = None
    answer_instruction: str | None = BOXED_INSTRUCTION
    wrap_string_prompts: bool = True

    def __post_init__(self):
        for name in ("system_prompt", "answer_instruction"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or None, got {type(value).__name__}")
            if isinstance(value, str) and (not value.strip() or value.strip().lower() == "none"):
                object.__setattr__(self, name, None)  # "--answer_instruction none" / "" switch it off

    def apply(self, prompt):
        """``prompt`` (a string or a list of messages) formatted; the input is not modified.

        Examples:
            >>> PromptFormat().apply("What is 2 + 2?")
            [{'role': 'user', 'content': 'What is 2 + 2?\\n\\nPut your final answer within \\\\boxed{}.'}]
            >>> PromptFormat(system_prompt="Think.").apply([{"role": "user", "content": "Hi"}])
            [{'role': 'system', 'content': 'Think.'}, {'role': 'user', 'content': 'Hi'}]
            >>> PromptFormat(wrap_string_prompts=False).apply("raw")
            'raw'
        """
        if isinstance(prompt, str):
            if not self.wrap_string_prompts:
                return prompt
            text = prompt.strip()
            if self.answer_instruction and "\\boxed" not in text:
                text = f"{text}\n\n{self.answer_instruction}"
            prompt = [{"role": "user", "content": text}]
        else:
            prompt = [dict(message) for message in prompt]
        if self.system_prompt and not any(m.get("role") == "system" for m in prompt):
            prompt.insert(0, {"role": "system", "content": self.system_prompt})
        return prompt

    @property
    def changes_conversations(self) -> bool:
        return self.system_prompt is not None


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
    prompt_format: PromptFormat | None = None,
    rename_answer: bool = False,
) -> Dataset:
    """Load a prompt dataset and return it validated, with a ``prompt`` column and the answer column.

    ``name_or_path`` is one of:

    - a local ``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv`` file (one split; ``split`` is ignored),
    - a local directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``split`` picks the
      split of a DatasetDict), or any other local directory of data files ``datasets.load_dataset`` understands,
    - a Hugging Face Hub dataset name (``datasets.load_dataset(name, config, split=split)``).

    Validation (:func:`validate_prompt_dataset`) runs here, before any model is loaded, and raises ``ValueError``
    naming the column and the flag that fixes it. A local file that cannot be read raises ``ValueError`` naming the
    file (and, for a JSON Lines file, the first bad line).
    """
    ds = load_raw_dataset(name_or_path, split=split, config=config)
    return validate_prompt_dataset(
        ds,
        prompt_column,
        answer_column,
        source=str(name_or_path),  # as the user typed it: a relative path stays relative
        prompt_format=prompt_format,
        rename_answer=rename_answer,
    )


class DatasetUnavailableError(RuntimeError, UserFacingError):
    """A dataset that cannot be loaded (unknown name, no network, unknown split or config); the message names it."""


def load_raw_dataset(name_or_path: str, *, split: str = "train", config: str | None = None) -> Dataset:
    """The dataset as stored (no validation, no renaming): a local file, a ``save_to_disk`` directory, a directory
    of data files, or a Hub dataset. Errors name the file or dataset and say what to do."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        builder = LOCAL_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"Unsupported dataset file type {path.suffix!r} for {name_or_path!r}; "
                f"supported: {', '.join(sorted(LOCAL_FILE_BUILDERS))}, or a directory written by save_to_disk."
            )
        check_data_file(path, shown=name_or_path)
        try:
            return load_dataset(builder, data_files={"train": str(path)}, split="train")
        except Exception as e:  # datasets' own message names neither the file nor the line
            raise ValueError(_unreadable_file_message(path, name_or_path, e)) from e
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = load_from_disk(str(path))
            if isinstance(loaded, DatasetDict):
                if split not in loaded:
                    raise ValueError(
                        f"Dataset directory {name_or_path!r} has no split {split!r}; splits present: "
                        f"{sorted(loaded)}. Choose one with --dataset_train_split / --dataset_test_split."
                    )
                loaded = loaded[split]
            return loaded
        return load_dataset(str(path), config, split=split)
    if looks_like_local_path(name_or_path):
        raise FileNotFoundError(
            f"Dataset path {name_or_path!r} does not exist. Give an existing local "
            f"{'/'.join(sorted(LOCAL_FILE_BUILDERS))} file, a save_to_disk directory, or a Hub dataset name."
        )
    try:
        return load_dataset(name_or_path, config, split=split)
    except Exception as e:  # network, unknown dataset, unknown split/config ... keep the cause, add the context
        raise DatasetUnavailableError(
            f"Could not load dataset {name_or_path!r} (config={config!r}, split={split!r}) from the Hugging Face Hub: "
            f"{type(e).__name__}: {e}. If you meant a local file or directory, give a path that exists."
        ) from e


def check_data_file(path: str | os.PathLike, shown: str | None = None) -> None:
    """Raise ``ValueError`` naming ``shown`` (default: the path) when a local data file is empty, or, for CSV,
    holds a header and no row. Cheap: reads at most the first two non-blank lines."""
    path = Path(path)
    shown = shown or str(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if path.stat().st_size == 0:
            raise ValueError(f"Dataset file {shown!r} is empty (0 bytes); nothing to train on.")
        return
    check_utf8(path, shown)
    lines = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                lines.append(line)
                if len(lines) == 2:
                    break
    if not lines:
        raise ValueError(f"Dataset file {shown!r} is empty (no data); nothing to train on.")
    if suffix == ".csv" and len(lines) == 1:
        raise ValueError(
            f"Dataset file {shown!r} has a header line and no data rows; nothing to train on. "
            f"Header: {lines[0].strip()[:200]!r}."
        )


def check_utf8(path: str | os.PathLike, shown: str | None = None) -> None:
    """Raise ``ValueError`` naming the file, the line, the column and the byte when a text data file is not UTF-8.

    ``datasets`` reads such a file without complaint and fails later, on first access to the row, with a bare
    ``UnicodeDecodeError ... position 3`` that names neither the file nor the line. One linear pass over the bytes.
    """
    path = Path(path)
    shown = shown or str(path)
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                utf16 = number == 1 and line[:2] in (b"\xff\xfe", b"\xfe\xff")
                hint = " It starts with a UTF-16 byte-order mark: the file is UTF-16." if utf16 else ""
                raise ValueError(
                    f"Dataset file {shown!r}: line {number} is not valid UTF-8 (byte 0x{line[e.start]:02x} at column "
                    f"{e.start + 1}: {e.reason}).{hint} Data files must be UTF-8; convert it, e.g. "
                    f"`iconv -f latin1 -t utf-8 in.jsonl > out.jsonl` for a Latin-1 file."
                ) from None


def _unreadable_file_message(path: Path, shown: str, error: Exception) -> str:
    """Why ``datasets`` could not read a local file, pointing at the first bad JSON line when there is one."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        bad = first_bad_json_line(path)
        if bad is not None:
            number, why, text = bad
            return (
                f"Dataset file {shown!r}: line {number} is not valid JSON ({why}): {_short(text, 120)}. Each line of "
                f"a JSON Lines file must be one JSON object; fix or remove that line."
            )
    return f"Dataset file {shown!r} could not be read as {suffix or 'data'}: {type(error).__name__}: {error}"


def first_bad_json_line(path: str | os.PathLike) -> tuple[int, str, str] | None:
    """``(line number, error, line)`` of the first non-blank line of a JSON Lines file that is not a JSON object,
    or None when every line is one (or when the whole file is a single JSON document, as a ``.json`` file may be)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    try:
        json.loads(text)
        return None  # one JSON document (a list of rows, or {"data": [...]})
    except ValueError:
        pass
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            return number, str(e), line
        if not isinstance(row, dict):
            return number, f"a JSON {type(row).__name__}, not an object", line
    return None


def suggest_column(columns: Iterable[str], wanted: str, candidates: Sequence[str], exclude: str | None = None):
    """The column the user probably meant: a close spelling of ``wanted`` (``difflib``), else a common name for
    that role (``candidates``, case-insensitive); None when nothing fits."""
    present = [c for c in columns if c != exclude]
    close = difflib.get_close_matches(wanted, present, n=1, cutoff=0.75)
    if close:
        return close[0]
    lower = {c.lower(): c for c in present}
    return next((lower[c] for c in candidates if c in lower), None)


def _missing_column_error(kind: str, column: str, flag: str, columns: list[str], suggestion: str | None, source: str):
    hint = f" (maybe {flag} {suggestion})" if suggestion else ""
    return ValueError(
        f"Dataset{source} has no {kind} column {column!r}; columns present: {columns}. "
        f"Set the {kind} column name with {flag} <column>{hint}."
    )


def _short(value, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
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


def normalise_answer(value) -> str | None:
    """A gold answer as a stripped string, or None when it is missing (None, NaN, empty or blank).

    Examples:
        >>> normalise_answer(3.0), normalise_answer(" 1/2 "), normalise_answer(float("nan")), normalise_answer("")
        ('3', '1/2', None, None)
    """
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, float):
        if value != value:  # NaN, e.g. an empty CSV cell read as float
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None


def _check_columns(ds: Dataset, prompt_column: str, answer_column: str, where: str) -> None:
    """The prompt and answer columns exist, differ, and the dataset has rows; errors name the fixing flag."""
    if isinstance(ds, DatasetDict):
        raise ValueError(
            f"Expected a single dataset split{where} but got a DatasetDict with splits {sorted(ds)}; pick one "
            f"(e.g. ds['train'], or --dataset_train_split)."
        )
    if not isinstance(ds, Dataset):
        raise ValueError(f"Expected a datasets.Dataset{where}, got {type(ds).__name__} (streaming is not supported).")
    columns = list(ds.column_names)
    if prompt_column not in columns:
        suggestion = suggest_column(columns, prompt_column, (PROMPT_COLUMN, *_PROMPT_CANDIDATES), answer_column)
        raise _missing_column_error("prompt", prompt_column, PROMPT_COLUMN_FLAG, columns, suggestion, where)
    if answer_column not in columns:
        suggestion = suggest_column(columns, answer_column, (ANSWER_COLUMN, *_ANSWER_CANDIDATES), prompt_column)
        raise _missing_column_error("answer", answer_column, ANSWER_COLUMN_FLAG, columns, suggestion, where)
    if prompt_column == answer_column:
        raise ValueError(
            f"The prompt and answer columns are both {prompt_column!r}; set them apart with "
            f"{PROMPT_COLUMN_FLAG} / {ANSWER_COLUMN_FLAG}."
        )
    if len(ds) == 0:
        raise ValueError(f"Dataset{where} is empty (0 rows); nothing to train on.")


CHAT_ROLES = ("system", "user", "assistant", "tool")
"""The roles chat templates know; a prompt with another role, or with no user message, is trained on with a
warning (:func:`_odd_roles`)."""


def _odd_roles(prompt: list) -> str | None:
    """What is odd about a valid chat prompt's roles (an unknown role; no user turn, e.g. only an assistant turn),
    or None."""
    roles = [m["role"] for m in prompt]
    unknown = [r for r in roles if r not in CHAT_ROLES]
    if unknown:
        return f"role {unknown[0]!r}, not one of {', '.join(CHAT_ROLES)}"
    if "user" not in roles:
        return f"no user message (roles: {', '.join(roles)})"
    return None


def _scan_rows(ds: Dataset, prompt_column: str, answer_column: str):
    """(bad prompts as (row, problem, value), rows with a missing answer, number of string prompts, chat prompts
    with odd roles as (row, what)), in one pass."""
    bad_prompts: list[tuple[int, str, object]] = []
    missing_answers: list[int] = []
    odd_roles: list[tuple[int, str]] = []
    num_strings = 0
    index = 0
    for batch in ds.select_columns([prompt_column, answer_column]).iter(batch_size=1000):
        for prompt, answer in zip(batch[prompt_column], batch[answer_column], strict=True):
            problem = _prompt_problem(prompt)
            if problem is not None:
                bad_prompts.append((index, problem, prompt))
            elif isinstance(prompt, str):
                num_strings += 1
            else:
                odd = _odd_roles(prompt)
                if odd is not None:
                    odd_roles.append((index, odd))
            if normalise_answer(answer) is None:
                missing_answers.append(index)
            index += 1
    return bad_prompts, missing_answers, num_strings, odd_roles


def validate_prompt_dataset(
    ds: Dataset,
    prompt_column: str = PROMPT_COLUMN,
    answer_column: str = ANSWER_COLUMN,
    *,
    source: str | None = None,
    prompt_format: PromptFormat | None = None,
    rename_answer: bool = False,
) -> Dataset:
    """Check a prompt dataset and return it normalised; raise ``ValueError`` saying what is wrong and how to fix it.

    Checks: the prompt and answer columns exist (the message lists the columns present and the flag that sets the
    name: ``--dataset_prompt_column`` / ``--dataset_answer_column``, with a suggestion), the dataset is not empty,
    every prompt is a non-empty string or a non-empty list of ``{"role", "content"}`` messages (the message counts
    the bad rows and shows the first). Chat prompts with a role outside ``system`` / ``user`` / ``assistant`` /
    ``tool``, or with no user message (e.g. only an assistant turn), are kept with one warning naming the first
    such row and role. Rows whose gold answer is missing (None, NaN, blank) are kept with a
    warning, as TRL does: the accuracy reward returns None for them and GRPO skips them; a dataset with no answer
    at all is an error.

    Returns a dataset whose prompt column is named ``prompt`` (TRL reads that name; a different, pre-existing
    ``prompt`` column is dropped), whose answer column keeps its name (renamed to ``answer`` only with
    ``rename_answer``) and holds stripped strings (None where missing), and whose prompts are formatted by
    ``prompt_format`` (default :class:`PromptFormat`: string prompts wrapped into a user message with the
    ``\\boxed{}`` instruction). Other columns are kept (TRL passes them to reward functions).
    """
    where = f" {source!r}" if source else ""
    prompt_format = PromptFormat() if prompt_format is None else prompt_format
    _check_columns(ds, prompt_column, answer_column, where)
    bad_prompts, missing_answers, num_strings, odd_roles = _scan_rows(ds, prompt_column, answer_column)
    if bad_prompts:
        i, problem, value = bad_prompts[0]
        raise ValueError(
            f"Prompt column {prompt_column!r}{where}: {len(bad_prompts)} of {len(ds)} rows are not a non-empty "
            f"string or a list of {{'role': ..., 'content': ...}} messages; first bad row {i} ({problem}): "
            f"{_short(value)}. Fix the data, or point {PROMPT_COLUMN_FLAG} at the column holding the prompts."
        )
    if len(missing_answers) == len(ds):
        raise ValueError(
            f"Answer column {answer_column!r}{where}: all {len(ds)} rows have a missing (None) or empty answer. "
            f"Point {ANSWER_COLUMN_FLAG} at the column holding the reference answers."
        )
    if missing_answers:
        logger.warning(
            "Answer column %r%s: %d of %d rows have no gold answer (first: row %d); the accuracy reward returns "
            "None for them and GRPO leaves them out of the reward, as TRL's rewards do.",
            answer_column,
            where,
            len(missing_answers),
            len(ds),
            missing_answers[0],
        )
    if odd_roles:
        row, what = odd_roles[0]
        logger.warning(
            "Prompt column %r%s: %d of %d chat prompts have unusual roles (first: row %d, %s); they are kept, but "
            "a chat template may reject or mis-render them, and a prompt without a user turn asks the model "
            "nothing.",
            prompt_column,
            where,
            len(odd_roles),
            len(ds),
            row,
            what,
        )
    ds = _rename(ds, prompt_column, PROMPT_COLUMN)
    if rename_answer:
        ds = _rename(ds, answer_column, ANSWER_COLUMN)
        answer_column = ANSWER_COLUMN
    return _normalise(ds, answer_column, prompt_format, has_strings=num_strings > 0)


def _normalise(ds: Dataset, answer_column: str, prompt_format: PromptFormat, *, has_strings: bool) -> Dataset:
    """Answers as stripped strings and prompts formatted, in one ``map`` (skipped when nothing changes)."""
    needs_answer_fix = getattr(ds.features[answer_column], "dtype", None) != "string" or any(
        isinstance(a, str) and a != a.strip() for a in ds[answer_column]
    )
    wraps = prompt_format.wrap_string_prompts and has_strings
    needs_format = wraps or prompt_format.changes_conversations
    if not (needs_answer_fix or needs_format):
        return ds

    def normalise(example):
        out = {answer_column: normalise_answer(example[answer_column])}
        if needs_format:
            out[PROMPT_COLUMN] = prompt_format.apply(example[PROMPT_COLUMN])
        return out

    # The new column types must be given explicitly: map() would otherwise cast the new values back to the old
    # column types (int/float answers, string prompts), even for columns it removes and re-adds.
    features = ds.features.copy()
    features[answer_column] = Value("string")
    if wraps or (needs_format and not has_strings):
        features[PROMPT_COLUMN] = List({"role": Value("string"), "content": Value("string")})
    return ds.map(normalise, features=features, desc="Formatting prompts and answers")


def _rename(ds: Dataset, source: str, target: str) -> Dataset:
    if source == target:
        return ds
    if target in ds.column_names:
        ds = ds.remove_columns(target)
    return ds.rename_column(source, target)
