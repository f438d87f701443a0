"""The SENT paper's evaluation protocol, and its published numbers for DeepSeek-R1-Distill-Qwen-1.5B as data.

The paper (Cao et al., arXiv 2512.04359) reports, for AIME24, AIME25, AMC23, MATH500, OlympiadBench and Minerva,
Avg@8 / Avg@16 / Avg@32 (Table II: mean accuracy over the k samples) and Pass@8 / Pass@16 / Pass@32 (Table I: the
fraction of problems with at least one correct sample among the k), and an "Avg." per table: the mean of its 18
cells. Its pass values are multiples of 1/30 on AIME and 1/40 on AMC, so they come from the k samples themselves
(one run of k samples per k), not from the unbiased estimator over more samples.

``python -m sec_trl.evaluate --benchmarks paper`` (without ``--k``) follows that protocol in one pass: 32 samples per
prompt, Avg@k and Pass@k over the first k of them for k = 8, 16, 32 (what separate runs of k samples estimate), the
unbiased estimator of pass@k over all 32 beside it (lower variance, same expectation), and the 18-cell means.

The authors' evaluation settings (their OpenCompass configs in the code release, zldscr0/SENT ``eval/opencompass``):
temperature 1.0, top_p 1.0, at most 8,000 new tokens, the user message ``{problem}\\nPlease reason step by step, and
put your final answer within \\boxed{}.``, the answer taken from the last ``\\boxed{}``, else from the sentence
containing "answer is". :data:`PAPER_SETTINGS` holds them; they are the protocol's defaults and every flag the user
gives wins (the report lists each setting that differs from the paper's). Differences that no flag removes are listed
in :data:`FIXED_DIFFERENCES`.

:data:`PAPER_RESULTS` holds the paper's Base, GRPO and SENT columns of both tables for DeepSeek-R1-Distill-Qwen-1.5B
(transcribed from the tables the authors publish with their code), in percent as printed; the report shows them
beside the user's numbers when the evaluated model is that model or records it as its base model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


PAPER_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
"""The base model of the paper's tables (Hub id)."""

PAPER_KS = (8, 16, 32)
"""The k of the paper's columns; one pass samples ``max(PAPER_KS)`` completions per prompt."""

PAPER_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""The authors' instruction, appended to every problem."""

PAPER_SETTINGS = {
    "k": max(PAPER_KS),
    "temperature": 1.0,
    "top_p": 1.0,
    "max_new_tokens": 8000,
    "answer_instruction": PAPER_INSTRUCTION,
    "system_prompt": None,
    "answer_extraction": "paper",
}
"""The authors' evaluation settings: the defaults of ``--benchmarks`` without ``--k`` (each flag overrides one)."""

FIXED_DIFFERENCES = (
    "the instruction follows the problem after a blank line (the authors: one newline)",
    "answers are checked with math-verify (time-bounded), the authors with OpenCompass's MATHEvaluator v2",
    "the benchmarks are the Hub datasets of sec_trl/evaluation/benchmarks.py, not OpenCompass's copies",
)
"""What differs from the authors' evaluation whatever the flags (reported with every protocol run)."""

BENCHMARK_TITLES = {
    "aime24": "AIME24",
    "aime25": "AIME25",
    "amc23": "AMC23",
    "math500": "MATH500",
    "olympiadbench": "OlympiadBench",
    "minerva": "Minerva",
}


def _rows(text: str) -> dict[str, dict[int, tuple[float, float, float]]]:
    """``{benchmark: {k: (base, grpo, sent)}}`` from lines ``name k base grpo sent``."""
    out: dict[str, dict[int, tuple[float, float, float]]] = {}
    for line in text.strip().splitlines():
        name, k, *values = line.split()
        out.setdefault(name, {})[int(k)] = tuple(float(v) for v in values)
    return out


# Table I (Pass@k) and Table II (Avg@k), columns Base, GRPO and w/SENT, DeepSeek-R1-Distill-Qwen-1.5B, in percent.
_PASS = _rows(
    """
    aime24 8 40.00 40.00 63.33
    aime24 16 43.33 50.00 70.00
    aime24 32 43.33 56.67 76.67
    aime25 8 26.67 33.33 40.00
    aime25 16 33.33 40.00 43.33
    aime25 32 30.00 43.33 46.67
    amc23 8 80.00 87.50 92.50
    amc23 16 87.50 95.00 95.00
    amc23 32 92.50 95.00 97.50
    math500 8 90.00 91.60 93.00
    math500 16 92.40 94.00 93.80
    math500 32 93.20 95.00 95.20
    olympiadbench 8 52.89 54.96 63.26
    olympiadbench 16 58.52 59.41 67.26
    olympiadbench 32 61.19 64.30 70.22
    minerva 8 33.82 32.72 37.50
    minerva 16 36.76 36.03 42.65
    minerva 32 41.54 39.71 46.32
    """
)
_AVG = _rows(
    """
    aime24 8 18.33 14.17 27.92
    aime24 16 18.96 16.46 25.21
    aime24 32 18.54 15.63 26.56
    aime25 8 19.17 15.83 21.25
    aime25 16 19.17 15.63 21.46
    aime25 32 17.71 13.75 20.10
    amc23 8 57.81 56.25 71.56
    amc23 16 57.03 60.47 70.16
    amc23 32 57.58 58.12 70.00
    math500 8 77.17 73.88 81.48
    math500 16 77.26 73.47 81.74
    math500 32 76.54 73.78 81.22
    olympiadbench 8 35.65 29.48 42.85
    olympiadbench 16 36.59 29.43 42.99
    olympiadbench 32 36.51 29.60 42.95
    minerva 8 18.38 17.65 21.90
    minerva 16 18.22 16.93 21.25
    minerva 32 18.89 16.97 21.53
    """
)
_METHODS = ("base", "grpo", "sent")
PAPER_RESULTS: dict[str, dict] = {
    method: {
        "label": {"base": "paper base", "grpo": "paper GRPO", "sent": "paper SENT"}[method],
        "avg": {b: {k: v[i] for k, v in ks.items()} for b, ks in _AVG.items()},
        "pass": {b: {k: v[i] for k, v in ks.items()} for b, ks in _PASS.items()},
    }
    for i, method in enumerate(_METHODS)
}
"""``{method: {"label", "avg": {benchmark: {k: percent}}, "pass": {...}}}`` for base, grpo and sent."""

PAPER_TABLE_MEANS = {"base": (37.75, 57.61), "grpo": (34.86, 61.59), "sent": (44.01, 68.57)}
"""The paper's printed "Avg." of Table II (Avg@k) and Table I (Pass@k): the mean of each table's 18 cells."""


# --------------------------------------------------------------------------------------------------------------------
# is the evaluated model the paper's base model, or trained from it?


def _same_model(name: str | None) -> bool:
    """``name`` is the paper's base model: its Hub id (any case), or a local folder of that name."""
    if not name:
        return False
    text = str(name).strip().rstrip("/\\")
    if text.lower() == PAPER_MODEL.lower():
        return True
    return Path(text).name.lower() == PAPER_MODEL.split("/")[1].lower()


def _card_base_models(readme: Path) -> list[str]:
    """The ``base_model`` entries of a model card's metadata (what sec_trl's and TRL's cards write)."""
    try:
        from huggingface_hub import metadata_load

        value = (metadata_load(readme) or {}).get("base_model")
    except Exception:  # an unreadable card records nothing
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value]) if v]


def _adapter_base_model(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None


def _hub_files(repo_id: str) -> list[Path]:
    """The Hub model's README.md and adapter_config.json, from the local cache or downloaded (best effort: a
    missing file, no network or an unknown repo gives fewer or none)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return []
    files = []
    for filename in ("README.md", "adapter_config.json"):
        try:
            files.append(Path(hf_hub_download(repo_id, filename)))
        except Exception:  # offline, gated, absent: the model records nothing we can read
            continue
    return files


def recorded_base_models(model_name_or_path: str | os.PathLike) -> list[str]:
    """What a model records as its base model: ``README.md``'s ``base_model`` metadata (sec_trl's card,
    :func:`sec_trl.model_card.render_model_card`, and TRL's) and ``adapter_config.json``'s
    ``base_model_name_or_path``. A local folder is read directly (for ``<output_dir>/merged`` and
    ``<output_dir>/checkpoint-N``, ``<output_dir>``'s files too: train.py writes the card there); a Hub id's two
    files are read from the cache or downloaded, best effort."""
    text = str(model_name_or_path)
    if os.path.isdir(text):
        folder = Path(text)
        folders = [folder]
        if folder.name == "merged" or folder.name.startswith("checkpoint-"):
            folders.append(folder.parent)
        files = [f / name for f in folders for name in ("README.md", "adapter_config.json")]
    elif text.count("/") == 1 and not text.startswith((".", "/", "~")):
        files = _hub_files(text)
    else:
        files = []
    found: list[str] = []
    for path in files:
        if not path.is_file():
            continue
        if path.name == "README.md":
            found += _card_base_models(path)
        else:
            adapter = _adapter_base_model(path)
            if adapter:
                found.append(str(adapter))
    return found


def paper_relation(model_name_or_path: str | None) -> str | None:
    """``"trained from base"`` when the model records DeepSeek-R1-Distill-Qwen-1.5B as its base model (see
    :func:`recorded_base_models`), ``"base"`` when it is that model itself (its Hub id, or a local folder of that
    name), else None."""
    if model_name_or_path is None:
        return None
    if any(_same_model(b) for b in recorded_base_models(model_name_or_path)):
        return "trained from base"
    if _same_model(model_name_or_path):
        return "base"
    return None


def paper_reference(benchmarks: list[str]) -> dict:
    """The paper's rows for ``benchmarks`` as fractions (as the report's own numbers), with its printed means."""
    rows = {}
    for method, table in PAPER_RESULTS.items():
        rows[method] = {
            "label": table["label"],
            "results": {
                b: {
                    **{f"avg@{k}": round(table["avg"][b][k] / 100, 6) for k in PAPER_KS},
                    **{f"pass@{k}": round(table["pass"][b][k] / 100, 6) for k in PAPER_KS},
                }
                for b in benchmarks
                if b in table["avg"]
            },
            "printed_avg": {
                "avg@k": PAPER_TABLE_MEANS[method][0] / 100,
                "pass@k": PAPER_TABLE_MEANS[method][1] / 100,
            },
        }
    return {"model": PAPER_MODEL, "source": "Cao et al., arXiv 2512.04359, Tables I and II", "rows": rows}


# --------------------------------------------------------------------------------------------------------------------
# which settings differ from the paper's


def settings_differences(used: dict, benchmarks: list[str], num_prompts: int | None) -> list[dict]:
    """``[{"setting", "paper", "used"}]`` for every setting in :data:`PAPER_SETTINGS` whose value in ``used``
    differs, plus the benchmark subset and ``--num_prompts`` when they do not cover the paper's six in full."""
    from .benchmarks import PAPER_BENCHMARKS

    out = [
        {"setting": key, "paper": paper, "used": used.get(key)}
        for key, paper in PAPER_SETTINGS.items()
        if used.get(key) != paper
    ]
    if list(benchmarks) != list(PAPER_BENCHMARKS):
        out.append({"setting": "benchmarks", "paper": list(PAPER_BENCHMARKS), "used": list(benchmarks)})
    if num_prompts is not None:
        out.append({"setting": "num_prompts", "paper": None, "used": num_prompts})
    return out
