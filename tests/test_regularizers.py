"""The registry of token regularisers (`sec_trl.regularizers`) and everything that reads it: one signature for every
loss function, fields that exist in the config, the metrics the trainer really logs, the config's choices, the model
card's settings and the table in docs/method.md."""

import dataclasses
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.trainer import make_trainer, random_batch

import sec_trl
from sec_trl import SETGRPOConfig
from sec_trl.model_card import SENT_SETTINGS, sent_settings
from sec_trl.regularizers import (
    DOCS_TABLE_BEGIN,
    DOCS_TABLE_END,
    FIELD_DESCRIPTIONS,
    KL_TERM_REGULARIZERS,
    NO_REGULARIZER,
    REGULARIZERS,
    TOKEN_REGULARIZERS,
    UNCLIPPED_REGULARIZERS,
    docs_table,
)


SIGNATURE = ["per_token_logps", "old_per_token_logps", "advantages", "entropies", "mask"]
CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(SETGRPOConfig)}


@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_one_signature_and_known_fields(name):
    entry = REGULARIZERS[name]
    parameters = inspect.signature(entry.loss).parameters
    positional = [p.name for p in parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == SIGNATURE
    keyword_only = {p.name for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(entry.fields.values()) <= keyword_only
    assert set(entry.fields) <= set(CONFIG_FIELDS)
    assert set(entry.fields) <= set(FIELD_DESCRIPTIONS)
    assert getattr(sec_trl, entry.loss.__name__) is entry.loss  # the documented public name


def test_config_names_and_checks_come_from_the_registry():
    assert TOKEN_REGULARIZERS == (*REGULARIZERS, NO_REGULARIZER)
    assert CONFIG_FIELDS["token_regularizer"].metadata["choices"] == list(TOKEN_REGULARIZERS)
    assert UNCLIPPED_REGULARIZERS == ("sent", "kl_cov") and KL_TERM_REGULARIZERS == ("sent", "kl_cov")


def test_settings_are_read_off_the_config(tmp_path):
    args = SETGRPOConfig(output_dir=str(tmp_path), token_regularizer="clip_cov", epsilon=0.1, use_cpu=True)
    settings = REGULARIZERS["clip_cov"].settings(args)
    assert settings["epsilon_low"] == 0.1 and settings["epsilon_high"] == 0.1  # unset epsilon_high = epsilon (TRL)
    assert settings["cov_ratio"] == args.cov_ratio


@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_the_trainer_logs_the_registry_metrics(tiny_model_dir, tmp_path, name):
    trainer = make_trainer(tiny_model_dir, tmp_path, token_regularizer=name, cov_ratio=0.3)
    trainer._compute_loss(trainer.model, random_batch(trainer, seed=0))
    prefixes = tuple(f"{other}/" for other in REGULARIZERS)
    logged = {key for key in trainer._metrics["train"] if key.startswith(prefixes)}
    assert logged == set(REGULARIZERS[name].metric_names)
    assert any(key.startswith("clip_ratio/") for key in trainer._metrics["train"]) == REGULARIZERS[name].clips


@pytest.mark.parametrize("name", [*REGULARIZERS, NO_REGULARIZER])
def test_model_card_shows_the_configured_regularizers_fields(name):
    rows = sent_settings(SimpleNamespace(token_regularizer=name))
    fields = tuple(REGULARIZERS[name].fields) if name in REGULARIZERS else ()
    assert tuple(field for field, _ in rows) == ("token_regularizer", *fields, *(f for f, _ in SENT_SETTINGS))
    assert all(f"`{other}`" in rows[0][1] for other in TOKEN_REGULARIZERS)


def test_docs_table_is_the_registry():
    text = (Path(__file__).parents[1] / "docs" / "method.md").read_text(encoding="utf-8")
    table = text.split(DOCS_TABLE_BEGIN, 1)[1].split(DOCS_TABLE_END, 1)[0].strip()
    assert table == docs_table(), "regenerate it: python -m sec_trl.regularizers, into docs/method.md"
