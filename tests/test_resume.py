"""The curriculum's prompt stream through interruptions and processes: a run killed with SIGKILL after a checkpoint
and resumed, and a 2-process run (plain DDP on gloo) resumed from a checkpoint, must both feed exactly the prompts
of one uninterrupted single-process run, in the same order, none skipped or repeated.

The prompt stream is recorded by the reward function: one line per call (= per rollout batch on that process) with
the dataset rows it scored, in one file per process.
"""

import json
import signal
from pathlib import Path

import pytest
from helpers.train_flags import DDP_TWO_CPU_PROCESSES, accelerate_launch, run_train, subprocess_env, train_flags


RECORDING_REWARD = """
import json, os, signal
from pathlib import Path


def recording_reward(completions, row, **kwargs):
    # SIGKILL this process (no cleanup possible) at the first rollout after a given checkpoint is complete: the
    # trainer starts the next step only after it has written the checkpoint's last file, trainer_state.json.
    kill_after = os.environ.get("KILL_AFTER_CHECKPOINT")
    if kill_after and (Path(kill_after) / "trainer_state.json").exists():
        os.kill(os.getpid(), signal.SIGKILL)
    with open(f"{os.environ['PROMPT_STREAM']}.rank{os.environ.get('RANK', '0')}", "a") as f:
        f.write(json.dumps(list(row)) + "\\n")
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]
"""

# 12 prompts with a semantic_entropy column (so no ranking runs), 2 stages of 6; 2 prompts x 2 completions per
# rollout batch, each feeding 2 optimizer steps -> 3 rollout batches per stage, 12 steps for the whole curriculum.
NUM_PROMPTS = 12
PROMPTS_PER_ROLLOUT = 2
STEPS_PER_ROLLOUT = 2


def _curriculum_flags(model, data, out, **overrides):
    flags = dict(
        model_name_or_path=model,
        dataset_name=data,
        reward_funcs="stream_rewards.recording_reward",
        curriculum=True,
        curriculum_stages=2,
        num_train_epochs=1,
        num_generations=2,
        per_device_train_batch_size=2,
        steps_per_generation=STEPS_PER_ROLLOUT,
        max_completion_length=4,
        max_steps=12,
        save_strategy="steps",
        save_steps=4,
        logging_steps=1,
        seed=3,
        output_dir=out,
    )
    return train_flags(**{**flags, **overrides})


def _se(row):
    return (row * 7 % 12) / 10


def _check_curriculum_log(state_file, reference, first_batch):
    """The curriculum/* metrics of the generating steps, by value: rollout batch k is generated at step 2k + 1, is
    chunk k of the 6 (stage 0 for k < 3), and its SE range is that of the rows the single-process run scored."""
    history = json.loads(Path(state_file).read_text())["log_history"]
    logs = [entry for entry in history if "curriculum/stage" in entry]
    batches = range(first_batch, first_batch + len(logs))
    assert [e["step"] for e in logs] == [2 * k + 1 for k in batches]
    assert [e["curriculum/stage"] for e in logs] == [float(k >= 3) for k in batches]
    assert [e["curriculum/progress"] for e in logs] == pytest.approx([k / 6 for k in batches])
    assert [e["curriculum/se_min"] for e in logs] == pytest.approx([min(map(_se, reference[k])) for k in batches])
    assert [e["curriculum/se_max"] for e in logs] == pytest.approx([max(map(_se, reference[k])) for k in batches])


def _stream(prefix, rank=0):
    """The rows scored by one process, one list per rollout batch."""
    return [json.loads(line) for line in Path(f"{prefix}.rank{rank}").read_text().splitlines()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream")
    (path / "stream_rewards.py").write_text(RECORDING_REWARD)
    # SE values in a scrambled order, so the curriculum order differs from the dataset order
    rows = [{"prompt": f"Question {i}", "answer": str(i), "semantic_entropy": _se(i), "row": i}
            for i in range(NUM_PROMPTS)]  # fmt: skip
    (path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def reference(tiny_model_dir, workdir):
    """One uninterrupted single-process run: 12 steps, a rollout batch every 2 -> 6 rollout batches of 2 prompts x 2.

    Returns the scored rows per rollout batch; checks that it is the whole curriculum: every prompt of the low
    semantic-entropy stage (the first 6 ranked) once, then every prompt of the high stage once, each prompt's 2
    completions side by side.
    """
    result = run_train(
        _curriculum_flags(tiny_model_dir, "train.jsonl", workdir / "full"),
        workdir,
        env=subprocess_env(PROMPT_STREAM=str(workdir / "full")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stream = _stream(workdir / "full")
    assert len(stream) == 6
    ranked = sorted(range(NUM_PROMPTS), key=lambda i: (_se(i), i))
    prompts = [batch[::2] for batch in stream]
    assert all(batch[0::2] == batch[1::2] for batch in stream)  # a GRPO group = 2 consecutive copies of a prompt
    assert sorted(sum(prompts[:3], [])) == sorted(ranked[:6]) and sorted(sum(prompts[3:], [])) == sorted(ranked[6:])
    _check_curriculum_log(workdir / "full" / "checkpoint-12" / "trainer_state.json", stream, 0)
    return stream


def test_sigkill_and_resume_continue_the_exact_prompt_stream(tiny_model_dir, workdir, reference):
    # 1. the same run, SIGKILLed at its first rollout after checkpoint-4 is complete (step 5, the 3rd rollout)
    out = workdir / "killed"
    killed = run_train(
        _curriculum_flags(tiny_model_dir, "train.jsonl", out),
        workdir,
        env=subprocess_env(PROMPT_STREAM=str(workdir / "killed"), KILL_AFTER_CHECKPOINT=str(out / "checkpoint-4")),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (out / "model.safetensors").exists()
    assert _stream(workdir / "killed") == reference[:2]

    # 2. resume from the latest checkpoint: the stream continues exactly where checkpoint-4 left it (after 4 steps
    # = 2 rollout batches)
    resumed = run_train(
        [*_curriculum_flags(tiny_model_dir, "train.jsonl", out), "--resume_from_checkpoint", "true"],
        workdir,
        env=subprocess_env(PROMPT_STREAM=str(workdir / "resumed")),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _stream(workdir / "resumed") == reference[2:]
    assert (out / "model.safetensors").exists()
    # the curriculum position logged after the resume counts from the run's start (the resumed steps 5-11)
    _check_curriculum_log(out / "checkpoint-12" / "trainer_state.json", reference, 0)


def _check_shards(prefix, expected):
    """Per rollout batch, rank 0 holds the first half and rank 1 the second half of the single-process batch."""
    rank0, rank1 = _stream(prefix, 0), _stream(prefix, 1)
    assert len(rank0) == len(rank1) == len(expected)
    half = len(expected[0]) // 2
    for k, batch in enumerate(expected):
        assert (rank0[k], rank1[k]) == (batch[:half], batch[half:]), f"rollout batch {k}"


def test_two_processes_follow_the_single_process_stream_across_a_resume(tiny_model_dir, workdir, reference):
    """2 ranks with half the per-device batch (same generation batch): each rollout batch of the single-process run
    is split into its two halves, rank 0 first, and a resumed 2-process run goes on from the checkpoint's position.

    A shuffle or stage order that depended on the process rank (or on anything but the seed and the data) would put
    different prompts on the ranks, or repeat / skip some across them.
    """

    # 8 of the 12 steps: 4 rollout batches, crossing the stage boundary (after the 3rd)
    def flags(out):
        return _curriculum_flags(tiny_model_dir, "train.jsonl", out, per_device_train_batch_size=1, max_steps=8)

    out = workdir / "ddp"
    first = accelerate_launch(
        DDP_TWO_CPU_PROCESSES, flags(out), workdir, env=subprocess_env(PROMPT_STREAM=str(workdir / "ddp"))
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    _check_shards(workdir / "ddp", reference[:4])
    # the logged SE range spans both ranks' prompts
    _check_curriculum_log(out / "checkpoint-8" / "trainer_state.json", reference, 0)

    # resume from checkpoint-4 (both ranks' RNG states are in it): rollout batches 2 and 3 again, on both ranks
    assert (out / "checkpoint-4" / "rng_state_0.pth").exists() and (out / "checkpoint-4" / "rng_state_1.pth").exists()
    resumed = accelerate_launch(
        DDP_TWO_CPU_PROCESSES,
        [*flags(workdir / "ddp-resumed"), "--resume_from_checkpoint", str(out / "checkpoint-4")],
        workdir,
        env=subprocess_env(PROMPT_STREAM=str(workdir / "ddp-resumed")),
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
    _check_shards(workdir / "ddp-resumed", reference[2:4])
    _check_curriculum_log(workdir / "ddp-resumed" / "checkpoint-8" / "trainer_state.json", reference, 0)
