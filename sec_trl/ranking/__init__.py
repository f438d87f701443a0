"""Rank a prompt dataset by semantic entropy (SENT's data curriculum: docs/method.md).

For every prompt, sample ``--num_samples`` responses from the model (temperature 1.0, top_p 1.0 by default, as the
reference's rollouts), cluster them by final answer (:func:`sec_trl.semantic_entropy.cluster_answers`), and score
the prompt's semantic entropy (SE). The output is the dataset sorted from low SE (the model is consistent: easy or
confidently known) to high SE (the model is unsure), ready to be cut into curriculum stages.

Command line::

    # the embedded SmolLM2-135M-Instruct on the generated arithmetic train split (train.py's default data)
    python -m sec_trl.rank --output_dir outputs/se_arith --num_samples 8 --max_new_tokens 256

    # several processes, one per GPU; on a CPU-only machine the same command gives 2 CPU processes (gloo)
    accelerate launch --multi_gpu --num_processes 2 -m sec_trl.rank --output_dir outputs/se_arith
    # (`accelerate launch --cpu --num_processes 2` starts ONE process: accelerate fans CPU runs out only through
    # mpirun. `torchrun --nproc_per_node 2 -m sec_trl.rank ...` works too.)

    # a Hub model and dataset, with vLLM on one GPU
    python -m sec_trl.rank --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \\
        --dataset_name open-r1/DAPO-Math-17k-Processed --dataset_config en \\
        --dataset_answer_column solution --output_dir outputs/se_dapo --use_vllm true

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
- ``shards/<fingerprint id>/``: the cache, one folder per set of inputs (see below).

Package layout: :mod:`~sec_trl.ranking.params` (parameters, column and file names), :mod:`~sec_trl.ranking.scoring`
(one prompt's clusters and SE), :mod:`~sec_trl.ranking.cache` (fingerprint, shards, atomic writes),
:mod:`~sec_trl.ranking.report` (summary, meta, histogram), :mod:`~sec_trl.ranking.core` (:func:`rank_dataset`,
:func:`ensure_ranked`, which sampler and which seeds) and :mod:`~sec_trl.ranking.cli`. The samplers (transformers and
vLLM) are the evaluation's too: :mod:`sec_trl.generation`.
``sec_trl.rank`` re-exports the public names and is the ``python -m`` entry point.

Sampling (transformers backend): left-padded batches of ``--prompts_per_batch`` prompts, each expanded to
``--num_samples`` sequences (``num_return_sequences``); chat-message prompts go through the tokenizer's chat
template. Sampling is exactly ``--temperature`` / ``--top_p``: the model's own ``generation_config.json`` sampling
settings (``top_k``, ``repetition_penalty``, ...) are deliberately ignored. Each sample's sequence log-likelihood
is the sum of the log-probabilities of its tokens, EOS included, under the *unmodified* model (raw logits, i.e.
temperature 1, no top-p), recorded during generation one step at a time (no ``vocab x length`` logits tensor is
kept); its length is the number of those tokens (vLLM: ``cumulative_logprob`` and ``len(output.token_ids)``).
``--estimator weighted`` scores each sample by its *mean* token log-likelihood (sum / length, as Farquhar et al.
2024 and Kuhn et al. 2023): with sums, chain-of-thought lengths make the softmax one-hot and the SE ~0. Both are
kept per sample (``se_sample_logliks``, ``se_sample_lengths``), so either form can be recomputed.

Determinism: prompts are cut into shards of ``--shard_size`` rows; the random state is reset at the start of each
shard from ``numpy.random.SeedSequence((--seed, shard index))``, and a shard is always processed in the same
batches. A shard's result therefore depends only on its index, not on which process runs it, so 1 and N processes
give the same dataset (on the same hardware and library versions): the same samples, clusters, SE and order. Only
the recorded log-likelihoods can differ in their last digits when the processes use different numbers of CPU
threads (float sums depend on it; torchrun sets one thread per process). ``--shard_size`` and
``--prompts_per_batch`` are part of the cache fingerprint because they change which random numbers each prompt
sees.

Cache and resume: each shard is written to ``DIR/shards/<id>/`` (temp file + rename) as soon as it is done, where
``<id>`` is the first 16 hex digits of the fingerprint's hash. A re-run skips every finished shard, so after a crash
or Ctrl-C only unfinished shards are generated, and a re-run with the same model, data and parameters generates
nothing (the model is not even loaded). ``DIR/shards/<id>/fingerprint.json`` records what the shards were computed
from: the model (its name/path, the hash of its ``config.json``, and the
names, sizes and modification times of every file in its directory), the content hash of the prompt and answer
columns, every sampling/clustering parameter, the sec_trl/torch/transformers versions. Other inputs get their own
folder: nothing is moved or deleted, so a run with one mistyped flag does not cost the original run its samples.
The log says which entries changed relative to the latest other cache (for an older cache format, also why that
format is invalid: :data:`FORMAT_CHANGES`). ``--prune_cache`` deletes the other folders after a finished run; deleting
``DIR/shards/`` removes every cache. Caches of the earlier one-folder layout (``DIR/shards/*.json``,
``DIR/shards.previous/``) are moved into their fingerprint's folder and stay usable.

Multi-process: with ``accelerate launch``, shards are assigned round-robin to processes; each process writes its
own shards; after a barrier the main process merges all shards in index order and writes the output; the other
processes then load it, so every process returns the same dataset. ``--use_vllm`` gives each process its own vLLM
engine (``distributed_executor_backend="external_launcher"``, as TRL's colocate mode); the per-prompt seeds keep
the samples independent of the process count.

No answer and bad log-likelihoods: a sample with no extractable answer (an empty completion, or one cut off
before any number) is its own singleton cluster (see :func:`~sec_trl.semantic_entropy.cluster_answers`). With
``--estimator weighted``, a prompt whose log-likelihoods contain NaN/inf (a numerically broken model) falls back
to the discrete estimator for that prompt only, logs a warning, and is marked ``discrete_fallback`` in
``se_estimator``; ``ranking_meta.json`` counts such prompts (``num_weighted_fallbacks``). No number is ever
silently computed from NaNs.
"""

from __future__ import annotations

from sec_trl.ranking import params
from sec_trl.ranking.cache import FORMAT_CHANGES, RANKING_FORMAT_VERSION, dataset_content_hash, model_fingerprint
from sec_trl.ranking.cli import main
from sec_trl.ranking.core import build_ranked_dataset, ensure_ranked, rank_dataset
from sec_trl.ranking.params import *  # noqa: F403  (parameters, column and file names: params.__all__)
from sec_trl.ranking.report import read_ranking_meta


__all__ = [
    *params.__all__,
    "FORMAT_CHANGES",
    "RANKING_FORMAT_VERSION",
    "build_ranked_dataset",
    "dataset_content_hash",
    "ensure_ranked",
    "main",
    "model_fingerprint",
    "rank_dataset",
    "read_ranking_meta",
]
