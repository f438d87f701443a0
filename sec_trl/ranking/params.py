"""Parameters of a ranking run: :class:`RankingParams` (sampling, clustering, cache) and :class:`RankScriptArguments`
(what to rank, where to write it), plus the names of the columns a ranking adds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sec_trl.script_args import DatasetArguments


__all__ = [
    "ESTIMATORS",
    "EXIT_INCOMPLETE",
    "FINGERPRINTED_UNLESS_DEFAULT",
    "FINGERPRINTED_WHEN_SET",
    "FINGERPRINT_FILENAME",
    "HISTOGRAM_FILENAME",
    "META_FILENAME",
    "NOT_FINGERPRINTED",
    "SE_COLUMNS",
    "SHARD_DIRNAME",
    "RankScriptArguments",
    "RankingIncomplete",
    "RankingParams",
]

ESTIMATORS = ("discrete", "weighted")

SE_COLUMNS = (
    "semantic_entropy",
    "num_clusters",
    "sample_accuracy",
    "se_rank",
    "se_estimator",
    "se_source_index",
    "se_cluster_ids",
    "se_sample_answers",
    "se_sample_logliks",
    "se_sample_lengths",
    "se_completions",
)
"""Columns added by :func:`rank_dataset` (``se_completions`` only with ``save_completions``):

- ``semantic_entropy`` (float, nats): discrete or weighted SE of the prompt's samples; 0 = all samples agree,
  ``ln(num_samples)`` = all differ;
- ``num_clusters`` (int): distinct answers among the samples;
- ``sample_accuracy`` (float or None): fraction of samples whose answer equals the reference answer
  (:meth:`AnswerChecker.check`); None when ranking without an answer column;
- ``se_rank`` (int): position in the sorted output, 0 = lowest SE;
- ``se_estimator`` (str): ``discrete``, ``weighted`` or ``discrete_fallback`` (weighted asked, log-likelihoods
  not finite);
- ``se_source_index`` (int): the row's index in the input dataset;
- ``se_cluster_ids``, ``se_sample_answers``, ``se_sample_logliks``, ``se_sample_lengths``: per sample, the cluster
  id, the extracted final answer (None when there is none), the sequence log-likelihood (the *sum* of its token
  log-probabilities) and the number of tokens that sum covers (EOS included). Both forms of the weighted estimator
  can be recomputed from them: ``weighted_semantic_entropy(ids, logliks, lengths)`` (what the ranking uses) and
  ``weighted_semantic_entropy(ids, logliks)`` (sums, not length-normalised);
- ``se_completions``: the sampled texts (only with ``save_completions``).
"""

META_FILENAME = "ranking_meta.json"
"""Written last into the output directory: parameters, counts, SE summary and timing of a finished run."""
HISTOGRAM_FILENAME = "se_histogram.png"
SHARD_DIRNAME = "shards"
FINGERPRINT_FILENAME = "fingerprint.json"
EXIT_INCOMPLETE = 3
"""Exit code of the command line when ``--max_shards`` stopped the run before every shard was done."""

NOT_FINGERPRINTED = frozenset({"vllm_gpu_memory_utilization", "max_shards", "prune_cache"})
"""RankingParams fields that do not change any output value (so changing them keeps the cache)."""
FINGERPRINTED_WHEN_SET = frozenset({"chat_template_kwargs"})
"""RankingParams fields added after caches existed: fingerprinted only when set, so an older cache (ranked without
them) stays valid for a run that leaves them unset."""
FINGERPRINTED_UNLESS_DEFAULT = frozenset({"answer_time_budget"})
"""RankingParams fields added after caches existed, with a default that reproduces the older results on every
ordinary prompt: fingerprinted only when they differ from their default (so their default must never change
without a RANKING_FORMAT_VERSION bump)."""


class RankingIncomplete(RuntimeError):
    """The run stopped before every shard was done (``max_shards``); finished shards are cached, re-run to go on."""


class RankingParamError(ValueError):
    """A bad :class:`RankingParams` field, worded with ``python -m sec_trl.rank``'s flag; ``with_flag`` rewords it
    for a command whose flag has another name (train.py's ``--se_num_samples``)."""

    def __init__(self, field_name: str, why: str, value: Any):
        self.field_name, self.why, self.value = field_name, why, value
        super().__init__(self.with_flag(field_name))

    def with_flag(self, flag: str) -> str:
        return f"--{flag} {self.why}, got {self.value!r}"


@dataclass
class RankingParams:
    """Sampling, clustering and cache parameters of a ranking run (the cache fingerprint covers all but two)."""

    num_samples: int = field(
        default=8, metadata={"help": "Responses sampled per prompt (N; the reference rollout n is 8). At least 2."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p in (0, 1]."})
    max_new_tokens: int = field(
        default=512,
        metadata={
            "help": "Maximum new tokens per response. A response cut off before its answer has no answer and "
            "counts as its own cluster, so too small a value inflates SE."
        },
    )
    prompts_per_batch: int = field(
        default=8,
        metadata={"help": "Prompts per generate call (each expanded to num_samples sequences). Changes results."},
    )
    shard_size: int = field(
        default=64, metadata={"help": "Prompts per cache shard (the unit of resume and of work per process)."}
    )
    seed: int = field(default=0, metadata={"help": "Base seed; each shard is seeded from (seed, shard index)."})
    cluster_method: str = field(
        default="math",
        metadata={
            "help": "How samples are grouped: 'math' (equivalent final answers, math-verify), 'exact' (equal "
            "normalised answer strings) or 'lexical' (nltk word-token Jaccard overlap >= --lexical_threshold)."
        },
    )
    estimator: str = field(
        default="discrete",
        metadata={
            "help": "'discrete': -sum (n_k/N) ln(n_k/N); 'weighted': cluster masses from the softmax of the "
            "samples' length-normalised log-likelihoods (sum / tokens, as Farquhar et al. 2024); the sums and "
            "token counts are kept in se_sample_logliks and se_sample_lengths."
        },
    )
    lexical_threshold: float = field(
        default=0.5, metadata={"help": "Jaccard threshold of --cluster_method lexical, in (0, 1]."}
    )
    answer_timeout: float = field(
        default=5.0, metadata={"help": "Seconds allowed for one math-verify equivalence check."}
    )
    answer_time_budget: float = field(
        default=60.0,
        metadata={
            "help": "Seconds that answer checking (clustering and sample accuracy) may spend in math-verify per "
            "prompt, all comparisons together: once spent, the remaining comparisons count as 'not equivalent' "
            "(own clusters; a warning says how many). Bounds hostile answers whose cost grows with N^2."
        },
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Model dtype: 'auto' (float32 on the CPU, the checkpoint's dtype on a GPU), 'float32', "
            "'bfloat16' or 'float16'."
        },
    )
    use_vllm: bool = field(
        default=False,
        metadata={
            "help": "Sample with vLLM (vllm.LLM(...).generate with SamplingParams(n=num_samples, ...)); needs "
            "vllm installed and a GPU. Under accelerate launch, one engine per process (data-parallel)."
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "With --use_vllm: fraction of GPU memory vLLM may use."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom model code from the model repository (off by default)."}
    )
    save_completions: bool = field(
        default=False, metadata={"help": "Keep the sampled texts (column se_completions; larger cache)."}
    )
    chat_template_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Extra apply_chat_template arguments, as TRL's GRPOConfig field (JSON on the command line, e.g. "
            "'{\"enable_thinking\": false}'): give the training's value so prompts are ranked as they are trained."
        },
    )
    max_shards: int | None = field(
        default=None,
        metadata={
            "help": "Stop after generating this many new shards (per process) without writing the output; "
            "re-run to continue (for time-boxed jobs). Exit code 3."
        },
    )

    prune_cache: bool = field(
        default=False,
        metadata={
            "help": "After a finished run, delete the sample caches of other inputs in <output_dir>/shards/ (each "
            "fingerprint has its own folder there, kept by default so that no run deletes another's samples)."
        },
    )

    def __post_init__(self) -> None:
        def bad(flag: str, why: str, value: Any) -> ValueError:
            return RankingParamError(flag, why, value)

        if not isinstance(self.num_samples, int) or self.num_samples < 2:
            raise bad("num_samples", "must be an integer >= 2 (entropy needs at least two samples)", self.num_samples)
        if not (
            isinstance(self.temperature, (int, float)) and self.temperature > 0 and math.isfinite(self.temperature)
        ):
            raise bad("temperature", "must be > 0 (greedy decoding gives one answer and no entropy)", self.temperature)
        if not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "must be in (0, 1]", self.top_p)
        for name in ("max_new_tokens", "prompts_per_batch", "shard_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise bad(name, "must be an integer >= 1", value)
        from sec_trl.semantic_entropy import CLUSTER_METHODS

        if self.cluster_method not in CLUSTER_METHODS:
            raise bad("cluster_method", f"must be one of {list(CLUSTER_METHODS)}", self.cluster_method)
        if self.estimator not in ESTIMATORS:
            raise bad("estimator", f"must be one of {list(ESTIMATORS)}", self.estimator)
        if not 0.0 < self.lexical_threshold <= 1.0:
            raise bad("lexical_threshold", "must be in (0, 1]", self.lexical_threshold)
        if not self.answer_timeout > 0:
            raise bad("answer_timeout", "must be > 0 seconds", self.answer_timeout)
        if not (isinstance(self.answer_time_budget, (int, float)) and 0 < self.answer_time_budget < math.inf):
            raise bad("answer_time_budget", "must be a finite number of seconds > 0", self.answer_time_budget)
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise bad("dtype", "must be one of auto, float32, bfloat16, float16", self.dtype)
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            raise bad("vllm_gpu_memory_utilization", "must be in (0, 1]", self.vllm_gpu_memory_utilization)
        if self.max_shards is not None and self.max_shards < 0:
            raise bad("max_shards", "must be >= 0", self.max_shards)
        from sec_trl.generation import parse_chat_template_kwargs

        self.chat_template_kwargs = parse_chat_template_kwargs(self.chat_template_kwargs)


@dataclass
class RankScriptArguments(DatasetArguments):
    """What to rank and where to write it: :class:`~sec_trl.script_args.DatasetArguments` (a `trl.ScriptArguments`,
    the prompt format shared with train.py and sec_trl.evaluate) plus the output and the model (the command line's
    other arguments are :class:`RankingParams`, whose ``dtype`` and ``trust_remote_code`` are part of the cache
    fingerprint, so they stay there rather than in a `ModelConfig`)."""

    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Output directory (ranked dataset, histogram, meta, cache). Required.",
            "aliases": ["--output", "-o"],
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Model to sample from: a local directory or a Hub name. Unset: the embedded "
            "SmolLM2-135M-Instruct.",
            "aliases": ["--model"],
        },
    )
    num_prompts: int | None = field(
        default=None, metadata={"help": "Rank only the first this-many prompts of the dataset (for trials)."}
    )
    log_level: str = field(default="info", metadata={"help": "Logging level: debug, info, warning, error."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError(f"--num_prompts must be >= 1, got {self.num_prompts}")
