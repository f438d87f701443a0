"""benchmarks/study.py: the helpers on hand-made logs, and the script end to end with --quick (so it cannot rot).

The default-suite test runs `--quick --model <tiny fixture model>` (2 methods incl. the curriculum, 2 steps; ~1 min
on 2 shared cores). The `slow` test runs `--quick` on the embedded SmolLM2-135M-Instruct, as a user would
(2 min on 2 free cores, several times that when the machine is shared).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest


STUDY = Path(__file__).resolve().parent.parent / "benchmarks" / "study.py"
sys.path.insert(0, str(STUDY.parent))

import study  # noqa: E402


def test_every_method_keeps_the_kl_term_active_and_logs_semantic_entropy():
    assert set(study.METHODS) == {
        "grpo", "entropy_bonus", "80_20", "clip_cov", "kl_cov", "sent_token", "se_curriculum", "sent_full"
    }  # fmt: skip
    for flags in study.METHODS.values():
        assert "--token_regularizer" in flags
    assert "--curriculum" in study.METHODS["sent_full"] and "--curriculum" in study.METHODS["se_curriculum"]
    assert study.STEPS_PER_GENERATION == 2  # > gradient_accumulation_steps 1 of the recipe


def test_train_prompts_cover_the_run_and_both_stages():
    assert study.num_train_prompts(8) == 16  # 4 rollout batches x 4 prompts, each prompt once
    assert study.num_train_prompts(2) == 8  # at least one rollout batch per curriculum stage


def test_curves_and_summary_from_a_log_history():
    history = [
        {"step": 1, "entropy": 2.0, "reward": 0.0, "semantic_entropy/mean": 1.0},
        {"step": 2, "entropy": 1.0},
        {"step": 3, "entropy": 1.5, "reward": 0.5},
        {"step": 4, "entropy": 0.5},
        {"step": 4, "train_runtime": 10.0},
    ]
    c = study.curves(history)
    assert c["entropy"] == {1: 2.0, 2: 1.0, 3: 1.5, 4: 0.5}
    assert c["reward"] == {1: 0.0, 3: 0.5}
    s = study.summarise_curves(c)
    assert s["entropy_mean"] == pytest.approx(1.25) and s["entropy_final"] == 0.5
    assert s["reward_mean"] == 0.25 and s["reward_last_half"] == 0.5


def test_parse_args_quick_and_validation():
    args = study.parse_args(["--quick"])
    assert (args.steps, args.eval_prompts, args.k, args.max_completion_length) == (2, 4, 2, 8)
    assert args.methods == study.QUICK_METHODS
    assert study.parse_args([]).methods == list(study.METHODS)
    with pytest.raises(SystemExit):
        study.parse_args(["--steps", "3"])


def _run_quick(out, *extra, timeout):
    proc = subprocess.run(
        [sys.executable, str(STUDY), "--quick", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"study.py exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == set(study.QUICK_METHODS)
    assert results["base"]["k"] == 2 and 0.0 <= results["base"]["avg@2"] <= 1.0
    for name, m in results["methods"].items():
        run = m["runs"][0]
        assert set(run["curves"]["entropy"]) == {"1", "2"}, name  # JSON keys
        assert run["entropy_mean"] is not None and run["wall_s"] > 0
        for key in ("avg@2", "pass@1", "pass@2"):
            assert 0.0 <= run["eval"][key] <= 1.0
        assert not list((out / "runs" / f"{name}-seed0").glob("**/*.safetensors"))  # weights removed
    assert (out / "study.png").stat().st_size > 0
    assert (out / "se_ranking").is_dir()  # ranked once, shared
    assert "| sent_full |" in proc.stdout and "| base model |" in proc.stdout
    return results


def test_quick_study_on_the_tiny_model(tiny_model_dir, tmp_path):
    _run_quick(tmp_path / "study", "--model", tiny_model_dir, timeout=600)


@pytest.mark.slow
def test_quick_study_on_the_embedded_model(tmp_path):
    _run_quick(tmp_path / "study", timeout=1200)


def test_standard_error_of_avg_at_k():
    assert study.standard_error([0, 0, 0], 4) == 0.0
    assert study.standard_error([4, 0], 4) == pytest.approx(0.5)  # accs 1, 0: sd 0.707 / sqrt(2)
    assert study.standard_error([1], 4) is None


def test_report_rerenders_table_and_figure(tmp_path):
    run = {
        "seed": 0,
        "wall_s": 10.0,
        "curves": {"entropy": {"1": 2.0, "2": 1.0}, "reward": {"1": 0.25}, "semantic_entropy": {}},
        "entropy_mean": 1.5,
        "entropy_final": 1.0,
        "reward_mean": 0.25,
        "reward_last_half": 0.25,
        "eval": {
            "avg@2": 0.5,
            "pass@1": 0.5,
            "pass@2": 0.75,
            "mean_completion_length": 7.0,
            "per_prompt_correct": [2, 0],
        },
    }
    results = {
        "config": {"k": 2, "steps": 2, "seeds": 1},
        "base": {
            "avg@2": 0.25,
            "pass@1": 0.25,
            "pass@2": 0.5,
            "mean_completion_length": 8.0,
            "per_prompt_correct": [1, 0],
        },
        "methods": {"grpo": {"runs": [run]}},
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    study.main(["--report", str(path)])
    table = (tmp_path / "table.md").read_text()
    assert "| grpo | 1.500 | 1.000 | 0.250 | 0.500 ± 0.500 | 0.750 | 7.0 | 10 |" in table
    assert "| base model |" in table
    assert (tmp_path / "study.png").stat().st_size > 0
