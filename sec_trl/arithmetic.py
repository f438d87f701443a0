"""The generated arithmetic dataset: seeded, four difficulty levels, disjoint train / test questions.

The embedded default trains on it (`train.py` without `--dataset_name`): SmolLM2-135M-Instruct answers the easy
levels correctly some of the time at temperature 1, so RL has something to learn on a CPU in minutes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from datasets import Dataset, DatasetDict


PROMPT_COLUMN = "prompt"
ANSWER_COLUMN = "answer"
BOXED_INSTRUCTION = "Put your final answer within \\boxed{}."
"""Appended to arithmetic questions (and, by default, to plain-string user prompts lacking ``\\boxed``)."""


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
