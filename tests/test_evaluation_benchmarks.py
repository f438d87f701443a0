"""The paper's benchmark shortcuts and protocol: Hub mapping (id, config, split, columns), one pass of 32 samples,
Avg@8/16/32 and Pass@8/16/32 (first k samples) beside the unbiased estimator, the 18-cell means, the authors'
settings as defaults a flag overrides, the paper's rows for DeepSeek-R1-Distill-Qwen-1.5B and what differs.

The Hub is unreachable here, so each benchmark is a local stand-in laid out like its Hub repository (a README with
`configs:` metadata and one parquet file per split) under $SEC_TRL_TEST_BENCHMARK_DIR, the test seam that redirects a
Hub id to `<dir>/<hub id>`; loading still goes through `datasets.load_dataset(path, config, split=...)`."""

import json

import pytest
from datasets import Dataset
from test_evaluate import run_cli

from sec_trl.evaluation.benchmarks import BENCHMARK_DIR_ENV, BENCHMARKS, PAPER_BENCHMARKS, resolve_benchmark_names
from sec_trl.evaluation.metrics import mean_over_benchmarks
from sec_trl.evaluation.paper import BENCHMARK_TITLES, PAPER_INSTRUCTION, PAPER_MODEL, PAPER_TABLE_MEANS


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
    assert {item["k"] for item in sets.values()} == {32}  # the paper's protocol: one pass of 32 samples each
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
        assert BENCHMARK_TITLES[name] + " A@2" in result.stdout  # the paper's rows, at the k given
    # not the paper's base model: no paper rows; the settings the user changed are listed, nothing else
    assert (
        report["paper_model_relation"] is None
        and "paper_reference" not in report
        and "paper SENT" not in result.stdout
    )
    differs = {d["setting"]: (d["used"], d["paper"]) for d in report["protocol"]["differs_from_paper"]}
    assert differs == {"k": (2, 32), "max_new_tokens": (3, 8000)}
    assert report["protocol"]["ks"] == [2] and report["table_means"]["num_cells"] == 6
    assert "k: 2 (paper: 32)" in result.stdout and "max_new_tokens: 3 (paper: 8000)" in result.stdout


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


# --------------------------------------------------------------------------------------------------------------------
# the paper's protocol


def test_first_k_metrics_against_hand_computation():
    """Pass@k over the first k samples (the paper's) vs the unbiased estimator over all 32, on a hand-made matrix."""
    from math import comb

    from sec_trl.evaluation.metrics import first_k_metrics, summarise

    a = [i == 10 for i in range(32)]  # one correct sample, the 11th: none among the first 8
    b = [i < 4 for i in range(32)]  # four correct, the first four
    c = [False] * 32
    got = {j: first_k_metrics([a, b, c], j) for j in (8, 16, 32)}
    assert got[8]["pass@8"] == pytest.approx(1 / 3) and got[16]["pass@16"] == pytest.approx(2 / 3)
    assert got[32]["pass@32"] == pytest.approx(2 / 3)
    assert got[8]["avg@8"] == pytest.approx((0 + 4 / 8 + 0) / 3)
    assert got[16]["avg@16"] == pytest.approx((1 / 16 + 4 / 16) / 3)
    assert got[32]["avg@32"] == pytest.approx((1 / 32 + 4 / 32) / 3)
    for j in (8, 16, 32):  # 1 - C(n - c, j) / C(n, j), averaged over prompts
        hand = ((1 - comb(31, j) / comb(32, j)) + (1 - comb(28, j) / comb(32, j)) + 0) / 3
        assert got[j][f"pass@{j}_unbiased"] == pytest.approx(hand, abs=1e-12)
    assert got[8]["pass@8_unbiased"] == pytest.approx((8 / 32 + 1 - comb(28, 8) / comb(32, 8)) / 3)
    assert got[32]["pass@32_unbiased"] == got[32]["pass@32"]  # k = n: the two forms agree

    records = [{"correct": x, "lengths": [1] * 32, "truncated": [False] * 32} for x in (a, b, c)]
    summary = summarise(records, 32, (8, 16, 32))
    assert summary["pass@8"] == got[8]["pass@8"] and summary["pass@16_unbiased"] == got[16]["pass@16_unbiased"]
    assert summary["per_prompt_verdicts"][0] == "0" * 10 + "1" + "0" * 21


def test_table_means_are_the_mean_of_the_cells():
    from sec_trl.evaluation.metrics import table_means

    results = {
        "x": {
            "avg@8": 0.1,
            "avg@16": 0.2,
            "pass@8": 0.5,
            "pass@16": 0.6,
            "pass@8_unbiased": 0.4,
            "pass@16_unbiased": 0.6,
        },
        "y": {
            "avg@8": 0.3,
            "avg@16": 0.4,
            "pass@8": 0.7,
            "pass@16": 1.0,
            "pass@8_unbiased": 0.8,
            "pass@16_unbiased": 1.0,
        },
    }
    means = table_means(results, [8, 16])
    assert means["num_cells"] == 4 and means["avg@k"] == pytest.approx(0.25) and means["pass@k"] == pytest.approx(0.7)
    assert means["pass@k_unbiased"] == pytest.approx(0.7) and means["by_k"]["8"]["pass"] == pytest.approx(0.6)


def test_the_paper_rows_as_data_reproduce_its_printed_means():
    """The transcription: each table's 18 cells average to the paper's printed "Avg." (to its rounding)."""
    from sec_trl.evaluation.paper import PAPER_KS, PAPER_RESULTS

    for method, table in PAPER_RESULTS.items():
        for name, printed in zip(("avg", "pass"), PAPER_TABLE_MEANS[method], strict=True):
            cells = [table[name][b][k] for b in PAPER_BENCHMARKS for k in PAPER_KS]
            assert len(cells) == 18 and sum(cells) / 18 == pytest.approx(printed, abs=0.006), (method, name)
        # AIME pass values are multiples of 1/30 and AMC ones of 1/40: computed from the k samples themselves
        for k in PAPER_KS:
            assert round(table["pass"]["aime24"][k] * 30 / 100, 1) % 1 == 0
            assert round(table["pass"]["amc23"][k] * 40 / 100, 1) % 1 == 0


def _card_folder(tmp_path, name, base_model):
    """A folder with the README that sec_trl's model card writes for a run trained from ``base_model``."""
    from helpers.trainer import make_config

    from sec_trl.model_card import render_model_card

    folder = tmp_path / name
    render_model_card(
        output_dir=folder, args=make_config(tmp_path), log_history=[], base_model=base_model, dataset_name=None,
        hub_model_id=None,
    )  # fmt: skip
    return folder


def test_paper_relation_reads_the_base_model_the_trained_model_records(tmp_path):
    from sec_trl.evaluation.paper import paper_relation

    assert paper_relation(PAPER_MODEL) == "base" and paper_relation(PAPER_MODEL.lower()) == "base"
    (tmp_path / "DeepSeek-R1-Distill-Qwen-1.5B").mkdir()
    assert paper_relation(str(tmp_path / "DeepSeek-R1-Distill-Qwen-1.5B")) == "base"  # a local copy, by its name
    trained = _card_folder(tmp_path, "run1", PAPER_MODEL)
    assert paper_relation(str(trained)) == "trained from base"
    (trained / "checkpoint-5").mkdir()
    (trained / "merged").mkdir()
    assert paper_relation(str(trained / "checkpoint-5")) == "trained from base"  # the card is in the run's folder
    assert paper_relation(str(trained / "merged")) == "trained from base"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": PAPER_MODEL}))
    assert paper_relation(str(adapter)) == "trained from base"
    other = _card_folder(tmp_path, "run2", "Qwen/Qwen2.5-0.5B-Instruct")
    assert paper_relation(str(other)) is None
    assert paper_relation("Qwen/Qwen2.5-Math-1.5B") is None and paper_relation(None) is None


def test_protocol_defaults_are_the_authors_and_a_flag_given_wins(tmp_path):
    from sec_trl.evaluation.cli import EvalArguments, given_flags, resolve_settings
    from sec_trl.script_args import DatasetArguments

    ev, data, protocol = resolve_settings(EvalArguments(benchmarks=["paper"]), DatasetArguments(), given=set())
    assert (ev.temperature, ev.top_p, ev.max_new_tokens, ev.answer_extraction) == (1.0, 1.0, 8000, "paper")
    assert data.answer_instruction == PAPER_INSTRUCTION and protocol["ks"] == [8, 16, 32]
    assert protocol["differs_from_paper"] == []

    # the training default instruction, given explicitly, is kept (a flag the user gives wins), and listed
    argv = ["--benchmarks", "aime24", "amc23", "--temperature", "0.6", "--answer_instruction",
            "Put your final answer within \\boxed{}.", "--config", str(tmp_path / "eval.yaml")]  # fmt: skip
    (tmp_path / "eval.yaml").write_text("top_p: 0.95\nanswer_extraction: default\n")
    given = given_flags(argv)
    assert {"benchmarks", "temperature", "answer_instruction", "top_p", "answer_extraction"} <= given
    ev = EvalArguments(benchmarks=["aime24", "amc23"], temperature=0.6, top_p=0.95, answer_extraction="default", k=64)
    ev, data, protocol = resolve_settings(ev, DatasetArguments(system_prompt="Be brief."), given=given)
    assert data.answer_instruction == "Put your final answer within \\boxed{}." and ev.max_new_tokens == 8000
    differs = {d["setting"]: d["used"] for d in protocol["differs_from_paper"]}
    assert differs == {
        "k": 64, "temperature": 0.6, "top_p": 0.95, "answer_instruction": "Put your final answer within \\boxed{}.",
        "system_prompt": "Be brief.", "answer_extraction": "default", "benchmarks": ["aime24", "amc23"],
    }  # fmt: skip
    assert protocol["ks"] == [8, 16, 32, 64]

    # outside the protocol: this project's defaults
    ev, data, protocol = resolve_settings(EvalArguments(), DatasetArguments(), given=set())
    assert protocol is None and (ev.max_new_tokens, ev.answer_extraction) == (512, "default")
    assert data.answer_instruction != PAPER_INSTRUCTION


def test_cli_paper_protocol_on_the_paper_base_model(standins, tiny_model_dir, tmp_path):
    """`--benchmarks paper` without --k, as a user runs it (subprocess, Hub-layout stand-ins through
    datasets.load_dataset): 32 samples per prompt, the paper's tables, its rows beside ours for its base model."""
    import shutil

    model = tmp_path / "DeepSeek-R1-Distill-Qwen-1.5B"  # the tiny model, standing in for a local copy of the base
    shutil.copytree(tiny_model_dir, model)
    args = ["--model_name_or_path", str(model), "--benchmarks", "paper", "--num_prompts", "2", "--max_new_tokens", "2"]
    args += ["--batch_size", "2", "--output_dir", "out"]
    result = run_cli(args, tmp_path, env_extra={BENCHMARK_DIR_ENV: str(standins)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    protocol = report["protocol"]
    assert protocol["ks"] == [8, 16, 32] and protocol["settings"]["answer_instruction"] == PAPER_INSTRUCTION
    assert (protocol["settings"]["temperature"], protocol["settings"]["top_p"]) == (1.0, 1.0)
    assert {d["setting"]: d["used"] for d in protocol["differs_from_paper"]} == {"max_new_tokens": 2, "num_prompts": 2}
    assert list(report["results"]) == list(PAPER_BENCHMARKS)
    cells = []
    for r in report["results"].values():
        assert r["k"] == 32 and r["num_prompts"] == 2
        verdicts = [[c == "1" for c in row] for row in r["per_prompt_verdicts"]]
        assert all(len(v) == 32 for v in verdicts)
        for j in (8, 16, 32):  # recomputed from the saved verdicts, in sampling order
            assert r[f"pass@{j}"] == pytest.approx(sum(any(v[:j]) for v in verdicts) / 2)
            assert r[f"avg@{j}"] == pytest.approx(sum(sum(v[:j]) / j for v in verdicts) / 2)
            cells.append((r[f"avg@{j}"], r[f"pass@{j}"]))
    means = report["table_means"]
    assert means["num_cells"] == 18
    assert means["avg@k"] == pytest.approx(sum(a for a, _ in cells) / 18)
    assert means["pass@k"] == pytest.approx(sum(p for _, p in cells) / 18)
    assert report["paper_model_relation"] == "base"
    rows = report["paper_reference"]["rows"]
    assert set(rows) == {"base", "grpo", "sent"}
    assert rows["sent"]["results"]["aime24"]["pass@32"] == pytest.approx(0.7667)
    assert rows["base"]["printed_avg"] == {"avg@k": pytest.approx(0.3775), "pass@k": pytest.approx(0.5761)}
    out = result.stdout
    assert "paper base" in out and "paper GRPO" in out and "paper SENT" in out and "Avg. (18 cells)" in out
    assert "AIME24 P@32" in out and "76.67" in out  # SENT's AIME24 Pass@32, beside ours
    assert "   37.75" in out and "   68.57" in out  # the paper's 18-cell means (base Avg@k, SENT Pass@k)
    assert "max_new_tokens: 2 (paper: 8000)" in out and "num_prompts: 2" in out
    assert "The paper's protocol: 12 prompts x 32 samples" in result.stderr


def test_paper_answer_extraction_box_else_the_answer_is_sentence():
    """The authors' extraction: the last box, else the sentence containing "answer is"; no "answer:" marker and no
    last-number fallback (the training reward's extraction keeps both). Bounded and never evaluated."""
    import time

    from sec_trl.answer_extraction import MAX_TAIL_CHARS, extract_final_answer, extract_paper_answer
    from sec_trl.evaluation.runner import score_groups
    from sec_trl.generation.samplers import Sample as Completion

    assert extract_paper_answer("First \\boxed{1}, then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_paper_answer("So the final answer is $12$. Thanks.") == "12"
    assert extract_paper_answer("The answer is 3. Wait, the answer is 4.") == "4"
    for text in ("Answer: 7", "... so 3 + 4 = 7", "I do not know", "", None):
        assert extract_paper_answer(text) is None, text
    assert extract_final_answer("Answer: 7") == "7" and extract_final_answer("... so 3 + 4 = 7") == "7"
    huge = "the answer is 9^{9^{9^{9}}}" + "x" * (100 * MAX_TAIL_CHARS) + " the answer is " + "{" * 1000
    start = time.perf_counter()
    assert extract_paper_answer(huge) == "{" * 1000  # only the tail is read; the checker rejects the nesting
    assert time.perf_counter() - start < 1.0

    texts = ["\\boxed{7}", "The answer is 7.", "Answer: 7", "3 + 4 = 7", huge]
    groups = [[Completion(t, 3, False) for t in texts]]
    paper = score_groups(groups, ["7"], answer_extraction="paper")[0]["correct"]
    default = score_groups(groups, ["7"], answer_extraction="default")[0]["correct"]
    assert paper == [True, True, False, False, False] and default == [True, True, True, True, False]
    with pytest.raises(ValueError, match="--answer_extraction must be one of"):
        score_groups(groups, ["7"], answer_extraction="lenient")
