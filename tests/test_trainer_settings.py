"""Every regulariser setting of `SETGRPOConfig` reaches the loss: the trainer's loss and gradients equal the pure
function's (`sec_trl.losses.*_per_token_loss`) called with the same NON-default values.

The values are chosen so that each of them matters on the test batch: `test_each_setting_changes_the_result`
recomputes the pure loss with one setting at a time put back to its default and checks that the loss or a gradient
changes, so a trainer that forgot to pass any one setting (and used the function's default) fails
`test_trainer_loss_uses_every_setting`.
"""

import dataclasses
import inspect

import pytest
import torch
from helpers.trainer import logps_and_entropies, loss_and_grads, make_trainer, random_batch, tiny_dataset

from sec_trl import SETGRPOConfig
from sec_trl.losses import clip_cov_per_token_loss, kl_cov_per_token_loss, sent_per_token_loss
from sec_trl.regularizers import REGULARIZERS


# config field -> keyword of the pure function (only SENT's / KL-Cov's base coefficient is renamed)
SETTINGS = {
    "sent": {
        "low_entropy_quantile": ("low_entropy_quantile", 0.6),
        "cov_ratio": ("cov_ratio", 0.25),
        "kl_cov_coef": ("kl_coef", 0.7),
        "high_cov_coef": ("high_cov_coef", 3.0),
        "low_cov_coef": ("low_cov_coef", 1.5),
        "low_entropy_kl_coef": ("low_entropy_kl_coef", 0.4),
    },
    "kl_cov": {
        "cov_ratio": ("cov_ratio", 0.25),
        "kl_cov_coef": ("kl_coef", 0.7),
    },
    "clip_cov": {
        # the batch's covariances lie in about [-0.13, 0.19] (a random tiny model: log-probs all near -10.8); the band
        # (-0.05, 0.05) holds about 19 of the 30 tokens, of which max(1, floor(0.2 * 30)) = 6 are drawn
        "cov_ratio": ("cov_ratio", 0.2),
        "clip_cov_lower": ("clip_cov_lower", -0.05),
        "clip_cov_upper": ("clip_cov_upper", 0.05),
        # PPO's clipping range is TRL's `epsilon` / `epsilon_high`, passed on as epsilon_low / epsilon_high
        "epsilon": ("epsilon_low", 0.1),
        "epsilon_high": ("epsilon_high", 0.3),
    },
}
PURE = {"sent": sent_per_token_loss, "kl_cov": kl_cov_per_token_loss, "clip_cov": clip_cov_per_token_loss}
# The Clip-Cov draw: the trainer's from the global RNG seeded with this, the function's from a generator seeded alike.
# With this seed the 6 drawn tokens change when any one setting is at its default (with some seeds a wider band
# happens to draw the same 6); `test_each_setting_changes_the_result` checks that this still holds.
SEED = 1233


def test_the_registry_names_these_functions_and_fields():
    """The registry (what the trainer dispatches on) and this test's tables agree: a new regulariser gets a row."""
    assert {name: entry.loss for name, entry in REGULARIZERS.items()} == PURE
    for name, entry in REGULARIZERS.items():
        assert dict(entry.fields) == {field: keyword for field, (keyword, _) in SETTINGS[name].items()}, name


def _config_default(field):
    return next(f.default for f in dataclasses.fields(SETGRPOConfig) if f.name == field)


def _pure_kwargs(regularizer, **config_values):
    return {SETTINGS[regularizer][field][0]: value for field, value in config_values.items()}


def _pure_loss(regularizer, inputs, kwargs):
    """The trainer's `bnpo` loss rebuilt from the pure function: sum over valid tokens / their number."""

    def loss_fn(trainer):
        logps, entropies = logps_and_entropies(trainer, inputs)
        mask = inputs["completion_mask"]
        if regularizer == "clip_cov":
            kwargs["generator"] = torch.Generator().manual_seed(SEED)
        per_token, _ = PURE[regularizer](
            logps, inputs["old_per_token_logps"], inputs["advantages"], entropies, mask, **kwargs
        )
        return (per_token * mask).sum() / mask.sum()

    return loss_fn


def _differs(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    return not torch.allclose(loss_a, loss_b) or any(not torch.allclose(grads_a[n], grads_b[n]) for n in grads_a)


@pytest.fixture(scope="module", params=list(SETTINGS))
def setup(request, tiny_model_dir, tmp_path_factory):
    regularizer = request.param
    values = {field: value for field, (_, value) in SETTINGS[regularizer].items()}
    for field, value in values.items():  # the values really are non-default
        assert value != _config_default(field), field
    trainer = make_trainer(
        tiny_model_dir, tmp_path_factory.mktemp(regularizer), token_regularizer=regularizer, loss_type="bnpo", **values
    )
    return regularizer, values, trainer, random_batch(trainer, seed=0)


def test_trainer_loss_uses_every_setting(setup):
    regularizer, values, trainer, inputs = setup
    torch.manual_seed(SEED)
    loss, grads = loss_and_grads(trainer, inputs)
    expected_loss, expected_grads = loss_and_grads(
        trainer, inputs, _pure_loss(regularizer, inputs, _pure_kwargs(regularizer, **values))
    )
    torch.testing.assert_close(loss, expected_loss)
    assert grads.keys() == expected_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], msg=name)
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_each_setting_changes_the_result(setup):
    """Without this, `test_trainer_loss_uses_every_setting` could pass with a setting dropped."""
    regularizer, values, trainer, inputs = setup
    configured = loss_and_grads(trainer, inputs, _pure_loss(regularizer, inputs, _pure_kwargs(regularizer, **values)))
    defaults = inspect.signature(PURE[regularizer]).parameters
    for field, (keyword, _) in SETTINGS[regularizer].items():
        kwargs = _pure_kwargs(regularizer, **values)
        kwargs[keyword] = defaults[keyword].default  # what a trainer that did not pass the field would use
        dropped = loss_and_grads(trainer, inputs, _pure_loss(regularizer, inputs, kwargs))
        assert _differs(configured, dropped), f"{field} at its default gives the same loss and gradients"


def test_clip_cov_draw_follows_the_global_seed(tiny_model_dir, tmp_path):
    """The Clip-Cov draw is from the global RNG (seeded by Trainer, restored on resume): the same seed gives the same
    loss, another seed draws other tokens."""
    trainer = make_trainer(
        tiny_model_dir, tmp_path, token_regularizer="clip_cov", loss_type="bnpo", cov_ratio=0.2,
        clip_cov_lower=-0.05, clip_cov_upper=0.05,
    )  # fmt: skip
    inputs = random_batch(trainer, seed=0)
    losses = {}
    for seed in (SEED, SEED, SEED + 1):
        torch.manual_seed(seed)
        losses.setdefault(seed, []).append(loss_and_grads(trainer, inputs)[0])
    torch.testing.assert_close(losses[SEED][0], losses[SEED][1], rtol=0, atol=0)
    assert not torch.allclose(losses[SEED][0], losses[SEED + 1][0])


def test_curriculum_settings_reach_the_sampler(tiny_model_dir, tmp_path):
    """The curriculum sampler gets TRL's RepeatSampler layout for the same run (num_generations, generation batch,
    num_iterations x steps_per_generation reuses), and every curriculum_* setting, with non-default values."""
    se = [0.9, 0.1, 0.5, 0.3, 0.0, 0.6, 0.2, 0.4, 0.8, 0.7, 1.0, 1.1]
    dataset = tiny_dataset(12).add_column("difficulty", se)
    settings = dict(
        num_generations=2,
        per_device_train_batch_size=2,
        steps_per_generation=2,
        num_iterations=3,
        seed=5,
        token_regularizer="none",
    )
    curriculum = dict(
        curriculum=True,
        curriculum_stages=3,
        curriculum_epochs_per_stage=2,
        curriculum_shuffle_within_stage=False,
        curriculum_se_column="difficulty",
        num_train_epochs=1,
    )
    trainer = make_trainer(tiny_model_dir, tmp_path / "on", train_dataset=dataset, **settings, **curriculum)
    sampler = trainer._get_train_sampler()
    plain = make_trainer(tiny_model_dir, tmp_path / "off", train_dataset=dataset, **settings)._get_train_sampler()
    assert type(plain).__name__ == "RepeatSampler"
    for name in ("mini_repeat_count", "batch_size", "repeat_count"):
        assert getattr(sampler, name) == getattr(plain, name), name
    assert (sampler.mini_repeat_count, sampler.batch_size, sampler.repeat_count) == (2, 2, 3 * 2)
    # 3 stages of 4 prompts in SE order (no shuffle), each for 2 epochs, 2 prompts per chunk
    ranked = sorted(range(12), key=lambda i: se[i])
    stages = [ranked[0:4], ranked[4:8], ranked[8:12]]
    expected = [stage[i : i + 2] for stage in stages for _ in range(2) for i in (0, 2)]
    assert [sampler.chunk_indices(k) for k in range(sampler.num_chunks)] == expected
    assert sampler.seed == 5
    # The trainer's own curriculum position (the curriculum/* metrics, the stage restarts) follows the same layout:
    # micro-batch b is fed by chunk b // (num_iterations * steps_per_generation), here b // 6, not b // 2.
    gas = trainer.args.gradient_accumulation_steps
    for b in range(sampler.num_chunks * sampler.repeat_count):
        assert trainer._curriculum_plan.chunk_of(b // gas, b % gas) == sampler.chunk_index_of_batch(b), b
