"""Ranking, training and evaluation build a prompt's token ids with the same chat template and the same
`chat_template_kwargs` (TRL's `GRPOConfig` field, passed to `apply_chat_template`): the real SmolLM2 tokenizer with a
tiny template that renders a kwarg, through each path's own code (the trainer's `_tokenize_prompts`, the ranking's
and the evaluation's samplers up to `model.generate`), and train.py's ranking given the training's value."""

import json

import pytest
import torch


# SmolLM2's ChatML layout, plus a line that only `enable_thinking` (a kwarg, not a message field) switches on
THINKING_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking %}<think>\n{% else %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
KWARGS = {"enable_thinking": True}
PROMPT = [{"role": "user", "content": "What is 2 + 3? Put your final answer within \\boxed{}."}]


@pytest.fixture(scope="module")
def thinking_model_dir(tmp_path_factory, embedded_dir):
    """The tiny model on the real SmolLM2 tokenizer, whose chat template renders `enable_thinking`."""
    from helpers.models import save_causal_lm
    from transformers import AutoTokenizer

    path = save_causal_lm(embedded_dir, tmp_path_factory.mktemp("thinking"), seed=0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = THINKING_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


class _Captured(Exception):
    """Raised by a patched `generate` once it has seen the prompt ids (nothing needs to be sampled)."""


def _capture_generate(model, seen: list):
    def generate(*, input_ids, attention_mask, **kwargs):
        assert bool(attention_mask.all())  # one prompt: no padding, the ids are the prompt's
        seen.append(input_ids[0].tolist())
        raise _Captured

    model.generate = generate


def _training_ids(model_dir, tmp_path, kwargs):
    from helpers.trainer import make_trainer

    trainer = make_trainer(model_dir, tmp_path, chat_template_kwargs=kwargs)
    return list(trainer._tokenize_prompts([PROMPT])[0][0])


def _ranking_ids(model_dir, kwargs):
    from sec_trl.ranking.core import load_sampler, sample_batch
    from sec_trl.ranking.params import RankingParams

    # the command line's form: a JSON string, parsed by RankingParams as TRL parses GRPOConfig's field
    params = RankingParams(
        num_samples=2, max_new_tokens=2, chat_template_kwargs=json.dumps(kwargs) if kwargs else None
    )
    sampler = load_sampler(model_dir, params, torch.device("cpu"))
    seen: list = []
    _capture_generate(sampler.model, seen)
    with pytest.raises(_Captured):
        sample_batch(sampler, params, [PROMPT], 0)
    return seen[0]


def _evaluation_ids(model_dir, kwargs):
    from sec_trl.evaluation.runner import build_sampler
    from sec_trl.evaluation.sampling import SamplingSettings, sample_prompts

    sampler = build_sampler(model_dir, chat_template_kwargs=json.dumps(kwargs) if kwargs else None)
    seen: list = []
    _capture_generate(sampler.model, seen)
    with pytest.raises(_Captured):
        sample_prompts(sampler, [PROMPT], 0, SamplingSettings(k=2, max_new_tokens=2, batch_size=1))
    return seen[0]


def test_ranking_training_and_evaluation_render_the_same_prompt_ids(thinking_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(thinking_model_dir)
    with_kwargs = _training_ids(thinking_model_dir, tmp_path / "a", KWARGS)
    without = _training_ids(thinking_model_dir, tmp_path / "b", None)
    assert tokenizer.decode(with_kwargs).endswith("<|im_start|>assistant\n<think>\n")
    assert with_kwargs != without  # the kwarg changes the prompt, so the test can tell the paths apart
    assert _ranking_ids(thinking_model_dir, KWARGS) == with_kwargs
    assert _evaluation_ids(thinking_model_dir, KWARGS) == with_kwargs
    assert _ranking_ids(thinking_model_dir, None) == without == _evaluation_ids(thinking_model_dir, None)


def test_train_script_ranks_with_the_training_chat_template_kwargs(tmp_path, monkeypatch):
    """train.py's ranking (curriculum without a semantic_entropy column) gets the training's chat_template_kwargs."""
    from helpers.trainer import make_config

    import sec_trl.rank
    from sec_trl.train import SENTScriptArguments, rank_for_curriculum

    seen = {}

    def fake_ensure_ranked(dataset, model_path, ranking_dir, *, params, **kwargs):
        seen["params"] = params
        return dataset

    monkeypatch.setattr(sec_trl.rank, "ensure_ranked", fake_ensure_ranked)
    args = make_config(tmp_path, chat_template_kwargs='{"enable_thinking": true}')  # as the command line gives it
    rank_for_curriculum([{"prompt": PROMPT}], "model", SENTScriptArguments(), args)
    assert seen["params"].chat_template_kwargs == KWARGS


def test_chat_template_kwargs_flags_parse_like_trl_and_fail_clearly():
    from sec_trl.evaluation.cli import make_parser
    from sec_trl.generation import parse_chat_template_kwargs
    from sec_trl.ranking.cli import make_parser as rank_parser

    eval_args, _, _ = make_parser().parse_args_and_config(args=["--chat_template_kwargs", '{"enable_thinking": true}'])
    assert parse_chat_template_kwargs(eval_args.chat_template_kwargs) == KWARGS
    _, params = rank_parser().parse_args_and_config(args=["--chat_template_kwargs", '{"enable_thinking": true}'])
    assert params.chat_template_kwargs == KWARGS
    assert parse_chat_template_kwargs(None) is None and parse_chat_template_kwargs("{}") is None
    with pytest.raises(ValueError, match="--chat_template_kwargs must be a JSON object"):
        parse_chat_template_kwargs("enable_thinking=true")
    with pytest.raises(ValueError, match="JSON object"):
        parse_chat_template_kwargs("[1, 2]")


def test_unset_chat_template_kwargs_keep_an_existing_ranking_cache_valid(tiny_model_dir):
    """The field is fingerprinted only when set: a cache ranked before it existed stays valid for a run without it,
    and a run with it set does not reuse a cache ranked on other prompts."""
    from datasets import Dataset

    from sec_trl.ranking.cache import build_fingerprint
    from sec_trl.ranking.params import RankingParams

    view = Dataset.from_dict({"prompt": [PROMPT]})
    unset = build_fingerprint(view, tiny_model_dir, RankingParams(), False)["params"]
    given = build_fingerprint(view, tiny_model_dir, RankingParams(chat_template_kwargs=KWARGS), False)["params"]
    assert "chat_template_kwargs" not in unset and given["chat_template_kwargs"] == KWARGS
    assert {k: v for k, v in given.items() if k != "chat_template_kwargs"} == unset
