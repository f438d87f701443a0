"""A user's mistake ends with one `error:` line and a non-zero exit code, no traceback (sec_trl.errors), in train.py,
`python -m sec_trl.rank`, `python -m sec_trl.evaluate` and under `accelerate launch`; `SEC_TRL_DEBUG=1` shows the
traceback. And a reward function whose required parameter names a missing column fails before the model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sec_trl.errors import DEBUG_ENV, EXIT_USAGE, user_errors, work_phase
from sec_trl.preflight import check_reward_columns


ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def _run(command, cwd, **env_extra):
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    env.update({"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env_extra})
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _assert_short(result, message):
    assert result.returncode == EXIT_USAGE, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "Warning" not in line and "warnings.warn" not in line]
    assert len(lines) <= 3, result.stderr
    assert f"error: {message}" in result.stderr, result.stderr


def test_train_config_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "sec_trl.train", "--cov_ratio", "2"]
    _assert_short(_run(command, tmp_path), "cov_ratio=2.0 is out of range")
    debug = _run(command, tmp_path, **{DEBUG_ENV: "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "sec_trl/config.py" in debug.stderr
    assert not (tmp_path / "outputs").exists()


def test_rank_and_evaluate_errors_are_one_line(tmp_path):
    rank = [sys.executable, "-m", "sec_trl.rank", "--output_dir", "r", "--num_samples", "1"]
    _assert_short(_run(rank, tmp_path), "--num_samples must be an integer >= 2")
    evaluate = [sys.executable, "-m", "sec_trl.evaluate", "--dataset_name", "missing.jsonl"]
    _assert_short(_run(evaluate, tmp_path), "Dataset path 'missing.jsonl' does not exist")


def test_under_accelerate_launch_only_accelerates_own_report_follows(tmp_path):
    """The launched script prints one line and exits 2. accelerate's simple launcher then raises its own
    CalledProcessError (10 lines, accelerate's frames only); `accelerate launch -q` leaves the one line alone."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    script = ["-m", "sec_trl.train", "--cov_ratio", "2"]
    quiet = _run([*launch, "-q", *LAUNCH, *script], tmp_path)
    assert quiet.returncode != 0
    assert "Traceback" not in quiet.stderr and "error: cov_ratio=2.0 is out of range" in quiet.stderr, quiet.stderr
    loud = _run([*launch, *LAUNCH, *script], tmp_path)
    assert loud.returncode != 0 and "error: cov_ratio=2.0 is out of range" in loud.stderr
    assert loud.stderr.count("Traceback") == 1 and "CalledProcessError" in loud.stderr
    assert "sec_trl/" not in loud.stderr.split("Traceback")[1], loud.stderr  # no frame of this project


def test_the_boundary_shortens_only_user_errors_before_the_work(capsys):
    with pytest.raises(SystemExit) as exit_info, user_errors("prog"):
        raise FileNotFoundError("no such file: data.jsonl")
    assert exit_info.value.code == EXIT_USAGE
    assert "prog: error: no such file: data.jsonl" in capsys.readouterr().err
    with pytest.raises(TypeError), user_errors("prog"):  # a bug's type keeps its traceback
        raise TypeError("unsupported operand")
    with pytest.raises(ValueError, match="during sampling"), user_errors("prog"), work_phase():
        raise ValueError("during sampling")  # inside the work: not a user's flag


def test_the_boundary_keeps_the_traceback_with_the_debug_switch(monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="bad flag"), user_errors("prog"):
        raise ValueError("bad flag")


# --------------------------------------------------------------------------------------------------------------------
# reward functions' columns


class _Generated:
    uses_generated_data = True
    dataset_answer_column = "answer"


class _UserData:
    uses_generated_data = False
    dataset_answer_column = "answer"


def test_trl_accuracy_reward_needs_a_solution_column():
    from trl.rewards import accuracy_reward

    name = ["trl.rewards.accuracy_reward"]
    with pytest.raises(ValueError, match="'solution'.*--dataset_answer_column solution"):
        check_reward_columns([accuracy_reward], name, ["prompt", "answer", "level"], None, _Generated())
    with pytest.raises(ValueError, match="'solution'.*rename the column holding.*--reward_funcs accuracy"):
        check_reward_columns([accuracy_reward], name, ["prompt", "answer"], None, _UserData())
    check_reward_columns([accuracy_reward], name, ["prompt", "solution", "level"], None, _Generated())  # fine

    class Args:
        remove_unused_columns = True

    with pytest.raises(ValueError, match="--remove_unused_columns false"):
        check_reward_columns([accuracy_reward], name, ["prompt", "solution"], Args(), _UserData())


def test_a_reward_without_kwargs_must_accept_every_column_trl_passes():
    def strict(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, answer):
        return [0.0] * len(completions)

    def narrow(completions, answer):
        return [0.0] * len(completions)

    check_reward_columns([strict, "org/reward-model"], ["m.strict", "org/reward-model"], ["prompt", "answer"])
    with pytest.raises(ValueError, match=r"takes no \*\*kwargs.*'level'"):
        check_reward_columns([strict], ["m.strict"], ["prompt", "answer", "level"])
    with pytest.raises(ValueError, match=r"Add \*\*kwargs"):
        check_reward_columns([narrow], ["m.narrow"], ["prompt", "answer"])


def test_train_py_names_the_missing_column_before_loading_the_model(tmp_path):
    command = [sys.executable, "-m", "sec_trl.train", "--model_name_or_path", "no-such/model"]
    command += ["--reward_funcs", "trl.rewards.accuracy_reward", "--use_cpu", "true", "--output_dir", "o"]
    result = _run(command, tmp_path)
    _assert_short(result, "reward_funcs: 'trl.rewards.accuracy_reward' has the required parameter 'solution'")
    assert "--dataset_answer_column solution" in result.stderr and "no-such/model" not in result.stderr
    assert not (tmp_path / "o").exists()
