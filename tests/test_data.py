"""sec_trl.data: the procedural arithmetic dataset and loading/validation of user prompt datasets (real `datasets`)."""

import json
import re
from collections import Counter

import pytest
from datasets import Dataset, DatasetDict

from sec_trl.data import (
    ANSWER_COLUMN_FLAG,
    ARITHMETIC_LEVELS,
    BOXED_INSTRUCTION,
    PROMPT_COLUMN_FLAG,
    PromptFormat,
    first_bad_json_line,
    load_prompt_dataset,
    make_arithmetic_dataset,
    make_arithmetic_splits,
    validate_prompt_dataset,
)


_QUESTION_RE = re.compile(r"^What is (.+)\? " + re.escape(BOXED_INSTRUCTION) + "$")


def _expression(row) -> str:
    match = _QUESTION_RE.match(row["prompt"][0]["content"])
    assert match, row["prompt"]
    return match.group(1)


# --------------------------------------------------------------------------------------------------------------------
# Arithmetic dataset
# --------------------------------------------------------------------------------------------------------------------


def test_arithmetic_is_deterministic_per_seed():
    a = make_arithmetic_dataset(64, seed=3)
    b = make_arithmetic_dataset(64, seed=3)
    c = make_arithmetic_dataset(64, seed=4)
    assert a.to_list() == b.to_list()
    assert a.to_list() != c.to_list()


def test_arithmetic_columns_format_and_answers_are_correct():
    ds = make_arithmetic_dataset(200, seed=0)
    assert ds.column_names == ["prompt", "answer", "level"]
    assert len(ds) == 200
    for row in ds:
        assert isinstance(row["prompt"], list) and len(row["prompt"]) == 1
        message = row["prompt"][0]
        assert message["role"] == "user"
        assert "\\boxed{}" in message["content"]
        assert isinstance(row["answer"], str) and re.fullmatch(r"-?\d+", row["answer"])
        expression = _expression(row)
        assert re.fullmatch(r"[\d+\-*() ]+", expression)
        assert str(eval(expression)) == row["answer"]  # only digits, operators and parentheses (checked above)
    # Validation accepts the generated dataset unchanged.
    assert validate_prompt_dataset(ds).to_list() == ds.to_list()


def test_arithmetic_level_spread_and_difficulty():
    ds = make_arithmetic_dataset(400, seed=1)
    counts = Counter(ds["level"])
    assert set(counts) == set(ARITHMETIC_LEVELS) == {1, 2, 3, 4}
    assert all(n == 100 for n in counts.values())  # balanced
    # Rows are shuffled, not grouped by level.
    assert ds["level"][:4] != [1, 1, 1, 1] and len(set(ds["level"][:20])) > 1
    by_level = {lv: [_expression(r) for r in ds if r["level"] == lv] for lv in counts}
    assert all(re.fullmatch(r"\d \+ \d", e) for e in by_level[1])
    assert all(re.fullmatch(r"\d [*-] \d", e) for e in by_level[2])
    assert all(re.fullmatch(r"\d\d [+-] \d\d", e) for e in by_level[3])
    assert all(len(re.findall(r"\d+", e)) in (2, 3) for e in by_level[4])
    assert any(len(re.findall(r"\d+", e)) == 3 for e in by_level[4])


def test_arithmetic_level_subset_and_unknown_level():
    ds = make_arithmetic_dataset(10, seed=0, levels=(1,))
    assert set(ds["level"]) == {1}
    with pytest.raises(ValueError, match="Unknown arithmetic level 9"):
        make_arithmetic_dataset(10, levels=(1, 9))


def test_arithmetic_unique_has_no_repeats_and_fails_clearly_when_exhausted():
    ds = make_arithmetic_dataset(80, seed=0, levels=(1,), unique=True)
    assert len(set(map(_expression, ds))) == 80
    with pytest.raises(ValueError, match="distinct level-1"):
        make_arithmetic_dataset(82, seed=0, levels=(1,), unique=True)  # only 9 * 9 = 81 exist


def test_arithmetic_splits_are_disjoint():
    splits = make_arithmetic_splits(num_train=600, num_test=120, seed=5)
    assert isinstance(splits, DatasetDict) and set(splits) == {"train", "test"}
    assert len(splits["train"]) == 600 and len(splits["test"]) == 120
    train = {_expression(r) for r in splits["train"]}
    test = [_expression(r) for r in splits["test"]]
    assert len(set(test)) == len(test)
    assert not train & set(test)
    assert Counter(splits["test"]["level"]) == Counter({1: 30, 2: 30, 3: 30, 4: 30})
    again = make_arithmetic_splits(num_train=600, num_test=120, seed=5)
    assert again["train"].to_list() == splits["train"].to_list()
    assert again["test"].to_list() == splits["test"].to_list()


# --------------------------------------------------------------------------------------------------------------------
# Validation errors
# --------------------------------------------------------------------------------------------------------------------


def _messages(text):
    return [{"role": "user", "content": text}]


def test_missing_prompt_column_names_columns_and_flag():
    ds = Dataset.from_dict({"question": ["What is 1+1?"], "answer": ["2"]})
    with pytest.raises(ValueError) as err:
        validate_prompt_dataset(ds)
    msg = str(err.value)
    assert "prompt column 'prompt'" in msg
    assert "['question', 'answer']" in msg
    assert PROMPT_COLUMN_FLAG in msg and f"{PROMPT_COLUMN_FLAG} question" in msg


def test_missing_answer_column_names_columns_and_flag():
    ds = Dataset.from_dict({"prompt": ["What is 1+1?"], "solution": ["2"]})
    with pytest.raises(ValueError) as err:
        validate_prompt_dataset(ds)
    msg = str(err.value)
    assert "answer column 'answer'" in msg and "['prompt', 'solution']" in msg
    assert f"{ANSWER_COLUMN_FLAG} solution" in msg


def test_custom_column_that_does_not_exist_is_reported():
    ds = Dataset.from_dict({"prompt": ["q"], "answer": ["1"]})
    with pytest.raises(ValueError, match=f"prompt column 'problem'.*{PROMPT_COLUMN_FLAG}"):
        validate_prompt_dataset(ds, prompt_column="problem")
    with pytest.raises(ValueError, match=f"answer column 'target'.*{ANSWER_COLUMN_FLAG}"):
        validate_prompt_dataset(ds, answer_column="target")


def test_empty_dataset():
    ds = Dataset.from_dict({"prompt": [], "answer": []})
    with pytest.raises(ValueError, match="empty"):
        validate_prompt_dataset(ds)


@pytest.mark.parametrize(
    "prompts, first_bad, why",
    [
        ([_messages("ok"), [], _messages("ok")], 1, "empty list"),
        ([_messages("ok"), [{"role": "user", "content": None}]], 1, "no 'content'"),
        ([[{"role": None, "content": "x"}], _messages("ok")], 0, "no 'role'"),
        (["fine", "  ", "also fine"], 1, "empty string"),
        ([1, 2], 0, "int, not a string"),
        ([{"role": "user", "content": "x"}, {"role": "user", "content": "y"}], 0, "dict, not a string"),
    ],
)
def test_bad_prompts_report_column_count_and_first_row(prompts, first_bad, why):
    ds = Dataset.from_dict({"q": prompts, "answer": ["1"] * len(prompts)})
    with pytest.raises(ValueError) as err:
        validate_prompt_dataset(ds, prompt_column="q")
    msg = str(err.value)
    assert "Prompt column 'q'" in msg and PROMPT_COLUMN_FLAG in msg
    assert f"first bad row {first_bad}" in msg and why in msg


def test_missing_answers_are_kept_with_a_warning_and_all_missing_is_an_error(caplog):
    # TRL's rewards return None for a sample without gold, and GRPO leaves it out: the rows stay
    ds = Dataset.from_dict({"prompt": ["a", "b", "c", "d"], "gt": ["1", None, " ", "4"]})
    with caplog.at_level("WARNING", logger="sec_trl.data"):
        out = validate_prompt_dataset(ds, answer_column="gt")
    assert out["gt"] == ["1", None, None, "4"]
    assert "2 of 4 rows have no gold answer (first: row 1)" in caplog.text
    nothing = Dataset.from_dict({"prompt": ["a", "b"], "gt": [None, ""]})
    with pytest.raises(ValueError) as err:
        validate_prompt_dataset(nothing, answer_column="gt")
    msg = str(err.value)
    assert "Answer column 'gt'" in msg and "all 2 rows" in msg and ANSWER_COLUMN_FLAG in msg


def test_dataset_dict_is_rejected_with_split_hint():
    dd = DatasetDict(train=Dataset.from_dict({"prompt": ["a"], "answer": ["1"]}))
    with pytest.raises(ValueError, match="DatasetDict.*train"):
        validate_prompt_dataset(dd)


# --------------------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------------------


def test_string_prompts_are_wrapped_and_the_answer_column_keeps_its_name():
    ds = Dataset.from_dict(
        {"question": ["What is 2+2?", "Compute \\boxed{3*3}"], "sol": [4, 9], "id": [10, 11], "prompt": ["x", "y"]}
    )
    out = validate_prompt_dataset(ds, prompt_column="question", answer_column="sol")
    assert out.column_names == ["prompt", "sol", "id"]  # the reward functions read 'sol' by name
    assert out["prompt"] == [
        _messages(f"What is 2+2?\n\n{BOXED_INSTRUCTION}"),
        _messages("Compute \\boxed{3*3}"),  # already asks for \boxed: left alone
    ]
    assert out["sol"] == ["4", "9"]
    assert out["id"] == [10, 11]
    raw = validate_prompt_dataset(
        ds, prompt_column="question", answer_column="sol", prompt_format=PromptFormat(wrap_string_prompts=False)
    )
    assert raw["prompt"] == ["What is 2+2?", "Compute \\boxed{3*3}"] and raw["sol"] == ["4", "9"]
    renamed = validate_prompt_dataset(ds, prompt_column="question", answer_column="sol", rename_answer=True)
    assert renamed.column_names == ["prompt", "answer", "id"]


def test_prompt_format_system_prompt_and_instruction():
    fmt = PromptFormat(system_prompt="Reason step by step.", answer_instruction="Answer in \\boxed{}, please.")
    assert fmt.apply("What is 2+2?") == [
        {"role": "system", "content": "Reason step by step."},
        {"role": "user", "content": "What is 2+2?\n\nAnswer in \\boxed{}, please."},
    ]
    # a prompt with its own system message keeps it; the input is never modified
    own = [{"role": "system", "content": "Own."}, {"role": "user", "content": "1+1?"}]
    assert fmt.apply(own) == own and own[0]["content"] == "Own."
    assert PromptFormat(answer_instruction="none").apply("q") == _messages("q")
    conv = Dataset.from_dict({"prompt": [_messages("1+1?")], "answer": ["2"]})
    out = validate_prompt_dataset(conv, prompt_format=PromptFormat(system_prompt="Be brief."))
    assert out["prompt"] == [[{"role": "system", "content": "Be brief."}, *_messages("1+1?")]]


def test_conversational_prompts_are_kept_as_given():
    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]]
    ds = Dataset.from_dict({"prompt": prompts, "answer": [" 2 "]})
    out = validate_prompt_dataset(ds)
    assert out["prompt"] == prompts and out["answer"] == ["2"]


# --------------------------------------------------------------------------------------------------------------------
# Loading local files
# --------------------------------------------------------------------------------------------------------------------

_ROWS = [
    {"problem": [{"role": "user", "content": "What is 1 + 2?"}], "final": "3", "extra": 1},
    {"problem": [{"role": "user", "content": "What is 4 * 5?"}], "final": "20", "extra": 2},
]


def _check_loaded(ds):
    assert ds.column_names == ["prompt", "final", "extra"]
    assert ds["prompt"] == [r["problem"] for r in _ROWS]
    assert ds["final"] == ["3", "20"]


def test_load_jsonl_with_custom_columns(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _ROWS))
    _check_loaded(load_prompt_dataset(str(path), prompt_column="problem", answer_column="final"))


def test_load_json_with_custom_columns(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(_ROWS))
    _check_loaded(load_prompt_dataset(str(path), prompt_column="problem", answer_column="final"))


def test_load_parquet_with_custom_columns(tmp_path):
    path = tmp_path / "data.parquet"
    Dataset.from_list(_ROWS).to_parquet(str(path))
    _check_loaded(load_prompt_dataset(str(path), prompt_column="problem", answer_column="final"))


def test_load_csv_string_prompts_numeric_answers(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("question,target\nWhat is 1 + 2?,3\nWhat is 4 * 5?,20\n")
    ds = load_prompt_dataset(str(path), prompt_column="question", answer_column="target")
    assert ds.column_names == ["prompt", "target"]
    assert ds["target"] == ["3", "20"]
    assert ds["prompt"][0] == _messages(f"What is 1 + 2?\n\n{BOXED_INSTRUCTION}")


def test_load_save_to_disk_dataset_and_dataset_dict(tmp_path):
    Dataset.from_list(_ROWS).save_to_disk(str(tmp_path / "single"))
    _check_loaded(load_prompt_dataset(str(tmp_path / "single"), prompt_column="problem", answer_column="final"))

    splits = make_arithmetic_splits(8, 4, seed=0)
    splits.save_to_disk(str(tmp_path / "dict"))
    test = load_prompt_dataset(str(tmp_path / "dict"), split="test")
    assert test.to_list() == splits["test"].to_list()
    with pytest.raises(ValueError, match="no split 'validation'.*\\['test', 'train'\\]"):
        load_prompt_dataset(str(tmp_path / "dict"), split="validation")


def test_load_errors_for_local_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt_dataset(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "data.txt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="Unsupported dataset file type '.txt'"):
        load_prompt_dataset(str(bad))
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _ROWS))
    with pytest.raises(ValueError, match=f"no prompt column 'prompt'.*{PROMPT_COLUMN_FLAG} problem"):
        load_prompt_dataset(str(path), answer_column="final")


def test_hub_name_failure_keeps_cause_and_adds_context():
    # conftest sets HF_HUB_OFFLINE=1, so this fails fast without touching the network.
    with pytest.raises(RuntimeError, match="Could not load dataset 'someorg/not-a-dataset'.*local file") as err:
        load_prompt_dataset("someorg/not-a-dataset")
    assert err.value.__cause__ is not None


# --------------------------------------------------------------------------------------------------------------------
# Bad files: the error names the file (as given) and, for JSON Lines, the line
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", "", "is empty"),
        ("blank.jsonl", "\n\n  \n", "is empty"),
        ("empty.csv", "", "is empty"),
        ("header.csv", "question,answer\n", "has a header line and no data rows"),
        ("empty.parquet", "", "is empty"),
        (
            "corrupt.jsonl",
            '{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "2"}\n{"prompt": "c", "answer": \n',
            "line 3 is not valid JSON",
        ),
        ("list.jsonl", '{"prompt": "a", "answer": "1"}\n[1, 2]\n{"prompt": "b", "answer": "2"}\n', "line 2"),
    ],
)
def test_bad_local_files_name_the_file_and_line(tmp_path, monkeypatch, name, content, message):
    (tmp_path / name).write_text(content)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        load_prompt_dataset(name)
    msg = str(err.value)
    assert repr(name) in msg and message in msg
    assert str(tmp_path) not in msg  # the path as the user typed it, not an absolute one


def test_first_bad_json_line_accepts_a_json_document(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"prompt": "a", "answer": "1"}]))
    assert first_bad_json_line(path) is None
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert first_bad_json_line(path) is None
    path.write_text('{"a": 1}\n{"a": 2\n')
    assert first_bad_json_line(path)[0] == 2
