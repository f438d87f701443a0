"""The command line: ``python -m sec_trl.rank --help``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from sec_trl.ranking.core import process_state, rank_dataset
from sec_trl.ranking.params import EXIT_INCOMPLETE, RankingIncomplete, RankingParams, RankScriptArguments
from sec_trl.ranking.report import read_ranking_meta


logger = logging.getLogger(__name__)

__all__ = ["cli", "main"]


def _load_cli_dataset(args: RankScriptArguments):
    """The dataset to rank, its prompt column, and its answer column (None: rank a dataset without reference
    answers). With answers it is loaded exactly as train.py loads it (``DatasetArguments.load``: validated and
    formatted); ``rank_dataset`` formats it again with the same ``PromptFormat``, which changes nothing."""
    from sec_trl.data import load_raw_dataset

    answer_column = None if args.dataset_answer_column.lower() in ("", "none") else args.dataset_answer_column
    if answer_column is None and args.dataset_name is not None:
        dataset = load_raw_dataset(args.dataset_name, split=args.dataset_train_split, config=args.dataset_config)
        prompt_column = args.dataset_prompt_column
    else:
        dataset, prompt_column = args.load("train"), "prompt"
    if args.num_prompts is not None:
        dataset = dataset.select(range(min(args.num_prompts, len(dataset))))
    return dataset, prompt_column, answer_column


def make_parser():
    """``TrlParser`` over :class:`RankScriptArguments` and :class:`RankingParams`: flags or ``--config rank.yaml``."""
    from trl import TrlParser

    return TrlParser((RankScriptArguments, RankingParams))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``python -m sec_trl.rank --help``). Returns the exit code."""
    parser = make_parser()
    args, params = parser.parse_args_and_config(args=list(argv) if argv is not None else None)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.output_dir:
        parser.error("--output_dir is required")
    from sec_trl.preflight import check_writable

    # before the data and the model load: the ranked dataset, its report and the shard cache all go there
    check_writable(args.output_dir, "--output_dir", what="the ranking and its cache")
    dataset, prompt_column, answer_column = _load_cli_dataset(args)
    try:
        rank_dataset(
            dataset,
            args.model_name_or_path,
            args.output_dir,
            prompt_column=prompt_column,
            answer_column=answer_column,
            params=params,
            prompt_format=args.prompt_format(),
        )
    except RankingIncomplete as exc:
        logger.warning("%s", exc)
        return EXIT_INCOMPLETE
    if process_state().is_main_process:
        meta = read_ranking_meta(args.output_dir) or {}
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


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m sec_trl.rank``: :func:`main`, with a user's mistake found before sampling starts reported as one
    ``error:`` line and exit code 2 (``SEC_TRL_DEBUG=1``: the traceback; see :mod:`sec_trl.errors`)."""
    from sec_trl.errors import user_errors

    with user_errors("sec_trl.rank"):
        return main(argv)
