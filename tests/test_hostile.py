"""Hostile cases (issue 18): inputs a user, real data or a real crash would produce, each as one row of `CASES`.

A row is ``case(name, given, call, expect)``: the hostile input, the function that feeds it to the real code (real
math-verify worker, real datasets, real tokenizer and tiny models from `tests/helpers`), and the expected outcome:
a value (compared with ``==``), ``Raises(type, text)``, or ``Check(predicate, what)``. The next hostile case is one
more row. Rows that run train.py or a ranking take tens of seconds on a 2-core CPU; the rest take milliseconds to a
few seconds. Timing rows assert only generous bounds derived from the configured budget.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from helpers.train_flags import run_train, train_flags, write_jsonl


# A worker killed on timeout is replaced in the background; the next check may wait for its start-up (~1 s, more
# on a loaded 2-core machine). Budget rows allow this much on top of the budget.
RESTART_SLACK = 6.0
HOSTILE_ANSWERS = [f"\\boxed{{{k}^{{{k}^{{{k}^{{{k}^{{{k}}}}}}}}}}}" for k in range(2, 10)]  # 8 distinct towers


@dataclass(frozen=True)
class Raises:
    type: type[BaseException]
    text: str


@dataclass(frozen=True)
class Check:
    predicate: Callable[[Any], bool]
    what: str


@dataclass(frozen=True)
class Env:
    """What a call may need; fixtures are built only for the rows that ask for them."""

    request: Any
    tmp_path: Any

    @property
    def tiny_model_dir(self) -> str:
        return self.request.getfixturevalue("tiny_model_dir")


def case(name: str, given: Any, call: Callable[[Any, Env], Any], expect: Any, *, slow: bool = False):
    marks = [pytest.mark.slow] if slow else []
    return pytest.param(given, call, expect, id=name, marks=marks)


# ------------------------------------------------------------------------------------------------------------- calls


def accuracy(given, env):
    """`accuracy_reward` on one (completion, gold answer) pair."""
    from sec_trl.rewards import accuracy_reward

    completion, gold = given
    return accuracy_reward([completion], answer=[gold])[0]


def clusters(given, env):
    from sec_trl.semantic_entropy import cluster_answers

    return cluster_answers(given)


def timed_clusters(budget):
    """Cluster ids and seconds taken, on a warm checker with a 5 s per-answer timeout and the given total budget."""

    def call(given, env):
        from sec_trl.answer_checking import AnswerChecker
        from sec_trl.semantic_entropy import cluster_answers

        with AnswerChecker(timeout=5.0) as checker:
            checker.start()
            start = time.monotonic()
            ids = cluster_answers(given, checker=checker, time_budget=budget)
            return SimpleNamespace(ids=ids, seconds=time.monotonic() - start, over_budget=checker.stats["over_budget"])

    return call


def ranking_prompt_score(budget):
    """`sec_trl.ranking.scoring.score_prompt` (clustering + sample accuracy) of one prompt's samples."""

    def call(given, env):
        from sec_trl.answer_checking import AnswerChecker
        from sec_trl.generation.samplers import Sample
        from sec_trl.ranking.params import RankingParams
        from sec_trl.ranking.scoring import score_prompt

        samples = [Sample(text=t, loglik=-1.0, num_tokens=3, truncated=False) for t in given]
        with AnswerChecker(timeout=5.0) as checker:
            checker.start()
            start = time.monotonic()
            row = score_prompt(0, samples, "7", RankingParams(answer_time_budget=budget), checker)
            return SimpleNamespace(row=row, seconds=time.monotonic() - start)

    return call


def online_semantic_entropy(budget):
    """The trainer's logged semantic entropy of one GRPO group (`CurriculumTrainerMixin`), on a stand-in trainer."""

    def call(given, env):
        from collections import defaultdict

        from sec_trl import SETGRPOConfig
        from sec_trl.curriculum_trainer import CurriculumTrainerMixin

        args = SETGRPOConfig(
            output_dir=str(env.tmp_path / "o"),
            report_to="none",
            use_cpu=True,
            per_device_train_batch_size=len(given),
            num_generations=len(given),
            semantic_entropy_time_budget=budget,
        )
        trainer = SimpleNamespace(
            args=args,
            num_generations=len(given),
            accelerator=SimpleNamespace(is_main_process=True),
            model=SimpleNamespace(training=True),
            _metrics={"train": defaultdict(list)},
        )
        from sec_trl.answer_checking import get_default_checker

        get_default_checker().start()
        start = time.monotonic()
        CurriculumTrainerMixin._log_online_semantic_entropy(trainer, given)
        seconds = time.monotonic() - start
        return SimpleNamespace(seconds=seconds, clusters=trainer._metrics["train"]["semantic_entropy/num_clusters"])

    return call


_CONFIG_BASE = dict(report_to="none", use_cpu=True, per_device_train_batch_size=4, num_generations=4)


def config(given, env):
    """`SETGRPOConfig(**given)` on a tiny valid base."""
    from sec_trl import SETGRPOConfig

    return SETGRPOConfig(output_dir=str(env.tmp_path / "o"), **{**_CONFIG_BASE, **given})


def config_warnings(given, env):
    """The warnings `SETGRPOConfig(**given)` gives (as text)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config(given, env)
    return [str(w.message) for w in caught]


def reward_weights_preflight(given, env):
    """preflight's check of --reward_weights against the reward functions --reward_funcs builds."""
    from sec_trl.preflight import build_reward_funcs, check_reward_weights

    names, weights = given
    return check_reward_weights(weights, build_reward_funcs(names, "answer"))


def train_cli_before_model(given, env):
    """train.py with a model path that does not exist: a config error must come first (before any model loads).
    ``given``: extra flags, or ``{"yaml": text}`` for a --config recipe."""
    data = write_jsonl(env.tmp_path / "d.jsonl", [{"prompt": "What is 1 + 1?", "answer": "2"}] * 4)
    recipe = None
    if "yaml" in given:
        recipe = env.tmp_path / "recipe.yaml"
        recipe.write_text(given["yaml"])
        given = {}
    flags = train_flags(model_name_or_path=env.tmp_path / "no-such-model", dataset_name=data, output_dir="o", **given)
    if recipe is not None:
        flags = ["--config", str(recipe), *flags]
    result = run_train(flags, env.tmp_path, timeout=300)
    return SimpleNamespace(rc=result.returncode, stderr=result.stderr)


def before_model_error(text):
    def ok(r):
        return r.rc != 0 and text in r.stderr and "no-such-model" not in r.stderr.split("Error")[-1]

    return Check(ok, f"fails before the model loads, saying {text!r}")


def log_table(given, env):
    from sec_trl.train import format_log_table

    return format_log_table(given)


REWARD_MODULE = """\
def none_reward(completions, **kwargs):
    return [None for _ in completions]


def nan_reward(completions, **kwargs):
    return [float("nan") for _ in completions]
"""


def train_run_with_reward(given, env):
    """A full tiny train.py run with the reward ``given`` (a function of REWARD_MODULE) and --push_to_hub, offline."""
    (env.tmp_path / "hostile_rewards.py").write_text(REWARD_MODULE)
    data = write_jsonl(
        env.tmp_path / "d.jsonl", [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(4)]
    )
    args = train_flags(
        model_name_or_path=env.tiny_model_dir,
        dataset_name=data,
        reward_funcs=f"hostile_rewards.{given}",
        max_steps=1,
        logging_steps=1,
        output_dir=env.tmp_path / "out",
        push_to_hub=True,
        hub_model_id="someone/hostile",
    )
    result = run_train(args, env.tmp_path)
    return SimpleNamespace(rc=result.returncode, stdout=result.stdout, stderr=result.stderr)


def finishes_saves_and_pushes(r) -> bool:
    # offline, so the push is attempted and fails with its own message (exit 1): what matters is that it is reached
    return (
        "Model and model card saved" in r.stdout
        and "Pushing to the Hub failed" in r.stderr
        and "Traceback" not in r.stderr
        and "TypeError" not in r.stderr
    )


def load_data_file(given, env):
    """`load_prompt_dataset` of a local file holding the bytes ``given`` (name: data.jsonl)."""
    from sec_trl.data import load_prompt_dataset

    path = env.tmp_path / "data.jsonl"
    path.write_bytes(given)
    return load_prompt_dataset(str(path))


def save_on_full_disk(given, env):
    """A real trainer's `save_model` inside train.py's `explain_disk_errors`, with `torch.save` patched to raise what
    torch raises on a full disk (``given``). A real full disk cannot be made safely on a shared machine, so the write
    is simulated; the error text is torch's own."""
    from unittest import mock

    from helpers.trainer import make_trainer

    from sec_trl.train import explain_disk_errors

    trainer = make_trainer(env.tiny_model_dir, env.tmp_path)
    out = str(env.tmp_path / "final")

    def full_disk(*args, **kwargs):
        raise given

    with mock.patch("torch.save", full_disk), explain_disk_errors(out):
        trainer.save_model(out)


def rank_three_times(given, env):
    """rank, rerun with other flags (``given``), rerun the original: prompts generated by each run."""
    from datasets import Dataset

    from sec_trl.rank import rank_dataset, read_ranking_meta

    data = Dataset.from_dict(
        {"prompt": [f"What is {i} + 1?" for i in range(4)], "answer": [str(i + 1) for i in range(4)]}
    )
    fast = {"num_samples": 2, "max_new_tokens": 3, "shard_size": 2, "prompts_per_batch": 2, "seed": 0}
    out = env.tmp_path / "ranked"
    generated = []
    for params in (fast, {**fast, **given}, fast):
        rank_dataset(data, env.tiny_model_dir, out, show_progress=False, **params)
        generated.append(read_ranking_meta(out)["counts"]["num_prompts_generated"])
    return generated


# ------------------------------------------------------------------------- calls of items 4 and 10 (one block)


def error_message_of(call):
    """``call``'s ValueError message (None when it raises none)."""

    def wrapped(given, env):
        try:
            call(given, env)
        except ValueError as exc:
            return str(exc)
        return None

    return wrapped


config_error = error_message_of(config)
"""The message of the ValueError `SETGRPOConfig(**given)` raises (None if it builds)."""


CURRICULUM = {"curriculum": True, "remove_unused_columns": False, "steps_per_generation": 2}


def curriculum_plan_line(given, env):
    """The one log line of the curriculum's schedule (`CurriculumPlan.describe`), as the trainer logs it at the
    start of training, for ``given = (num_prompts, config fields)``, after train.py's replay check."""
    from sec_trl.preflight import check_curriculum_replay

    num_prompts, fields = given
    return check_curriculum_replay(num_prompts, config({**CURRICULUM, **fields}, env)).describe()


def trainer_before_model(given, env):
    """`SETGRPOTrainer` on a model that does not exist, with a ranked dataset of ``given[0]`` prompts and the
    config fields ``given[1]``: an error about the configuration must come before the model loads."""
    from datasets import Dataset

    from sec_trl import SETGRPOTrainer

    num_prompts, fields = given
    data = Dataset.from_dict(
        {
            "prompt": [f"What is {i} + 1?" for i in range(num_prompts)],
            "answer": [str(i + 1) for i in range(num_prompts)],
            "semantic_entropy": [0.1 * i for i in range(num_prompts)],
        }
    )
    args = config({**CURRICULUM, **fields}, env)
    SETGRPOTrainer(model=str(env.tmp_path / "no-such-model"), reward_funcs=lambda completions, **k: [0.0], args=args,
                   train_dataset=data)  # fmt: skip


def train_cli_run(given, env):
    """A full tiny train.py run on the tiny model: ``given`` = (dataset rows, extra flags)."""
    rows, extra = given
    data = write_jsonl(env.tmp_path / "d.jsonl", rows)
    (env.tmp_path / "hostile_rewards.py").write_text(REWARD_MODULE + HANGING_REWARD)
    flags = train_flags(
        model_name_or_path=env.tiny_model_dir, dataset_name=data, output_dir=env.tmp_path / "out", **extra
    )
    start = time.monotonic()
    result = run_train(flags, env.tmp_path, timeout=600)
    return SimpleNamespace(
        rc=result.returncode, stdout=result.stdout, stderr=result.stderr, seconds=time.monotonic() - start
    )


def ranked_rows(n):
    return [{"prompt": f"What is {i} + 1?", "answer": str(i + 1), "semantic_entropy": 0.1 * i} for i in range(n)]


def data_warnings(given, env):
    """The warnings `validate_prompt_dataset` logs for the rows ``given`` (a real `datasets.Dataset`)."""
    import logging

    from datasets import Dataset

    from sec_trl.data import validate_prompt_dataset

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("sec_trl.data")
    logger.addHandler(handler)
    try:
        validate_prompt_dataset(Dataset.from_list(given))
    finally:
        logger.removeHandler(handler)
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING]


HANGING_REWARD = """

def hanging_reward(completions, **kwargs):
    import threading

    threading.Event().wait(120)  # a remote scorer that never answers
    return [0.0 for _ in completions]
"""


def _hang(completions, **kwargs):
    import threading

    threading.Event().wait(60)
    return [0.0] * len(completions)


async def _async_hang(completions, **kwargs):
    import asyncio

    await asyncio.sleep(60)
    return [0.0] * len(completions)


def _raises(completions, **kwargs):
    raise KeyError("the reward's own error")


REWARDS = {"hang": _hang, "async_hang": _async_hang, "raises": _raises, "length": lambda completions, **k: [1.0]}


def timed_reward_call(timeout, *, thread=False):
    """`with_timeout(REWARDS[given], timeout)` called once (in a worker thread with ``thread``): the result or the
    error, and the seconds the call took."""

    def call(given, env):
        import asyncio
        import threading

        from sec_trl.rewards import with_timeout

        func = with_timeout(REWARDS[given], timeout)
        outcome = {}

        def run():
            start = time.monotonic()
            try:
                value = func(completions=["a", "b"])
                outcome["value"] = asyncio.run(value) if asyncio.iscoroutine(value) else value
            except Exception as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - start

        if thread:
            worker = threading.Thread(target=run)
            worker.start()
            worker.join(30)
        else:
            run()
        return SimpleNamespace(**outcome)

    return call


def unwritable_folder(tmp_path):
    """A real folder this process cannot write into. For a normal user, a folder chmod-ed 0o500. Root writes through
    any mode bits (this project's VM runs the tests as root), so there it is a folder path under a regular file,
    which nobody can create (ENOTDIR): the same "cannot write there" a read-only file system gives."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").write_text("")
    except OSError:
        return folder  # really read-only
    (folder / "probe").unlink()
    folder.chmod(0o700)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "read-only"


def output_path(given, env):
    """``given``: "read-only" (:func:`unwritable_folder`), "read-only/<sub>" (a folder to create inside it), or a
    path relative to ``tmp_path``."""
    if given == "read-only" or given.startswith("read-only/"):
        return unwritable_folder(env.tmp_path).joinpath(*given.split("/")[1:])
    return env.tmp_path / given


def writable_check(given, env):
    """`check_writable` of a folder (see :func:`output_path`); what it left on disk."""
    from sec_trl.preflight import check_writable

    target = output_path(given, env)
    check_writable(target, "--output_dir")
    return sorted(p.name for p in env.tmp_path.rglob("*"))


def cli_outcome(module: str):
    """The exit code and stderr of ``python -m <module> <flags> --output_dir <given>`` run in-process (its `cli`),
    with a model path that does not exist: the folder must be refused before the model loads (or any sampling)."""

    def call(given, env):
        import contextlib
        import importlib
        import io

        cli = importlib.import_module(module).cli
        data = write_jsonl(env.tmp_path / "d.jsonl", [{"prompt": "What is 1 + 1?", "answer": "2"}] * 2)
        argv = ["--model_name_or_path", str(env.tmp_path / "no-such-model"), "--dataset_name", data]
        argv += ["--output_dir", str(output_path(given, env))]
        if module.endswith("evaluate"):
            argv += ["--dataset_test_split", "train", "--k", "2", "--max_new_tokens", "2", "--use_cpu", "true"]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                code = cli(argv)
            except SystemExit as exit:
                code = exit.code
        return SimpleNamespace(rc=code, stderr=stderr.getvalue())

    return call


def timed_out(timeout):
    def ok(r):
        return (
            type(getattr(r, "error", None)).__name__ == "RewardTimeoutError"
            and f"reward_timeout={timeout:g} s" in str(r.error)
            and r.seconds < timeout + 5
        )

    return Check(ok, f"RewardTimeoutError after ~{timeout} s")


def prompt_length_check(given, env):
    """`check_prompt_lengths` of the prompts ``given[0]`` with the tiny model's real tokenizer and config (512
    positions) and max_completion_length ``given[1]``."""
    from transformers import AutoConfig, AutoTokenizer

    from sec_trl.data import PromptFormat
    from sec_trl.preflight import check_prompt_lengths, model_context_length

    prompts, completion_length = given
    tokenizer = AutoTokenizer.from_pretrained(env.tiny_model_dir)
    context = model_context_length(AutoConfig.from_pretrained(env.tiny_model_dir), tokenizer)
    return check_prompt_lengths([PromptFormat().apply(p) for p in prompts], tokenizer, context, completion_length)


def trainer_train(given, env):
    """A real tiny `SETGRPOTrainer` (tests/helpers) on the prompts ``given``, trained for one step."""
    from datasets import Dataset
    from helpers.trainer import make_trainer

    data = Dataset.from_dict({"prompt": given, "answer": ["2"] * len(given)})
    trainer = make_trainer(env.tiny_model_dir, env.tmp_path, train_dataset=data, max_steps=1)
    trainer.train()


LONG_PROMPT = "Add these numbers: " + " + ".join(["1"] * 7500)  # ~15k tokens


def parsed_train_yaml(given, env):
    """train.py's parse of the recipe text ``given``: its reward_funcs."""
    from sec_trl.train import make_parser

    recipe = env.tmp_path / "recipe.yaml"
    recipe.write_text(given)
    script_args, _, _ = make_parser().parse_args_and_config(
        args=["--config", str(recipe), "--output_dir", str(env.tmp_path / "o"), "--use_cpu", "true"]
    )
    return script_args.reward_funcs


def ranking_lock_held(given, env):
    """The ranking's output lock, taken while another holder has it."""
    from filelock import FileLock

    from sec_trl.ranking.core import _output_lock

    out = env.tmp_path / "ranked"
    out.mkdir()
    other = FileLock(str(out / ".ranking.lock"))
    other.acquire()
    try:
        with _output_lock(SimpleNamespace(state=SimpleNamespace(is_main_process=True), output_dir=out)):
            pass
    finally:
        other.release()


def bad_shard_warning(given, env):
    """The warning for an unreadable cache shard (``given``: its bytes) in <output_dir>/shards/<fingerprint>/."""
    import logging

    from sec_trl.ranking.cache import load_shard

    shard_dir = env.tmp_path / "ranked" / "shards" / "0123456789abcdef"
    shard_dir.mkdir(parents=True)
    (shard_dir / "shard-000000.json").write_bytes(given)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("sec_trl.ranking.cache")
    logger.addHandler(handler)
    try:
        load_shard(shard_dir, 0, "fingerprint", 0, 2)
    finally:
        logger.removeHandler(handler)
    return SimpleNamespace(messages=[r.getMessage() for r in records], tmp=str(env.tmp_path))


def refused_before_model(text):
    def ok(r):
        lines = [line for line in r.stderr.splitlines() if line.startswith(("sec_trl.", "error"))]
        return r.rc == 2 and len(lines) == 1 and text in lines[0] and "no-such-model" not in r.stderr

    return Check(ok, f"exit 2, one error line saying {text!r}, before the model loads")


def train_into(given, env):
    """train.py (a model path that does not exist) into --output_dir ``given["output_dir"]`` (see
    :func:`output_path`), after ``given["before"]`` (names of checkpoint folders / files to create in it), with
    ``given["flags"]``; the outcome and what the folder holds afterwards."""
    out = output_path(given["output_dir"], env)
    for name in given.get("before", ()):
        if name.startswith("checkpoint-"):
            (out / name).mkdir(parents=True)
            (out / name / "trainer_state.json").write_text("{}")
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("{}")
    data = write_jsonl(env.tmp_path / "d.jsonl", [{"prompt": "What is 1 + 1?", "answer": "2"}] * 4)
    model = given.get("model", env.tmp_path / "no-such-model")
    flags = train_flags(model_name_or_path=model, dataset_name=data, output_dir=out, **given.get("flags", {}))
    result = run_train(flags, env.tmp_path, timeout=600)
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    return SimpleNamespace(rc=result.returncode, stdout=result.stdout, stderr=result.stderr, held=held)


def train_refuses(text, *, keeps=()):
    def ok(r):
        return r.rc != 0 and text in r.stderr and "no-such-model" not in r.stderr and set(keeps) <= set(r.held)

    return Check(ok, f"fails before the model loads, saying {text!r}, the folder still holding {list(keeps)}")


def tiny_model(given, env):
    return {**given, "model": env.tiny_model_dir}


def overwrite_run(given, env):
    return train_into(tiny_model(given, env), env)


def replaced_earlier_run(r) -> bool:
    return (
        r.rc == 0
        and "replacing the earlier run" in r.stderr
        and "deleted the earlier run's checkpoint-99" in r.stderr
        and "checkpoint-99" not in r.held
        and "model.safetensors" in r.held
    )


MY_RECIPE = "output_dir: runs/mine\nmax_steps: 3\n"


def chosen_folders(given, env):
    """The output_dir train.py's command line chooses for each argv of ``given`` (parsed as train.py parses it, in
    ``tmp_path``; no model loads), with ``my.yaml`` there holding :data:`MY_RECIPE`."""
    from sec_trl.train import parse_command_line

    env.request.getfixturevalue("monkeypatch").chdir(env.tmp_path)
    (env.tmp_path / "my.yaml").write_text(MY_RECIPE)
    return [parse_command_line(list(argv))[1].output_dir for argv in given]


RECIPE_FOLDER = "outputs/smollm2-arith-sent"


def distinct_fingerprinted(folders) -> bool:
    import re

    pattern = re.escape(RECIPE_FOLDER) + "-[0-9a-f]{8}"
    return len(set(folders)) == len(folders) and all(re.fullmatch(pattern, f) for f in folders)


def embedded_same_command_twice(given, env):
    """`train.py <given>` (the embedded recipe, no --output_dir) run in ``tmp_path`` when the folder that command
    chooses already holds a checkpoint: it reaches that folder again, and stops there before the model loads."""
    from sec_trl.train import parse_command_line

    env.request.getfixturevalue("monkeypatch").chdir(env.tmp_path)
    folder = env.tmp_path / parse_command_line(list(given))[1].output_dir
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoint-2" / "trainer_state.json").write_text("{}")
    result = run_train(list(given), env.tmp_path, timeout=600)
    return SimpleNamespace(rc=result.returncode, stderr=result.stderr, folder=folder.name)


# ------------------------------------------------------------------------------------------------------------- table

CASES = [
    # item 9: dirty gold answers (and completions) are normalised: NFKC, zero-width characters and BOM stripped
    case("9-gold-zero-width-space", ("\\boxed{4}", "4\u200b"), accuracy, 1.0),
    case("9-gold-bom", ("\\boxed{4}", "\ufeff4"), accuracy, 1.0),
    case("9-gold-fullwidth-digit", ("\\boxed{4}", "\uff14"), accuracy, 1.0),
    case("9-gold-word-joiner-and-zwj", ("\\boxed{12}", "1\u2060\u200d2"), accuracy, 1.0),
    case("9-completion-fullwidth-and-zwsp", ("so \\boxed{\uff14\u200b}", "4"), accuracy, 1.0),
    case("9-gold-superscript-is-a-power", ("\\boxed{x^2}", "x\u00b2"), accuracy, 1.0),
    case("9-gold-superscript-not-a-digit", ("\\boxed{x2}", "x\u00b2"), accuracy, 0.0),
    case("9-gold-only-invisible-is-missing", ("\\boxed{4}", "\u200b\ufeff"), accuracy, None),
    case(
        "9-clustering-normalises",
        ["\\boxed{4}", "\\boxed{\uff14}", "The answer is 4\u200b", "\\boxed{\ufeff4}", "\\boxed{5}"],
        clusters,
        [0, 0, 0, 0, 1],
    ),
    # item 3: a bounded total time per prompt / per group for answer checking, whatever the number of answers
    case(
        "3-eight-hostile-answers-within-budget",
        HOSTILE_ANSWERS,
        timed_clusters(2.0),
        Check(
            lambda r: r.seconds < 2.0 + RESTART_SLACK and r.ids == list(range(8)) and r.over_budget > 0,
            "8 singletons within budget + restart, the cut comparisons counted",
        ),
    ),
    case(
        "3-ordinary-answers-still-cluster-under-budget",
        ["\\boxed{\\frac{1}{2}}", "It is 0.5.", "\\boxed{x^2+1}", "\\boxed{1+x^2}", "\\boxed{3}"],
        timed_clusters(10.0),  # a budget ordinary answers never reach, even on a loaded 2-core machine
        Check(lambda r: r.ids == [0, 0, 1, 1, 2] and r.over_budget == 0, "math-verify still decides x^2+1 = 1+x^2"),
    ),
    case(
        "3-ranking-prompt-within-budget",
        HOSTILE_ANSWERS,
        ranking_prompt_score(2.0),
        Check(
            lambda r: r.seconds < 2.0 + RESTART_SLACK and r.row["num_clusters"] == 8,
            "clustering and sample accuracy share the 2 s budget",
        ),
    ),
    case(
        "3-online-se-group-within-budget",
        HOSTILE_ANSWERS,
        online_semantic_entropy(2.0),
        Check(lambda r: r.seconds < 2.0 + RESTART_SLACK and r.clusters == [8.0], "one group, 2 s budget"),
    ),
    case(
        "3-budget-must-be-positive",
        {"semantic_entropy_time_budget": 0.0},
        config,
        Raises(ValueError, "semantic_entropy_time_budget=0.0 is out of range"),
    ),
    # item 7: values that passed validation and crashed later (or trained) are refused in SETGRPOConfig
    case(
        "7-kl_cov_coef-overflows",
        {"kl_cov_coef": 1e300},
        config,
        Raises(ValueError, "kl_cov_coef=1e+300 is out of range; allowed range is [0, 10000]"),
    ),
    case(
        "7-steps_per_generation-zero",
        {"steps_per_generation": 0},
        config,
        Raises(ValueError, "steps_per_generation=0 is out of range; allowed range is [1, inf)"),
    ),
    case(
        "7-num_iterations-zero",
        {"num_iterations": 0},
        config,
        Raises(ValueError, "num_iterations=0 is out of range; allowed range is [1, inf)"),
    ),
    case(
        "7-max_steps-not-integral", {"max_steps": 2.7}, config, Raises(ValueError, "max_steps=2.7 is not an integer")
    ),
    case(
        "7-top_p-above-one",
        {"top_p": 1.5},
        config,
        Raises(ValueError, "top_p=1.5 is out of range; allowed range is (0, 1]"),
    ),
    case("7-beta-negative", {"beta": -1.0}, config, Raises(ValueError, "beta=-1.0 is out of range")),
    case("7-temperature-zero", {"temperature": 0.0}, config, Raises(ValueError, "temperature=0.0 is out of range")),
    case(
        "7-reward-weight-inf",
        {"reward_weights": [1.0, math.inf]},
        config,
        Raises(ValueError, "reward_weights[1]=inf is out of range"),
    ),
    case(
        "7-reward-weight-huge", {"reward_weights": [1.0, 1e30]}, config, Raises(ValueError, "reward_weights[1]=1e+30")
    ),
    case(
        "7-sane-config-still-accepted",
        {"beta": 0.04, "top_p": 0.95, "steps_per_generation": 2},
        config,
        Check(lambda c: c.generation_batch_size == 8, "built, generation batch 4 x 2"),
    ),
    case(
        "7-reward_weights-wrong-length",
        (["accuracy", "format"], [1.0]),
        reward_weights_preflight,
        Raises(ValueError, "reward_weights has 1 values [1.0] but there are 2 reward functions"),
    ),
    case("7-reward_weights-right-length", (["accuracy", "format"], [1.0, 0.5]), reward_weights_preflight, None),
    case(
        "7-cli-steps_per_generation-zero",
        {"steps_per_generation": 0},
        train_cli_before_model,
        before_model_error("steps_per_generation=0 is out of range"),
    ),
    case(
        "7-cli-yaml-max_steps-float",
        {"yaml": "max_steps: 2.7\n"},
        train_cli_before_model,
        before_model_error("max_steps=2.7 is not an integer"),
    ),
    case(
        "7-cli-reward_weights-length",
        {"reward_funcs": "accuracy", "reward_weights": [1.0, 2.0]},
        train_cli_before_model,
        before_model_error("reward_weights has"),
    ),
    # item 1: NaN / None rewards are logged as such and never end the run before the save and the push
    case(
        "1-log-table-none-and-nan",
        [
            {"step": 1, "entropy": 1.5, "reward": None},
            {"step": 2, "entropy": float("nan"), "reward": float("nan")},
            {"step": 2, "eval_reward": None},
        ],
        log_table,
        Check(lambda t: "nan" in t and "1.5000" in t and "step 2: none" in t, "nan printed, None blank"),
    ),
    case(
        "1-none-reward-run-saves-and-pushes",
        "none_reward",
        train_run_with_reward,
        Check(finishes_saves_and_pushes, "saved, push attempted, no traceback"),
    ),
    case(
        "1-nan-reward-run-saves-and-pushes",
        "nan_reward",
        train_run_with_reward,
        Check(finishes_saves_and_pushes, "saved, push attempted, no traceback"),
    ),
    # item 8: raw errors become messages naming the file, the line, the cause
    case(
        "8-latin1-jsonl",
        b'{"prompt": "a", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "2"}\n',
        load_data_file,
        Raises(ValueError, "data.jsonl': line 2 is not valid UTF-8 (byte 0xe9 at column 16"),
    ),
    case(
        "8-utf16-jsonl",
        '{"prompt": "a", "answer": "1"}\n'.encode("utf-16"),
        load_data_file,
        Raises(ValueError, "the file is UTF-16"),
    ),
    case(
        "8-utf8-bom-jsonl-is-fine",
        b'\xef\xbb\xbf{"prompt": "a", "answer": "1"}\n',
        load_data_file,
        Check(lambda ds: ds.num_rows == 1, "loads"),
    ),
    case(
        "8-full-disk-torch-save",
        RuntimeError("basic_ios::clear: iostream error"),
        save_on_full_disk,
        Raises(OSError, "the disk holding it is out of space"),
    ),
    case(
        "8-full-disk-enospc",
        OSError(28, "No space left on device"),
        save_on_full_disk,
        Raises(OSError, "--output_dir"),
    ),
    # item 2: every output folder is checked writable before any model loads or any sampling (nothing is created)
    case("2-writable-new-nested-folder-creates-nothing", "new/a/b", writable_check, []),
    case("2-read-only-folder", "read-only", writable_check, Raises(ValueError, "--output_dir")),
    case("2-new-folder-in-read-only-folder", "read-only/run", writable_check, Raises(ValueError, "cannot write")),
    case("2-output_dir-is-a-file", "d.jsonl", cli_outcome("sec_trl.rank"), refused_before_model("not a folder")),
    case(
        "2-train-read-only-output_dir",
        {"output_dir": "read-only"},
        train_into,
        train_refuses("read-only: cannot write the checkpoints"),
    ),
    case(
        "2-rank-read-only-output_dir",
        "read-only",
        cli_outcome("sec_trl.rank"),
        refused_before_model("read-only: cannot write"),
    ),
    case(
        "2-rank-new-folder-in-read-only-folder",
        "read-only/ranked",
        cli_outcome("sec_trl.rank"),
        refused_before_model("ranked: cannot write"),
    ),
    case(
        "2-evaluate-read-only-output_dir",
        "read-only",
        cli_outcome("sec_trl.evaluate"),
        refused_before_model("read-only: cannot write"),
    ),
    case(
        "2-train-read-only-se_ranking_dir",
        {"output_dir": "out", "flags": {"curriculum": True, "num_train_epochs": 1, "se_ranking_dir": "a-file/r"}},
        lambda given, env: (env.tmp_path / "a-file").write_text("") or train_into(given, env),
        train_refuses("--se_ranking_dir a-file/r: cannot"),
    ),
    # item 6: a fresh run never deletes or overwrites an earlier run unasked
    case(
        "6-fresh-run-into-used-output_dir",
        {"output_dir": "used", "before": ["checkpoint-6", "model.safetensors", "config.json"]},
        train_into,
        train_refuses(
            "--resume_from_checkpoint true, replace it with --overwrite_output_dir true",
            keeps=["checkpoint-6", "config.json", "model.safetensors"],
        ),
    ),
    case(
        "6-fresh-run-into-folder-with-only-an-adapter",
        {"output_dir": "used", "before": ["adapter_config.json"]},
        train_into,
        train_refuses("already holds an earlier run (adapter_config.json)", keeps=["adapter_config.json"]),
    ),
    case(
        "6-resume-and-overwrite-contradict",
        {
            "output_dir": "used",
            "before": ["checkpoint-6"],
            "flags": {"resume_from_checkpoint": True, "overwrite_output_dir": True},
        },
        train_into,
        train_refuses("contradict each other", keeps=["checkpoint-6"]),
    ),
    case(
        "6-overwrite-replaces-the-earlier-run",
        {
            "output_dir": "used",
            "before": ["checkpoint-99", "model.safetensors"],
            "flags": {"overwrite_output_dir": True, "max_steps": 1, "reward_funcs": "format"},
        },
        overwrite_run,
        Check(replaced_earlier_run, "trains, logs what it replaces, the old checkpoint gone, a new model saved"),
    ),
    case(
        "6-no-output_dir-recipe-settings-keep-the-recipe-folder",
        [[], ["--max_steps", "12"], ["--config", "recipes/smollm2_arith_cpu.yaml"], ["--push_to_hub", "true"]],
        chosen_folders,
        [RECIPE_FOLDER] * 4,
    ),
    case(
        "6-no-output_dir-different-flags-different-folders",
        [["--max_steps", "50"], ["--max_steps", "51"], ["--learning_rate", "5e-5"], ["--curriculum", "true"]],
        chosen_folders,
        Check(distinct_fingerprinted, "four different <recipe folder>-<8 hex> folders"),
    ),
    case(
        "6-no-output_dir-same-flags-same-folder",
        [
            ["--max_steps", "50", "--learning_rate", "5e-5"],
            ["--learning_rate=0.00005", "--max_steps=50"],
            ["--max_steps", "50", "--learning_rate", "5e-5", "--resume_from_checkpoint", "true"],
        ],
        chosen_folders,
        Check(lambda f: len(set(f)) == 1 and distinct_fingerprinted(f[:1]), "one fingerprinted folder"),
    ),
    case("6-folder-fingerprint-is-stable", [["--max_steps", "50"]], chosen_folders, [f"{RECIPE_FOLDER}-35873823"]),
    case(
        "6-output_dir-flag-and-own-config-win",
        [
            ["--max_steps", "50", "--output_dir", "mine"],
            ["--config", "my.yaml"],
            ["--config", "my.yaml", "--seed", "1"],
        ],
        chosen_folders,
        ["mine", "runs/mine", "runs/mine"],
    ),
    case(
        "6-same-command-twice-reaches-its-folder-and-stops",
        ["--max_steps", "50"],
        embedded_same_command_twice,
        Check(
            lambda r: (
                r.rc != 0
                and f"output_dir: outputs/{r.folder} (no --output_dir" in r.stderr
                and f"--output_dir outputs/{r.folder} already holds an earlier run (1 checkpoint(s)" in r.stderr
            ),
            "the log names the fingerprinted folder, then rule (a) stops the run",
        ),
    ),
    # item 5: one mistyped ranking flag does not cost the original run its cache
    case("5-rank-other-seed-then-original", {"seed": 7}, rank_three_times, [4, 4, 0]),
    case("5-rank-other-max_new_tokens-then-original", {"max_new_tokens": 2}, rank_three_times, [4, 4, 0]),
    # ---- items 4 and 10 (one block) ----
    # item 4: one pass of the curriculum = the stages low -> high once; TRL's default num_train_epochs=3 would replay
    # it three times unsaid: an error naming the fixes; an explicit num_train_epochs > 1 warns; curriculum_replay
    # accepts a replay; max_steps past one pass is refused too; the schedule is logged in one line
    case(
        "4-curriculum-with-default-epochs-is-an-error",
        CURRICULUM,
        config_error,
        Check(
            lambda m: (
                m is not None
                and all(
                    s in m for s in ("TRL's default 3", "--num_train_epochs 1", "--max_steps N", "--curriculum_replay")
                )
            ),
            "an error naming --num_train_epochs 1, --max_steps N and --curriculum_replay true",
        ),
    ),
    case(
        "4-cli-curriculum-with-default-epochs-fails-before-model",
        {"curriculum": True, "remove_unused_columns": False},
        train_cli_before_model,
        before_model_error("--curriculum_replay true"),
    ),
    case(
        "4-curriculum-explicit-epochs-warns-it-repeats",
        {**CURRICULUM, "num_train_epochs": 2},
        config_warnings,
        Check(lambda w: any("repeats 2 times" in m for m in w), "a warning that the curriculum repeats 2 times"),
    ),
    case(
        "4-curriculum-explicit-three-epochs-is-not-the-default",
        {**CURRICULUM, "num_train_epochs": 3},
        config_warnings,
        Check(lambda w: any("repeats 3 times" in m for m in w), "warned, not refused: it was given"),
    ),
    case(
        "4-curriculum-with-one-epoch-is-quiet",
        {**CURRICULUM, "num_train_epochs": 1},
        config_warnings,
        Check(lambda w: not any("repeat" in m or "replay" in m for m in w), "no replay warning"),
    ),
    case(
        "4-curriculum_replay-accepts-the-default-epochs",
        {**CURRICULUM, "curriculum_replay": True},
        config_warnings,
        Check(lambda w: not any("repeats" in m for m in w), "built, no warning"),
    ),
    case(
        "4-curriculum_replay-needs-curriculum",
        {"curriculum_replay": True},
        config,
        Raises(ValueError, "curriculum_replay=True needs curriculum=True"),
    ),
    case(
        "4-num_train_epochs-unset-is-still-trl-default",
        {},
        config,
        Check(lambda c: c.num_train_epochs == 3.0, "3.0, as in GRPOConfig"),
    ),
    case(
        "4-plan-line-max_steps-inside-one-pass",
        (32, {"max_steps": 12}),
        curriculum_plan_line,
        "curriculum: 2 stages over 12 optimizer steps; stage 0 = steps 1-12, stage 1 = not reached (it would start "
        "at step 17); 0.375 passes over the ranked prompts (one pass = 32 steps)",
    ),
    case(
        "4-plan-line-one-epoch",
        (32, {"num_train_epochs": 1}),
        curriculum_plan_line,
        "curriculum: 2 stages over 32 optimizer steps; stage 0 = steps 1-16, stage 1 = steps 17-32; 1 pass over the "
        "ranked prompts (one pass = 32 steps)",
    ),
    case(
        "4-plan-line-stage-shares-a-step-with-accumulation",
        (32, {"num_train_epochs": 1, "gradient_accumulation_steps": 3}),
        curriculum_plan_line,
        Check(lambda line: "stage 0 = steps 1-6, stage 1 = steps 6-11; 1 pass" in line, "step 6 holds both stages"),
    ),
    case(
        "4-max_steps-past-one-pass-is-an-error",
        (32, {"max_steps": 40}),
        curriculum_plan_line,
        Raises(ValueError, "--max_steps 40 is longer than one pass of the curriculum (32 optimizer steps"),
    ),
    case(
        "4-max_steps-past-one-pass-with-replay-is-logged",
        (32, {"max_steps": 40, "curriculum_replay": True}),
        curriculum_plan_line,
        Check(lambda line: "1.25 passes" in line and "replayed from stage 0 at step 33" in line, "the replay said"),
    ),
    case(
        "4-trainer-refuses-max_steps-past-one-pass-before-model",
        (8, {"max_steps": 100, "per_device_train_batch_size": 4, "num_generations": 4}),
        trainer_before_model,
        Raises(ValueError, "--max_steps 100 is longer than one pass of the curriculum"),
    ),
    case(
        "4-cli-max_steps-past-one-pass-fails-before-model",
        {"curriculum": True, "remove_unused_columns": False, "max_steps": 50},
        train_cli_before_model,
        before_model_error("--max_steps 50 is longer than one pass of the curriculum"),
    ),
    case(
        "4-cli-run-logs-the-schedule-line",
        (
            ranked_rows(8),
            {"curriculum": True, "remove_unused_columns": False, "num_train_epochs": 1, "reward_funcs": "format"},
        ),
        train_cli_run,
        Check(
            lambda r: (
                r.rc == 0
                and "curriculum: 2 stages over 8 optimizer steps; stage 0 = steps 1-4, stage 1 = steps 5-8; 1 pass"
                in r.stderr
            ),
            "the run logs its schedule in one line",
        ),
    ),  # fmt: skip
    # item 10a: chat prompts with an unknown role or no user turn are kept, with one warning naming row and role
    case(
        "10a-unknown-role-warns-once",
        [
            {"prompt": [{"role": "user", "content": "What is 1 + 1?"}], "answer": "2"},
            {
                "prompt": [{"role": "narrator", "content": "Once"}, {"role": "user", "content": "2 + 2?"}],
                "answer": "4",
            },
            {"prompt": [{"role": "critic", "content": "x"}, {"role": "user", "content": "3 + 3?"}], "answer": "6"},
        ],
        data_warnings,
        Check(
            lambda w: len(w) == 1 and "2 of 3 chat prompts" in w[0] and "row 1, role 'narrator'" in w[0],
            "one warning, naming row 1 and its role",
        ),
    ),
    case(
        "10a-only-an-assistant-turn-warns",
        [{"prompt": [{"role": "assistant", "content": "The answer is 4."}], "answer": "4"}],
        data_warnings,
        Check(lambda w: len(w) == 1 and "row 0, no user message (roles: assistant)" in w[0], "row 0 named"),
    ),
    case(
        "10a-ordinary-roles-are-quiet",
        [
            {
                "prompt": [{"role": "system", "content": "Think."}, {"role": "user", "content": "1 + 1?"}],
                "answer": "2",
            },
            {
                "prompt": [
                    {"role": "user", "content": "2 + 2?"},
                    {"role": "assistant", "content": "4"},
                    {"role": "tool", "content": "ok"},
                    {"role": "user", "content": "And 3 + 3?"},
                ],
                "answer": "6",
            },
        ],
        data_warnings,
        [],
    ),
    # item 10b: an optional reward_timeout abandons a hanging reward call with a clear error, in any thread
    case("10b-hanging-reward-times-out", "hang", timed_reward_call(1.0), timed_out(1.0)),
    case("10b-hanging-reward-times-out-off-main-thread", "hang", timed_reward_call(1.0, thread=True), timed_out(1.0)),
    case("10b-hanging-async-reward-times-out", "async_hang", timed_reward_call(1.0), timed_out(1.0)),
    case(
        "10b-reward-own-error-passes-through",
        "raises",
        timed_reward_call(5.0),
        Check(lambda r: isinstance(r.error, KeyError), "the reward's KeyError, not a timeout"),
    ),
    case(
        "10b-fast-reward-unchanged",
        "length",
        timed_reward_call(5.0),
        Check(lambda r: r.value == [1.0], "its value"),
    ),
    case(
        "10b-reward_timeout-must-be-positive",
        {"reward_timeout": 0.0},
        config,
        Raises(ValueError, "reward_timeout=0.0 is out of range"),
    ),
    case(
        "10b-cli-hanging-reward-stops-the-run",
        (ranked_rows(4), {"reward_funcs": "hostile_rewards.hanging_reward", "reward_timeout": 3, "max_steps": 1}),
        train_cli_run,
        Check(
            lambda r: (
                r.rc != 0
                and "RewardTimeoutError: reward function 'hanging_reward' did not return within reward_timeout=3 s"
                in r.stderr
            ),
            "the run stops with the reward named, instead of hanging",
        ),
    ),
    # item 10c: prompt + max_completion_length checked against the model's context (TRL 1.16 never truncates)
    case(
        "10c-15k-token-prompt-on-512-positions",
        (["What is 1 + 1?", LONG_PROMPT], 32),
        prompt_length_check,
        Raises(ValueError, "1 of 2 training prompts do not fit the model's context of 512 positions with "),
    ),
    case(
        "10c-error-names-the-row-and-the-flag",
        (["What is 1 + 1?", LONG_PROMPT], 32),
        error_message_of(prompt_length_check),
        Check(
            lambda m: "row 1 has" in m and "--max_completion_length" in m and "--max_prompt_length" in m,
            "names row 1, --max_completion_length, and that there is no --max_prompt_length",
        ),
    ),
    case(
        "10c-completion-length-fills-the-context",
        (["What is 1 + 1?" + " Think." * 60], 480),
        error_message_of(prompt_length_check),
        Check(lambda m: "row 0 has" in m and "lower --max_completion_length to" in m, "the completion budget named"),
    ),
    case(
        "10c-trainer-checks-before-training",
        ["What is 1 + 1?", LONG_PROMPT],
        trainer_train,
        Raises(ValueError, "row 1 has"),
    ),
    case("10c-prompts-that-fit-pass", (["What is 1 + 1?", "Think. " * 200], 32), prompt_length_check, None),
    case(
        "10c-cli-long-prompt-fails-before-training",
        ([{"prompt": "What is 1 + 1?", "answer": "2"}, {"prompt": LONG_PROMPT, "answer": "7500"}], {"max_steps": 1}),
        train_cli_run,
        Check(
            lambda r: (
                r.rc == 2
                and "error:" in r.stderr
                and "context of 512 positions" in r.stderr
                and "row 1" in r.stderr
                and "Traceback" not in r.stderr
            ),
            "one error line (exit 2) naming row 1, before training",
        ),
    ),  # fmt: skip
    # item 10d: messages that named the wrong thing
    case("10d-yaml-scalar-reward_funcs-is-a-list", "reward_funcs: accuracy\n", parsed_train_yaml, ["accuracy"]),
    case(
        "10d-cli-yaml-scalar-reward_funcs-trains-past-the-check",
        {"yaml": "reward_funcs: accuracy\n"},
        train_cli_before_model,
        Check(lambda r: "unknown reward" not in r.stderr and "no-such-model" in r.stderr, "reaches the model load"),
    ),
    case(
        "10d-se_num_samples-hint-names-train-flag",
        {"curriculum": True, "remove_unused_columns": False, "num_train_epochs": 1, "se_num_samples": 1},
        train_cli_before_model,
        Check(
            lambda r: (
                r.rc == 2
                and "--se_num_samples must be an integer >= 2" in r.stderr
                and "--num_samples" not in r.stderr
            ),
            "train.py's own flag, before the model loads",
        ),
    ),  # fmt: skip
    case(
        "10d-ranking-lock-names-output_dir",
        None,
        ranking_lock_held,
        Raises(RuntimeError, "choose another --output_dir."),
    ),
    case(
        "10d-shard-warning-holds-no-absolute-path",
        b"{not json",
        bad_shard_warning,
        Check(
            lambda r: (
                len(r.messages) == 1
                and "shards/0123456789abcdef/shard-000000.json" in r.messages[0]
                and r.tmp not in r.messages[0]
            ),
            "the shard by its path inside the output folder",
        ),
    ),
]


@pytest.mark.parametrize("given, call, expect", CASES)
def test_hostile_case(given, call, expect, request, tmp_path):
    env = Env(request, tmp_path)
    if isinstance(expect, Raises):
        with pytest.raises(expect.type) as info:
            call(given, env)
        assert expect.text in str(info.value), str(info.value)
        return
    outcome = call(given, env)
    if isinstance(expect, Check):
        assert expect.predicate(outcome), f"expected: {expect.what}; got {repr(outcome)[-3000:]}"
    else:
        assert outcome == expect


def test_the_table_names_are_unique():
    names = [p.id for p in CASES]
    assert len(names) == len(set(names))
    assert json.dumps(names)  # plain strings, usable with -k
