"""Held-out evaluation: avg@k and unbiased pass@k of a causal LM on a prompt/answer dataset.

    # the embedded model on the generated arithmetic test split (CPU)
    python -m sec_trl.evaluate --model embedded --dataset arithmetic --num_prompts 32 --k 4 --max_new_tokens 32

    # a trained model on MATH-500 / AIME 2024 (Hub; needs network, realistically a GPU)
    python -m sec_trl.evaluate --model out/qwen05b-sent-lora --dataset math500 --k 8 --max_new_tokens 2048
    python -m sec_trl.evaluate --model out/qwen05b-sent-lora --dataset aime24 --k 32 --max_new_tokens 4096

For each prompt, ``k`` completions are sampled (``generate`` with ``num_return_sequences=k``, left padding, the
chat template for message prompts) and each is checked against the reference with the time-bounded
:class:`sec_trl.answer_checking.AnswerChecker`. Reported: ``avg@k`` (mean accuracy over all samples), ``pass@1``
and ``pass@k`` (the unbiased estimator of Chen et al. 2021, averaged over prompts), the mean completion length in
tokens, the fraction of completions cut at ``max_new_tokens``, and the per-prompt correct counts.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any


# Hub shortcuts for --dataset: (name, config, split, prompt column, answer column). Others: pass the Hub name with
# --split / --prompt_column / --answer_column.
HUB_BENCHMARKS = {
    "math500": ("HuggingFaceH4/MATH-500", None, "test", "problem", "answer"),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train", "problem", "answer"),
}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n-c, k) / C(n, k)``.

    Computed as a product, ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``, which never forms large binomials (Chen et al.
    2021, "Evaluating Large Language Models Trained on Code").

    Examples:
        >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)
        (0.25, 1.0, 0.0)
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def avg_at_k(correct: Sequence[bool | int | float]) -> float:
    """Mean accuracy over the k samples of one prompt (or over any flat list of per-sample verdicts)."""
    if len(correct) == 0:
        raise ValueError("avg_at_k needs at least one sample")
    return float(sum(float(x) for x in correct) / len(correct))


def _prompt_text(tokenizer, prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def _load(model_or_path, tokenizer, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_or_path is None or isinstance(model_or_path, str):
        from sec_trl.embedded import embedded_model_path, is_embedded_model

        path = embedded_model_path() if model_or_path is None or is_embedded_model(model_or_path) else model_or_path
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        model = model_or_path
        if tokenizer is None:
            raise ValueError("evaluate_model: pass the tokenizer when passing a model object")
    if isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    return model, tokenizer


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
) -> dict:
    """Sample ``k`` completions per prompt of ``dataset`` and score them.

    Args:
        model_name_or_path_or_model: a local directory or Hub name (``None`` / ``"embedded"``: the embedded
            SmolLM2-135M-Instruct), or a loaded ``PreTrainedModel`` (then ``tokenizer`` is required).
        tokenizer: a tokenizer, a name/path to load one from, or None (loaded from the model path).
        dataset: a ``datasets.Dataset`` (or a list of dicts) with ``prompt_column`` (a string or chat messages)
            and ``answer_column``.
        k: samples per prompt (``num_return_sequences``); pass@1 and pass@k are reported.
        batch_size: prompts per ``generate`` call (each expanded to ``k`` sequences).
        seed: generation is seeded per batch with ``seed + batch index``, so results do not depend on what ran
            before (same model, data, seed and batch size -> same numbers on the same machine).

    Returns:
        ``{"k", "num_prompts", "avg@k", "pass@1", "pass@k" (named with the actual k, e.g. ``"avg@4"``),
        "mean_completion_length", "truncated_frac", "per_prompt_correct", "seconds"}``, plus ``"completions"``
        when ``return_completions``.
    """
    rows = _checked_rows(dataset, k, prompt_column, answer_column)
    model, tokenizer = _load(model_name_or_path_or_model, tokenizer, dtype)
    start = time.perf_counter()
    completions, lengths, truncated = _sample(
        model,
        tokenizer,
        [r[prompt_column] for r in rows],
        k=k,
        batch_size=batch_size,
        seed=seed,
        generation={"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens},
    )
    verdicts = _check(completions, [str(r[answer_column]) for r in rows], answer_timeout)
    per_prompt = [sum(verdicts[i * k : (i + 1) * k]) for i in range(len(rows))]

    result = {
        "k": k,
        "num_prompts": len(rows),
        f"avg@{k}": avg_at_k(verdicts),
        "pass@1": sum(pass_at_k(k, c, 1) for c in per_prompt) / len(rows),
        f"pass@{k}": sum(pass_at_k(k, c, k) for c in per_prompt) / len(rows),
        "mean_completion_length": sum(lengths) / len(lengths),
        "truncated_frac": truncated / len(lengths),
        "per_prompt_correct": per_prompt,
        "seconds": time.perf_counter() - start,
    }
    if return_completions:
        result["completions"] = completions
    return result


def _checked_rows(dataset, k: int, prompt_column: str, answer_column: str) -> list[dict]:
    """The dataset's rows as dicts, after checking ``k`` and that both columns exist."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if dataset is None or len(dataset) == 0:
        raise ValueError("evaluate_model needs a non-empty dataset")
    rows = [dict(r) for r in dataset]
    for name in (prompt_column, answer_column):
        if name not in rows[0]:
            raise ValueError(f"evaluate_model: the dataset has no {name!r} column (columns: {sorted(rows[0])})")
    return rows


def _sample(model, tokenizer, prompts, *, k: int, batch_size: int, seed: int, generation: dict):
    """``(completions, lengths, truncated)``: ``k`` decoded completions per prompt, each cut after its first EOS;
    every completion's token count (EOS included); how many never reached EOS. Batch ``b`` is seeded with
    ``seed + b``. The model's train/eval mode and the tokenizer's padding side are restored afterwards."""
    import torch

    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_ids = model.generation_config.eos_token_id
    eos_ids = set(
        eos_ids if isinstance(eos_ids, list) else [eos_ids if eos_ids is not None else tokenizer.eos_token_id]
    )
    device = next(model.parameters()).device
    completions: list[list[str]] = []
    lengths: list[int] = []
    truncated = 0
    try:
        for b, lo in enumerate(range(0, len(prompts), batch_size)):
            texts = [_prompt_text(tokenizer, p) for p in prompts[lo : lo + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(seed + b)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    **generation,
                    do_sample=True,
                    top_k=0,
                    num_return_sequences=k,
                    pad_token_id=tokenizer.pad_token_id,
                )
            decoded = []
            for ids in out[:, enc["input_ids"].shape[1] :].tolist():
                end = next((j + 1 for j, t in enumerate(ids) if t in eos_ids), None)  # cut after the first EOS
                truncated += end is None  # never reached EOS: cut off at max_new_tokens
                ids = ids if end is None else ids[:end]
                lengths.append(len(ids))
                decoded.append(tokenizer.decode(ids, skip_special_tokens=True))
            completions.extend(decoded[i * k : (i + 1) * k] for i in range(len(texts)))
    finally:
        tokenizer.padding_side = padding_side
        if was_training:
            model.train()
    return completions, lengths, truncated


def _check(completions: list[list[str]], references: list[str], answer_timeout: float) -> list[bool]:
    """Every completion checked against its prompt's reference answer, flattened in prompt order."""
    from sec_trl.answer_checking import AnswerChecker

    k = len(completions[0])
    checker = AnswerChecker(timeout=answer_timeout)
    try:
        return checker.check_batch(
            [c for group in completions for c in group], [r for r in references for _ in range(k)]
        )
    finally:
        checker.close()


def load_eval_dataset(
    name: str,
    *,
    num_prompts: int | None = None,
    split: str = "test",
    prompt_column: str = "prompt",
    answer_column: str = "answer",
    arithmetic_num_train: int = 512,
    seed: int = 0,
):
    """The evaluation set, with ``prompt`` / ``answer`` columns (string prompts wrapped as a user message).

    ``name``: ``arithmetic`` (the held-out split of the generated data, disjoint from the train split that
    ``train.py --arithmetic_num_train N --arithmetic_num_test M --arithmetic_seed S`` trains on; its size is
    ``num_prompts``, 128 if unset), a Hub shortcut from :data:`HUB_BENCHMARKS` (``math500``, ``aime24``), or any Hub
    name / local file :func:`sec_trl.data.load_prompt_dataset` accepts (``split``,
    ``prompt_column``, ``answer_column`` apply). ``num_prompts`` keeps the first N prompts.
    """
    from sec_trl.data import load_prompt_dataset, make_arithmetic_splits

    if name == "arithmetic":
        return make_arithmetic_splits(arithmetic_num_train, num_prompts or 128, seed=seed)["test"]
    if name in HUB_BENCHMARKS:
        name, config, split, prompt_column, answer_column = HUB_BENCHMARKS[name]
    else:
        config = None
    ds = load_prompt_dataset(
        name, split=split, config=config, prompt_column=prompt_column, answer_column=answer_column
    )
    if num_prompts is not None:
        ds = ds.select(range(min(num_prompts, len(ds))))
    return ds


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m sec_trl.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="local directory, Hub name, or 'embedded'")
    parser.add_argument(
        "--dataset",
        default="arithmetic",
        help="'arithmetic' (generated held-out split), 'math500', 'aime24', or a Hub name / local file",
    )
    parser.add_argument("--split", default="test", help="dataset split (Hub shortcuts set their own)")
    parser.add_argument("--prompt_column", default="prompt")
    parser.add_argument("--answer_column", default="answer")
    parser.add_argument("--num_prompts", type=int, default=None, help="first N prompts (arithmetic: test split size)")
    parser.add_argument("--arithmetic_num_train", type=int, default=512, help="as passed to train.py (split seed)")
    parser.add_argument("--arithmetic_seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="load in bfloat16 (GPU)")
    parser.add_argument("--output", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)

    import torch

    dataset = load_eval_dataset(
        args.dataset,
        num_prompts=args.num_prompts,
        split=args.split,
        prompt_column=args.prompt_column,
        answer_column=args.answer_column,
        arithmetic_num_train=args.arithmetic_num_train,
        seed=args.arithmetic_seed,
    )
    model = args.model
    tokenizer = None
    if torch.cuda.is_available():
        model, tokenizer = _load(args.model, None, torch.bfloat16 if args.bf16 else None)
        model = model.to("cuda")
    result = evaluate_model(
        model,
        tokenizer,
        dataset,
        k=args.k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        dtype=torch.bfloat16 if args.bf16 else None,
    )
    summary = {key: v for key, v in result.items() if key != "per_prompt_correct"}
    print(json.dumps(summary, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"model": args.model, "dataset": args.dataset, **result}, f, indent=2)
    return result


if __name__ == "__main__":
    main()


__all__ = ["HUB_BENCHMARKS", "avg_at_k", "evaluate_model", "load_eval_dataset", "main", "pass_at_k"]
