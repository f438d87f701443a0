"""The paper's benchmark shortcuts: Hub mapping (id, config, split, columns), per-benchmark default k, the mean over
benchmarks. The Hub is unreachable here, so each benchmark is a local stand-in laid out like its Hub repository (a
README with `configs:` metadata and one parquet file per split) under $SEC_TRL_TEST_BENCHMARK_DIR, the test seam that
redirects a Hub id to `<dir>/<hub id>`; loading still goes through `datasets.load_dataset(path, config, split=...)`."""

import json

import pytest
from datasets import Dataset
from test_evaluate import run_cli

from sec_trl.evaluation.benchmarks import BENCHMARK_DIR_ENV, BENCHMARKS, PAPER_BENCHMARKS, resolve_benchmark_names
from sec_trl.evaluation.metrics import mean_over_benchmarks


def write_standin(root, hub_id, configs):
    """`<root>/<hub_id>`: a Hub-style dataset repo. configs: {config name: {split: [rows]}}."""
    repo = root / hub_id
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            (repo / config).mkdir(parents=True, exist_ok=True)
            Dataset.from_list(rows).to_parquet(str(repo / config / f"{split}-00000-of-00001.parquet"))
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
    (repo / "README.md").write_text("\n".join([*lines, "---", f"stand-in of {hub_id}, not the real dataset", ""]))


def rows(prompt_column, answer_column, n, tag, answer=lambda i: str(i + 2)):
    return [
        {prompt_column: f"[{tag}] What is {i} + 2?", answer_column: answer(i), "id": f"{tag}-{i}"} for i in range(n)
    ]


# (benchmark, rows in the mapped config/split) -- every stand-in also holds decoy rows in another split or config
EXPECTED_SIZES = {"aime24": 3, "aime25": 2, "amc23": 2, "math500": 4, "olympiadbench": 2, "minerva": 3}


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-standins")
    for name, bench in BENCHMARKS.items():
        p, a, n = bench.prompt_column, bench.answer_column, EXPECTED_SIZES[name]
        decoy_split = "test" if bench.split == "train" else "train"
        if name == "olympiadbench":  # final_answer is a list of strings on the Hub
            good = rows(p, a, n, name, answer=lambda i: [f"${i + 2}$"])
            configs = {
                bench.config: {bench.split: good},
                "OE_TO_physics_en_COMP": {bench.split: rows(p, a, 5, "x", answer=lambda i: ["1"])},
            }
        else:
            answer = (
                (lambda i: float(i + 2)) if name == "amc23" else (lambda i: str(i + 2))
            )  # amc23 answers are floats
            configs = {
                "default": {bench.split: rows(p, a, n, name, answer), decoy_split: rows(p, a, 7, "decoy", answer)}
            }
        write_standin(root, bench.hub_id, configs)
    return root


def test_load_eval_sets_maps_each_benchmark_to_its_config_split_and_columns(standins, monkeypatch):
    from sec_trl.evaluation.cli import EvalArguments, load_eval_sets
    from sec_trl.script_args import DatasetArguments

    monkeypatch.setenv(BENCHMARK_DIR_ENV, str(standins))
    sets = load_eval_sets(EvalArguments(benchmarks=["paper"]), DatasetArguments())
    assert list(sets) == list(PAPER_BENCHMARKS)
    for name, item in sets.items():
        assert len(item["prompts"]) == EXPECTED_SIZES[name], name
        assert all(f"[{name}]" in p[-1]["content"] for p in item["prompts"]), name  # not the decoy split/config
        assert item["prompts"][0][-1]["content"].endswith("Put your final answer within \\boxed{}.")  # as in training
        assert item["source"]["dataset_name"] == BENCHMARKS[name].hub_id  # the Hub id, never the local stand-in path
    assert sets["olympiadbench"]["references"][:2] == ["$2$", "$3$"]  # list answer joined
    assert sets["amc23"]["references"][:2] == ["2", "3"]  # float 2.0 -> "2"
    assert {name: item["k"] for name, item in sets.items()} == {
        "aime24": 32, "aime25": 32, "amc23": 32, "math500": 4, "olympiadbench": 4, "minerva": 4
    }  # fmt: skip
    assert {
        item["k"] for item in load_eval_sets(EvalArguments(benchmarks=["paper"], k=2), DatasetArguments()).values()
    } == {2}


def test_cli_paper_benchmarks_report_each_and_their_unweighted_mean(standins, tiny_model_dir, tmp_path):
    args = ["--model_name_or_path", tiny_model_dir, "--benchmarks", "paper", "--k", "2", "--max_new_tokens", "3"]
    result = run_cli([*args, "--output_dir", "out"], tmp_path, env_extra={BENCHMARK_DIR_ENV: str(standins)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert list(report["results"]) == list(PAPER_BENCHMARKS)
    for name, r in report["results"].items():
        assert r["num_prompts"] == EXPECTED_SIZES[name] and r["k"] == 2
        assert r["split"] == BENCHMARKS[name].split and r["dataset_config"] == BENCHMARKS[name].config
    assert report["mean"]["avg@k"] == pytest.approx(sum(r["avg@2"] for r in report["results"].values()) / 6)
    assert report["mean"]["pass@k"] == pytest.approx(sum(r["pass@2"] for r in report["results"].values()) / 6)
    assert str(standins) not in json.dumps(report)
    for name in PAPER_BENCHMARKS:
        assert name in result.stdout  # one table row each


def test_without_the_seam_a_benchmark_is_the_hub_dataset(tmp_path):
    """No stand-in: the real Hub id goes to datasets.load_dataset, which fails offline naming the dataset."""
    result = run_cli(["--benchmarks", "aime25"], tmp_path, env_extra={BENCHMARK_DIR_ENV: str(tmp_path)}, timeout=120)
    assert result.returncode != 0
    assert "yentinglin/aime_2025" in result.stderr and "split='train'" in result.stderr


def test_resolve_benchmark_names():
    assert resolve_benchmark_names(["paper"]) == list(PAPER_BENCHMARKS)
    assert resolve_benchmark_names(["MATH500", "aime24", "paper"])[:2] == ["math500", "aime24"]
    assert len(resolve_benchmark_names(["aime24", "paper"])) == 6
    with pytest.raises(ValueError, match="known: aime24"):
        resolve_benchmark_names(["aime2024"])


def test_mean_over_benchmarks_is_unweighted():
    results = {
        "small": {"k": 32, "avg@32": 0.1, "pass@32": 0.5, "num_prompts": 30},
        "large": {"k": 4, "avg@4": 0.7, "pass@4": 0.9, "num_prompts": 500},
    }
    mean = mean_over_benchmarks(results)
    assert mean["avg@k"] == pytest.approx(0.4) and mean["pass@k"] == pytest.approx(0.7)
    assert mean["k"] == {"small": 32, "large": 4}


def test_joined_olympiadbench_answers_are_checkable():
    """OlympiadBench's list answers become one string the answer checker matches against a boxed answer."""
    from datasets import Dataset

    from sec_trl.answer_checking import AnswerChecker
    from sec_trl.evaluation.benchmarks import _join_list_answers

    ds = _join_list_answers(Dataset.from_dict({"final_answer": [["$2$", "$3$"], ["$\\frac{1}{2}$"]]}), "final_answer")
    assert ds["final_answer"] == ["$2$, $3$", "$\\frac{1}{2}$"]
    with AnswerChecker(timeout=5) as checker:
        verdicts = checker.check_batch(["\\boxed{2, 3}", "\\boxed{0.5}", "\\boxed{3}"], [*ds["final_answer"], "$2$"])
    assert verdicts == [True, True, False]
