"""`SETGRPOConfig`: TRL's `GRPOConfig` plus the SENT token-regulariser fields."""

from __future__ import annotations

import math
import types
import typing
import warnings
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from trl import GRPOConfig

# the allowed names, and which regularisers do not clip: from the registry
from .regularizers import TOKEN_REGULARIZERS as TOKEN_REGULARIZERS
from .regularizers import UNCLIPPED_REGULARIZERS as UNCLIPPED_REGULARIZERS


# Aggregations that take a plain per-token loss: the regularisers replace the per-token policy term only.
REGULARIZER_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


_GRPO_DEFAULTS = {f.name: f.default for f in fields(GRPOConfig)}

MAX_COEFFICIENT = 1e4
"""Largest magnitude accepted for a loss coefficient or rate (the `kl_cov_coef` family, `beta`, `entropy_coef`,
`learning_rate`, reward weights). Per-token terms are products of a few coefficients and log-probability
differences of at most a few hundred nats, so with every factor <= 1e4 the loss stays far inside float32's range
(~3.4e38); a typo such as `--kl_cov_coef 1e300` overflows to inf at the first step instead."""

_INF = math.inf


class Range(NamedTuple):
    """An interval of allowed values: ``[low, high]``, each end open when its flag says so."""

    low: float
    low_open: bool
    high: float
    high_open: bool

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def __contains__(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return bool(above and below)  # NaN is in no range


# field -> (low, low_open, high, high_open): the ranges TRL, transformers and this method allow, the one place a
# numeric field's range is written. SETGRPOConfig checks every entry (check_range: the field, the value, the range
# and the fix), and the help of the fields SENT adds states it (with_range), so docs/configuration.md's generated
# table shows it too. A field whose value is None (an unset optional) is not checked. Applied after TRL's
# __post_init__ (steps_per_generation is set by then).
NUMERIC_RANGES: dict[str, Range] = {
    name: Range(*bounds)
    for name, bounds in {
        # sampling
        "temperature": (0.0, True, _INF, True),
        "top_p": (0.0, True, 1.0, False),
        "top_k": (0, False, _INF, True),
        "min_p": (0.0, False, 1.0, False),
        "repetition_penalty": (0.0, True, _INF, True),
        "num_generations": (2, False, _INF, True),
        "num_generations_eval": (1, False, _INF, True),
        "max_completion_length": (1, False, _INF, True),
        "steps_per_generation": (1, False, _INF, True),
        "generation_batch_size": (1, False, _INF, True),
        "num_iterations": (1, False, _INF, True),
        "vllm_gpu_memory_utilization": (0.0, True, 1.0, False),
        # loss
        "beta": (0.0, False, MAX_COEFFICIENT, False),
        "epsilon": (0.0, False, _INF, True),
        "epsilon_high": (0.0, False, _INF, True),
        "top_entropy_quantile": (0.0, False, 1.0, False),
        "entropy_coef": (-MAX_COEFFICIENT, False, MAX_COEFFICIENT, False),
        "kl_cov_coef": (0.0, False, MAX_COEFFICIENT, False),
        "high_cov_coef": (0.0, False, MAX_COEFFICIENT, False),
        "low_cov_coef": (0.0, False, MAX_COEFFICIENT, False),
        "low_entropy_kl_coef": (0.0, False, MAX_COEFFICIENT, False),
        "ref_model_mixup_alpha": (0.0, False, 1.0, False),
        "ref_model_sync_steps": (1, False, _INF, True),
        "vllm_importance_sampling_clip_max": (0.0, True, _INF, True),
        # optimisation and schedule
        "learning_rate": (0.0, False, MAX_COEFFICIENT, False),
        "weight_decay": (0.0, False, _INF, True),
        "max_grad_norm": (0.0, False, _INF, True),
        "adam_beta1": (0.0, False, 1.0, True),
        "adam_beta2": (0.0, False, 1.0, True),
        "adam_epsilon": (0.0, False, _INF, True),
        "warmup_steps": (0.0, False, _INF, True),
        "num_train_epochs": (0.0, False, _INF, True),
        "per_device_train_batch_size": (1, False, _INF, True),
        "per_device_eval_batch_size": (1, False, _INF, True),
        "gradient_accumulation_steps": (1, False, _INF, True),
        "logging_steps": (0.0, True, _INF, True),
        "save_steps": (0.0, True, _INF, True),
        # SENT's token regulariser, curriculum and semantic entropy
        "low_entropy_quantile": (0.0, True, 1.0, False),
        "cov_ratio": (0.0, True, 1.0, False),
        "curriculum_stages": (1, False, _INF, True),
        "curriculum_epochs_per_stage": (1, False, _INF, True),
        "se_lexical_threshold": (0.0, True, 1.0, False),
        "answer_timeout": (0.0, True, _INF, True),
        "semantic_entropy_time_budget": (0.0, True, _INF, True),
        "reward_timeout": (0.0, True, _INF, True),
    }.items()
}


def check_range(name: str, value) -> None:
    """ValueError naming the field, its value, its allowed range (:data:`NUMERIC_RANGES`) and the fix, when ``value``
    (not None) lies outside it."""
    allowed = NUMERIC_RANGES[name]
    if value is not None and value not in allowed:
        raise ValueError(
            f"{name}={value!r} is out of range; allowed range is {allowed}: set --{name} to a value inside it."
        )


def with_range(name: str, text: str) -> str:
    """A field's help ``text`` with its allowed range from :data:`NUMERIC_RANGES` appended (written once, there)."""
    return f"{text} Allowed: {NUMERIC_RANGES[name]}."


@dataclass
class SETGRPOConfig(GRPOConfig):
    r"""
    Configuration class for [`SETGRPOTrainer`]: every [`trl.GRPOConfig`] parameter, plus the token regulariser of
    SENT (Cao et al. 2025, arXiv 2512.04359) and its baselines KL-Cov and Clip-Cov (Cui et al. 2025, arXiv
    2505.22617).

    The SENT, KL-Cov and Clip-Cov losses replace the per-token policy term of TRL's loss; the loss aggregation
    (`loss_type` in `grpo`, `bnpo`, `dr_grpo`, `dapo`), the `beta` KL to the reference model, the entropy bonus,
    `top_entropy_quantile` and the vLLM importance-sampling correction still apply on top, as in `GRPOTrainer`.

    Parameters:
        token_regularizer (`str`, *optional*, defaults to `"sent"`):
            `"sent"`: covariance-targeted KL inside the low-entropy tokens (SENT). `"kl_cov"`: KL on the
            highest-covariance tokens (KL-Cov). `"clip_cov"`: gradient stopped on random high-covariance tokens
            (Clip-Cov). `"none"`: TRL's loss, unchanged.
        low_entropy_quantile (`float`, *optional*, defaults to `0.8`):
            SENT: fraction `q` of valid tokens, the lowest-entropy ones, that form the low-entropy set `L`
            (`max(1, floor(q * N_valid))` tokens). In (0, 1].
        cov_ratio (`float`, *optional*, defaults to `2e-4`):
            Fraction of tokens selected by covariance: `max(1, floor(cov_ratio * |L|))` for SENT, `max(1,
            floor(cov_ratio * N_valid))` for KL-Cov and Clip-Cov. In (0, 1].
        kl_cov_coef (`float`, *optional*, defaults to `0.1`):
            Base coefficient of the `|logp - old_logp|` penalty (SENT and KL-Cov). >= 0.
        high_cov_coef (`float`, *optional*, defaults to `2.0`):
            SENT: multiplier of `kl_cov_coef` for the highest-covariance tokens of `L`. >= 0.
        low_cov_coef (`float`, *optional*, defaults to `0.5`):
            SENT: multiplier of `kl_cov_coef` for the lowest-covariance tokens of `L`. >= 0.
        low_entropy_kl_coef (`float`, *optional*, defaults to `0.0`):
            SENT: multiplier of `kl_cov_coef` for the rest of `L` (0 = the reference code). >= 0.
        clip_cov_lower (`float`, *optional*, defaults to `1.0`):
            Clip-Cov: lower covariance bound of the candidate tokens.
        clip_cov_upper (`float`, *optional*, defaults to `5.0`):
            Clip-Cov: upper covariance bound of the candidate tokens. Must be > `clip_cov_lower`.
        curriculum (`bool`, *optional*, defaults to `False`):
            Feed prompts from low to high semantic entropy, in stages (SENT's data side). The training dataset needs
            a numeric `curriculum_se_column` (`python -m sec_trl.rank` adds it; `train.py` ranks automatically).
        curriculum_stages (`int`, *optional*, defaults to `2`):
            Number of contiguous semantic-entropy stages (the reference run used 2: a low and a high half). >= 1.
        curriculum_epochs_per_stage (`int`, *optional*, defaults to `1`):
            Passes over each stage before the next one starts (the reference run used 5). >= 1. The whole
            curriculum is one pass of the sampler: keep `num_train_epochs=1` (each further Trainer epoch replays
            the whole schedule from stage 0; see `curriculum_replay`).
        curriculum_replay (`bool`, *optional*, defaults to `False`):
            Accept a run longer than one pass of the curriculum. Without it, `curriculum=True` with
            `num_train_epochs` unset (TRL's default 3) and no `max_steps` raises a `ValueError`, as does (in
            `train.py` and `SETGRPOTrainer`, which know the dataset) a `max_steps` past one pass; an explicit
            `num_train_epochs > 1` warns. `num_train_epochs` defaults to `None` here, meaning TRL's 3, so that an
            unset value can be told from a given one.
        curriculum_shuffle_within_stage (`bool`, *optional*, defaults to `True`):
            Shuffle the prompts inside each stage (seeded by `seed`, stage and epoch), as in the reference run.
        curriculum_stage_restart (`bool`, *optional*, defaults to `False`):
            At each stage boundary, restart as the SENT reference run does (it trains stage 2 as a new run from the
            stage-1 checkpoint): reset the optimizer state and the learning-rate schedule and, with `beta > 0`, make
            the KL reference model a copy of the current policy. `False` (the default) keeps one continuous run, with
            optimizer state, schedule and reference model carried across stages, which is what earlier versions of
            this package did and what a single `GRPOTrainer` run does; turn it on to follow the reference exactly.
        curriculum_se_column (`str`, *optional*, defaults to `"semantic_entropy"`):
            Dataset column holding each prompt's semantic entropy.
        log_semantic_entropy (`bool`, *optional*, defaults to `True`):
            Log `semantic_entropy/mean`: the semantic entropy of each GRPO group's completions, clustered by final
            answer (no extra generation), averaged over the batch.
        se_cluster_method (`str`, *optional*, defaults to `"math"`):
            How `semantic_entropy/mean` groups a group's completions: `"math"` (equivalent final answers,
            math-verify), `"exact"` (equal normalised answer strings) or `"lexical"` (word-token Jaccard overlap >=
            `se_lexical_threshold`). `train.py` ranks the curriculum with the same method.
        se_lexical_threshold (`float`, *optional*, defaults to `0.5`):
            Jaccard threshold of `se_cluster_method="lexical"`. In (0, 1].
        answer_timeout (`float`, *optional*, defaults to `5.0`):
            Seconds allowed for one math-verify check when `semantic_entropy/mean` clusters with `"math"` (a timed-out
            pair counts as different). `train.py` uses it for its accuracy reward and its ranking too. > 0.
        semantic_entropy_time_budget (`float`, *optional*, defaults to `10.0`):
            Seconds the logged semantic entropy may spend in math-verify per GRPO group, all comparisons together
            (each is also bounded by the 5 s per-answer timeout). N distinct hostile answers would otherwise cost up
            to N^2/2 timeouts every step; once the budget is spent the group's remaining comparisons count as "not
            equivalent" (their own clusters) and a warning says how many. > 0.
        reward_timeout (`float` or `None`, *optional*, defaults to `None`):
            Seconds one call of a reward function (TRL calls each once per batch of completions) may take. Past it
            the call is abandoned (a synchronous reward runs in a helper thread, waited for with a timeout, so this
            works in any thread; an async one under `asyncio.wait_for`) and training stops with a
            `RewardTimeoutError` naming the reward: a hung reward fails loudly instead of hanging the run, and
            scoring the batch NaN would silently train on the other rewards only. `None`: no limit. The built-in
            accuracy reward is bounded per answer by `answer_timeout` already (a batch of N completions takes at
            most about N times that). Reward models are not bounded.
    """

    num_train_epochs: float | None = field(
        default=None,
        metadata={
            "help": "Total number of training epochs to perform (if not an integer, the last epoch is partial). "
            "Unset: 3, TRL's default; with --curriculum and no --max_steps, leaving it unset is an error (one pass "
            "of the curriculum is --num_train_epochs 1; see --curriculum_replay)."
        },
    )
    token_regularizer: str = field(
        default="sent",
        metadata={
            "help": "Token regulariser: 'sent' (SENT, covariance-targeted KL inside the low-entropy tokens), "
            "'kl_cov' (KL-Cov), 'clip_cov' (Clip-Cov) or 'none' (TRL's GRPO loss unchanged).",
            "choices": list(TOKEN_REGULARIZERS),
        },
    )
    low_entropy_quantile: float = field(
        default=0.8,
        metadata={
            "help": with_range(
                "low_entropy_quantile", "SENT: fraction of valid tokens (lowest entropy) forming the low-entropy set."
            )
        },
    )
    cov_ratio: float = field(
        default=2e-4,
        metadata={
            "help": with_range(
                "cov_ratio", "Fraction of tokens selected by covariance (SENT: of the low-entropy set)."
            )
        },
    )
    kl_cov_coef: float = field(
        default=0.1,
        metadata={
            "help": with_range("kl_cov_coef", "Base coefficient of the |logp - old_logp| penalty (SENT, KL-Cov).")
        },
    )
    high_cov_coef: float = field(
        default=2.0,
        metadata={
            "help": with_range("high_cov_coef", "SENT: multiplier of kl_cov_coef for the highest-covariance tokens.")
        },
    )
    low_cov_coef: float = field(
        default=0.5,
        metadata={
            "help": with_range("low_cov_coef", "SENT: multiplier of kl_cov_coef for the lowest-covariance tokens.")
        },
    )
    low_entropy_kl_coef: float = field(
        default=0.0,
        metadata={
            "help": with_range(
                "low_entropy_kl_coef",
                "SENT: multiplier of kl_cov_coef for the rest of the low-entropy set (reference: 0).",
            )
        },
    )
    clip_cov_lower: float = field(
        default=1.0, metadata={"help": "Clip-Cov: lower covariance bound of the candidate tokens."}
    )
    clip_cov_upper: float = field(
        default=5.0, metadata={"help": "Clip-Cov: upper covariance bound of the candidate tokens (> lower)."}
    )

    curriculum: bool = field(
        default=False, metadata={"help": "Feed prompts from low to high semantic entropy, in stages (SENT)."}
    )
    curriculum_stages: int = field(
        default=2, metadata={"help": with_range("curriculum_stages", "Number of semantic-entropy stages.")}
    )
    curriculum_epochs_per_stage: int = field(
        default=1,
        metadata={"help": with_range("curriculum_epochs_per_stage", "Passes over each stage before the next starts.")},
    )
    curriculum_shuffle_within_stage: bool = field(
        default=True, metadata={"help": "Shuffle prompts inside each stage (seeded)."}
    )
    curriculum_replay: bool = field(
        default=False,
        metadata={
            "help": "Accept a run longer than one pass of the curriculum (stage 0 to the last stage once): with "
            "num_train_epochs > 1, or a max_steps past one pass, each further pass replays the stages from stage "
            "0. Default False: num_train_epochs left unset (TRL's 3) or such a max_steps is an error before any "
            "model loads; an explicit num_train_epochs > 1 warns."
        },
    )
    curriculum_stage_restart: bool = field(
        default=False,
        metadata={
            "help": "At each curriculum stage boundary reset the optimizer and LR schedule and, with beta > 0, make "
            "the reference model the current policy (the SENT reference trains each stage as a new run from the "
            "previous stage's checkpoint). Default False: one continuous run, as before and as in GRPOTrainer."
        },
    )
    curriculum_se_column: str = field(
        default="semantic_entropy", metadata={"help": "Dataset column with each prompt's semantic entropy."}
    )
    log_semantic_entropy: bool = field(
        default=True,
        metadata={"help": "Log the semantic entropy of each GRPO group's completions (no extra generation)."},
    )
    se_cluster_method: str = field(
        default="math",
        metadata={
            "help": "How semantic_entropy/mean (and train.py's ranking) groups completions: 'math' (equivalent final "
            "answers, math-verify), 'exact' (equal normalised answers) or 'lexical' (word Jaccard overlap >= "
            "--se_lexical_threshold).",
            "choices": ["math", "exact", "lexical"],
        },
    )
    se_lexical_threshold: float = field(
        default=0.5,
        metadata={"help": with_range("se_lexical_threshold", "Jaccard threshold of --se_cluster_method lexical.")},
    )
    answer_timeout: float = field(
        default=5.0,
        metadata={
            "help": with_range(
                "answer_timeout",
                "Seconds allowed to check one answer (math-verify): the semantic-entropy clustering and, in "
                "train.py, the accuracy reward and the ranking; a timed-out check counts as wrong / different.",
            )
        },
    )
    semantic_entropy_time_budget: float = field(
        default=10.0,
        metadata={
            "help": with_range(
                "semantic_entropy_time_budget",
                "Seconds the logged semantic entropy may spend checking answers (math-verify) per GRPO group; "
                "past it, the remaining comparisons count as 'not equivalent'.",
            )
        },
    )
    reward_timeout: float | None = field(
        default=None,
        metadata={
            "help": with_range(
                "reward_timeout",
                "Seconds one call of a reward function (one batch of completions) may take; past it the call is "
                "abandoned and the run stops with a RewardTimeoutError naming the reward (checkpoints are kept). "
                "Unset (default): no limit. Reward models are not bounded.",
            )
        },
    )

    def __post_init__(self):
        # Defaults that follow the hardware: TRL turns bf16 on whenever it is left unset, which transformers then
        # rejects on a machine without a bf16-capable accelerator. Unset bf16 there means fp32 (an explicit
        # bf16=True is kept, and transformers' own error explains it).
        if self.bf16 is None and not self.fp16 and (self.use_cpu or not _bf16_accelerator_available()):
            self.bf16 = False
        # num_train_epochs unset means TRL's 3; whether it was given decides what the curriculum does with it
        self._num_train_epochs_given = self.num_train_epochs is not None
        if self.num_train_epochs is None:
            self.num_train_epochs = _GRPO_DEFAULTS["num_train_epochs"]
        super().__post_init__()
        self._validate_trl_forward()
        self._validate_finite()
        self._validate_integers()
        self._validate_ranges()
        self._validate_token_regularizer()
        self._validate_curriculum()
        self._validate_semantic_entropy()

    def _validate_trl_forward(self) -> None:
        """TRL 1.15 (the older supported minor) cannot run GRPO's forward everywhere: refuse before the model loads."""
        import trl

        if _trl_minor(trl.__version__) >= (1, 16):
            return
        from trl.trainer import utils

        problem = trl_forward_problem(trl.__version__, utils._ChunkedLogProbFunction, self.device.type)
        if problem:
            raise ImportError(problem)

    def _validate_semantic_entropy(self) -> None:
        from .semantic_entropy import CLUSTER_METHODS

        if self.se_cluster_method not in CLUSTER_METHODS:
            raise ValueError(
                f"se_cluster_method={self.se_cluster_method!r} is not supported; choose one of {CLUSTER_METHODS}."
            )

    def _validate_finite(self) -> None:
        """Every float field (coefficients, ratios, rates, ...) must be a finite number: inf or NaN is a typo."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name}={value} is not a finite number; every float setting must be finite.")

    def _validate_integers(self) -> None:
        """Every field typed `int` (or `int | None`) holds an integer: YAML `max_steps: 2.7` would otherwise pass
        here and fail with a TypeError after the model has loaded."""
        for f in fields(self):
            kind = _integer_kind(f.type)
            value = getattr(self, f.name)
            # None where the field may be unset (HfArgumentParser rewrites `int | None` annotations to `int` in place)
            if kind is None or (value is None and (kind == "optional" or f.default is None)):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{f.name}={value!r} is not an integer; {f.name} must be a whole number.")

    def _validate_ranges(self) -> None:
        """Every field of :data:`NUMERIC_RANGES` inside its range (:func:`check_range`: a ValueError naming the
        field, the value, the range and the fix), and the reward weights finite and bounded by
        :data:`MAX_COEFFICIENT` (their number is checked against the reward functions in
        `sec_trl.preflight.check_reward_weights`, before any model loads)."""
        for name in NUMERIC_RANGES:
            check_range(name, getattr(self, name, None))
        for i, weight in enumerate(self.reward_weights or []):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not abs(weight) <= MAX_COEFFICIENT:
                raise ValueError(
                    f"reward_weights[{i}]={weight!r} is out of range; each weight must be a finite number in "
                    f"[-{MAX_COEFFICIENT:g}, {MAX_COEFFICIENT:g}]."
                )

    def _validate_curriculum(self) -> None:
        # curriculum_stages, curriculum_epochs_per_stage: whole numbers (_validate_integers), >= 1 (NUMERIC_RANGES)
        if self.curriculum_stage_restart:
            if not self.curriculum:
                raise ValueError(
                    "curriculum_stage_restart=True needs curriculum=True (there are no stages without it)."
                )
            generate_every = self.steps_per_generation * self.num_iterations
            if generate_every % self.gradient_accumulation_steps != 0:
                raise ValueError(
                    f"curriculum_stage_restart=True needs every rollout batch to start an optimizer step, so that a "
                    f"stage boundary falls between two optimizer steps: steps_per_generation * num_iterations = "
                    f"{self.steps_per_generation} * {self.num_iterations} must be a multiple of "
                    f"gradient_accumulation_steps={self.gradient_accumulation_steps}."
                )
        if self.curriculum_replay and not self.curriculum:
            raise ValueError("curriculum_replay=True needs curriculum=True (there is no curriculum to replay).")
        if not self.curriculum:
            return
        self._validate_curriculum_epochs()
        if self.remove_unused_columns:
            raise ValueError(
                f"curriculum=True needs the {self.curriculum_se_column!r} column in the batches, but "
                "remove_unused_columns=True drops it; set --remove_unused_columns false."
            )

    def _validate_curriculum_epochs(self) -> None:
        """One pass of the curriculum is the stages low -> high once; each further Trainer epoch replays it from
        stage 0. Without `max_steps`, an unset `num_train_epochs` (TRL's default 3) would do so unsaid: an error,
        unless `curriculum_replay` accepts it; an explicit value > 1 warns (`max_steps` past one pass is checked
        against the dataset in `sec_trl.preflight.check_curriculum_replay`)."""
        if (self.max_steps is not None and self.max_steps > 0) or self.curriculum_replay:
            return
        epochs = self.num_train_epochs
        if not self._num_train_epochs_given:
            raise ValueError(
                f"curriculum=True with num_train_epochs unset (TRL's default {epochs:g}) and no max_steps would "
                f"run the whole curriculum (stage 0 to stage {self.curriculum_stages - 1}) {epochs:g} times over. "
                "One pass of the curriculum is --num_train_epochs 1 (use --curriculum_epochs_per_stage for more "
                "passes over each stage); or set --max_steps N, or --curriculum_replay true to replay it."
            )
        if epochs > 1:
            warnings.warn(
                f"curriculum=True with num_train_epochs={epochs:g}: the curriculum (stage 0 to stage "
                f"{self.curriculum_stages - 1}) repeats {epochs:g} times, each pass from stage 0. For more passes "
                "over each stage use --num_train_epochs 1 with --curriculum_epochs_per_stage; "
                "--curriculum_replay true accepts the replay without this warning.",
                UserWarning,
                stacklevel=4,
            )

    def _validate_token_regularizer(self) -> None:
        if self.token_regularizer not in TOKEN_REGULARIZERS:
            raise ValueError(
                f"token_regularizer={self.token_regularizer!r} is not supported; choose one of {TOKEN_REGULARIZERS}."
            )
        if not self.clip_cov_lower < self.clip_cov_upper:
            raise ValueError(
                f"clip_cov_lower={self.clip_cov_lower} must be smaller than clip_cov_upper={self.clip_cov_upper}."
            )
        if self.token_regularizer == "none":
            return
        if self.loss_type not in REGULARIZER_LOSS_TYPES:
            raise ValueError(
                f"token_regularizer={self.token_regularizer!r} replaces the per-token policy term and needs "
                f"loss_type in {REGULARIZER_LOSS_TYPES}, got loss_type={self.loss_type!r}. Set "
                "--token_regularizer none to use this loss type."
            )
        if self.importance_sampling_level != "token":
            raise ValueError(
                f"token_regularizer={self.token_regularizer!r} is a token-level method and needs "
                f"importance_sampling_level='token', got {self.importance_sampling_level!r}."
            )
        if self.delta is not None:
            raise ValueError(
                f"delta={self.delta} (two-sided clipping) is not used by token_regularizer="
                f"{self.token_regularizer!r}; unset delta or use --token_regularizer none."
            )
        if self.token_regularizer in UNCLIPPED_REGULARIZERS:
            if self.top_entropy_quantile < 1.0:
                raise ValueError(
                    f"top_entropy_quantile={self.top_entropy_quantile} keeps only the high-entropy tokens in the "
                    f"loss, which masks out exactly the low-entropy tokens that token_regularizer="
                    f"{self.token_regularizer!r} regularises; use top_entropy_quantile=1.0 with it, or the 80/20 "
                    "method with --token_regularizer none."
                )
            changed = [
                f"{name}={getattr(self, name)}"
                for name in ("epsilon", "epsilon_high")
                if getattr(self, name) != _GRPO_DEFAULTS[name]
            ]
            if changed:
                warnings.warn(
                    f"{', '.join(changed)} has no effect: token_regularizer={self.token_regularizer!r} does not clip "
                    "the importance ratio (its loss is -A r + c |logp - old_logp|, as in KL-Cov). Only "
                    "token_regularizer='clip_cov' and 'none' use the PPO clip range.",
                    UserWarning,
                    stacklevel=3,
                )

    @property
    def kl_term_is_inert(self) -> bool:
        """True when every update is on-policy, so that `|logp - old_logp|` is identically 0 (docs/method.md).

        Mirrors GRPOTrainer: old log-probs are recomputed only when `gradient_accumulation_steps` is not a multiple
        of `steps_per_generation * num_iterations`; otherwise each rollout batch is used within one optimizer step.
        """
        generate_every = self.steps_per_generation * self.num_iterations
        return self.gradient_accumulation_steps % generate_every == 0

    def kl_term_activating_settings(self) -> dict[str, int]:
        """Changes that each, alone, make the KL term active (`kl_term_is_inert` becomes False).

        The term is inert iff `gradient_accumulation_steps % (steps_per_generation * num_iterations) == 0`, so:

        - `steps_per_generation`: the smallest multiple `m * steps_per_generation` (m >= 2, so the generation batch
          stays divisible by `num_generations`) whose product with `num_iterations` does not divide the
          accumulation steps;
        - `num_iterations`: the smallest value above the current one whose product with `steps_per_generation`
          does not divide the accumulation steps (e.g. gas=4, spg=2: not 2, which stays inert, but 3).

        Both searches end: any product larger than `gradient_accumulation_steps` does not divide it.
        """
        gas, spg, it = self.gradient_accumulation_steps, self.steps_per_generation, self.num_iterations
        m = 2
        while gas % (m * spg * it) == 0:
            m += 1
        iterations = it + 1
        while gas % (spg * iterations) == 0:
            iterations += 1
        return {"steps_per_generation": m * spg, "num_iterations": iterations}


def _integer_kind(annotation) -> str | None:
    """`"int"` for an `int` field, `"optional"` for `int | None`, None for anything else."""
    if annotation is int or annotation == "int":
        return "int"
    if annotation in ("int | None", "Optional[int]"):
        return "optional"
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        if set(typing.get_args(annotation)) == {int, type(None)}:
            return "optional"
    return None


def _trl_minor(version: str) -> tuple[int, ...]:
    from packaging.version import Version

    return Version(version).release[:2]


def trl_forward_problem(trl_version: str, kernel, device_type: str) -> str | None:
    """Why GRPO's forward cannot run with this TRL on `device_type`, or None. TRL 1.15's trainer computes every
    forward's log-probabilities with `trl.kernels.ChunkedLogProbFunction` (`kernel`, as `trl.trainer.utils` holds
    it), a Triton kernel: None without the `triton` package, and for CUDA/XPU tensors only. TRL 1.16 adds a torch
    path for every other device and runs without `triton`."""
    if _trl_minor(trl_version) >= (1, 16):
        return None
    fix = "install TRL 1.16 (pip install 'trl>=1.16,<1.17'), which runs on every device without triton"
    if kernel is None:
        return (
            f"TRL {trl_version}'s GRPO forward needs the triton package, which is not installed: {fix}, or install "
            "triton (CUDA/XPU only)."
        )
    if device_type not in ("cuda", "xpu") and getattr(kernel, "__module__", "").startswith("trl."):
        return f"TRL {trl_version}'s GRPO forward is a Triton kernel for CUDA/XPU, not {device_type}: {fix}."
    return None


def _bf16_accelerator_available() -> bool:
    """A GPU / XPU / NPU / ... with bf16 support (the CPU does not count: transformers needs `use_cpu` for it)."""
    from transformers.utils import is_torch_bf16_gpu_available

    return is_torch_bf16_gpu_available()


def fields_table() -> str:
    """The markdown table of the fields `SETGRPOConfig` adds to `GRPOConfig` (name, default, help), as
    docs/configuration.md shows it: the docs table is generated from the fields' own help, never written twice
    (`tests/test_readme.py` checks that they agree)."""
    import dataclasses

    from trl import GRPOConfig

    inherited = {f.name for f in dataclasses.fields(GRPOConfig)}
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(SETGRPOConfig):
        if f.name in inherited or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "").replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{default!r}` | {help_text} |")
    return "\n".join(rows)
