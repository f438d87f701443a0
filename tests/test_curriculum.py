"""CurriculumSampler: SE staging, RepeatSampler layout, determinism/resume, validation, accelerate sharding."""

import itertools
import logging
import math
import random

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard, prepare_data_loader
from datasets import Dataset
from torch.utils.data import DataLoader
from trl.trainer.utils import RepeatSampler

from sec_trl.curriculum import (
    CurriculumSampler,
    compute_stages,
    curriculum_schedule_summary,
    validate_semantic_entropy_column,
)


def make_se(n, seed=0):
    """Distinct SE values in random dataset order."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.linspace(0.0, 2.0, n)).tolist()


def make_sampler(n=24, se=None, **kwargs):
    se = make_se(n) if se is None else se
    params = dict(mini_repeat_count=2, batch_size=3, repeat_count=2, num_stages=2, seed=7)
    params.update(kwargs)
    return CurriculumSampler(list(range(len(se))), se, **params)


def split_chunks(stream, sampler):
    """Check the RepeatSampler layout of ``stream`` and return the distinct-prompt tuple of each chunk."""
    m, b, r = sampler.mini_repeat_count, sampler.batch_size, sampler.repeat_count
    per_chunk = m * b * r
    assert len(stream) % per_chunk == 0
    chunks = []
    for start in range(0, len(stream), per_chunk):
        block = stream[start : start + per_chunk]
        first = block[: m * b]
        # the chunk is repeated repeat_count times in a row
        assert block == first * r
        # each index repeated mini_repeat_count times consecutively
        prompts = first[::m]
        assert first == [i for i in prompts for _ in range(m)]
        # batch_size distinct prompts
        assert len(set(prompts)) == b
        chunks.append(tuple(prompts))
    return chunks


def epochs_of(sampler):
    """Prompts of each (stage, stage_epoch), in emission order."""
    out = {}
    for k in range(sampler.num_chunks):
        info = sampler.chunk_info(k)
        out.setdefault((info["stage"], info["stage_epoch"]), []).extend(sampler.chunk_indices(k))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Staging and order
# --------------------------------------------------------------------------------------------------------------------


def test_stage_order_non_decreasing_in_se():
    se = make_se(30)
    sampler = make_sampler(se=se, num_stages=3, batch_size=5)
    stream = list(sampler)
    chunks = split_chunks(stream, sampler)
    stages = [sampler.chunk_info(k)["stage"] for k in range(len(chunks))]
    assert stages == sorted(stages) and set(stages) == {0, 1, 2}
    by_stage = {s: [se[i] for c, st in zip(chunks, stages, strict=True) if st == s for i in c] for s in range(3)}
    for s in range(2):
        assert max(by_stage[s]) <= min(by_stage[s + 1])
    # stage s holds exactly the s-th third of the SE ranking
    ranking = sorted(range(30), key=lambda i: se[i])
    for s in range(3):
        assert sorted(i for c, st in zip(chunks, stages, strict=True) if st == s for i in c) == sorted(
            ranking[10 * s : 10 * s + 10]
        )


def test_array_split_sizes_and_stable_ties():
    se = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]  # 3 zeros (rows 1, 3, 5), 4 ones (rows 0, 2, 4, 6)
    order, stages = compute_stages(se, num_stages=3)
    assert order.tolist() == [1, 3, 5, 0, 2, 4, 6]
    assert [st.size for st in stages] == [3, 2, 2] == [len(a) for a in np.array_split(np.arange(7), 3)]
    assert [(st.se_min, st.se_max) for st in stages] == [(0.0, 0.0), (1.0, 1.0), (1.0, 1.0)]
    assert [st.ties_with_previous for st in stages] == [0, 0, 2]
    summary = curriculum_schedule_summary(se, num_stages=3, batch_size=2, epochs_per_stage=[1, 2, 3])
    assert "stage 2: 2 prompts" in summary and "tie with stage 1" in summary
    assert "1 prompt(s) dropped/epoch" in summary  # stage 0: 3 prompts, batches of 2


def test_shuffled_within_stage_same_set():
    se = make_se(24)
    sampler = make_sampler(se=se, batch_size=4)  # stages of 12 = 3 full chunks: nothing dropped
    ranking = sorted(range(24), key=lambda i: se[i])
    for (stage, _), prompts in epochs_of(sampler).items():
        stage_members = ranking[12 * stage : 12 * stage + 12]
        assert sorted(prompts) == sorted(stage_members)
        assert prompts != stage_members  # shuffled (for this seed)
    # no shuffle: SE order, every epoch
    plain = make_sampler(se=se, batch_size=4, shuffle_within_stage=False, epochs_per_stage=2)
    for (stage, _), prompts in epochs_of(plain).items():
        assert prompts == ranking[12 * stage : 12 * stage + 12]


def test_different_seeds_and_epochs_give_different_shuffles():
    a = epochs_of(make_sampler(n=40, batch_size=4, epochs_per_stage=2, seed=1))
    b = epochs_of(make_sampler(n=40, batch_size=4, epochs_per_stage=2, seed=2))
    assert a[(0, 0)] != b[(0, 0)]
    assert a[(0, 0)] != a[(0, 1)] and sorted(a[(0, 0)]) == sorted(a[(0, 1)])


def test_epochs_per_stage_repeats_each_stage():
    sampler = make_sampler(n=24, batch_size=4, epochs_per_stage=3)
    groups = epochs_of(sampler)
    assert sorted(groups) == [(s, e) for s in range(2) for e in range(3)]
    for s in range(2):
        assert all(sorted(groups[(s, e)]) == sorted(groups[(s, 0)]) for e in range(3))
    infos = sampler.schedule()
    assert [i["epoch"] for i in infos] == sorted(i["epoch"] for i in infos)
    assert sampler.num_chunks == 2 * 3 * 3
    # per-stage epochs
    uneven = make_sampler(n=24, batch_size=4, epochs_per_stage=[1, 3])
    assert sorted(epochs_of(uneven)) == [(0, 0), (1, 0), (1, 1), (1, 2)]
    assert uneven.stage_start_chunks == [0, 3]


def test_num_stages_one_is_seeded_shuffle_of_everything():
    se = make_se(20)
    sampler = make_sampler(se=se, num_stages=1, batch_size=5, seed=3)
    prompts = [i for k in range(sampler.num_chunks) for i in sampler.chunk_indices(k)]
    ranking = np.argsort(se, kind="stable")
    perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence([3, 0, 0]))).permutation(20)
    assert prompts == ranking[perm].tolist()
    assert sorted(prompts) == list(range(20))


def test_every_stage_and_epoch_is_its_own_seeded_shuffle():
    """The documented rule, (stage, epoch) -> SeedSequence([seed, stage, epoch]), pinned for every stage and epoch:
    a resumed run rebuilds its stream from it, so a change of rule would silently change a resumed run's prompts
    (and a rule without the stage would shuffle equal-sized stages alike)."""
    se = make_se(24)
    sampler = make_sampler(se=se, num_stages=2, batch_size=4, epochs_per_stage=2, seed=7)
    ranking = np.argsort(se, kind="stable")
    expected = []
    for stage, members in enumerate((ranking[:12], ranking[12:])):
        for epoch in range(2):
            perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence([7, stage, epoch]))).permutation(12)
            expected += members[perm].tolist()
    assert [i for k in range(sampler.num_chunks) for i in sampler.chunk_indices(k)] == expected


def test_matches_repeat_sampler_when_curriculum_is_trivial():
    """Equal SE, one stage, one epoch, no shuffle: exactly RepeatSampler(shuffle=False), incl. the dropped tail."""
    data = list(range(11))
    kwargs = dict(mini_repeat_count=3, batch_size=4, repeat_count=2)
    ours = CurriculumSampler(data, [0.0] * 11, num_stages=1, shuffle_within_stage=False, **kwargs)
    theirs = RepeatSampler(data, shuffle=False, **kwargs)
    assert list(ours) == list(theirs)
    assert len(ours) == len(theirs) == len(list(theirs))


# --------------------------------------------------------------------------------------------------------------------
# Layout, length, metrics
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,mini,batch,repeat,stages,epochs", [(24, 2, 3, 2, 2, 1), (50, 4, 6, 3, 3, 2), (9, 1, 1, 1, 9, 1)]
)
def test_group_structure_and_len(n, mini, batch, repeat, stages, epochs):
    sampler = make_sampler(
        n=n, mini_repeat_count=mini, batch_size=batch, repeat_count=repeat, num_stages=stages, epochs_per_stage=epochs
    )
    stream = list(sampler)
    assert len(sampler) == len(stream) == sampler.num_chunks * batch * mini * repeat
    chunks = split_chunks(stream, sampler)
    assert [list(c) for c in chunks] == [sampler.chunk_indices(k) for k in range(sampler.num_chunks)]
    expected_chunks = sum(st.epochs * (st.size // batch) for st in sampler.stages)
    assert sampler.num_chunks == expected_chunks


def test_chunk_info_and_positions():
    se = make_se(26)
    sampler = make_sampler(se=se, batch_size=4, epochs_per_stage=2)  # stages of 13: 3 chunks, 1 dropped per epoch
    assert sampler.num_chunks == 12
    for k in range(sampler.num_chunks):
        info = sampler.chunk_info(k)
        values = [se[i] for i in sampler.chunk_indices(k)]
        assert info["se_min"] == min(values) and info["se_max"] == max(values)
        assert info["progress"] == k / 12
        assert info["stage"] == (0 if k < 6 else 1)
        assert info["stage_epoch"] == (k % 6) // 3 and info["epoch"] == k // 3
    per_chunk = sampler.samples_per_chunk
    assert per_chunk == 4 * 2 * 2
    assert sampler.stage_of_position(6 * per_chunk - 1) == 0 and sampler.stage_of_position(6 * per_chunk) == 1
    assert sampler.chunk_index_of_position(len(sampler) - 1) == 11
    assert sampler.chunk_index_of_batch(5) == 2  # repeat_count 2
    with pytest.raises(IndexError):
        sampler.chunk_info(12)
    with pytest.raises(IndexError):
        sampler.stage_of_position(len(sampler))
    assert "total: 12 generation batches" in sampler.summary()


# --------------------------------------------------------------------------------------------------------------------
# Determinism and resume
# --------------------------------------------------------------------------------------------------------------------


def test_identical_across_ranks_and_reconstruction_independent_of_global_rng():
    se = make_se(40)
    streams = []
    for global_seed in (0, 1, 2):  # simulated ranks with different global RNG states
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        random.seed(global_seed)
        sampler = make_sampler(se=se, batch_size=4, epochs_per_stage=2)
        torch.rand(3)
        streams.append(list(sampler))
        streams.append(list(sampler))  # re-iterating yields the same stream
    assert all(s == streams[0] for s in streams)
    assert not hasattr(sampler, "generator")  # accelerate would re-seed / synchronise a `generator` attribute


@pytest.mark.parametrize("k", [0, 1, 5, 11])
def test_resume_position_is_exact(k):
    se = make_se(26)
    uninterrupted = list(make_sampler(se=se, batch_size=4, epochs_per_stage=2))
    fresh = make_sampler(se=se, batch_size=4, epochs_per_stage=2)  # a restarted job rebuilds the sampler
    skip = k * fresh.samples_per_chunk
    resumed = list(itertools.islice(iter(fresh), skip, None))
    assert resumed == uninterrupted[skip:]
    assert fresh.chunk_index_of_position(skip) == k


# --------------------------------------------------------------------------------------------------------------------
# Accelerate sharding (the way GRPOTrainer's dataloader is prepared)
# --------------------------------------------------------------------------------------------------------------------


def _sharded_loaders(sampler, per_process_batch, num_processes=2):
    loaders = []
    for rank in range(num_processes):
        loader = DataLoader(
            list(range(sampler.num_samples)), batch_size=per_process_batch, sampler=sampler, collate_fn=list
        )
        loaders.append(
            prepare_data_loader(
                loader, num_processes=num_processes, process_index=rank, split_batches=False, put_on_device=False
            )
        )
    return loaders


def test_accelerate_two_process_sharding_keeps_groups_intact():
    # GRPO with 2 processes: num_generations=4, generation_batch_size=12 -> 3 prompts per chunk; the per-process
    # dataloader batch is generation_batch_size / num_processes = 6 (per_device_train_batch_size * steps_per_gen).
    se = make_se(20)
    sampler = make_sampler(se=se, mini_repeat_count=4, batch_size=3, repeat_count=2, epochs_per_stage=2)
    rank0, rank1 = _sharded_loaders(sampler, per_process_batch=6)
    assert isinstance(rank0.batch_sampler, BatchSamplerShard) and rank1.batch_sampler.process_index == 1
    batches0, batches1 = list(rank0), list(rank1)
    assert len(batches0) == len(batches1) == len(rank0) == sampler.num_chunks * sampler.repeat_count
    for b, (x0, x1) in enumerate(zip(batches0, batches1, strict=True)):
        global_batch = x0 + x1  # what gather() reassembles, in rank order
        k = sampler.chunk_index_of_batch(b)
        # one generation batch = one chunk: 3 prompts x 4 completions, groups contiguous across the two ranks
        assert global_batch == [i for i in sampler.chunk_indices(k) for _ in range(4)]
    assert [i for x0, x1 in zip(batches0, batches1, strict=True) for i in x0 + x1] == list(sampler)


def test_accelerate_skip_first_batches_resume_is_exact():
    from accelerate import skip_first_batches

    se = make_se(20)
    full = [list(_sharded_loaders(make_sampler(se=se, mini_repeat_count=4, batch_size=3), 6)[r]) for r in range(2)]
    for skipped in (0, 3, 7):
        for rank in range(2):
            loader = _sharded_loaders(make_sampler(se=se, mini_repeat_count=4, batch_size=3), 6)[rank]
            assert list(skip_first_batches(loader, skipped)) == full[rank][skipped:]


# --------------------------------------------------------------------------------------------------------------------
# Validation and edge cases
# --------------------------------------------------------------------------------------------------------------------


def test_validate_column_ok():
    ds = Dataset.from_dict({"prompt": ["a", "b", "c"], "se": [0.5, 0, np.float32(1.25)]})
    assert validate_semantic_entropy_column(ds, "se") == [0.5, 0.0, 1.25]
    sampler = CurriculumSampler.from_dataset(ds, "se", mini_repeat_count=2, num_stages=3)
    assert [sampler.chunk_indices(k) for k in range(3)] == [[1], [0], [2]]


def test_validate_missing_column():
    ds = Dataset.from_dict({"prompt": ["a"], "answer": ["1"]})
    with pytest.raises(ValueError, match=r"no semantic-entropy column 'semantic_entropy'") as err:
        validate_semantic_entropy_column(ds, "semantic_entropy")
    assert "['prompt', 'answer']" in str(err.value)
    assert "python -m sec_trl.rank" in str(err.value) and "curriculum off" in str(err.value)


@pytest.mark.parametrize(
    "values,pattern",
    [
        (["0.1", "x", "0.3", "y"], r"'se' has 4 non-numeric value\(s\) \(first at row 0: '0.1'"),
        ([0.1, None, 0.3, None], r"'se' has 2 non-numeric value\(s\) \(first at row 1: None"),
        ([True, False, True, True], r"'se' has 4 non-numeric"),
        ([0.1, 0.2, math.nan, math.inf], r"'se' has 2 NaN/inf value\(s\) \(1 NaN, 1 inf; first at row 2"),
        ([math.nan, 0.2, math.nan, 0.0], r"'se' has 2 NaN/inf value\(s\) \(2 NaN, 0 inf; first at row 0"),
    ],
)
def test_validate_bad_values(values, pattern):
    ds = Dataset.from_dict({"prompt": list("abcd"), "se": values})
    with pytest.raises(ValueError, match=pattern):
        validate_semantic_entropy_column(ds, "se")


def test_validate_rejects_iterable_dataset():
    ds = Dataset.from_dict({"prompt": ["a"], "se": [0.1]}).to_iterable_dataset()
    with pytest.raises(ValueError, match="map-style dataset"):
        validate_semantic_entropy_column(ds, "se")


def test_sampler_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"num_stages=5 is larger than the number of prompts \(4\)"):
        make_sampler(se=[0.1, 0.2, 0.3, 0.4], num_stages=5, batch_size=1)
    with pytest.raises(ValueError, match="would yield no batch at all.*stage 1: 4.*Use fewer stages"):
        make_sampler(se=make_se(9), num_stages=2, batch_size=5)
    with pytest.raises(ValueError, match="3 values but the dataset has 4 rows"):
        CurriculumSampler([0, 1, 2, 3], [0.1, 0.2, 0.3], mini_repeat_count=2)
    with pytest.raises(ValueError, match="NaN/inf"):
        CurriculumSampler([0, 1], [0.1, math.nan], mini_repeat_count=2, num_stages=1)
    with pytest.raises(ValueError, match="epochs_per_stage has 3 entries but there are 2 stages"):
        make_sampler(epochs_per_stage=[1, 2, 3])
    for bad in (dict(batch_size=0), dict(repeat_count=0), dict(mini_repeat_count=1.5), dict(seed=-1)):
        with pytest.raises(ValueError, match="must be an integer"):
            make_sampler(**bad)


def test_warnings_for_dropped_prompts_and_boundary_ties(caplog):
    with caplog.at_level(logging.WARNING, logger="sec_trl.curriculum"):
        make_sampler(se=make_se(24), batch_size=4)  # stages of 12: nothing dropped, no ties
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="sec_trl.curriculum"):
        make_sampler(se=make_se(26), batch_size=4, shuffle_within_stage=False)
    assert "stage 0: 1 of 13" in caplog.text and "always the same highest-SE prompts" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sec_trl.curriculum"):
        make_sampler(se=[0.0] * 6 + [1.0] * 2, batch_size=2)  # 6 zeros: stage 1 gets 2 of them
    assert "2 in stage 1" in caplog.text


# --------------------------------------------------------------------------------------------------------------------
# A run's curriculum: settings from the config, one validation, the step of each stage
# --------------------------------------------------------------------------------------------------------------------


def curriculum_config(**overrides):
    from sec_trl import SETGRPOConfig

    params = dict(output_dir="o", report_to="none", num_generations=2, per_device_train_batch_size=4)
    params.update(steps_per_generation=3, gradient_accumulation_steps=1, num_iterations=2, seed=5)
    params.update(curriculum=True, curriculum_stages=2, curriculum_epochs_per_stage=2)
    params.update(curriculum_shuffle_within_stage=False, num_train_epochs=1)
    params.update(overrides)
    return SETGRPOConfig(**params)


def test_sampler_settings_and_build_from_the_config():
    from sec_trl.curriculum import build_curriculum_sampler, curriculum_sampler_settings

    args = curriculum_config()
    # generation_batch_size = 4 completions x 3 steps per generation = 12 = 6 prompts x 2 generations
    assert curriculum_sampler_settings(args) == {
        "mini_repeat_count": 2,
        "batch_size": 6,
        "repeat_count": 6,  # num_iterations * steps_per_generation
        "num_stages": 2,
        "epochs_per_stage": 2,
        "shuffle_within_stage": False,
        "seed": 5,
    }
    se = make_se(24)
    sampler = build_curriculum_sampler(Dataset.from_dict({"prompt": ["p"] * 24, "semantic_entropy": se}), args)
    assert (sampler.batch_size, sampler.repeat_count, sampler.epochs_per_stage) == (6, 6, [2, 2])
    assert sampler.chunk_indices(0) == np.argsort(se, kind="stable")[:6].tolist()  # SE order, no shuffle


def test_the_column_is_validated_once_per_dataset(monkeypatch):
    """Preflight, the trainer's constructor and its sampler each ask; the column is read and checked once, and a
    changed dataset (a new fingerprint) is checked anew."""
    import sec_trl.curriculum as curriculum
    from sec_trl.preflight import check_curriculum_fits

    checked = []
    real = curriculum._check_values
    monkeypatch.setattr(curriculum, "_check_values", lambda values, what: checked.append(what) or real(values, what))
    args = curriculum_config(curriculum_epochs_per_stage=1)
    # content no other test uses: datasets' fingerprint of in-memory data follows its content
    ds = Dataset.from_dict({"prompt": [f"validated once {i}" for i in range(24)], "semantic_entropy": make_se(24)})
    check_curriculum_fits(len(ds), args, ds)  # train.py's preflight
    assert validate_semantic_entropy_column(ds, "semantic_entropy") == list(ds["semantic_entropy"])  # the trainer
    curriculum.build_curriculum_sampler(ds, args)  # the trainer's sampler
    assert [what for what in checked if what.startswith("Semantic-entropy column")] == [
        "Semantic-entropy column 'semantic_entropy'"
    ]
    bad = ds.map(lambda row, i: {"semantic_entropy": -1.0 if i == 3 else row["semantic_entropy"]}, with_indices=True)
    with pytest.raises(ValueError, match="1 negative value"):
        validate_semantic_entropy_column(bad, "semantic_entropy")
    with pytest.raises(ValueError, match="1 negative value"):  # a failure is not remembered as a success
        validate_semantic_entropy_column(bad, "semantic_entropy")


def test_preflight_builds_one_placeholder_sampler():
    from sec_trl.curriculum import placeholder_sampler

    args = curriculum_config()
    assert placeholder_sampler(24, args) is placeholder_sampler(24, curriculum_config())
    assert placeholder_sampler(24, args) is not placeholder_sampler(36, args)
    assert placeholder_sampler(24, args) is not placeholder_sampler(24, curriculum_config(seed=6))


def _plan(sampler, repeat, gas, passes=3):
    from types import SimpleNamespace

    from sec_trl.curriculum import CurriculumPlan

    steps_per_pass = -(-sampler.num_chunks * repeat // gas)
    args = SimpleNamespace(
        steps_per_generation=repeat,
        num_iterations=1,
        gradient_accumulation_steps=gas,
        max_steps=passes * steps_per_pass,
    )
    return CurriculumPlan.from_sampler(sampler, args), steps_per_pass


@pytest.mark.parametrize("repeat,gas", [(1, 1), (2, 1), (3, 2), (2, 4), (4, 2), (6, 3), (1, 3)])
def test_the_plan_maps_steps_to_stages_as_the_trainer_feeds_them(repeat, gas):
    """One mapping from optimizer steps to stages (`CurriculumPlan`), checked against the micro-batches each step
    takes, enumerated by brute force: a step's stage is its first micro-batch's; a stage's (first, last) steps are
    the steps that train any of its micro-batches; each pass (Trainer epoch) replays the same steps."""
    sampler = make_sampler(n=30, batch_size=2, repeat_count=repeat, num_stages=3, epochs_per_stage=[1, 2, 1])
    plan, steps_per_pass = _plan(sampler, repeat, gas)
    micro_per_pass = sampler.num_chunks * repeat
    assert (plan.steps_per_pass, plan.passes, plan.num_stages) == (steps_per_pass, 3, 3)
    stages_of = []  # per step of one pass: the stages of its micro-batches, in order
    for step in range(steps_per_pass):
        micros = range(step * gas, min((step + 1) * gas, micro_per_pass))
        stages_of.append([sampler.chunk_info(m // repeat)["stage"] for m in micros])
    for step in range(3 * steps_per_pass):
        assert plan.stage_of_step(step) == stages_of[step % steps_per_pass][0]
    for stage, (first, last) in enumerate(plan.stage_steps()):
        having = [k + 1 for k, stages in enumerate(stages_of) if stage in stages]
        assert (first, last) == (having[0], having[-1])
    assert plan.stage_steps()[1][0] == sampler.stage_start_chunks[1] * repeat // gas + 1


@pytest.mark.parametrize("repeat,gas", [(1, 3), (1, 4), (2, 5)])
def test_one_pass_ends_with_the_last_stage_even_when_steps_span_stages(repeat, gas):
    """A last stage of one rollout batch, in an optimizer step that also trains the stage before: one pass still
    names the last stage's first step (preflight's warning needs it), never the replay's stage 0."""
    sampler = make_sampler(n=12, batch_size=2, repeat_count=repeat, num_stages=2, epochs_per_stage=[5, 1])
    plan, _ = _plan(sampler, repeat, gas, passes=1)
    first, last = plan.stage_steps()[-1]
    assert first == sampler.stage_start_chunks[1] * repeat // gas + 1
    assert last == plan.steps_per_pass
