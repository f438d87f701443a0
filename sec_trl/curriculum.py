"""Semantic-entropy curriculum: a drop-in replacement for TRL's ``RepeatSampler`` that walks the data easy -> hard.

SENT (Cao et al. 2025, https://arxiv.org/abs/2512.04359) orders the training prompts by the base model's semantic
entropy (SE, low = the model answers consistently) and trains in stages from low to high SE, shuffling inside each
stage. :class:`CurriculumSampler` produces that order for one training run, in the exact index layout that
``GRPOTrainer`` expects from ``RepeatSampler``.

Index layout (the ``RepeatSampler`` contract, kept exactly)
    * each prompt index is repeated ``mini_repeat_count`` (= ``num_generations``) times consecutively, so the
      completions of one prompt form one group;
    * ``batch_size`` (= ``generation_batch_size // num_generations``) distinct prompts form a *chunk*
      (one generation batch, ``batch_size * mini_repeat_count`` samples);
    * each chunk is emitted ``repeat_count`` (= ``num_iterations * steps_per_generation``) times in a row: GRPO
      generates on the first pass and reuses the buffered completions on the others;
    * an incomplete final chunk is dropped.
    The order is a pure function of the constructor arguments (no global RNG, no rank-dependent logic), so every
    process builds the same stream and accelerate's ``BatchSamplerShard`` hands consecutive slices of one
    generation batch to the processes, exactly as with ``RepeatSampler``.

Curriculum rules
    * **Ranking**: prompts are sorted by SE ascending; ties keep dataset-index order (stable sort).
    * **Stages**: the ranked list is cut into ``num_stages`` contiguous stages with ``numpy.array_split``
      semantics: with ``n`` prompts, the first ``n % num_stages`` stages hold ``n // num_stages + 1`` prompts, the
      others ``n // num_stages``. Hence ``max(SE of stage s) <= min(SE of stage s + 1)``; equality happens when a
      run of tied SE values straddles a cut (frequent with the discrete estimator, whose values are quantised; the
      tied prompts are then split by dataset index). :func:`curriculum_schedule_summary` reports such ties.
    * **Epochs**: stage 0 is emitted for ``epochs_per_stage`` epochs, then stage 1, ... all in ONE pass of the
      sampler (= one training run; optimizer and LR-schedule state carry over between stages unless the trainer's
      ``curriculum_stage_restart`` resets them at each boundary, as the reference's stage-by-stage runs do).
    * **Shuffling**: with ``shuffle_within_stage`` each (stage, epoch) is an independent permutation of the stage,
      drawn from a private ``numpy`` generator seeded with ``SeedSequence([seed, stage, epoch])``; otherwise the
      stage is emitted in SE order every epoch.
    * **Chunk boundaries**: every (stage, epoch) is chunked on its own, and an incomplete final chunk of that
      epoch is dropped, as ``RepeatSampler`` does for its single epoch. A generation batch therefore never mixes
      two stages (nor two epochs). With shuffling a different subset is dropped each epoch; without it the same
      highest-SE prompts of the stage are dropped every epoch. A stage with fewer prompts than ``batch_size``
      would yield no chunk at all: that raises a ``ValueError``.

Stage numbers, epoch numbers and chunk indices are 0-based everywhere.

Trainer integration notes
    * Every ``__iter__`` yields the identical stream (there is no ``set_epoch``): the whole curriculum is one
      pass, so the trainer should run ``num_train_epochs=1`` (a full pass is ``num_chunks * repeat_count``
      dataloader batches, i.e. that many micro-steps); more trainer epochs replay the identical curriculum, which
      ``SETGRPOConfig`` refuses unless ``curriculum_replay`` accepts it (``CurriculumPlan`` maps steps to stages).
    * Resuming: HF ``Trainer`` rebuilds the dataloader and skips the consumed batches
      (``accelerate.skip_first_batches``); since the stream is deterministic, the resumed stream is exactly the
      uninterrupted one sliced after those batches. (Version caveat: the permutations come from numpy's PCG64
      ``Generator.permutation``; resume with the same numpy major version.)
    * The sampler deliberately has no ``generator`` attribute: ``accelerate.prepare_data_loader`` seeds a missing
      ``sampler.generator`` from the global RNG and synchronises it across processes, which is not wanted here.
    * Mapping training steps to chunks: in GRPO each dataloader batch of one process is that process's slice of
      one generation batch, so the ``b``-th dataloader batch (0-based, counted from the start of the run, i.e. the
      ``b``-th micro-step) belongs to chunk ``b // repeat_count`` (:meth:`CurriculumSampler.chunk_index_of_batch`).
      :class:`CurriculumPlan` maps optimizer steps to stages, for the trainer's stage restarts, learning-rate
      schedule and logged stage and for preflight's checks alike.
    * One run builds its sampler from the config with :func:`build_curriculum_sampler`
      (:func:`curriculum_sampler_settings`); the semantic-entropy column is validated once per dataset
      (:func:`validate_semantic_entropy_column` keeps the result by the dataset's fingerprint), and preflight's
      checks share one placeholder sampler (:func:`placeholder_sampler`).
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from collections import OrderedDict
from collections.abc import Iterator, Sequence, Sized
from dataclasses import asdict, dataclass

import numpy as np
from torch.utils.data import Sampler


logger = logging.getLogger(__name__)

RANK_HINT = (
    "compute it first with `python -m sec_trl.rank` (which samples the base model and adds the column), "
    "or turn the curriculum off"
)


# --------------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------------


def _is_number(value) -> bool:
    # bool is an int subclass but a True/False "entropy" is a bug upstream, not a value to rank by.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_values(values: Sequence, what: str) -> list[float]:
    """Numeric and finite, else ValueError naming ``what``; returns plain floats."""
    values = list(values)
    if not values:
        raise ValueError(f"{what} is empty: the curriculum needs one semantic-entropy value per prompt.")
    bad = [i for i, v in enumerate(values) if not _is_number(v)]
    if bad:
        first = values[bad[0]]
        raise ValueError(
            f"{what} has {len(bad)} non-numeric value(s) (first at row {bad[0]}: {first!r} of type "
            f"{type(first).__name__}); semantic entropy must be a real number per prompt. Re-run the ranking or "
            "cast the column to float."
        )
    floats = [float(v) for v in values]
    nonfinite = [i for i, v in enumerate(floats) if not math.isfinite(v)]
    if nonfinite:
        n_nan = sum(math.isnan(floats[i]) for i in nonfinite)
        raise ValueError(
            f"{what} has {len(nonfinite)} NaN/inf value(s) ({n_nan} NaN, {len(nonfinite) - n_nan} inf; first at row "
            f"{nonfinite[0]}: {floats[nonfinite[0]]}). Re-rank those prompts or drop them before training."
        )
    negative = [i for i, v in enumerate(floats) if v < 0]
    if negative:  # an entropy is >= 0: a negative value is a bug upstream (wrong column, log-prob, sign)
        raise ValueError(
            f"{what} has {len(negative)} negative value(s) (first at row {negative[0]}: {floats[negative[0]]}); "
            "semantic entropy is >= 0. Is the column really an entropy (not a log-probability)? Re-run the ranking."
        )
    return floats


def validate_semantic_entropy_column(dataset, column: str) -> list[float]:
    """Return the semantic-entropy column of ``dataset`` as a list of finite floats, or raise a ``ValueError``.

    ``dataset`` is a map-style dataset with ``column_names`` (a ``datasets.Dataset``). Rejected, with a message
    naming the column: a missing column (the message lists the available columns and how to create it), an
    iterable dataset (no random access, so no curriculum), non-numeric values (``None``, strings, booleans) and
    NaN/inf values (count and first row index are reported).
    """
    columns = getattr(dataset, "column_names", None)
    if columns is None or not hasattr(dataset, "__len__"):
        raise ValueError(
            f"The semantic-entropy curriculum needs a map-style dataset with a {column!r} column; got "
            f"{type(dataset).__name__} (iterable/streaming datasets cannot be reordered). Load the dataset without "
            "streaming or turn the curriculum off."
        )
    if column not in columns:
        raise ValueError(
            f"The training dataset has no semantic-entropy column {column!r} (columns: {list(columns)}). Either "
            f"{RANK_HINT}, or point the curriculum at the right column name."
        )
    key = _validation_key(dataset, column)
    if key is not None and key in _VALIDATED:
        _VALIDATED.move_to_end(key)
        return list(_VALIDATED[key])
    values = _check_values(dataset[column], f"Semantic-entropy column {column!r}")
    if key is not None:
        _VALIDATED[key] = tuple(values)
        while len(_VALIDATED) > _VALIDATED_MAX:
            _VALIDATED.popitem(last=False)
    return values


# The validated columns of the last few datasets, by `datasets`' fingerprint (a new one for every change to a
# dataset): preflight, the trainer's constructor and its sampler read and check a run's column once.
_VALIDATED: OrderedDict[tuple, tuple[float, ...]] = OrderedDict()
_VALIDATED_MAX = 4


def _validation_key(dataset, column: str) -> tuple | None:
    fingerprint = getattr(dataset, "_fingerprint", None)
    return (fingerprint, column, len(dataset)) if isinstance(fingerprint, str) else None


# --------------------------------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageInfo:
    """One curriculum stage. ``rank_start:rank_end`` is its slice of the SE-ascending order."""

    stage: int
    size: int
    rank_start: int
    rank_end: int
    se_min: float
    se_max: float
    epochs: int
    chunks_per_epoch: int | None  # None when no batch_size was given
    dropped_per_epoch: int | None  # prompts left out of each epoch by the incomplete final chunk
    ties_with_previous: int  # prompts of this stage whose SE equals the previous stage's maximum

    def as_dict(self) -> dict:
        return asdict(self)


def _stage_sizes(num_prompts: int, num_stages: int) -> list[int]:
    """``numpy.array_split`` sizes: the first ``num_prompts % num_stages`` stages get one extra prompt."""
    return [len(part) for part in np.array_split(np.arange(num_prompts), num_stages)]


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _epochs_list(epochs_per_stage, num_stages: int) -> list[int]:
    if isinstance(epochs_per_stage, Sequence) and not isinstance(epochs_per_stage, str):
        if len(epochs_per_stage) != num_stages:
            raise ValueError(
                f"epochs_per_stage has {len(epochs_per_stage)} entries but there are {num_stages} stages; give one "
                "integer for all stages or one per stage."
            )
        return [_check_int(f"epochs_per_stage[{s}]", e) for s, e in enumerate(epochs_per_stage)]
    return [_check_int("epochs_per_stage", epochs_per_stage)] * num_stages


def compute_stages(
    semantic_entropy: Sequence[float],
    num_stages: int,
    batch_size: int | None = None,
    epochs_per_stage: int | Sequence[int] = 1,
) -> tuple[np.ndarray, list[StageInfo]]:
    """Rank prompts by SE and split them into stages (pure). Returns ``(order, stages)``.

    ``order`` is the array of prompt indices sorted by SE ascending (stable: ties by index); stage ``s`` is
    ``order[stages[s].rank_start:stages[s].rank_end]``. Raises ``ValueError`` when ``num_stages`` exceeds the
    number of prompts (a stage would be empty).
    """
    se = np.asarray(_check_values(semantic_entropy, "semantic_entropy"), dtype=np.float64)
    return _compute_stages(se, num_stages, batch_size, epochs_per_stage)


def _compute_stages(se: np.ndarray, num_stages, batch_size, epochs_per_stage) -> tuple[np.ndarray, list[StageInfo]]:
    """:func:`compute_stages` on values already checked (a float64 array)."""
    num_stages = _check_int("num_stages", num_stages)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size)
    epochs = _epochs_list(epochs_per_stage, num_stages)
    n = len(se)
    if num_stages > n:
        raise ValueError(
            f"num_stages={num_stages} is larger than the number of prompts ({n}): a stage would be empty. Use at most "
            f"{n} stages (SENT uses 2)."
        )
    order = np.argsort(se, kind="stable")
    sorted_se = se[order]
    stages = []
    start = 0
    for s, size in enumerate(_stage_sizes(n, num_stages)):
        end = start + size
        lo, hi = float(sorted_se[start]), float(sorted_se[end - 1])
        ties = int(np.count_nonzero(sorted_se[start:end] == stages[-1].se_max)) if stages else 0
        stages.append(
            StageInfo(
                stage=s,
                size=size,
                rank_start=start,
                rank_end=end,
                se_min=lo,
                se_max=hi,
                epochs=epochs[s],
                chunks_per_epoch=None if batch_size is None else size // batch_size,
                dropped_per_epoch=None if batch_size is None else size % batch_size,
                ties_with_previous=ties,
            )
        )
        start = end
    return order, stages


def curriculum_schedule_summary(
    semantic_entropy: Sequence[float],
    num_stages: int,
    batch_size: int | None = None,
    epochs_per_stage: int | Sequence[int] = 1,
) -> str:
    """Human-readable stage table (sizes, SE thresholds, chunks and drops per epoch, boundary ties), for logs."""
    _, stages = compute_stages(semantic_entropy, num_stages, batch_size, epochs_per_stage)
    return _stage_table(stages, batch_size)


def _stage_table(stages: Sequence[StageInfo], batch_size: int | None) -> str:
    num_stages = len(stages)
    n = sum(st.size for st in stages)
    lines = [f"Semantic-entropy curriculum: {n} prompts, {num_stages} stage(s), ranked by SE ascending"]
    for st in stages:
        line = (
            f"  stage {st.stage}: {st.size} prompts (ranks {st.rank_start}..{st.rank_end - 1}), "
            f"SE in [{st.se_min:.4g}, {st.se_max:.4g}], {st.epochs} epoch(s)"
        )
        if st.chunks_per_epoch is not None:
            line += f", {st.chunks_per_epoch} generation batch(es)/epoch of {batch_size} prompts"
            if st.dropped_per_epoch:
                line += f", {st.dropped_per_epoch} prompt(s) dropped/epoch"
        if st.ties_with_previous:
            line += (
                f"; {st.ties_with_previous} prompt(s) tie with stage {st.stage - 1}'s maximum SE "
                f"{st.se_min:.4g} (split by dataset index)"
            )
        lines.append(line)
    if len(stages) > 1:
        cuts = ", ".join(f"{a.se_max:.4g}|{b.se_min:.4g}" for a, b in zip(stages, stages[1:], strict=False))
        lines.append(f"  stage cuts (max|min): {cuts}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------------------------------------


def _permutation(size: int, seed: int, stage: int, epoch: int) -> np.ndarray:
    """The within-stage shuffle of (stage, epoch): a pure function of its arguments (private generator)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stage, epoch])))
    return rng.permutation(size)


class CurriculumSampler(Sampler[int]):
    """``RepeatSampler``-compatible sampler that emits prompts in semantic-entropy stages (easy -> hard).

    Args:
        data_source: the dataset (only its length is used, as in ``RepeatSampler``).
        semantic_entropy: one finite SE value per row of ``data_source``
            (see :func:`validate_semantic_entropy_column`).
        mini_repeat_count: consecutive repeats of each index (GRPO: ``num_generations``).
        batch_size: distinct prompts per chunk (GRPO: ``generation_batch_size // num_generations``).
        repeat_count: consecutive repeats of each chunk (GRPO: ``num_iterations * steps_per_generation``).
        num_stages: number of SE stages (SENT: 2).
        epochs_per_stage: epochs over each stage before moving on (SENT: 5); an int, or one int per stage.
        shuffle_within_stage: shuffle each (stage, epoch) independently; else SE order.
        seed: non-negative integer; with the other arguments it fully determines the order.

    See the module docstring for the exact rules. Stages, epochs and chunks are 0-based.
    """

    def __init__(
        self,
        data_source: Sized,
        semantic_entropy: Sequence[float],
        mini_repeat_count: int,
        batch_size: int = 1,
        repeat_count: int = 1,
        num_stages: int = 2,
        epochs_per_stage: int | Sequence[int] = 1,
        shuffle_within_stage: bool = True,
        seed: int = 0,
    ):
        self.data_source = data_source
        self.mini_repeat_count = _check_int("mini_repeat_count", mini_repeat_count)
        self.batch_size = _check_int("batch_size", batch_size)
        self.repeat_count = _check_int("repeat_count", repeat_count)
        self.num_stages = _check_int("num_stages", num_stages)
        self.shuffle_within_stage = bool(shuffle_within_stage)
        self.seed = _check_int("seed", seed, minimum=0)
        self.num_samples = len(data_source)
        se = list(semantic_entropy)
        if len(se) != self.num_samples:
            raise ValueError(
                f"semantic_entropy has {len(se)} values but the dataset has {self.num_samples} rows; the SE column "
                "must come from the same (filtered) dataset the trainer samples from."
            )
        self.semantic_entropy = np.asarray(_check_values(se, "semantic_entropy"), dtype=np.float64)
        self.order, self.stages = _compute_stages(self.semantic_entropy, num_stages, self.batch_size, epochs_per_stage)
        self.epochs_per_stage = [st.epochs for st in self.stages]

        self._check_stage_sizes()
        self._build_schedule()

    def _check_stage_sizes(self) -> None:
        """Every stage holds a generation batch (else ValueError); warn about dropped prompts and tied cuts."""
        too_small = [st for st in self.stages if st.size < self.batch_size]
        if too_small:
            sizes = ", ".join(f"stage {st.stage}: {st.size}" for st in too_small)
            raise ValueError(
                f"Curriculum stage(s) smaller than one generation batch ({self.batch_size} distinct prompts = "
                f"generation_batch_size // num_generations) would yield no batch at all ({sizes}). Use fewer stages "
                f"(at most {self.num_samples // self.batch_size}), a smaller generation_batch_size / more "
                "num_generations per prompt, or more training prompts."
            )
        dropping = [st for st in self.stages if st.dropped_per_epoch]
        if dropping:
            detail = ", ".join(f"stage {st.stage}: {st.dropped_per_epoch} of {st.size}" for st in dropping)
            which = (
                "a different random subset each epoch"
                if self.shuffle_within_stage
                else "always the same highest-SE prompts of the stage, since shuffling is off"
            )
            logger.warning(
                "Curriculum: stage size is not a multiple of %d prompts per generation batch; the incomplete final "
                "batch of every epoch is dropped (%s; %s).",
                self.batch_size,
                detail,
                which,
            )
        tied = [st for st in self.stages if st.ties_with_previous]
        if tied:
            detail = ", ".join(f"{st.ties_with_previous} in stage {st.stage}" for st in tied)
            logger.warning(
                "Curriculum: tied semantic-entropy values straddle a stage cut (%s share the previous stage's "
                "maximum SE); they are assigned by dataset index.",
                detail,
            )

    def _build_schedule(self) -> None:
        """Precompute the chunk schedule: one row of distinct prompt indices per generation batch, with its stage,
        epoch and SE range."""
        blocks, stage_of, epoch_of, stage_epoch_of = [], [], [], []
        global_epoch = 0
        for st in self.stages:
            members = self.order[st.rank_start : st.rank_end]
            usable = st.chunks_per_epoch * self.batch_size
            for epoch in range(st.epochs):
                if self.shuffle_within_stage:
                    epoch_order = members[_permutation(st.size, self.seed, st.stage, epoch)]
                else:
                    epoch_order = members
                blocks.append(epoch_order[:usable].reshape(st.chunks_per_epoch, self.batch_size))
                stage_of += [st.stage] * st.chunks_per_epoch
                epoch_of += [global_epoch] * st.chunks_per_epoch
                stage_epoch_of += [epoch] * st.chunks_per_epoch
                global_epoch += 1
        self._chunks = np.concatenate(blocks).astype(np.int64)
        self._chunk_stage = np.asarray(stage_of, dtype=np.int64)
        self._chunk_epoch = np.asarray(epoch_of, dtype=np.int64)
        self._chunk_stage_epoch = np.asarray(stage_epoch_of, dtype=np.int64)
        chunk_se = self.semantic_entropy[self._chunks]
        self._chunk_se_min = chunk_se.min(axis=1)
        self._chunk_se_max = chunk_se.max(axis=1)
        self.stage_start_chunks = [int(np.searchsorted(self._chunk_stage, s)) for s in range(self.num_stages)]
        """Index of the first chunk of each stage."""

    # -- RepeatSampler contract --------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[int]:
        for chunk in self._chunks:
            block = np.repeat(chunk, self.mini_repeat_count).tolist()
            for _ in range(self.repeat_count):
                yield from block

    def __len__(self) -> int:
        return self.num_chunks * self.samples_per_chunk

    # -- schedule ----------------------------------------------------------------------------------------------------

    @property
    def num_chunks(self) -> int:
        """Number of distinct generation batches in the run."""
        return len(self._chunks)

    @property
    def samples_per_chunk(self) -> int:
        """Indices emitted per chunk, repeats included: ``batch_size * mini_repeat_count * repeat_count``."""
        return self.batch_size * self.mini_repeat_count * self.repeat_count

    def _check_chunk(self, chunk_index: int) -> int:
        if isinstance(chunk_index, bool) or not isinstance(chunk_index, numbers.Integral):
            raise TypeError(f"chunk index must be an integer, got {chunk_index!r}")
        if not 0 <= chunk_index < self.num_chunks:
            raise IndexError(f"chunk index {chunk_index} out of range [0, {self.num_chunks})")
        return int(chunk_index)

    def chunk_indices(self, chunk_index: int) -> list[int]:
        """The ``batch_size`` distinct prompt indices of chunk ``chunk_index``, in emission order."""
        return self._chunks[self._check_chunk(chunk_index)].tolist()

    def chunk_info(self, chunk_index: int) -> dict:
        """Metrics of chunk ``chunk_index``.

        Keys: ``stage``; ``epoch`` (global epoch index over the run) and ``stage_epoch`` (epoch within the stage);
        ``se_min`` / ``se_max`` over the chunk's prompts; ``progress`` = ``chunk_index / num_chunks``, the fraction
        of the run's generation batches completed before this one starts (0 for the first, < 1 for the last).
        """
        k = self._check_chunk(chunk_index)
        return {
            "stage": int(self._chunk_stage[k]),
            "epoch": int(self._chunk_epoch[k]),
            "stage_epoch": int(self._chunk_stage_epoch[k]),
            "se_min": float(self._chunk_se_min[k]),
            "se_max": float(self._chunk_se_max[k]),
            "progress": k / self.num_chunks,
        }

    def schedule(self) -> list[dict]:
        """``chunk_info`` for every chunk, in order."""
        return [self.chunk_info(k) for k in range(self.num_chunks)]

    def chunk_index_of_position(self, position: int) -> int:
        """Chunk of the ``position``-th emitted index (0-based position in the full stream)."""
        if not 0 <= position < len(self):
            raise IndexError(f"position {position} out of range [0, {len(self)})")
        return int(position) // self.samples_per_chunk

    def stage_of_position(self, position: int) -> int:
        """Stage of the ``position``-th emitted index."""
        return int(self._chunk_stage[self.chunk_index_of_position(position)])

    def chunk_index_of_batch(self, batch_index: int) -> int:
        """Chunk of the ``batch_index``-th dataloader batch in GRPO (= micro-step, counted from the run's start).

        Valid when one dataloader batch, summed over processes, is one generation batch
        (``per_device_train_batch_size * steps_per_generation * num_processes == generation_batch_size``), which
        is how ``GRPOTrainer`` builds its dataloader.
        """
        chunk = int(batch_index) // self.repeat_count
        return self._check_chunk(chunk)

    def summary(self) -> str:
        """:func:`curriculum_schedule_summary` for this sampler, plus the run length."""
        text = _stage_table(self.stages, self.batch_size)
        return (
            f"{text}\n  total: {self.num_chunks} generation batches x {self.repeat_count} reuse(s) = "
            f"{len(self)} sampled indices; stages start at chunk {self.stage_start_chunks}"
        )

    @classmethod
    def from_dataset(cls, dataset, column: str, **kwargs) -> CurriculumSampler:
        """Validate ``dataset[column]`` (:func:`validate_semantic_entropy_column`) and build the sampler on it."""
        return cls(dataset, validate_semantic_entropy_column(dataset, column), **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# A run's curriculum: the sampler from the training config, and where its stages fall in optimizer steps
# --------------------------------------------------------------------------------------------------------------------


def curriculum_sampler_settings(args) -> dict:
    """The :class:`CurriculumSampler` arguments of a run: TRL's `RepeatSampler` layout (each prompt `num_generations`
    times in a row, `generation_batch_size // num_generations` prompts per rollout batch, each batch reused
    `num_iterations * steps_per_generation` times) plus the `curriculum_*` fields of the config (`SETGRPOConfig`)."""
    return {
        "mini_repeat_count": args.num_generations,
        "batch_size": args.generation_batch_size // args.num_generations,
        "repeat_count": args.num_iterations * args.steps_per_generation,
        "num_stages": args.curriculum_stages,
        "epochs_per_stage": args.curriculum_epochs_per_stage,
        "shuffle_within_stage": args.curriculum_shuffle_within_stage,
        "seed": args.seed,
    }


def build_curriculum_sampler(dataset, args) -> CurriculumSampler:
    """The run's sampler: ``dataset``'s `curriculum_se_column` (validated once per dataset,
    :func:`validate_semantic_entropy_column`) in the layout of :func:`curriculum_sampler_settings`."""
    values = validate_semantic_entropy_column(dataset, args.curriculum_se_column)
    return CurriculumSampler(dataset, values, **curriculum_sampler_settings(args))


def placeholder_sampler(num_prompts: int, args) -> CurriculumSampler:
    """The sampler a run on ``num_prompts`` prompts will get, on placeholder entropies, before any is known: stage
    sizes, chunks and the step of each stage depend only on the counts. Built once per settings (preflight asks
    twice); raises what the sampler raises (a stage smaller than one rollout batch)."""
    settings = curriculum_sampler_settings(args)
    epochs = settings["epochs_per_stage"]
    if isinstance(epochs, Sequence) and not isinstance(epochs, str):
        settings["epochs_per_stage"] = tuple(epochs)
    return _placeholder_sampler(num_prompts, tuple(sorted(settings.items())))


@functools.lru_cache(maxsize=4)
def _placeholder_sampler(num_prompts: int, settings: tuple) -> CurriculumSampler:
    # distinct placeholder values, so that no tie warning is logged
    return CurriculumSampler(range(num_prompts), [float(i) for i in range(num_prompts)], **dict(settings))


def run_length(args, steps_per_pass: int) -> int:
    """Optimizer steps of the run, as transformers' Trainer counts them: `max_steps` when set, else
    `ceil(num_train_epochs * steps per epoch)` (one epoch = one pass of the curriculum sampler)."""
    if args.max_steps is not None and args.max_steps > 0:
        return int(args.max_steps)
    return math.ceil(args.num_train_epochs * steps_per_pass)


@dataclass(frozen=True)
class CurriculumPlan:
    """How a run's optimizer steps map onto the curriculum's stages: the one place this is computed (the trainer's
    stage restarts, per-stage LR schedule and logged stage, and train.py's preflight checks all use it).

    One pass of the curriculum is one pass of the :class:`CurriculumSampler`: the stages low -> high once (each
    `curriculum_epochs_per_stage` times). In GRPO each dataloader batch is one micro-batch and each rollout batch
    (a chunk of the sampler) feeds `steps_per_generation * num_iterations` micro-batches, so a pass is
    `num_chunks * generate_every` micro-batches, and transformers' Trainer makes it `ceil(that /
    gradient_accumulation_steps)` optimizer steps (the last step of a pass may take fewer micro-batches). Every
    further pass (a Trainer epoch) replays the same stream from stage 0.
    """

    chunk_stages: tuple[int, ...]
    generate_every: int
    gradient_accumulation_steps: int
    total_steps: int

    @classmethod
    def from_sampler(cls, sampler: CurriculumSampler, args) -> CurriculumPlan:
        stages = tuple(int(sampler.chunk_info(k)["stage"]) for k in range(sampler.num_chunks))
        generate_every = args.steps_per_generation * args.num_iterations
        gas = args.gradient_accumulation_steps
        steps_per_pass = max(1, math.ceil(len(stages) * generate_every / gas))
        return cls(stages, generate_every, gas, run_length(args, steps_per_pass))

    @property
    def num_stages(self) -> int:
        return max(self.chunk_stages) + 1

    @property
    def micro_steps_per_pass(self) -> int:
        return len(self.chunk_stages) * self.generate_every

    @property
    def steps_per_pass(self) -> int:
        """Optimizer steps of one pass of the curriculum (one Trainer epoch)."""
        return max(1, math.ceil(self.micro_steps_per_pass / self.gradient_accumulation_steps))

    @property
    def passes(self) -> float:
        """Passes over the ranked prompts the run makes (> 1: the curriculum is replayed from stage 0)."""
        return self.total_steps / self.steps_per_pass

    def chunk_of(self, step: int, micro_batch: int = 0) -> int:
        """The sampler chunk (rollout batch) feeding micro-batch `micro_batch` of optimizer step `step` (0-based)."""
        micro = (step % self.steps_per_pass) * self.gradient_accumulation_steps + micro_batch
        return min(micro // self.generate_every, len(self.chunk_stages) - 1)

    def stage_of_step(self, step: int) -> int:
        """Curriculum stage of the rollout batch that optimizer step `step` (0-based) starts with."""
        return self.chunk_stages[self.chunk_of(step)]

    def stage_steps(self) -> list[tuple[int, int]]:
        """(first, last) optimizer step of each stage in one pass, 1-based as Trainer logs `step` (a step whose
        micro-batches come from two stages counts in both)."""
        gas, every = self.gradient_accumulation_steps, self.generate_every
        out = []
        for stage in range(self.num_stages):
            first_chunk = self.chunk_stages.index(stage)
            last_chunk = len(self.chunk_stages) - 1 - self.chunk_stages[::-1].index(stage)
            out.append((first_chunk * every // gas + 1, ((last_chunk + 1) * every - 1) // gas + 1))
        return out

    def describe(self) -> str:
        """The one log line of the schedule, e.g. `curriculum: 2 stages over 12 optimizer steps; stage 0 = steps
        1-6, stage 1 = steps 7-12; 1 pass over the ranked prompts (one pass = 12 steps)`."""
        parts = []
        for stage, (first, last) in enumerate(self.stage_steps()):
            if first > self.total_steps:
                parts.append(f"stage {stage} = not reached (it would start at step {first})")
            else:
                parts.append(f"stage {stage} = steps {first}-{min(last, self.total_steps)}")
        passes = self.passes
        text = (
            f"curriculum: {self.num_stages} stage{'s' if self.num_stages > 1 else ''} over {self.total_steps} "
            f"optimizer steps; {', '.join(parts)}; {passes:.3g} pass{'es' if passes != 1 else ''} over the ranked "
            f"prompts (one pass = {self.steps_per_pass} steps)"
        )
        if passes > 1:
            restarts = list(range(self.steps_per_pass + 1, self.total_steps + 1, self.steps_per_pass))
            shown = ", ".join(map(str, restarts[:3])) + (", ..." if len(restarts) > 3 else "")
            text += f"; the curriculum is replayed from stage 0 at step {shown}"
        return text
