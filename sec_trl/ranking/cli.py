"""The command line: ``python -m sec_trl.rank --help``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from sec_trl.ranking.core import process_state, rank_dataset
from sec_trl.ranking.params import EXIT_INCOMPLETE, RankingIncomplete, RankingParams, RankScriptArguments
from sec_trl.ranking.report import read_ranking_meta


logger = logging.getLogger(__name__)

__all__ = ["main"]


def _load_cli_dataset(args: RankScriptArguments, answer_column: str | None):
    """The dataset to rank and its prompt/answer column names (``answer`` None: no reference answers)."""
    from sec_trl.data import load_prompt_dataset, make_arithmetic_splits

    if args.dataset is None:
        dataset = make_arithmetic_splits(
            args.arithmetic_num_train, args.arithmetic_num_test, seed=args.arithmetic_seed
        )["train"]
        prompt_column, answer = "prompt", "answer"
    else:
        if answer_column is None:
            from sec_trl.data import load_raw_dataset

            dataset = load_raw_dataset(args.dataset, split=args.dataset_split, config=args.dataset_config)
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

    from sec_trl.ranking import __doc__ as ranking_doc

    parser = HfArgumentParser((RankScriptArguments, RankingParams), description=ranking_doc.split("\n\n")[0])
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
    if process_state().is_main_process:
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
