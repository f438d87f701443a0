"""Rank a prompt dataset by semantic entropy (SENT's data curriculum: docs/method.md, "Data side").

For every prompt, sample ``--num_samples`` responses from the model (temperature 1.0, top_p 1.0 by default, as the
reference's rollouts), cluster them by final answer (:func:`sec_trl.semantic_entropy.cluster_answers`), and score
the prompt's semantic entropy (SE). The output is the dataset sorted from low SE (the model is consistent: easy or
confidently known) to high SE (the model is unsure), ready to be cut into curriculum stages.

Command line::

    # the embedded SmolLM2-135M-Instruct on the generated arithmetic train split (train.py's default data)
    python -m sec_trl.rank --output outputs/se_arith --num_samples 8 --max_new_tokens 256

    # several processes, one per GPU; on a CPU-only machine the same command gives 2 CPU processes (gloo)
    accelerate launch --multi_gpu --num_processes 2 -m sec_trl.rank --output outputs/se_arith
    # (`accelerate launch --cpu --num_processes 2` starts ONE process: accelerate fans CPU runs out only through
    # mpirun. `torchrun --nproc_per_node 2 -m sec_trl.rank ...` works too.)

    # a Hub model and dataset, with vLLM on one GPU
    python -m sec_trl.rank --model Qwen/Qwen2.5-0.5B-Instruct --dataset open-r1/DAPO-Math-17k-Processed \\
        --dataset_config en --dataset_answer_column solution --output outputs/se_dapo --use_vllm

Python::

    from sec_trl.rank import ensure_ranked, rank_dataset
    ranked = rank_dataset(train_dataset, "Qwen/Qwen2.5-0.5B-Instruct", "outputs/se", num_samples=8)
    ranked = ensure_ranked(train_dataset, "Qwen/Qwen2.5-0.5B-Instruct", "outputs/se")  # no-op if already ranked

Output directory (``DIR``):

- the ranked dataset, written with ``Dataset.save_to_disk(DIR)`` (``datasets.load_from_disk(DIR)``, or
  ``train.py --dataset_name DIR``): every input column plus :data:`SE_COLUMNS`, sorted by ``semantic_entropy``
  ascending, ties by original row order (``se_source_index``); ``se_rank`` is the row's position (0 = lowest SE);
- ``se_histogram.png``: the SE histogram, and sample accuracy against SE when there are reference answers;
- ``ranking_meta.json``: parameters, counts, SE summary and timing (written last);
- ``shards/``: the cache (see below).

Sampling (transformers backend): left-padded batches of ``--prompts_per_batch`` prompts, each expanded to
``--num_samples`` sequences (``num_return_sequences``); chat-message prompts go through the tokenizer's chat
template. Sampling is exactly ``--temperature`` / ``--top_p``: the model's own ``generation_config.json`` sampling
settings (``top_k``, ``repetition_penalty``, ...) are deliberately ignored. Each sample's sequence log-likelihood
(for ``--estimator weighted``) is the sum of the log-probabilities of its tokens, EOS included, under the
*unmodified* model (raw logits, i.e. temperature 1, no top-p), recorded during generation one step at a time (no
``vocab x length`` logits tensor is kept).

Determinism: prompts are cut into shards of ``--shard_size`` rows; the random state is reset at the start of each
shard from ``(--seed, shard index)``, and a shard is always processed in the same batches. A shard's result
therefore depends only on its index, not on which process runs it, so 1 and N processes give the same dataset
(on the same hardware and library versions): the same samples, clusters, SE and order. Only the recorded
log-likelihoods can differ in their last digits when the processes use different numbers of CPU threads (float
sums depend on it; torchrun sets one thread per process). ``--shard_size`` and ``--prompts_per_batch`` are part of
the cache fingerprint because they change which random numbers each prompt sees.

Cache and resume: each shard is written to ``DIR/shards/`` (temp file + rename) as soon as it is done. A re-run
skips every finished shard, so after a crash or Ctrl-C only unfinished shards are generated, and a re-run with
the same model, data and parameters generates nothing (the model is not even loaded). ``DIR/shards/fingerprint.json``
records what the shards were computed from: the model (its name/path, the hash of its ``config.json``, and the
names, sizes and modification times of every file in its directory), the content hash of the prompt and answer
columns, every sampling/clustering parameter, the sec_trl/torch/transformers versions. On a mismatch the run logs
which entries changed and moves the old shards to ``DIR/shards.previous`` (replacing an older one).

Multi-process: with ``accelerate launch``, shards are assigned round-robin to processes; each process writes its
own shards; after a barrier the main process merges all shards in index order and writes the output; the other
processes then load it, so every process returns the same dataset. ``--use_vllm`` runs in one process (vLLM
manages the GPU itself).

No answer and bad log-likelihoods: a sample with no extractable answer (an empty completion, or one cut off
before any number) is its own singleton cluster (see :func:`~sec_trl.semantic_entropy.cluster_answers`). With
``--estimator weighted``, a prompt whose log-likelihoods contain NaN/inf (a numerically broken model) falls back
to the discrete estimator for that prompt only, logs a warning, and is marked ``discrete_fallback`` in
``se_estimator``; ``ranking_meta.json`` counts such prompts (``num_weighted_fallbacks``). No number is ever
silently computed from NaNs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import LogitsProcessor


logger = logging.getLogger(__name__)

__all__ = [
    "ESTIMATORS",
    "SE_COLUMNS",
    "RankScriptArguments",
    "RankingIncomplete",
    "RankingParams",
    "ensure_ranked",
    "main",
    "rank_dataset",
    "read_ranking_meta",
]

RANKING_FORMAT_VERSION = 1
"""Bump when sampling/scoring changes in a way that makes old cached shards wrong."""

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
- ``se_cluster_ids``, ``se_sample_answers``, ``se_sample_logliks``: per sample, the cluster id, the extracted final
  answer (None when there is none) and the sequence log-likelihood;
- ``se_completions``: the sampled texts (only with ``save_completions``).
"""

META_FILENAME = "ranking_meta.json"
HISTOGRAM_FILENAME = "se_histogram.png"
SHARD_DIRNAME = "shards"
FINGERPRINT_FILENAME = "fingerprint.json"
EXIT_INCOMPLETE = 3

# RankingParams fields that do not change any output value (so changing them keeps the cache).
_NOT_FINGERPRINTED = frozenset({"vllm_gpu_memory_utilization", "max_shards"})


class RankingIncomplete(RuntimeError):
    """The run stopped before every shard was done (``max_shards``); finished shards are cached, re-run to go on."""


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
            "samples' sequence log-likelihoods."
        },
    )
    lexical_threshold: float = field(
        default=0.5, metadata={"help": "Jaccard threshold of --cluster_method lexical, in (0, 1]."}
    )
    answer_timeout: float = field(
        default=5.0, metadata={"help": "Seconds allowed for one math-verify equivalence check."}
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
            "vllm installed and a GPU; single process only."
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "With --use_vllm: fraction of GPU memory vLLM may use."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom model code from the model repository (off by default)."}
    )
    wrap_string_prompts: bool = field(
        default=True,
        metadata={
            "help": "Turn plain-string prompts into one user chat message (with the \\boxed{} instruction), as "
            "train.py does, so ranking sees the prompts training will see."
        },
    )
    save_completions: bool = field(
        default=False, metadata={"help": "Keep the sampled texts (column se_completions; larger cache)."}
    )
    max_shards: int | None = field(
        default=None,
        metadata={
            "help": "Stop after generating this many new shards (per process) without writing the output; "
            "re-run to continue (for time-boxed jobs). Exit code 3."
        },
    )

    def __post_init__(self) -> None:
        def bad(flag: str, why: str, value: Any) -> ValueError:
            return ValueError(f"--{flag} {why}, got {value!r}")

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
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise bad("dtype", "must be one of auto, float32, bfloat16, float16", self.dtype)
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            raise bad("vllm_gpu_memory_utilization", "must be in (0, 1]", self.vllm_gpu_memory_utilization)
        if self.max_shards is not None and self.max_shards < 0:
            raise bad("max_shards", "must be >= 0", self.max_shards)


@dataclass
class RankScriptArguments:
    """What to rank and where to write it (the command line's other arguments are :class:`RankingParams`)."""

    output: str | None = field(
        default=None,
        metadata={"help": "Output directory (ranked dataset, histogram, meta, cache). Required.", "aliases": ["-o"]},
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model to sample from: a local directory or a Hub name. Unset: the embedded "
            "SmolLM2-135M-Instruct.",
            "aliases": ["--model_name_or_path"],
        },
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset name, or a local .json/.jsonl/.parquet/.csv file or save_to_disk directory. "
            "Unset: the generated arithmetic train split (train.py's default, see --arithmetic_*).",
            "aliases": ["--dataset_name"],
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split to rank."})
    dataset_prompt_column: str = field(
        default="prompt", metadata={"help": "Column holding the prompt (a string or a list of chat messages)."}
    )
    dataset_answer_column: str = field(
        default="answer",
        metadata={
            "help": "Column holding the reference answer (for sample_accuracy). Pass 'none' to rank a dataset "
            "without answers (sample_accuracy is then null)."
        },
    )
    arithmetic_num_train: int = field(default=512, metadata={"help": "Generated arithmetic: training prompts."})
    arithmetic_num_test: int = field(default=128, metadata={"help": "Generated arithmetic: held-out prompts."})
    arithmetic_seed: int = field(default=0, metadata={"help": "Generated arithmetic: seed."})
    num_prompts: int | None = field(
        default=None, metadata={"help": "Rank only the first this-many prompts of the dataset (for trials)."}
    )
    log_level: str = field(default="info", metadata={"help": "Logging level: debug, info, warning, error."})


# ----------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------


def _sec_trl_version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("sec_trl")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; use the usual modes
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _hash_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _derive_seed(seed: int, *parts: int, bits: int = 63) -> int:
    digest = hashlib.sha256("-".join(map(str, ("sec_trl-rank", seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << bits) - 1)


def _display_model_name(name_or_path: str | None) -> str:
    """What logs and meta show for a model: never a local path (as train.py)."""
    from sec_trl.embedded import EMBEDDED_MODEL_NAME, is_embedded_model

    if is_embedded_model(name_or_path):
        return EMBEDDED_MODEL_NAME
    return Path(name_or_path).name if os.path.exists(name_or_path) else str(name_or_path)


def _resolve_model(name_or_path: str | None) -> str:
    from sec_trl.embedded import embedded_model_path, is_embedded_model

    return embedded_model_path() if is_embedded_model(name_or_path) else str(name_or_path)


def model_fingerprint(name_or_path: str) -> dict:
    """Identity of a model without loading it: its name/path, the sha256 of its ``config.json``, and the name, size
    and modification time of every file in its directory (weights, tokenizer, chat template).

    A Hub name is looked up in the local Hub cache (its snapshot directory, whose name is the commit hash); when
    that fails, only the name is recorded and a warning says the cache cannot notice changed weights.
    """
    directory = Path(name_or_path).expanduser()
    if not directory.is_dir():
        directory = None
        try:
            from transformers.utils import cached_file

            config_file = cached_file(name_or_path, "config.json")
            if config_file:
                directory = Path(config_file).parent
        except Exception as exc:  # offline and not cached, gated, ...
            logger.warning(
                "Could not locate model %r locally (%s); the ranking cache records only its name and cannot notice "
                "changed weights.",
                name_or_path,
                type(exc).__name__,
            )
    info: dict[str, Any] = {"name_or_path": str(name_or_path)}
    if directory is None:
        return info
    info["resolved"] = str(directory.resolve())
    config = directory / "config.json"
    info["config_sha256"] = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    files = []
    for f in sorted(directory.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            st = f.stat()
            files.append([f.name, st.st_size, st.st_mtime_ns])
    info["files"] = files
    return info


def dataset_content_hash(dataset, columns: Sequence[str]) -> str:
    """sha256 of the given columns' values, row by row (independent of how the dataset was built or stored).

    Used instead of ``Dataset._fingerprint``, which is random for datasets produced by unhashable transforms and
    differs between identical data loaded in different ways; the content hash is exactly what the results depend
    on. (``_fingerprint`` is still recorded in ``ranking_meta.json``.)
    """
    h = hashlib.sha256()
    h.update(json.dumps(list(columns)).encode())
    for batch in dataset.select_columns(list(columns)).iter(batch_size=1000):
        h.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return h.hexdigest()


def read_ranking_meta(output_dir: str | os.PathLike) -> dict | None:
    """The ``ranking_meta.json`` of a finished ranking run (None if there is none)."""
    return _read_json(Path(output_dir) / META_FILENAME)


# ----------------------------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Sample:
    text: str
    loglik: float
    num_tokens: int
    truncated: bool
    token_ids: list[int] | None = None  # the completion's tokens, EOS included (transformers backend only)


def _prompt_token_ids(tokenizer, prompt) -> list[int]:
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "The prompts are chat messages but the model's tokenizer has no chat template. Use an instruct/chat "
            "model, or plain-string prompts with wrap_string_prompts=False (--wrap_string_prompts false)."
        )
    messages = [{k: v for k, v in m.items() if v is not None} for m in prompt]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _load_tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


class _LogLikelihoodRecorder(LogitsProcessor):
    """A logits processor that records each generated token's log-probability under the raw model.

    Custom processors run before generate's sampling warpers (temperature, top-p), so ``scores`` here are the
    model's logits (the sampler's generation config switches every other processor off). The token chosen at step
    t is only known at step t+1 (it is the last column of ``input_ids``), so only the previous step's
    log-softmax (``rows x vocab``) is kept; :meth:`finish` reads the last token from the output sequences.
    """

    def __init__(self) -> None:
        self._previous = None
        self._token_logprobs: list = []

    def __call__(self, input_ids, scores):
        import torch

        if self._previous is not None:
            self._token_logprobs.append(self._previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self._previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated):
        """``(rows, T)`` log-probabilities of the ``generated`` tokens (``rows x T``, prompt removed)."""
        import torch

        steps = generated.shape[1]
        if steps == 0:
            return torch.zeros(generated.shape, dtype=torch.float32, device=generated.device)
        if self._previous is not None and len(self._token_logprobs) < steps:
            last = generated[:, len(self._token_logprobs) : len(self._token_logprobs) + 1]
            self._token_logprobs.append(self._previous.gather(1, last).squeeze(1))
        self._previous = None
        out = torch.stack(self._token_logprobs[:steps], dim=1)
        self._token_logprobs = []
        return out


class _TransformersSampler:
    """Samples with ``model.generate`` (left padding, ``num_return_sequences``)."""

    backend = "transformers"

    def __init__(self, model_path: str, params: RankingParams, device) -> None:
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.params = params
        self.device = device
        self.tokenizer = _load_tokenizer(model_path, params.trust_remote_code)
        if params.dtype == "auto":
            dtype = torch.float32 if device.type == "cpu" else "auto"
        else:
            dtype = getattr(torch, params.dtype)
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, trust_remote_code=params.trust_remote_code
        )
        self.model = model.to(device).eval()
        eos: list[int] = []
        for candidate in (model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            for token in candidate if isinstance(candidate, (list, tuple)) else [candidate]:
                if token is not None and token not in eos:
                    eos.append(int(token))
        if not eos:
            raise ValueError("The model has no EOS token (neither its generation config nor its tokenizer names one).")
        self.eos = eos
        pad = self.tokenizer.pad_token_id
        self.pad = int(pad) if pad is not None else eos[0]
        # Only --temperature / --top_p shape the sampling distribution: start from a clean generation config so
        # the checkpoint's generation_config.json (top_k, repetition_penalty, ...) cannot add processors.
        self.model.generation_config = GenerationConfig(
            bos_token_id=model.generation_config.bos_token_id, eos_token_id=eos, pad_token_id=self.pad
        )
        self.generation_seconds = 0.0

    def begin_shard(self, shard_seed: int, first_index: int) -> None:
        import torch

        torch.manual_seed(shard_seed)

    def sample(self, prompts: Sequence[Any]) -> list[list[_Sample]]:
        import torch
        from transformers import LogitsProcessorList

        p = self.params
        ids = [_prompt_token_ids(self.tokenizer, prompt) for prompt in prompts]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
            attention[row, width - len(x) :] = 1
        recorder = _LogLikelihoodRecorder()
        start = time.perf_counter()
        with torch.no_grad():
            sequences = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                do_sample=True,
                temperature=p.temperature,
                top_p=p.top_p,
                top_k=0,
                max_new_tokens=p.max_new_tokens,
                num_return_sequences=p.num_samples,
                eos_token_id=self.eos,
                pad_token_id=self.pad,
                logits_processor=LogitsProcessorList([recorder]),
            )
            generated = sequences[:, width:]
            token_logprobs = recorder.finish(generated)
        self.generation_seconds += time.perf_counter() - start

        generated = generated.cpu()
        token_logprobs = token_logprobs.double().cpu()
        is_eos = torch.isin(generated, torch.tensor(self.eos))
        steps = generated.shape[1]
        # length = up to and including the first EOS; rows without EOS were cut off at max_new_tokens
        has_eos = is_eos.any(dim=1)
        first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, steps, dtype=torch.long))
        lengths = torch.where(has_eos, first_eos + 1, first_eos)
        mask = torch.arange(steps)[None, :] < lengths[:, None]
        # where(), not a product: a position after EOS may hold a pad token the model gives -inf (-inf * 0 = NaN)
        logliks = torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs)).sum(dim=1)
        texts = self.tokenizer.batch_decode(
            [generated[r, : int(first_eos[r])].tolist() for r in range(generated.shape[0])], skip_special_tokens=True
        )
        n = p.num_samples
        out = []
        for i in range(len(prompts)):
            out.append(
                [
                    _Sample(
                        texts[r],
                        float(logliks[r]),
                        int(lengths[r]),
                        not bool(has_eos[r]),
                        generated[r, : int(lengths[r])].tolist(),
                    )
                    for r in range(i * n, (i + 1) * n)
                ]
            )
        return out


class _VLLMSampler:
    """Samples with ``vllm.LLM(...).generate`` and ``SamplingParams(n=num_samples, ...)``, one seed per prompt.

    The sequence log-likelihood is vLLM's ``cumulative_logprob`` (the sampled tokens' log-probabilities; vLLM's
    default ``logprobs_mode`` reports them from the raw model, like the transformers path). Each prompt gets its own
    seed derived from ``(seed, row index)``, so results do not depend on batching.
    """

    backend = "vllm"

    def __init__(self, model_path: str, params: RankingParams, device) -> None:
        _require_vllm()
        from vllm import LLM

        self.params = params
        self.tokenizer = _load_tokenizer(model_path, params.trust_remote_code)
        self.llm = LLM(
            model=model_path,
            tokenizer=model_path,
            trust_remote_code=params.trust_remote_code,
            dtype=params.dtype,
            seed=params.seed,
            gpu_memory_utilization=params.vllm_gpu_memory_utilization,
        )
        self.generation_seconds = 0.0
        self._next_index = 0

    def begin_shard(self, shard_seed: int, first_index: int) -> None:
        self._next_index = first_index

    def sample(self, prompts: Sequence[Any]) -> list[list[_Sample]]:
        from vllm import SamplingParams

        p = self.params
        ids = [_prompt_token_ids(self.tokenizer, prompt) for prompt in prompts]
        sampling = [
            SamplingParams(
                n=p.num_samples,
                temperature=p.temperature,
                top_p=p.top_p,
                max_tokens=p.max_new_tokens,
                seed=_derive_seed(p.seed, self._next_index + i, bits=31),
                logprobs=0,
            )
            for i in range(len(ids))
        ]
        self._next_index += len(ids)
        start = time.perf_counter()
        results = self.llm.generate([{"prompt_token_ids": x} for x in ids], sampling, use_tqdm=False)
        self.generation_seconds += time.perf_counter() - start
        out = []
        for result in results:
            samples = []
            for o in result.outputs:
                loglik = o.cumulative_logprob
                if loglik is None and o.logprobs is not None:
                    loglik = sum(step[token].logprob for step, token in zip(o.logprobs, o.token_ids, strict=False))
                samples.append(
                    _Sample(
                        o.text,
                        float("nan") if loglik is None else float(loglik),
                        len(o.token_ids),
                        o.finish_reason == "length",
                    )
                )
            out.append(samples)
        return out


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "--use_vllm was given but vLLM is not installed. Install it on a CUDA machine with `pip install vllm` "
            "(or `pip install sec_trl[vllm]`), or drop --use_vllm to sample with transformers."
        )


# ----------------------------------------------------------------------------------------------------------------
# Scoring one prompt
# ----------------------------------------------------------------------------------------------------------------


def _score_prompt(
    index: int, samples: Sequence[_Sample], reference: str | None, params: RankingParams, checker
) -> dict:
    """Cluster one prompt's samples and compute its SE and sample accuracy (a JSON-able row of a shard)."""
    from sec_trl.semantic_entropy import (
        cluster_answers,
        discrete_semantic_entropy,
        final_answers,
        weighted_semantic_entropy,
    )

    texts = [s.text for s in samples]
    answers = final_answers(texts)
    ids = cluster_answers(
        texts, params.cluster_method, checker=checker, lexical_threshold=params.lexical_threshold, answers=answers
    )
    logliks = [s.loglik for s in samples]
    estimator = params.estimator
    if estimator == "weighted":
        try:
            se = weighted_semantic_entropy(ids, logliks)
        except ValueError as exc:
            logger.warning(
                "Prompt %d: %s; using the discrete estimator for this prompt (se_estimator=discrete_fallback).",
                index,
                exc,
            )
            estimator = "discrete_fallback"
            se = discrete_semantic_entropy(ids)
    else:
        se = discrete_semantic_entropy(ids)
    accuracy = None
    if reference is not None:
        verdicts = checker.check_batch(texts, [reference] * len(texts))
        accuracy = sum(verdicts) / len(verdicts)
    row = {
        "index": index,
        "semantic_entropy": se,
        "num_clusters": len(set(ids)),
        "sample_accuracy": accuracy,
        "estimator": estimator,
        "cluster_ids": ids,
        "answers": answers,
        "logliks": [x if math.isfinite(x) else None for x in logliks],
        "num_tokens": [s.num_tokens for s in samples],
        "truncated": [s.truncated for s in samples],
    }
    if params.save_completions:
        row["completions"] = texts
    return row


# ----------------------------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------------------------


def _shard_path(shard_dir: Path, shard: int) -> Path:
    return shard_dir / f"shard-{shard:06d}.json"


def _load_shard(shard_dir: Path, shard: int, fingerprint_hash: str, start: int, end: int) -> dict | None:
    """A finished shard's data, or None when it is missing or not from this fingerprint (never raises)."""
    path = _shard_path(shard_dir, shard)
    if not path.exists():
        return None
    data = _read_json(path)
    ok = (
        isinstance(data, dict)
        and data.get("fingerprint") == fingerprint_hash
        and data.get("shard") == shard
        and [row.get("index") for row in data.get("rows", [])] == list(range(start, end))
    )
    if not ok:
        logger.warning("Ignoring cache shard %s: unreadable or from other parameters; it will be regenerated.", path)
        return None
    return data


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [prefix or "<root>"]


def _prepare_cache(output_dir: Path, fingerprint: dict, fingerprint_hash: str) -> None:
    """Main process only: make ``shards/`` hold only work from ``fingerprint`` (moving anything else aside)."""
    shard_dir = output_dir / SHARD_DIRNAME
    stored = _read_json(shard_dir / FINGERPRINT_FILENAME)
    if shard_dir.is_dir():
        for stale in shard_dir.glob(".*.tmp-*"):  # temp files of a run killed mid-write
            stale.unlink(missing_ok=True)
    if stored is not None and stored.get("hash") == fingerprint_hash:
        return
    existing = sorted(shard_dir.glob("shard-*.json")) if shard_dir.is_dir() else []
    if stored is not None or existing:
        changed = _diff_keys((stored or {}).get("fingerprint"), fingerprint) if stored else ["<no fingerprint file>"]
        previous = output_dir / f"{SHARD_DIRNAME}.previous"
        logger.warning(
            "The ranking cache in %s was computed with different inputs (changed: %s); moving its %d shards to %s "
            "and starting over.",
            shard_dir,
            ", ".join(changed[:12]) + (" ..." if len(changed) > 12 else ""),
            len(existing),
            previous,
        )
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(shard_dir, previous)
    shard_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(shard_dir / FINGERPRINT_FILENAME, {"hash": fingerprint_hash, "fingerprint": fingerprint})


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------


def _save_dataset_atomically(dataset, output_dir: Path) -> None:
    """``save_to_disk`` into a temporary sibling, then move the files into ``output_dir`` (``state.json`` last)."""
    tmp = Path(tempfile.mkdtemp(prefix=".dataset-tmp-", dir=output_dir))
    try:
        dataset.save_to_disk(str(tmp))
        new_files = {f.name for f in tmp.iterdir()}
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == "state.json"):
            os.replace(f, output_dir / f.name)
        for old in output_dir.glob("data-*.arrow"):
            if old.name not in new_files:
                old.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _summary(se: Sequence[float], clusters: Sequence[int], accuracy: Sequence[float | None], n: int) -> dict:
    def q(values: list[float], frac: float) -> float:
        values = sorted(values)
        pos = frac * (len(values) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    se = list(se)
    out: dict[str, Any] = {
        "count": len(se),
        "mean": statistics.fmean(se),
        "std": statistics.pstdev(se),
        "min": min(se),
        "q25": q(se, 0.25),
        "median": q(se, 0.5),
        "q75": q(se, 0.75),
        "max": max(se),
        "max_possible": math.log(n),
        "fraction_zero": sum(1 for x in se if x == 0.0) / len(se),
        "fraction_all_distinct": sum(1 for c in clusters if c == n) / len(se),
        "mean_num_clusters": statistics.fmean(clusters),
    }
    acc = [a for a in accuracy if a is not None]
    if acc and len(acc) == len(se):
        out["mean_sample_accuracy"] = statistics.fmean(acc)
        if len(se) > 1 and statistics.pstdev(se) > 0 and statistics.pstdev(acc) > 0:
            out["pearson_se_vs_accuracy"] = statistics.correlation(se, acc)
        low = [a for s, a in zip(se, acc, strict=True) if s <= out["median"]]
        high = [a for s, a in zip(se, acc, strict=True) if s > out["median"]]
        out["mean_accuracy_low_se_half"] = statistics.fmean(low) if low else None
        out["mean_accuracy_high_se_half"] = statistics.fmean(high) if high else None
    return out


def _write_histogram(path: Path, se: Sequence[float], accuracy: Sequence[float | None], n: int, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    have_accuracy = all(a is not None for a in accuracy) and len(accuracy) > 0
    fig = Figure(figsize=(11 if have_accuracy else 6, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if have_accuracy else 1, squeeze=False)[0]
    top = math.log(n)
    edges = [top * i / 20 for i in range(21)]
    edges[-1] = top * 1.0001
    ax = axes[0]
    ax.hist(list(se), bins=edges, color="#4C72B0", edgecolor="white")
    ax.axvline(statistics.median(se), color="#C44E52", linestyle="--", label=f"median {statistics.median(se):.3f}")
    ax.set_xlabel("semantic entropy (nats)")
    ax.set_ylabel("prompts")
    ax.set_xlim(-0.02 * top, top * 1.02)
    ax.set_title(f"SE of {len(se)} prompts, {n} samples each (max ln {n} = {top:.2f})", fontsize=10)
    ax.legend(fontsize=8)
    if have_accuracy:
        ax = axes[1]
        ax.scatter(list(se), list(accuracy), s=12, alpha=0.5, color="#4C72B0")
        centers, means = [], []
        for i in range(10):
            lo, hi = top * i / 10, top * (i + 1) / 10 + (1e-9 if i == 9 else 0)
            bucket = [a for s, a in zip(se, accuracy, strict=True) if lo <= s < hi]
            if bucket:
                centers.append((lo + hi) / 2)
                means.append(statistics.fmean(bucket))
        ax.plot(centers, means, color="#C44E52", marker="o", label="mean per SE bin")
        ax.set_xlabel("semantic entropy (nats)")
        ax.set_ylabel("sample accuracy")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title("sample accuracy vs SE", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# Ranking
# ----------------------------------------------------------------------------------------------------------------


def _validated_view(dataset, prompt_column: str, answer_column: str | None, wrap_string_prompts: bool):
    """The prompts (and answers) to rank, validated and normalised like training data: columns ``prompt`` (and
    ``answer``; absent when ``answer_column`` is None)."""
    from sec_trl.data import PROMPT_COLUMN_FLAG, validate_prompt_dataset

    if answer_column is not None:
        view = dataset.select_columns(
            [c for c in dict.fromkeys([prompt_column, answer_column]) if c in dataset.column_names]
        )
        return validate_prompt_dataset(view, prompt_column, answer_column, wrap_string_prompts=wrap_string_prompts)
    if prompt_column not in dataset.column_names:
        raise ValueError(
            f"Dataset has no prompt column {prompt_column!r}; columns present: {list(dataset.column_names)}. "
            f"Set the prompt column name with {PROMPT_COLUMN_FLAG} <column>."
        )
    dummy = "__sec_trl_no_answer__"
    view = dataset.select_columns([prompt_column]).add_column(dummy, ["-"] * len(dataset))
    view = validate_prompt_dataset(view, prompt_column, dummy, wrap_string_prompts=wrap_string_prompts)
    return view.remove_columns("answer")


def _state():
    """accelerate's process state. On a machine without an accelerator, processes started by torchrun
    (``accelerate launch --multi_gpu``/``torchrun``) join one gloo process group: PartialState only does that when
    told ``cpu=True`` (``accelerate launch --cpu`` itself starts a single process unless MPI is set up)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = torch.cuda.is_available() or (accelerator is not None and accelerator.is_available())
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not has_accelerator)


def rank_dataset(
    dataset,
    model_name_or_path: str | None,
    output_dir: str | os.PathLike,
    *,
    prompt_column: str = "prompt",
    answer_column: str | None = "answer",
    params: RankingParams | None = None,
    shard_callback: Callable[[int, dict], None] | None = None,
    show_progress: bool = True,
    **param_overrides: Any,
):
    """Sample, cluster and score every prompt of ``dataset``; return it sorted by semantic entropy (ascending).

    Args:
        dataset: a ``datasets.Dataset`` with a prompt column (string or chat messages) and, optionally, an answer
            column. It is validated with :func:`sec_trl.data.validate_prompt_dataset` (missing columns, empty
            prompts/answers raise ``ValueError``). Columns named like :data:`SE_COLUMNS` are replaced.
        model_name_or_path: a local directory or Hub name; None (or ``"embedded"``) for the embedded
            SmolLM2-135M-Instruct.
        output_dir: where the ranked dataset, ``se_histogram.png``, ``ranking_meta.json`` and the shard cache go.
        prompt_column, answer_column: column names (``answer_column=None``: no reference answers; then
            ``sample_accuracy`` is None).
        params: a :class:`RankingParams`; or give its fields as keyword arguments (``num_samples=8, ...``).
        shard_callback: called as ``f(shard_index, info)`` in the process that wrote the shard, right after it was
            written (progress reporting, tests). An exception from it aborts the run like a crash would.
        show_progress: a tqdm bar (prompts/s, ETA) on each node's main process.

    Returns:
        The input dataset (all its columns, plus :data:`SE_COLUMNS`), sorted by ``semantic_entropy`` with ties in
        input order, as loaded back from ``output_dir``. Every process of a multi-process run returns it.

    Raises:
        ValueError: bad parameters (naming the flag) or bad data.
        RankingIncomplete: ``max_shards`` stopped the run before all shards were done (they are cached).
        ImportError: ``use_vllm`` without vLLM installed.
    """
    from datasets import Dataset, Features, List, Value, concatenate_datasets, load_from_disk
    from filelock import FileLock, Timeout

    wall_start = time.perf_counter()
    if params is None:
        params = RankingParams(**param_overrides)
    elif param_overrides:
        params = RankingParams(**{**asdict(params), **param_overrides})
    if output_dir is None:
        raise ValueError("output_dir is required (--output): it holds the ranked dataset and the cache")
    if not isinstance(dataset, Dataset):
        raise ValueError(f"expected a datasets.Dataset, got {type(dataset).__name__}")
    if params.use_vllm:
        _require_vllm()

    state = _state()
    if params.use_vllm and state.num_processes > 1:
        raise ValueError(
            "--use_vllm runs in a single process (vLLM manages the GPU itself); launch with one process, or drop "
            "--use_vllm to rank with transformers on several processes."
        )
    output_dir = Path(output_dir).expanduser().absolute()
    shard_dir = output_dir / SHARD_DIRNAME

    view = _validated_view(dataset, prompt_column, answer_column, params.wrap_string_prompts)
    num_rows = len(view)
    model_path = _resolve_model(model_name_or_path) if state.is_main_process else None
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        holder = [model_path]
        broadcast_object_list(holder)  # the embedded model is resolved (and built, if need be) once
        model_path = holder[0]
    shown_model = _display_model_name(model_name_or_path)

    fingerprint = {
        "format": RANKING_FORMAT_VERSION,
        "versions": _library_versions(),
        "model": model_fingerprint(model_path),
        "dataset": {
            "num_rows": num_rows,
            "content_sha256": dataset_content_hash(view, view.column_names),
            "has_answers": answer_column is not None,
        },
        "params": {k: v for k, v in asdict(params).items() if k not in _NOT_FINGERPRINTED},
    }
    fingerprint_hash = _hash_json(fingerprint)

    lock = None
    if state.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(output_dir / ".ranking.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RuntimeError(
                f"Another ranking run is writing to {output_dir} (lock {lock.lock_file} is held); wait for it or "
                "choose another --output."
            ) from None
    try:
        if state.is_main_process:
            _prepare_cache(output_dir, fingerprint, fingerprint_hash)
        state.wait_for_everyone()

        num_shards = math.ceil(num_rows / params.shard_size)
        bounds = [(s * params.shard_size, min(num_rows, (s + 1) * params.shard_size)) for s in range(num_shards)]
        mine = list(range(state.process_index, num_shards, state.num_processes))
        todo = [s for s in mine if _load_shard(shard_dir, s, fingerprint_hash, *bounds[s]) is None]
        stats = {
            "process": state.process_index,
            "shards_generated": 0,
            "prompts_generated": 0,
            "shards_cached": len(mine) - len(todo),
            "generation_seconds": 0.0,
            "model_load_seconds": 0.0,
            "process_seconds": 0.0,
            "stopped_early": False,
        }
        if todo:
            stats.update(
                _run_shards(
                    todo,
                    bounds,
                    view,
                    model_path,
                    params,
                    state,
                    shard_dir,
                    fingerprint_hash,
                    shard_callback,
                    show_progress,
                )
            )
        stats["process_seconds"] = time.perf_counter() - wall_start
        all_stats = [stats]
        if state.num_processes > 1:
            from accelerate.utils import gather_object

            all_stats = gather_object([stats])
        state.wait_for_everyone()
        if any(s["stopped_early"] for s in all_stats):
            done = sum(1 for s in range(num_shards) if _shard_path(shard_dir, s).exists())
            raise RankingIncomplete(
                f"Stopped after max_shards={params.max_shards} new shard(s) per process; {done}/{num_shards} shards "
                f"are cached in {shard_dir}. Re-run the same command to continue."
            )

        if state.is_main_process:
            merge_start = time.perf_counter()
            rows = []
            for s in range(num_shards):
                data = _load_shard(shard_dir, s, fingerprint_hash, *bounds[s])
                if data is None:
                    raise RuntimeError(
                        f"Shard {s} of {num_shards} is missing from {shard_dir} after all processes finished; a "
                        "process must have failed. Re-run to generate it."
                    )
                rows.extend(data["rows"])
            columns = {
                "semantic_entropy": [r["semantic_entropy"] for r in rows],
                "num_clusters": [r["num_clusters"] for r in rows],
                "sample_accuracy": [r["sample_accuracy"] for r in rows],
                "se_estimator": [r["estimator"] for r in rows],
                "se_source_index": [r["index"] for r in rows],
                "se_cluster_ids": [r["cluster_ids"] for r in rows],
                "se_sample_answers": [r["answers"] for r in rows],
                "se_sample_logliks": [[math.nan if x is None else x for x in r["logliks"]] for r in rows],
            }
            features = {
                "semantic_entropy": Value("float64"),
                "num_clusters": Value("int64"),
                "sample_accuracy": Value("float64"),
                "se_estimator": Value("string"),
                "se_source_index": Value("int64"),
                "se_cluster_ids": List(Value("int64")),
                "se_sample_answers": List(Value("string")),
                "se_sample_logliks": List(Value("float64")),
            }
            if params.save_completions:
                columns["se_completions"] = [r["completions"] for r in rows]
                features["se_completions"] = List(Value("string"))
            se = columns["semantic_entropy"]
            order = sorted(range(num_rows), key=lambda i: (se[i], i))
            rank_of = [0] * num_rows
            for position, i in enumerate(order):
                rank_of[i] = position
            columns["se_rank"], features["se_rank"] = rank_of, Value("int64")
            base = dataset.remove_columns([c for c in SE_COLUMNS if c in dataset.column_names])
            if base._indices is not None:
                base = base.flatten_indices()
            extra = Dataset.from_dict(columns, features=Features(features))
            ranked = concatenate_datasets([base, extra], axis=1).select(order)
            _save_dataset_atomically(ranked, output_dir)

            summary = _summary(se, columns["num_clusters"], columns["sample_accuracy"], params.num_samples)
            _write_histogram(
                output_dir / HISTOGRAM_FILENAME,
                se,
                columns["sample_accuracy"],
                params.num_samples,
                f"{shown_model}: {params.cluster_method} clusters, {params.estimator} SE",
            )
            merge_seconds = time.perf_counter() - merge_start
            wall = time.perf_counter() - wall_start
            generated = sum(s["prompts_generated"] for s in all_stats)
            gen_seconds = [s["generation_seconds"] for s in all_stats]
            samples_total = num_rows * params.num_samples
            meta = {
                "complete": True,
                "model": shown_model,
                "backend": "vllm" if params.use_vllm else "transformers",
                "num_processes": state.num_processes,
                "params": asdict(params),
                "prompt_column": prompt_column,
                "answer_column": answer_column,
                "fingerprint": fingerprint_hash,
                "model_fingerprint": _hash_json(fingerprint["model"]),
                "dataset_content_sha256": fingerprint["dataset"]["content_sha256"],
                "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
                "sec_trl_version": fingerprint["versions"]["sec_trl"],
                "counts": {
                    "num_prompts": num_rows,
                    "num_shards": num_shards,
                    "num_prompts_generated": generated,
                    "num_prompts_from_cache": num_rows - generated,
                    "num_shards_generated": sum(s["shards_generated"] for s in all_stats),
                    "num_shards_from_cache": sum(s["shards_cached"] for s in all_stats),
                    "num_weighted_fallbacks": sum(1 for r in rows if r["estimator"] == "discrete_fallback"),
                    "no_answer_fraction": sum(a is None for r in rows for a in r["answers"]) / samples_total,
                    "truncated_fraction": sum(bool(t) for r in rows for t in r["truncated"]) / samples_total,
                    "mean_completion_tokens": sum(x for r in rows for x in r["num_tokens"]) / samples_total,
                },
                "semantic_entropy": summary,
                "timing": {
                    "wall_seconds": wall,
                    "prompts_per_second": generated / wall if generated else None,
                    "samples_per_second": generated * params.num_samples / wall if generated else None,
                    "generation_seconds_per_process": gen_seconds,
                    "model_load_seconds_per_process": [s["model_load_seconds"] for s in all_stats],
                    "process_seconds_per_process": [s["process_seconds"] for s in all_stats],
                    "fraction_outside_generation": (1.0 - statistics.fmean(gen_seconds) / wall) if generated else None,
                    "merge_and_write_seconds": merge_seconds,
                },
            }
            _write_json_atomic(output_dir / META_FILENAME, meta)
            logger.info(
                "Ranked %d prompts (%d generated, %d from cache) in %.1f s: SE mean %.3f, median %.3f, %d%% at 0. "
                "Output: %s",
                num_rows,
                generated,
                num_rows - generated,
                wall,
                summary["mean"],
                summary["median"],
                round(100 * summary["fraction_zero"]),
                output_dir,
            )
        state.wait_for_everyone()
    finally:
        if lock is not None:
            lock.release()
    return load_from_disk(str(output_dir))


def _library_versions() -> dict:
    import torch
    import transformers

    versions = {"sec_trl": _sec_trl_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    return versions


def _run_shards(
    todo,
    bounds,
    view,
    model_path,
    params,
    state,
    shard_dir,
    fingerprint_hash,
    shard_callback,
    show_progress,
) -> dict:
    """Generate and score this process's unfinished shards, writing each as it completes."""
    from tqdm.auto import tqdm

    from sec_trl.answer_checking import AnswerChecker

    limit = params.max_shards
    todo_now = todo if limit is None else todo[:limit]
    if not todo_now:  # max_shards=0: nothing to do in this run, not even loading the model
        return {"stopped_early": True}
    load_start = time.perf_counter()
    sampler_cls = _VLLMSampler if params.use_vllm else _TransformersSampler
    sampler = sampler_cls(model_path, params, state.device)
    load_seconds = time.perf_counter() - load_start
    total = sum(bounds[s][1] - bounds[s][0] for s in todo_now)
    out = {
        "shards_generated": 0,
        "prompts_generated": 0,
        "model_load_seconds": load_seconds,
        "backend": sampler.backend,
    }
    checker = AnswerChecker(timeout=params.answer_timeout)
    bar = tqdm(
        total=total,
        unit="prompt",
        desc=f"SE ranking (process {state.process_index})" if state.num_processes > 1 else "SE ranking",
        disable=not (show_progress and state.is_local_main_process),
        dynamic_ncols=True,
    )
    try:
        for shard in todo_now:
            start, end = bounds[shard]
            shard_start = time.perf_counter()
            gen_before = sampler.generation_seconds
            sampler.begin_shard(_derive_seed(params.seed, shard), start)
            rows = []
            for batch_start in range(start, end, params.prompts_per_batch):
                batch_end = min(end, batch_start + params.prompts_per_batch)
                batch = view.select(range(batch_start, batch_end))
                samples = sampler.sample(batch["prompt"])
                references = batch["answer"] if "answer" in batch.column_names else [None] * len(batch)
                for offset, (prompt_samples, reference) in enumerate(zip(samples, references, strict=True)):
                    rows.append(_score_prompt(batch_start + offset, prompt_samples, reference, params, checker))
                bar.update(batch_end - batch_start)
            info = {
                "shard": shard,
                "start": start,
                "end": end,
                "fingerprint": fingerprint_hash,
                "process": state.process_index,
                "generation_seconds": sampler.generation_seconds - gen_before,
                "seconds": time.perf_counter() - shard_start,
                "rows": rows,
            }
            _write_json_atomic(_shard_path(shard_dir, shard), info)
            out["shards_generated"] += 1
            out["prompts_generated"] += end - start
            if shard_callback is not None:
                shard_callback(shard, {k: v for k, v in info.items() if k != "rows"})
    finally:
        bar.close()
        checker.close()
    out["generation_seconds"] = sampler.generation_seconds
    out["stopped_early"] = len(todo_now) < len(todo)
    return out


def ensure_ranked(
    dataset,
    model_name_or_path: str | None,
    output_dir: str | os.PathLike,
    **kwargs: Any,
):
    """``dataset`` unchanged when it already has a ``semantic_entropy`` column, else :func:`rank_dataset` of it.

    Ranking reuses (and fills) the cache in ``output_dir``, so calling this at the start of every training run is
    cheap after the first time. Keyword arguments are those of :func:`rank_dataset`.
    """
    if "semantic_entropy" in dataset.column_names:
        logger.info("The dataset already has a semantic_entropy column; using its ranking as is.")
        return dataset
    return rank_dataset(dataset, model_name_or_path, output_dir, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def _load_cli_dataset(args: RankScriptArguments, answer_column: str | None):
    from sec_trl.data import load_prompt_dataset, make_arithmetic_splits

    if args.dataset is None:
        dataset = make_arithmetic_splits(
            args.arithmetic_num_train, args.arithmetic_num_test, seed=args.arithmetic_seed
        )["train"]
        prompt_column, answer = "prompt", "answer"
    else:
        if answer_column is None:
            from sec_trl.data import _load_raw

            dataset = _load_raw(args.dataset, split=args.dataset_split, config=args.dataset_config)
            prompt_column, answer = args.dataset_prompt_column, None
        else:
            dataset = load_prompt_dataset(
                args.dataset,
                split=args.dataset_split,
                config=args.dataset_config,
                prompt_column=args.dataset_prompt_column,
                answer_column=answer_column,
            )
            prompt_column, answer = "prompt", "answer"
    if args.num_prompts is not None:
        if args.num_prompts < 1:
            raise ValueError(f"--num_prompts must be >= 1, got {args.num_prompts}")
        dataset = dataset.select(range(min(args.num_prompts, len(dataset))))
    return dataset, prompt_column, answer


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``python -m sec_trl.rank --help``). Returns the exit code."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser((RankScriptArguments, RankingParams), description=__doc__.split("\n\n")[0])
    args, params = parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.output:
        parser.error("--output is required")
    answer_column = None if args.dataset_answer_column.lower() in ("", "none") else args.dataset_answer_column
    dataset, prompt_column, answer_column = _load_cli_dataset(args, answer_column)
    try:
        rank_dataset(
            dataset,
            args.model,
            args.output,
            prompt_column=prompt_column,
            answer_column=answer_column,
            params=params,
        )
    except RankingIncomplete as exc:
        logger.warning("%s", exc)
        return EXIT_INCOMPLETE
    if _state().is_main_process:
        meta = read_ranking_meta(args.output) or {}
        print(
            json.dumps(
                {
                    "counts": meta.get("counts"),
                    "semantic_entropy": meta.get("semantic_entropy"),
                    "timing": meta.get("timing"),
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
