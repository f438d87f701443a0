"""The paper's six benchmarks as Hub datasets, and loading any evaluation set with the shared prompt format.

Each shortcut maps to a public Hub dataset (id, config, split, prompt column, answer column). Where each mapping comes
from:

- ``math500``: ``HuggingFaceH4/MATH-500``, split ``test``, ``problem`` / ``answer`` -- lighteval
  ``src/lighteval/tasks/tasks/math_500.py`` (huggingface/lighteval), the open-r1 evaluation suite.
- ``aime24``: ``HuggingFaceH4/aime_2024``, split ``train``, ``problem`` / ``answer`` -- lighteval
  ``src/lighteval/tasks/tasks/aime.py`` (task ``aime24``).
- ``aime25``: ``yentinglin/aime_2025``, split ``train``, ``problem`` / ``answer`` -- lighteval
  ``src/lighteval/tasks/tasks/aime.py`` (task ``aime25``).
- ``amc23``: ``math-ai/amc23``, split ``test``, ``question`` / ``answer`` -- the 40 AMC 2023 problems as loaded by
  public RL evaluation code (e.g. MikaStars39/Nano-Eval ``nanoeval/tasks/amc2023.py`` reads the same split and
  columns); lighteval has no amc23 task.
- ``olympiadbench``: ``Hothan/OlympiadBench``, config ``OE_TO_maths_en_COMP``, split ``train``, ``question`` /
  ``final_answer`` (a list of strings, joined with ", ") -- lighteval
  ``src/lighteval/tasks/tasks/olympiade_bench/main.py`` (open-ended, text-only, English maths competition subset).
- ``minerva``: ``math-ai/minervamath``, split ``test``, ``question`` / ``answer`` -- the verl data-preprocessing
  example ``examples/data_preprocess/math/eval_math_minerva-math.py`` (yuki-younai/verl-alignment, a verl fork).

The paper's protocol (:mod:`sec_trl.evaluation.paper`; ``--benchmarks`` without ``--k``): every benchmark is
sampled once with 32 completions per prompt, and Avg@k / Pass@k are reported for k = 8, 16 and 32 over the first k
of them -- the SENT paper's Tables II and I (its pass values, multiples of 1/30 on AIME and 1/40 on AMC, come from the
k samples themselves) -- with the unbiased pass@k estimator over all 32 beside them, and each table's "Avg.", the
mean of its 18 (benchmark, k) cells. Defaults are the authors' evaluation settings (their OpenCompass configs):
temperature 1.0, top_p 1.0, 8000 new tokens, "Please reason step by step, and put your final answer within
\\boxed{}." after each problem, the answer read from the last box, else the "answer is" sentence
(``--answer_extraction paper``); every flag given overrides its default and the report lists what differs from the
paper. What still differs whatever the flags: the instruction follows a blank line (theirs: one newline), answers
are compared by math-verify (theirs: OpenCompass's MATHEvaluator v2), and the data are the Hub datasets above (theirs:
OpenCompass's copies; the paper's OlympiadBench values are multiples of 1/675, its Minerva ones of 1/272 -- the
row counts of the Hub copies were not checked here, the Hub being unreachable). The full protocol is about 1,550
prompts (30 + 30 + 40 + 500 + ~675 + 272) x 32, some 49,000 completions of up to 8,000 tokens: a GPU job
(``--use_vllm true``), not a CPU one.

Test seam: the environment variable :data:`BENCHMARK_DIR_ENV` (``SEC_TRL_TEST_BENCHMARK_DIR``) names a directory
holding local stand-ins laid out like the Hub (``<dir>/<hub id>/``, e.g. ``<dir>/HuggingFaceH4/MATH-500``). When it
is set, a benchmark whose stand-in exists there is loaded from it, through the same ``datasets.load_dataset`` call
(same config and split) the Hub id would get. It exists for tests (the Hub is unreachable in CI); users never need it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path


logger = logging.getLogger(__name__)

BENCHMARK_DIR_ENV = "SEC_TRL_TEST_BENCHMARK_DIR"
"""Test seam: a directory of Hub-layout stand-ins (``<dir>/<hub id>``) that benchmark ids resolve to when present."""


@dataclass(frozen=True)
class Benchmark:
    """A benchmark on the Hub: what ``datasets.load_dataset(hub_id, config, split=split)`` returns, and which
    columns hold the problem and the reference answer."""

    hub_id: str
    split: str
    prompt_column: str
    answer_column: str
    config: str | None = None


BENCHMARKS: dict[str, Benchmark] = {
    "aime24": Benchmark("HuggingFaceH4/aime_2024", "train", "problem", "answer"),
    "aime25": Benchmark("yentinglin/aime_2025", "train", "problem", "answer"),
    "amc23": Benchmark("math-ai/amc23", "test", "question", "answer"),
    "math500": Benchmark("HuggingFaceH4/MATH-500", "test", "problem", "answer"),
    "olympiadbench": Benchmark(
        "Hothan/OlympiadBench", "train", "question", "final_answer", config="OE_TO_maths_en_COMP"
    ),
    "minerva": Benchmark("math-ai/minervamath", "test", "question", "answer"),
}
PAPER_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva")
"""The six benchmarks of the SENT paper, in its table order; ``--benchmarks paper`` selects them all."""


def resolve_benchmark_names(names) -> list[str]:
    """``--benchmarks`` as a list of known names (``paper`` expands to all six), duplicates removed, order kept."""
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        expanded = PAPER_BENCHMARKS if key == "paper" else (key,)
        for item in expanded:
            if item not in BENCHMARKS:
                raise ValueError(
                    f"Unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} (or 'paper' for all six). For any "
                    "other dataset use --dataset_name with --dataset_test_split / --dataset_prompt_column / "
                    "--dataset_answer_column."
                )
            if item not in out:
                out.append(item)
    return out


def benchmark_source(bench: Benchmark) -> str:
    """Where ``bench`` is loaded from: its Hub id, or its stand-in under $SEC_TRL_TEST_BENCHMARK_DIR (test seam)."""
    root = os.environ.get(BENCHMARK_DIR_ENV)
    if root:
        local = Path(root) / bench.hub_id
        if local.is_dir():
            return str(local)
    return bench.hub_id


def _join_list_answers(dataset, column: str):
    """OlympiadBench stores the final answer as a list of strings; the checker wants one string ("a, b")."""
    feature = dataset.features[column]
    if type(feature).__name__ not in ("List", "Sequence", "LargeList"):
        return dataset
    from datasets import Value

    features = dataset.features.copy()
    features[column] = Value("string")

    def join(row):
        value = row[column]
        return {column: None if not value else ", ".join(str(v).strip() for v in value)}

    return dataset.map(join, features=features, desc=f"Joining list answers in {column!r}")


def load_benchmark(name: str, prompt_format=None, num_prompts: int | None = None):
    """The benchmark ``name`` (a key of :data:`BENCHMARKS`), validated, with a ``prompt`` column formatted by
    ``prompt_format`` (a :class:`sec_trl.data.PromptFormat`; default: the training default) and its answer column."""
    from sec_trl.data import load_raw_dataset, validate_prompt_dataset

    bench = BENCHMARKS[name]
    raw = load_raw_dataset(benchmark_source(bench), split=bench.split, config=bench.config)
    if bench.answer_column in raw.column_names:
        raw = _join_list_answers(raw, bench.answer_column)
    dataset = validate_prompt_dataset(
        raw, bench.prompt_column, bench.answer_column, source=name, prompt_format=prompt_format
    )
    return first_prompts(drop_missing_gold(dataset, bench.answer_column, name), num_prompts)


def drop_missing_gold(dataset, answer_column: str, shown: str):
    """The rows that have a reference answer (a prompt without one cannot be scored), with a warning if any went."""
    keep = [i for i, a in enumerate(dataset[answer_column]) if a is not None]
    if len(keep) < len(dataset):
        logger.warning(
            "%s: %d of %d prompts have no reference answer; not evaluated.",
            shown,
            len(dataset) - len(keep),
            len(dataset),
        )
        dataset = dataset.select(keep)
    return dataset


def first_prompts(dataset, num_prompts: int | None):
    """The first ``num_prompts`` rows (all when None)."""
    if num_prompts is None:
        return dataset
    if num_prompts < 1:
        raise ValueError(f"--num_prompts must be >= 1, got {num_prompts}")
    return dataset.select(range(min(num_prompts, len(dataset))))
