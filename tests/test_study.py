"""benchmarks/study.py and study_report.py: the helpers on hand-made logs and numbers, and the script end to end.

The default-suite test runs `--quick --model <tiny fixture model>` (2 methods incl. the curriculum, 2 steps), then
deletes one finished run and starts the study again: only that run is redone (resume), the other is kept as is.
The `slow` test runs `--quick` on the embedded SmolLM2-135M-Instruct, as a user would.
"""

import itertools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest


STUDY = Path(__file__).resolve().parent.parent / "benchmarks" / "study.py"
sys.path.insert(0, str(STUDY.parent))

import study  # noqa: E402
import study_report  # noqa: E402
import token_study_report as tsr  # noqa: E402


def test_methods_and_the_regime_keep_the_kl_terms_active():
    assert set(study.DEFAULT_METHODS) == {
        "grpo", "entropy_bonus", "80_20", "clip_cov", "kl_cov", "sent_token", "se_curriculum", "grpo_se_shuffled",
        "sent_full",
    }  # fmt: skip
    assert sorted(study.RUN_ORDER) == sorted(study.METHODS)  # the study's nine and the sweep's arms
    for arm in study.SWEEP_METHODS:  # each sweep arm is SENT's token loss with one setting changed
        assert study.METHODS[arm][: len(study.METHODS["sent_token"])] == study.METHODS["sent_token"]
        assert len(study.METHODS[arm]) == len(study.METHODS["sent_token"]) + 2
    for flags in study.METHODS.values():
        assert "--token_regularizer" in flags
    assert int(study.REGIME["steps_per_generation"]) > int(study.REGIME["gradient_accumulation_steps"])
    # the order control: the curriculum's sampler and ranked data, one stage (no low -> high order)
    control = study.METHODS["grpo_se_shuffled"]
    assert control[control.index("--curriculum_stages") + 1] == "1"
    assert "--curriculum_stages" not in study.METHODS["se_curriculum"]  # the default 2 stages


def test_runs_of_one_seed_differ_only_in_the_method_flags(tmp_path):
    """Pairing: same seed -> same data, order, generation and evaluation seeds for every method."""
    args = study.parse_args(["--out", str(tmp_path)])
    grpo = study.train_command(args, "grpo", 1, tmp_path / "a", tmp_path)
    sent = study.train_command(args, "sent_token", 1, tmp_path / "a", tmp_path)
    n = len(grpo) - len(study.METHODS["grpo"])
    assert grpo[:n] == sent[: len(sent) - len(study.METHODS["sent_token"])]
    assert grpo[grpo.index("--seed") + 1] == "1" and grpo[grpo.index("--learning_rate") + 1] == "5e-5"
    assert study.eval_seed(1) == study.eval_seed(1) != study.eval_seed(0)


def test_train_prompts_cover_the_run_and_both_stages():
    assert study.num_train_prompts(24) == 48  # 12 rollout batches x 4 prompts, each prompt once
    assert study.num_train_prompts(2) == 8  # at least one rollout batch per curriculum stage


def test_step_records_from_a_log_history():
    history = [
        {"step": 1, "entropy": 2.0, "reward": 0.0, "cov/logp_advantage": 0.5, "sent/high_cov_tokens": 4.0},
        {"step": 2, "entropy": 1.0, "cov/logp_advantage": 0.25, "sent/high_cov_tokens": 3.0},
        {"step": 2, "train_runtime": 10.0},
    ]
    assert study.step_records(history) == [
        {"step": 1, "entropy": 2.0, "reward": 0.0, "cov": 0.5, "k": 4.0},
        {"step": 2, "entropy": 1.0, "reward": None, "cov": 0.25, "k": 3.0},
    ]


def test_parse_args_quick_set_and_validation():
    args = study.parse_args(["--quick"])
    assert (args.steps, args.eval_prompts, args.k, args.seeds) == (2, 4, 2, 1)
    assert args.methods == study.QUICK_METHODS
    assert study.parse_args(["--quick", "--seeds", "2"]).seeds == 2
    full = study.parse_args([])
    assert (full.methods, full.seeds, full.k, full.eval_prompts) == (study.DEFAULT_METHODS, 3, 8, 64)
    assert study.parse_args(["--set", "cov_ratio=0.05"]).regime["cov_ratio"] == "0.05"
    for bad in (["--steps", "3"], ["--set", "cov_ratio"], ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            study.parse_args(bad)


def test_t_interval_and_mean_sd_by_hand():
    m, lo, hi = study_report.t_interval([0.1, 0.2, 0.3])
    half = 4.303 * 0.1 / math.sqrt(3)  # t(0.975, df 2) x sd / sqrt(n)
    assert m == pytest.approx(0.2) and lo == pytest.approx(0.2 - half) and hi == pytest.approx(0.2 + half)
    assert study_report.t_interval([0.5]) == (0.5, None, None)
    assert study_report.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))


def _run(method, seed, entropies, avg, pass_k, cov=0.1):
    return {
        "method": method,
        "seed": seed,
        "steps": [
            {"step": i + 1, "entropy": e, "reward": 0.5 if i % 2 == 0 else None, "cov": cov}
            for i, e in enumerate(entropies)
        ],
        "eval": {"k": 2, "num_prompts": 2, "avg_at_k": avg, "pass_at_k": pass_k, "per_prompt_correct": [1, 1]},
    }


def test_summary_pairs_by_seed_and_flags_collapse():
    data = {
        "config": {"k": 2, "steps": 6, "regime": {}, "methods": {"grpo": [], "sent_token": []}},
        "runs": [
            _run("grpo", 0, [2.0, 2.0, 0.5, 0.5, 0.5, 0.5], 0.2, 0.4),
            _run("grpo", 1, [2.0, 2.0, 2.0, 2.0, 2.0, 2.0], 0.4, 0.6),
            _run("sent_token", 1, [2.0, 2.0, 2.0, 2.0, 2.0, 2.0], 0.7, 0.6),  # paired with grpo seed 1 only
            _run("sent_token", 0, [2.0, 2.0, 1.0, 1.0, 1.0, 1.0], 0.3, 0.4),
        ],
    }
    s = study_report.summarise(data)
    assert s["grpo"]["collapsed"] == "1/2"  # final 0.5 < half of 2.0; the other stays at 2.0
    assert s["sent_token"]["collapsed"] == "0/2"  # final 1.0 is not under half of 2.0
    m, lo, hi = s["sent_token"]["diff_avg_at_k"]
    assert m == pytest.approx(0.2)  # (0.3 - 0.2 + 0.7 - 0.4) / 2, paired by seed
    half = 12.706 * math.sqrt(((0.1 - 0.2) ** 2 + (0.3 - 0.2) ** 2) / 1) / math.sqrt(2)
    assert hi - lo == pytest.approx(2 * half)
    assert s["sent_token"]["diff_entropy_final"][0] == pytest.approx(0.25)  # (1.0 - 0.5 + 2.0 - 2.0) / 2
    assert s["grpo"]["diff_avg_at_k"] == (None, None, None)


def test_mechanism_correlations_by_hand():
    assert study_report.pearson([1.0, 2.0, 3.0], [6.0, 4.0, 2.0]) == pytest.approx(-1.0)
    assert study_report.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # no variance
    run = {"steps": [{"step": 1, "entropy": 2.0, "cov": 0.5}, {"step": 2, "entropy": 1.0, "cov": 0.0},
                     {"step": 3, "entropy": 1.5, "cov": -0.5}, {"step": 4, "entropy": 1.0, "cov": 0.2}],
           "eval": {"avg_at_k": 0.0, "pass_at_k": 0.0}}  # fmt: skip
    m = study_report.mechanism({"runs": [run]})
    # (cov_t, H_t+1 - H_t) = (0.5, -1), (0, +0.5), (-0.5, -0.5): corr of x = (0.5, 0, -0.5), y = (-1, 0.5, -0.5)
    # sum x (y - mean y) = 0.5 (-2/3) + (-0.5)(-1/6) = -1/4; sum x^2 = 1/2; sum (y - mean y)^2 = 42/36
    assert m["step_pairs"] == 3 and m["step_corr"] == pytest.approx(-0.25 / math.sqrt(0.5 * 42 / 36))
    assert m["zero_cov_steps"] == 1 and m["positive_cov_frac"] == 0.5  # 1 of the 2 non-zero covariances
    assert m["runs"] == 1 and m["run_corr"] is None  # one run: no correlation


def test_report_renders_table_and_figure(tmp_path):
    data = {
        "config": {"k": 2, "steps": 6, "regime": {"learning_rate": "5e-5"}, "methods": {"grpo": [], "kl_cov": []}},
        "base": {"avg_at_k": 0.1, "pass_at_k": 0.2},
        "runs": [
            _run("grpo", 0, [2.0] * 6, 0.2, 0.4),
            _run("kl_cov", 0, [2.0] * 6, 0.3, 0.5),
        ],
    }
    path = tmp_path / "entropy_collapse.json"
    path.write_text(json.dumps(data))
    study.main(["--report", str(path)])
    table = path.with_suffix(".md").read_text()
    assert "| base model |" in table and "| 0.100 |" in table
    assert "| kl_cov | 1 | 2.00 → 2.00 | 0/1 |" in table and "+0.100" in table
    assert path.with_suffix(".png").stat().st_size > 0
    assert (tmp_path / "entropy_collapse_by_method.png").stat().st_size > 0
    assert "| kl_cov | 2.00 → 2.00 | 0/1 | 0.300 | +0.100 | 0.500 | +0.100 |" in table  # the compact table


def _quick(out, *extra, timeout):
    return subprocess.run(
        [sys.executable, str(STUDY), "--quick", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _check_quick(out, proc):
    assert proc.returncode == 0, f"study.py exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads((out / "entropy_collapse.json").read_text())
    assert {(r["method"], r["seed"]) for r in data["runs"]} == {(m, 0) for m in study.QUICK_METHODS}
    assert data["base"]["k"] == 2 and 0.0 <= data["base"]["avg_at_k"] <= 1.0
    for run in data["runs"]:
        assert [s["step"] for s in run["steps"]] == [1, 2], run["method"]
        assert all(s["cov"] is not None and math.isfinite(s["cov"]) for s in run["steps"])
        assert run["steps"][0]["reward"] is not None and run["steps"][1]["reward"] is None  # 1 rollout, 2 steps
        ev = run["eval"]
        assert (ev["k"], ev["num_prompts"], len(ev["per_prompt_correct"])) == (2, 4, 4)
        assert 0.0 <= ev["avg_at_k"] <= ev["pass_at_k"] <= 1.0
        assert not list((out / "runs" / f"{run['method']}-seed0").glob("**/*.safetensors"))  # weights removed
    sent = next(r for r in data["runs"] if r["method"] == "sent_full")
    assert all(s["k"] >= 1 for s in sent["steps"])  # SENT logs k
    assert (out / "se_ranking-seed0").is_dir()  # the curriculum's ranking, cached per seed
    assert "| sent_full |" in proc.stdout and "| base model |" in proc.stdout
    assert (out / "entropy_collapse.png").stat().st_size > 0
    return data


def test_quick_study_on_the_tiny_model_and_its_resume(tiny_model_dir, tmp_path):
    out = tmp_path / "study"
    first = _check_quick(out, _quick(out, "--model", tiny_model_dir, timeout=600))
    kept = out / "runs" / "grpo-seed0" / "result.json"
    kept_text = kept.read_text()
    (out / "runs" / "sent_full-seed0" / "result.json").unlink()  # as if interrupted during that run
    proc = _quick(out, "--model", tiny_model_dir, timeout=600)
    assert "1 job(s) to run" in proc.stdout
    second = _check_quick(out, proc)
    assert kept.read_text() == kept_text  # the finished run was not redone
    assert [r["method"] for r in second["runs"]] == [r["method"] for r in first["runs"]]


def test_a_failing_run_fails_the_study_and_names_it(tiny_model_dir, tmp_path):
    out = tmp_path / "study"
    proc = _quick(out, "--model", tiny_model_dir, "--methods", "grpo", "--set", "no_such_flag=1", timeout=600)
    assert proc.returncode != 0
    assert "grpo seed 0" in proc.stdout + proc.stderr and "start the study again" in proc.stderr


@pytest.mark.slow
def test_quick_study_on_the_embedded_model(tmp_path):
    out = tmp_path / "study"
    _check_quick(out, _quick(out, timeout=1800))


@pytest.mark.parametrize("name", ["entropy_collapse", "entropy_collapse_sweep"])
def test_committed_results_have_the_schema_and_reproduce_their_table(name):
    """The committed study data: the issue's schema, the power it promised, and the table --report makes from it."""
    path = STUDY.parent / "results" / f"{name}.json"
    data = json.loads(path.read_text())
    assert {"config", "runs"} <= set(data)
    seeds: dict[str, set] = {}
    for run in data["runs"]:
        assert {"method", "seed", "steps", "eval"} <= set(run)
        assert [s["step"] for s in run["steps"]] == list(range(1, data["config"]["steps"] + 1))
        assert all({"step", "entropy", "reward", "cov"} <= set(s) for s in run["steps"])
        ev = run["eval"]
        assert (ev["k"], ev["num_prompts"], len(ev["per_prompt_correct"])) == (8, 64, 64)
        assert ev["avg_at_k"] == pytest.approx(sum(ev["per_prompt_correct"]) / (8 * 64))
        seeds.setdefault(run["method"], set()).add(run["seed"])
    if name == "entropy_collapse":
        assert set(seeds) == set(study.DEFAULT_METHODS) and all(len(s) >= 3 for s in seeds.values())
    assert study_report.markdown_table(data) in path.with_suffix(".md").read_text()


# ---- the pre-registered token study (benchmarks/PREREGISTRATION.md) ----


def test_token_study_preset_is_the_preregistered_design():
    args = study.parse_args(["--preset", "token_study"])
    assert args.methods == ["grpo", "sent_token", "sent_no_kl"] and args.seeds == 8 and args.steps == 60
    assert study.seeds_of(args) == list(range(8)) and args.name == "token_study"
    assert args.regime["lr_scheduler_type"] == "constant_with_warmup" and args.regime["warmup_steps"] == "6"
    no_kl = study.train_command(args, "sent_no_kl", 3, Path("/r"), Path("/o"))
    sent = study.train_command(args, "sent_token", 3, Path("/r"), Path("/o"))
    assert no_kl[: len(sent)] == sent and no_kl[len(sent) :] == ["--kl_cov_coef", "0"]  # the only difference
    pilots = study.parse_args(["--preset", "token_study", "--first_seed", "100", "--seeds", "2", "--steps", "80"])
    assert study.seeds_of(pilots) == [100, 101] and pilots.steps == 80


def test_student_t_matches_tabulated_values():
    for df, q975 in ((1, 12.706), (2, 4.303), (7, 2.365), (30, 2.042)):
        assert tsr.t_quantile(0.975, df) == pytest.approx(q975, abs=1e-3)
        assert tsr.t_sf_two_sided(q975, df) == pytest.approx(0.05, abs=2e-4)
    assert tsr.t_quantile(0.8, 7) == pytest.approx(0.896, abs=1e-3)
    assert tsr.t_sf_two_sided(0.0, 5) == pytest.approx(1.0)


def _wilcoxon_brute(diffs):
    d = [x for x in diffs if x != 0]
    ranks = {v: (sorted(abs(x) for x in d).index(v) + 1 + len([x for x in d if abs(x) <= v])) / 2 for v in map(abs, d)}
    r = [ranks[abs(x)] for x in d]
    w = sum(ri for ri, x in zip(r, d, strict=True) if x > 0)
    mean = sum(r) / 2
    sums = [sum(ri for ri, s in zip(r, signs, strict=True) if s) for signs in itertools.product([0, 1], repeat=len(r))]
    return w, sum(abs(s - mean) >= abs(w - mean) - 1e-9 for s in sums) / len(sums)


@pytest.mark.parametrize("seed", range(6))
def test_wilcoxon_exact_equals_brute_force_enumeration(seed):
    rng = random.Random(seed)
    diffs = [rng.choice([-3, -2, -1, 0, 1, 1, 2, 4]) * 0.1 for _ in range(rng.randint(3, 9))]  # ties and zeros
    w, p, n = tsr.wilcoxon_exact(diffs)
    bw, bp = _wilcoxon_brute(diffs)
    assert n == sum(d != 0 for d in diffs) and w == pytest.approx(bw) and p == pytest.approx(bp)
    assert tsr.wilcoxon_exact([0.1 * i for i in range(1, 9)])[1] == pytest.approx(2 / 256)  # all 8 positive


def _token_run(method, seed, entropies, avg, rewards=0.5, ratio=0.02):
    steps = []
    for i, e in enumerate(entropies):
        rec = {"step": i + 1, "entropy": e, "reward": rewards if i % 2 == 0 else None, "cov": 0.01}
        rec["high_cov_abs_log_ratio"] = 0.0 if i % 2 == 0 else ratio  # on-policy steps: exactly 0
        steps.append(rec)
    ev = {"k": 8, "num_prompts": 64, "avg_at_k": avg, "pass_at_k": avg * 2, "per_prompt_correct": []}
    return {"method": method, "seed": seed, "steps": steps, "eval": ev}


def test_token_study_endpoints_follow_the_preregistered_rules():
    flat, falling = [2.0] * 12, [2.0, 2.0] + [0.9] * 10  # last 10 at 0.9 < half of steps 1-2 (1.0)
    r = tsr.run_endpoints(_token_run("grpo", 0, falling, 0.2), base_avg=0.1)
    assert r["collapsed"] and not r["derailed"] and r["log_final"] == pytest.approx(math.log(0.9))
    assert r["high_cov_abs_log_ratio"] == pytest.approx(0.02)  # the off-policy steps only
    assert not tsr.run_endpoints(_token_run("grpo", 0, [2.0, 2.0] + [1.0] * 10, 0.2), 0.1)["collapsed"]  # not under
    derailed = tsr.run_endpoints(_token_run("grpo", 0, flat, 0.05, rewards=0.0), base_avg=0.1)
    assert derailed["derailed"]  # reward < 0.05 in the second half AND avg@8 under the base model's
    assert not tsr.run_endpoints(_token_run("grpo", 0, flat, 0.2, rewards=0.0), base_avg=0.1)["derailed"]


def test_token_study_report_tests_pairs_and_labels_interim(tmp_path):
    runs = []
    for seed in range(4):
        runs.append(_token_run("grpo", seed, [2.0, 2.0] + [0.4 + 0.1 * seed] * 10, 0.2))
        runs.append(_token_run("sent_token", seed, [2.0, 2.0] + [0.8 + 0.1 * seed] * 10, 0.25))
        runs.append(_token_run("sent_no_kl", seed, [2.0, 2.0] + [0.8 + 0.1 * seed] * 10, 0.25))
    data = {"config": {"k": 8, "steps": 12, "regime": {}, "seeds": list(range(8)), "preset": "token_study",
                       "methods": {"grpo": [], "sent_token": [], "sent_no_kl": []}},
            "base": {"avg_at_k": 0.1}, "runs": runs}  # fmt: skip
    result = tsr.analyse(data)
    assert result["interim"] and (result["runs"], result["planned_runs"]) == (12, 24)
    d = result["comparisons"]["sent_token - grpo"]["log_final"]
    expected = [math.log(0.8 + 0.1 * s) - math.log(0.4 + 0.1 * s) for s in range(4)]
    assert d["n"] == 4 and d["mean"] == pytest.approx(sum(expected) / 4)
    assert d["p_t"] < 0.05 and d["p_wilcoxon"] == pytest.approx(2 / 16)  # 4 of 4 positive: the exact minimum
    same = result["comparisons"]["sent_token - sent_no_kl"]
    assert same["avg_at_k"]["lo"] is None  # four identical differences (0): no interval
    text = tsr.render(data, result)
    assert "Interim: 12 of 24" in text and "identical values, no interval" in text and "[+0.000, +0.000]" not in text
    assert "No verdict" in text and "Primary test" not in text  # interim data get no verdict
    path = tmp_path / "token_study.json"
    path.write_text(json.dumps(data))
    out = study.report_of(path)  # the study's --report dispatches to the pre-registered analysis
    assert out["interim"] and path.with_suffix(".md").read_text().strip() == out["text"].strip()


def test_archive_restores_committed_runs_so_the_study_resumes(tmp_path):
    archive, out = tmp_path / "archive", tmp_path / "out"
    archive.mkdir()
    (archive / "grpo-seed3.json").write_text(json.dumps({"method": "grpo", "seed": 3}))
    (archive / "base.json").write_text(json.dumps({"avg_at_k": 0.1}))
    args = study.parse_args(["--preset", "token_study", "--archive", str(archive)])
    assert study.restore_archive(args, out) == archive
    assert json.loads((study.run_dir_of(out, "grpo", 3) / "result.json").read_text())["seed"] == 3
    assert (out / "base.json").exists()
    json_path = out / "token_study.json"
    json_path.write_text("{}")
    study.run_dir_of(out, "sent_token", 1).mkdir(parents=True)
    (study.run_dir_of(out, "sent_token", 1) / "result.json").write_text("{}")
    study.archive_run(archive, out, "sent_token", 1, json_path)
    assert (archive / "sent_token-seed1.json").exists() and (tmp_path / "token_study.json").exists()


def test_token_study_report_gives_its_verdict_only_on_all_planned_runs():
    runs = [
        _token_run(arm, seed, [2.0, 2.0] + [base + 0.1 * seed] * 10, 0.2)
        for seed in range(4)
        for arm, base in (("grpo", 0.4), ("sent_token", 0.8), ("sent_no_kl", 0.6))
    ]
    data = {"config": {"k": 8, "steps": 12, "regime": {}, "seeds": list(range(4)),
                       "methods": {"grpo": [], "sent_token": [], "sent_no_kl": []}},
            "base": {"avg_at_k": 0.1}, "runs": runs}  # fmt: skip
    result = tsr.analyse(data)
    assert not result["interim"]
    assert "Primary test (sent_token vs grpo): significant at alpha 0.05" in tsr.render(data, result)
