"""Evaluation in four phases: load the model, sample k completions per prompt (this process's shard), score them
with the time-bounded answer checker, summarise (after gathering every process's shard on all processes)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sec_trl.embedded import resolve_model_path
from sec_trl.errors import work_phase

from .metrics import summarise
from .sampling import SamplingSettings, sample_prompts, shard_bounds


def load_model(model_or_path, tokenizer=None, dtype=None, *, device=None, trust_remote_code=False, revision=None):
    """``(model, tokenizer)`` ready to sample: ``model_or_path`` is a local directory or Hub id (None /
    ``"embedded"``: the embedded SmolLM2-135M-Instruct) or a loaded model (then ``tokenizer`` is required).

    ``dtype``: None / ``"auto"`` (float32 on the CPU, the checkpoint's dtype on an accelerator), a name
    (``"bfloat16"``) or a ``torch.dtype``. A loaded model is used as is (not moved, not cast).
    """
    from transformers import AutoTokenizer

    from sec_trl import generation

    if model_or_path is None or isinstance(model_or_path, str):
        path = resolve_model_path(model_or_path)
        model, tokenizer = generation.load_model(
            path, tokenizer, device=device, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision
        )
    else:
        model = model_or_path
        if tokenizer is None:
            raise ValueError("evaluate_model: pass the tokenizer when passing a model object")
    if isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=trust_remote_code)
    return model, tokenizer


def _progress_bar(total: int, desc: str, state, enabled: bool):
    from tqdm.auto import tqdm

    main = state is None or state.is_local_main_process
    if state is not None and state.num_processes > 1:
        desc = f"{desc} (process {state.process_index} of {state.num_processes}, its shard)"
    return tqdm(total=total, desc=desc, unit="prompt", disable=not (enabled and main), dynamic_ncols=True)


@work_phase()  # sampling and scoring: an error from here on keeps its traceback (sec_trl.errors)
def sample_shard(sampler, prompts: Sequence[Any], settings: SamplingSettings, *, state=None, show_progress=False):
    """``(start, groups)``: k completions for each prompt of this process's contiguous shard ``prompts[start:end]``
    (all prompts in a single process); see :func:`sec_trl.evaluation.sampling.shard_bounds`."""
    n = len(prompts)
    start, end = (
        (0, n) if state is None else shard_bounds(n, settings.batch_size, state.num_processes, state.process_index)
    )
    with _progress_bar(end - start, "sampling", state, show_progress) as bar:
        groups = sample_prompts(sampler, list(prompts[start:end]), start, settings, progress=bar.update)
    return start, groups


ANSWER_EXTRACTIONS = ("default", "paper")
"""How a completion's answer is read: ``default`` (:func:`sec_trl.answer_extraction.extract_final_answer`, as the
training reward: last box, else "answer is" / "answer:", else the last number) or ``paper`` (the SENT paper's
evaluation: :func:`sec_trl.answer_extraction.extract_paper_answer`, last box, else the "answer is" sentence)."""


def _extractor(answer_extraction: str):
    from sec_trl.answer_extraction import extract_final_answer, extract_paper_answer

    if answer_extraction not in ANSWER_EXTRACTIONS:
        raise ValueError(f"--answer_extraction must be one of {list(ANSWER_EXTRACTIONS)}, got {answer_extraction!r}")
    return extract_paper_answer if answer_extraction == "paper" else extract_final_answer


@work_phase()
def score_groups(
    groups,
    references: Sequence[str],
    *,
    answer_timeout=5.0,
    state=None,
    show_progress=False,
    answer_extraction: str = "default",
):
    """Per-prompt records ``{"completions", "lengths", "truncated", "correct"}``: every completion checked against its
    prompt's reference by :class:`sec_trl.answer_checking.AnswerChecker` (time-bounded; nothing is evaluated), its
    answer read as ``answer_extraction`` says (:data:`ANSWER_EXTRACTIONS`)."""
    from sec_trl.answer_checking import AnswerChecker

    extract = _extractor(answer_extraction)

    records = []
    with (
        AnswerChecker(timeout=answer_timeout) as checker,
        _progress_bar(len(groups), "checking", state, show_progress) as bar,
    ):
        for group, reference in zip(groups, references, strict=True):
            texts = [c.text for c in group]
            correct = checker.check_batch(texts, [str(reference)] * len(texts), extract=extract)
            records.append(
                {
                    "completions": texts,
                    "lengths": [c.num_tokens for c in group],
                    "truncated": [c.truncated for c in group],
                    "correct": [bool(v) for v in correct],
                }
            )
            bar.update(1)
    return records


def gather_records(records: list[dict], state=None) -> list[dict]:
    """Every process's records in global prompt order (shards are contiguous and in process order)."""
    if state is None or state.num_processes == 1:
        return records
    from accelerate.utils import gather_object

    return gather_object(records)


def evaluate_with_sampler(
    sampler,
    prompts: Sequence[Any],
    references: Sequence[str],
    settings: SamplingSettings,
    *,
    answer_timeout: float = 5.0,
    state=None,
    show_progress: bool = False,
    return_completions: bool = False,
    ks: Sequence[int] = (),
    answer_extraction: str = "default",
) -> dict:
    """Sample, score, gather and summarise one evaluation set with an existing sampler (the model stays loaded
    between benchmarks). Every process returns the same dict; see :func:`evaluate_model` for its keys. ``ks``: also
    report Avg@j / Pass@j over the first j samples and the unbiased pass@j for each j (:func:`summarise`)."""
    if len(prompts) == 0:
        raise ValueError("evaluate_model needs a non-empty dataset")
    _extractor(answer_extraction)  # a bad value fails before any sampling
    begin = time.perf_counter()
    start, groups = sample_shard(sampler, prompts, settings, state=state, show_progress=show_progress)
    shard_refs = references[start : start + len(groups)]
    records = score_groups(
        groups,
        shard_refs,
        answer_timeout=answer_timeout,
        state=state,
        show_progress=show_progress,
        answer_extraction=answer_extraction,
    )
    shard = [start, start + len(groups)]
    records = gather_records(records, state)
    result = summarise(records, settings.k, ks)
    result["seconds"] = time.perf_counter() - begin
    if state is not None and state.num_processes > 1:
        result["shards"] = gather_records([shard], state)  # [start, end) of the prompts each process sampled
    if return_completions:
        result["completions"] = [r["completions"] for r in records]
    return result


def _rows(dataset, prompt_column: str, answer_column: str, prompt_format):
    if dataset is None or len(dataset) == 0:
        raise ValueError("evaluate_model needs a non-empty dataset")
    rows = [dict(r) for r in dataset]
    for name in (prompt_column, answer_column):
        if name not in rows[0]:
            raise ValueError(f"evaluate_model: the dataset has no {name!r} column (columns: {sorted(rows[0])})")
    prompts = [r[prompt_column] for r in rows]
    if prompt_format is not None:
        prompts = [prompt_format.apply(p) for p in prompts]
    return prompts, [r[answer_column] for r in rows]


def evaluate_model(
    model_name_or_path_or_model,
    tokenizer=None,
    dataset=None,
    *,
    k: int = 4,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    seed: int = 0,
    answer_column: str = "answer",
    prompt_column: str = "prompt",
    answer_timeout: float = 5.0,
    dtype=None,
    return_completions: bool = False,
    prompt_format=None,
    use_vllm: bool = False,
    vllm_kwargs: dict | None = None,
    state=None,
    show_progress: bool = False,
    chat_template_kwargs: dict | str | None = None,
    ks: Sequence[int] = (),
    answer_extraction: str = "default",
) -> dict:
    """Sample ``k`` completions per prompt of ``dataset`` and score them.

    Args:
        model_name_or_path_or_model: a local directory or Hub name (``None`` / ``"embedded"``: the embedded
            SmolLM2-135M-Instruct), or a loaded ``PreTrainedModel`` (then ``tokenizer`` is required).
        tokenizer: a tokenizer, a name/path to load one from, or None (loaded from the model path).
        dataset: a ``datasets.Dataset`` (or a list of dicts) with ``prompt_column`` (a string or chat messages)
            and ``answer_column``.
        k: samples per prompt; pass@1 and pass@k are reported.
        batch_size: prompts per ``generate`` call (each expanded to ``k`` sequences).
        seed: batch ``b`` (prompts ``[b * batch_size, (b + 1) * batch_size)``) is seeded from ``(seed, b *
            batch_size)``, so results do not depend on what ran before nor on how many processes share the work
            (same model, data, seed and batch size -> same samples on the same machine).
        prompt_format: a :class:`sec_trl.data.PromptFormat` applied to each prompt; None: prompts as given
            (messages through the chat template, strings as raw text).
        use_vllm: sample with vLLM (needs ``model_name_or_path_or_model`` to be a path; ``vllm_kwargs`` go to
            ``vllm.LLM``).
        state: an ``accelerate.PartialState`` to shard the prompts over its processes (None: this process only).
        chat_template_kwargs: extra ``apply_chat_template`` arguments for message prompts (a dict or a JSON object
            string): give the training's ``GRPOConfig.chat_template_kwargs`` to evaluate on the prompts it trained on.
        ks: also report ``avg@<j>`` / ``pass@<j>`` over the first ``j`` samples and ``pass@<j>_unbiased`` over all
            ``k``, for each ``j <= k`` (the paper's protocol: ``k=32, ks=(8, 16, 32)``).
        answer_extraction: ``"default"`` (as the training reward) or ``"paper"`` (:data:`ANSWER_EXTRACTIONS`).

    Returns:
        ``{"k", "num_prompts", "avg@<k>", "pass@1", "pass@<k>", "mean_completion_length", "truncated_frac",
        "per_prompt_correct", "per_prompt_verdicts", "seconds"}`` (and the ``ks`` keys), plus ``"completions"``
        when ``return_completions``.
    """
    settings = SamplingSettings(k, temperature, top_p, max_new_tokens, batch_size, seed)
    prompts, references = _rows(dataset, prompt_column, answer_column, prompt_format)
    sampler = build_sampler(
        model_name_or_path_or_model,
        tokenizer,
        dtype=dtype,
        use_vllm=use_vllm,
        seed=seed,
        vllm_kwargs=vllm_kwargs,
        chat_template_kwargs=chat_template_kwargs,
    )
    model = getattr(sampler, "model", None)
    was_training = bool(getattr(model, "training", False))
    if model is not None:
        model.eval()
    try:
        return evaluate_with_sampler(
            sampler,
            prompts,
            references,
            settings,
            answer_timeout=answer_timeout,
            state=state,
            show_progress=show_progress,
            return_completions=return_completions,
            ks=ks,
            answer_extraction=answer_extraction,
        )
    finally:
        if was_training:
            model.train()


def build_sampler(
    model_or_path,
    tokenizer=None,
    *,
    dtype=None,
    device=None,
    use_vllm=False,
    seed=0,
    vllm_kwargs=None,
    trust_remote_code=False,
    revision=None,
    chat_template_kwargs=None,
):
    """A :class:`~sec_trl.generation.samplers.TransformersSampler` (model loaded by :func:`load_model`) or, with
    ``use_vllm``, a :class:`~sec_trl.generation.samplers.VLLMSampler` (``vllm.LLM`` on the model path, with
    ``vllm_kwargs``); message prompts are rendered with ``chat_template_kwargs`` (a dict or a JSON object string, as
    TRL's ``GRPOConfig`` field). The evaluation reads no log-likelihoods, so none are computed."""
    from sec_trl.generation import parse_chat_template_kwargs
    from sec_trl.generation.samplers import TransformersSampler, VLLMSampler

    chat_template_kwargs = parse_chat_template_kwargs(chat_template_kwargs)
    if not use_vllm:
        model, tokenizer = load_model(
            model_or_path, tokenizer, dtype, device=device, trust_remote_code=trust_remote_code, revision=revision
        )
        return TransformersSampler(model, tokenizer, chat_template_kwargs=chat_template_kwargs)
    if not (model_or_path is None or isinstance(model_or_path, str)):
        raise ValueError("use_vllm needs a model path or Hub id (vLLM loads the weights itself), not a model object")
    from transformers import AutoTokenizer

    path = resolve_model_path(model_or_path)
    if tokenizer is None or isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer or path, trust_remote_code=trust_remote_code)
    kwargs = {"dtype": dtype or "auto", "trust_remote_code": trust_remote_code, **(vllm_kwargs or {})}
    if revision:
        kwargs["revision"] = revision
    return VLLMSampler(path, tokenizer, chat_template_kwargs=chat_template_kwargs, seed=seed, **kwargs)
