"""SETGRPOTrainer against TRL's GRPOTrainer, a CPU training smoke test, and config validation."""

import warnings
from pathlib import Path

import pytest
import torch
from helpers.trainer import CounterEnvironment, length_reward, make_config, tiny_dataset, tool_calling_tokenizer
from transformers import TrainerCallback
from trl import GRPOTrainer

from sec_trl import SETGRPOConfig, SETGRPOTrainer, sent_per_token_loss
from sec_trl.config import REGULARIZER_LOSS_TYPES


def _trainer(tiny_model_dir, tmp_path, **overrides):
    """Like helpers.trainer.make_trainer, but the model stays in the mode it was loaded in (eval)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SETGRPOTrainer(
            model=tiny_model_dir,
            reward_funcs=length_reward,
            args=make_config(tmp_path, **overrides),
            train_dataset=tiny_dataset(),
        )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's training loop; the loss reads it
    return trainer


def _fake_inputs(trainer, seed, *, off_policy=True, with_ref=False):
    """A batch shaped like `_generate_and_score_completions`' output: 4 completions, left-padded prompts."""
    g = torch.Generator().manual_seed(seed)
    vocab = trainer.model.config.vocab_size
    B, P, T = 4, 5, 7
    prompt_ids = torch.randint(0, vocab, (B, P), generator=g)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[0, :2] = 0
    completion_ids = torch.randint(0, vocab, (B, T), generator=g)
    completion_mask = (torch.arange(T)[None] < torch.tensor([[7], [3], [5], [1]])).long()
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.randn(B, generator=g),
        "num_items_in_batch": completion_mask.sum().float(),
    }
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1), T
        )
    if off_policy:
        inputs["old_per_token_logps"] = logps + 0.2 * torch.randn(B, T, generator=g)
    if with_ref:
        inputs["ref_per_token_logps"] = logps + 0.1 * torch.randn(B, T, generator=g)
    return inputs


def _loss_and_grads(method, trainer, inputs):
    trainer.model.zero_grad()
    loss = method(trainer, trainer.model, inputs)
    loss.backward()
    grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    return loss.detach(), grads


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"beta": 0.04},
        {"top_entropy_quantile": 0.5, "entropy_coef": 0.01},
        {"off_policy_mask_threshold": 0.01, "delta": 1.5},
    ],
    ids=["plain", "beta", "entropy", "opsm-delta"],
)
def test_none_matches_grpo(tiny_model_dir, tmp_path, loss_type, extra):
    """With token_regularizer='none', `_compute_loss` is TRL's (its own method, plus the covariance metric)."""
    trainer = _trainer(tiny_model_dir, tmp_path, token_regularizer="none", loss_type=loss_type, **extra)
    trainer.model.train()
    inputs = _fake_inputs(trainer, seed=1, with_ref="beta" in extra)
    ours, our_grads = _loss_and_grads(SETGRPOTrainer._compute_loss, trainer, inputs)
    theirs, their_grads = _loss_and_grads(GRPOTrainer._compute_loss, trainer, inputs)
    torch.testing.assert_close(ours, theirs)
    assert len(our_grads) == len(their_grads) > 0
    for a, b in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b)


# TRL's state that its loss updates (the adaptive entropy controller): reset between the two methods compared
_LOSS_STATE = ("entropy_coef", "_entropy_window_stats", "_last_world_entropy")


def _loss_grads_and_metrics(method, trainer, inputs):
    state = {name: getattr(trainer, name) for name in _LOSS_STATE}
    trainer._metrics["train"].clear()
    loss, grads = _loss_and_grads(method, trainer, inputs)
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    for name, value in state.items():
        setattr(trainer, name, value)
    return loss, grads, metrics


@pytest.mark.parametrize("loss_type", REGULARIZER_LOSS_TYPES)
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"beta": 0.04},
        {"beta": 0.04, "use_bias_correction_kl": True},
        {"top_entropy_quantile": 0.5, "entropy_coef": 0.01},
        {"use_adaptive_entropy": True, "entropy_coef": 0.01, "entropy_target": 100.0},
        {"off_policy_mask_threshold": 0.01},
        {"vllm_importance_sampling": True},
    ],
    ids=["plain", "beta", "beta-bias-correction", "entropy", "adaptive-entropy", "opsm", "vllm-is"],
)
def test_neutral_regularizer_matches_grpo(tiny_model_dir, tmp_path, loss_type, extra):
    """The copy in `_regularized_loss` is TRL's `_compute_loss` but for the per-token policy term: with Clip-Cov
    given a covariance band no token falls in, its term is PPO's clipped surrogate, so the loss, the gradients and
    every metric TRL logs equal `GRPOTrainer._compute_loss`'s, for each loss type a regulariser accepts. Fails
    loudly when TRL changes its method."""
    extra = dict(extra)
    vllm_is = extra.pop("vllm_importance_sampling", False)
    trainer = _trainer(
        tiny_model_dir,
        tmp_path,
        token_regularizer="clip_cov",
        clip_cov_lower=1e6,
        clip_cov_upper=2e6,
        loss_type=loss_type,
        epsilon_high=0.28,
        **extra,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2  # the accumulation normalisers are not all 1
    inputs = _fake_inputs(trainer, seed=1, with_ref="beta" in extra)
    inputs["num_items_in_batch"] = inputs["num_items_in_batch"] * 2
    if vllm_is:  # the correction's inputs, as TRL's vLLM path leaves them
        trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
        inputs["importance_sampling_ratio"] = 0.5 + torch.rand(inputs["completion_ids"].shape)
    ours, our_grads, our_metrics = _loss_grads_and_metrics(SETGRPOTrainer._regularized_loss, trainer, inputs)
    theirs, their_grads, their_metrics = _loss_grads_and_metrics(GRPOTrainer._compute_loss, trainer, inputs)
    torch.testing.assert_close(ours, theirs)
    assert len(our_grads) == len(their_grads) > 0
    for a, b in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert our_metrics["clip_cov/cov_clipped_tokens"] == 0  # the regulariser really was neutral
    assert {key: value for key, value in our_metrics.items() if not key.startswith("clip_cov/")} == pytest.approx(
        their_metrics
    )
    assert any(key.startswith("clip_ratio/") for key in their_metrics)


@pytest.mark.parametrize("regularizer", ["none", "sent", "kl_cov", "clip_cov"])
def test_compute_loss_wraps_the_loss_and_logs_the_covariance(tiny_model_dir, tmp_path, regularizer):
    """`_compute_loss` is TRL's method (`none`) or the copy, plus `cov/logp_advantage` (every method), computed from
    the log-probs of the loss's own forward."""
    trainer = _trainer(tiny_model_dir, tmp_path, token_regularizer=regularizer)
    trainer.model.train()
    inputs = _fake_inputs(trainer, seed=6)
    loss = SETGRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    inner = GRPOTrainer._compute_loss if regularizer == "none" else SETGRPOTrainer._regularized_loss
    torch.testing.assert_close(loss, inner(trainer, trainer.model, inputs), rtol=0, atol=0)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, 7)
    expected = trainer._logp_advantage_covariance(logps, inputs["advantages"][:, None], inputs["completion_mask"])
    assert trainer._metrics["train"]["cov/logp_advantage"] == [pytest.approx(expected)]
    assert trainer._loss_forward is None  # nothing kept outside the loss


@pytest.mark.parametrize("loss_type", ["bnpo", "dapo", "grpo"])
def test_sent_loss_is_the_aggregated_sent_per_token_loss(tiny_model_dir, tmp_path, loss_type):
    trainer = _trainer(tiny_model_dir, tmp_path, loss_type=loss_type, cov_ratio=0.2, kl_cov_coef=0.5)
    trainer.model.train()
    inputs = _fake_inputs(trainer, seed=2)
    loss = trainer._compute_loss(trainer.model, inputs)

    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    logps, ent, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, 7, compute_entropy=True)
    mask = inputs["completion_mask"]
    per_token, info = sent_per_token_loss(
        logps, inputs["old_per_token_logps"], inputs["advantages"], ent, mask, cov_ratio=0.2, kl_coef=0.5
    )
    if loss_type == "grpo":
        expected = ((per_token * mask).sum(-1) / mask.sum(-1)).mean() / trainer.current_gradient_accumulation_steps
    elif loss_type == "bnpo":
        expected = (per_token * mask).sum() / mask.sum() / trainer.current_gradient_accumulation_steps
    else:  # dapo: normalised by the tokens of one accumulation window (one process, steps_per_generation == GA)
        expected = (per_token * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    # the regulariser's metrics were logged, and the KL-targeted tokens really were off-policy
    metrics = trainer._metrics["train"]
    assert metrics["sent/low_entropy_frac"][-1] == pytest.approx(info["low_entropy"].sum().item() / mask.sum().item())
    assert metrics["sent/high_cov_frac"][-1] > 0
    assert metrics["sent/high_cov_abs_log_ratio"][-1] > 0
    assert metrics["sent/entropy_threshold"][-1] == pytest.approx(info["entropy_threshold"].item())


@pytest.mark.parametrize("regularizer", ["kl_cov", "clip_cov"])
def test_baselines_run_and_log(tiny_model_dir, tmp_path, regularizer):
    trainer = _trainer(tiny_model_dir, tmp_path, token_regularizer=regularizer, cov_ratio=0.3, clip_cov_lower=-5.0)
    trainer.model.train()
    loss, grads = _loss_and_grads(SETGRPOTrainer._compute_loss, trainer, _fake_inputs(trainer, seed=3))
    assert torch.isfinite(loss) and any(g.abs().sum() > 0 for g in grads)
    key = "kl_cov/high_cov_frac" if regularizer == "kl_cov" else "clip_cov/cov_clipped_frac"
    assert trainer._metrics["train"][key][-1] > 0


def test_training_smoke_sent_active(tiny_model_dir, tmp_path):
    """A few real GRPO steps on the CPU: parameters change and the SENT metrics are logged with the KL term active."""
    args = make_config(
        tmp_path,
        max_steps=4,
        learning_rate=1e-2,
        gradient_accumulation_steps=1,
        steps_per_generation=2,  # two optimizer steps per rollout batch: |logp - old| != 0 on the second
        cov_ratio=0.2,
        temperature=1.0,
    )
    assert not args.kl_term_is_inert
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the inert warning must NOT fire here
        trainer = SETGRPOTrainer(
            model=tiny_model_dir, reward_funcs=length_reward, args=args, train_dataset=tiny_dataset()
        )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed, "no parameter changed"
    logs = [entry for entry in trainer.state.log_history if "sent/low_entropy_frac" in entry]
    assert len(logs) == 4
    assert all(0 < entry["sent/low_entropy_frac"] <= 0.81 for entry in logs)
    # steps 2 and 4 reuse a rollout batch after an optimizer step: the strong-KL tokens are off-policy there
    assert logs[0]["sent/high_cov_abs_log_ratio"] == 0.0
    assert logs[1]["sent/high_cov_abs_log_ratio"] > 0.0
    assert "entropy" in logs[0] and "reward" in logs[0]


def test_inert_configuration_warns(tiny_model_dir, tmp_path):
    with pytest.warns(UserWarning, match="inert") as record:
        SETGRPOTrainer(
            model=tiny_model_dir,
            reward_funcs=length_reward,
            args=make_config(tmp_path, gradient_accumulation_steps=2, steps_per_generation=2),
            train_dataset=tiny_dataset(),
        )
    assert sum("inert" in str(w.message) for w in record) == 1
    message = str(next(w.message for w in record if "inert" in str(w.message)))
    assert "--steps_per_generation 4" in message and "--num_iterations 2" in message


@pytest.mark.parametrize("gas", [1, 2, 3, 4, 6, 8, 12, 32])
@pytest.mark.parametrize("spg_divisor", [1, 2, 4])
@pytest.mark.parametrize("iterations", [1, 2])
def test_inert_suggestions_activate_the_term(tmp_path, gas, spg_divisor, iterations):
    """Every suggestion in the inert warning, applied alone, makes the configuration active (re-checked)."""
    spg = max(1, gas // spg_divisor)
    if gas % (spg * iterations) != 0:
        pytest.skip("already active")
    args = make_config(tmp_path, gradient_accumulation_steps=gas, steps_per_generation=spg, num_iterations=iterations)
    assert args.kl_term_is_inert
    for field, value in args.kl_term_activating_settings().items():
        settings = dict(gradient_accumulation_steps=gas, steps_per_generation=spg, num_iterations=iterations)
        settings[field] = value
        assert not make_config(tmp_path, **settings).kl_term_is_inert, (field, value)


def test_inert_suggestion_is_not_num_iterations_2_when_that_stays_inert(tmp_path):
    # gas=4, spg=2: num_iterations 2 gives 4 % (2 * 2) == 0, still inert; the suggestion must be 3
    args = make_config(tmp_path, gradient_accumulation_steps=4, steps_per_generation=2)
    assert args.kl_term_activating_settings() == {"steps_per_generation": 6, "num_iterations": 3}
    assert make_config(
        tmp_path, gradient_accumulation_steps=4, steps_per_generation=2, num_iterations=2
    ).kl_term_is_inert


@pytest.mark.parametrize("regularizer", ["sent", "kl_cov"])
def test_no_optimizer_step_since_rollout_gives_an_exactly_zero_kl_term(tiny_model_dir, tmp_path, regularizer):
    """While no optimizer step separates the rollout from the update, old := detached current log-probs.

    The batch's old log-probs carry noise, as from TRL's separate forward (or vLLM's importance-sampling path): in
    the rollout's own window the loss and gradients must equal those of an exactly on-policy batch (no old
    log-probs at all, TRL's own on-policy path) and the KL-targeted tokens log |log ratio| = 0; after an optimizer
    step the same batch's old log-probs are used.
    """
    trainer = _trainer(tiny_model_dir, tmp_path, token_regularizer=regularizer, cov_ratio=0.3, kl_cov_coef=5.0)
    trainer.model.train()
    noisy = _fake_inputs(trainer, seed=4)
    exact = {k: v for k, v in noisy.items() if k != "old_per_token_logps"}
    trainer._rollout_global_step = trainer.state.global_step  # as set when the batch is generated
    loss, grads = _loss_and_grads(SETGRPOTrainer._compute_loss, trainer, noisy)
    assert trainer._metrics["train"][f"{regularizer}/high_cov_abs_log_ratio"][-1] == 0.0
    expected, expected_grads = _loss_and_grads(SETGRPOTrainer._compute_loss, trainer, exact)
    assert torch.equal(loss, expected)
    for a, b in zip(grads, expected_grads, strict=True):
        assert torch.equal(a, b)
    trainer.state.global_step += 1  # an optimizer step since the rollout: now the old log-probs matter
    off_loss, _ = _loss_and_grads(SETGRPOTrainer._compute_loss, trainer, noisy)
    assert not torch.equal(off_loss, expected)
    assert trainer._metrics["train"][f"{regularizer}/high_cov_abs_log_ratio"][-1] > 0.0


def test_training_records_the_rollout_step(tiny_model_dir, tmp_path):
    """gas=1, spg=2: the first step of each rollout batch is on-policy (logged |log ratio| exactly 0), the second
    is not; the trainer learns this from the step at which the batch was generated."""
    args = make_config(
        tmp_path, max_steps=4, learning_rate=1e-2, steps_per_generation=2, cov_ratio=0.2, temperature=1.0
    )
    trainer = SETGRPOTrainer(model=tiny_model_dir, reward_funcs=length_reward, args=args, train_dataset=tiny_dataset())
    trainer.train()
    assert trainer._rollout_global_step == 2  # the second rollout batch was generated before optimizer step 3
    logs = [entry for entry in trainer.state.log_history if "sent/high_cov_abs_log_ratio" in entry]
    assert [entry["sent/high_cov_abs_log_ratio"] == 0.0 for entry in logs] == [True, False, True, False]


@pytest.mark.parametrize("regularizer", ["sent", "kl_cov", "clip_cov", "none"])
def test_clip_ratio_is_logged_only_for_losses_that_clip(tiny_model_dir, tmp_path, regularizer):
    trainer = _trainer(tiny_model_dir, tmp_path, token_regularizer=regularizer)
    trainer.model.train()
    _loss_and_grads(SETGRPOTrainer._compute_loss, trainer, _fake_inputs(trainer, seed=5))
    logged = any(key.startswith("clip_ratio/") for key in trainer._metrics["train"])
    assert logged == (regularizer in ("clip_cov", "none"))


def test_clip_cov_is_not_warned_as_inert(tiny_model_dir, tmp_path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        SETGRPOTrainer(
            model=tiny_model_dir,
            reward_funcs=length_reward,
            args=make_config(tmp_path, token_regularizer="clip_cov"),
            train_dataset=tiny_dataset(),
        )
    assert not any("inert" in str(w.message) for w in record)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"token_regularizer": "vanilla"}, r"token_regularizer='vanilla' is not supported; choose one of"),
        (
            {"low_entropy_quantile": 0.0},
            r"low_entropy_quantile=0.0 is out of range; allowed range is \(0, 1\]: set --low_entropy_quantile",
        ),
        ({"low_entropy_quantile": 1.5}, r"low_entropy_quantile=1.5 is out of range"),
        ({"cov_ratio": -1e-4}, r"cov_ratio=-0.0001 is out of range"),
        ({"kl_cov_coef": -0.1}, r"kl_cov_coef=-0.1 is out of range; allowed range is \[0, 10000\]"),
        ({"high_cov_coef": -2.0}, r"high_cov_coef=-2.0"),
        ({"low_cov_coef": -0.5}, r"low_cov_coef=-0.5"),
        ({"low_entropy_kl_coef": float("nan")}, r"low_entropy_kl_coef=nan"),
        ({"clip_cov_lower": 5.0, "clip_cov_upper": 1.0}, r"clip_cov_lower=5.0 must be smaller than clip_cov_upper"),
        ({"loss_type": "cispo"}, r"needs loss_type in .* got loss_type='cispo'"),
        ({"importance_sampling_level": "sequence"}, r"needs importance_sampling_level='token'"),
        ({"delta": 1.5}, r"delta=1.5 .* unset delta"),
        ({"top_entropy_quantile": 0.2}, r"top_entropy_quantile=0.2 .* token_regularizer='sent'"),
        ({"top_entropy_quantile": 0.5, "token_regularizer": "kl_cov"}, r"top_entropy_quantile=0.5 .*'kl_cov'"),
        ({"kl_cov_coef": float("inf")}, r"kl_cov_coef=inf is not a finite number"),
        ({"high_cov_coef": float("inf")}, r"high_cov_coef=inf is not a finite number"),
        ({"cov_ratio": float("nan")}, r"cov_ratio=nan is not a finite number"),
        ({"clip_cov_upper": float("inf")}, r"clip_cov_upper=inf is not a finite number"),
        ({"clip_cov_lower": float("-inf")}, r"clip_cov_lower=-inf is not a finite number"),
        ({"entropy_coef": float("nan")}, r"entropy_coef=nan is not a finite number"),
        ({"epsilon_high": float("inf"), "token_regularizer": "clip_cov"}, r"epsilon_high=inf is not a finite"),
        ({"curriculum_stage_restart": True}, r"curriculum_stage_restart=True needs curriculum=True"),
        (
            {
                "curriculum_stage_restart": True,
                "curriculum": True,
                "remove_unused_columns": False,
                "gradient_accumulation_steps": 2,
                "steps_per_generation": 3,
            },
            r"steps_per_generation \* num_iterations = 3 \* 1 must be a multiple of gradient_accumulation_steps=2",
        ),
    ],
)
def test_bad_config_is_rejected_at_construction(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(tmp_path, **overrides)


def test_every_float_field_is_checked_for_finiteness(tmp_path):
    """Not only ours: every float setting (e.g. TRL's beta, the learning rate) rejects inf and NaN by name."""
    import dataclasses

    defaults = make_config(tmp_path)
    float_fields = [f.name for f in dataclasses.fields(defaults) if isinstance(getattr(defaults, f.name), float)]
    assert {"kl_cov_coef", "low_entropy_kl_coef", "beta", "learning_rate", "epsilon"} <= set(float_fields)
    for name in float_fields:
        with pytest.raises(ValueError, match=rf"{name}=(inf|nan) is not a finite number"):
            make_config(tmp_path, **{name: float("inf")})


def test_top_entropy_quantile_is_allowed_with_clip_cov(tmp_path):
    assert make_config(tmp_path, token_regularizer="clip_cov", top_entropy_quantile=0.2).top_entropy_quantile == 0.2


@pytest.mark.parametrize("regularizer", ["sent", "kl_cov"])
@pytest.mark.parametrize("overrides", [{"epsilon": 0.3}, {"epsilon_high": 0.28}])
def test_clip_range_with_an_unclipped_loss_warns(tmp_path, regularizer, overrides):
    with pytest.warns(UserWarning, match=r"has no effect: token_regularizer=.* does not clip"):
        make_config(tmp_path, token_regularizer=regularizer, **overrides)


@pytest.mark.parametrize("regularizer", ["sent", "clip_cov"])
def test_no_clip_range_warning_by_default_or_with_clip_cov(tmp_path, regularizer):
    overrides = {} if regularizer == "sent" else {"epsilon": 0.3, "epsilon_high": 0.28}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        make_config(tmp_path, token_regularizer=regularizer, **overrides)
    assert not any("does not clip" in str(w.message) for w in record)


def test_grpo_config_is_rejected(tiny_model_dir, tmp_path):
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    with pytest.raises(TypeError, match="SETGRPOConfig"):
        SETGRPOTrainer(model=tiny_model_dir, reward_funcs=length_reward, args=args, train_dataset=tiny_dataset())


def test_constructor_signature_is_grpo_trainers():
    """Same parameters as TRL's GRPOTrainer.__init__: names, kinds, order, defaults (fails when TRL drifts)."""
    import inspect

    def shape(cls):
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]

    assert shape(SETGRPOTrainer) == shape(GRPOTrainer)


def test_model_alone_is_accepted_as_by_grpo_trainer(tiny_model_dir, tmp_path, monkeypatch):
    """`SETGRPOTrainer(model)` is a valid call, as `GRPOTrainer(model)` is: it gets past our constructor and the
    model load to TRL's own check that some reward source exists (reward_funcs or an environment's get_reward)."""
    monkeypatch.chdir(tmp_path)  # the default args name ./<model name>-SENT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="No reward source provided. Pass `reward_funcs`, or an `environment_f"):
            SETGRPOTrainer(tiny_model_dir)


def test_reward_funcs_omitted_with_an_environment_that_owns_the_reward(tiny_model_dir, tmp_path, monkeypatch):
    """TRL's `reward_funcs`-less form: the environment scores. Default args: a SETGRPOConfig named after the model."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    tokenizer = tool_calling_tokenizer(tiny_model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = {"processing_class": tokenizer, "environment_factory": CounterEnvironment}
        default = SETGRPOTrainer(tiny_model_dir, train_dataset=tiny_dataset(), **env)
        assert isinstance(default.args, SETGRPOConfig)
        assert default.args.output_dir == f"{Path(tiny_model_dir).name}-SENT"
        trainer = SETGRPOTrainer(
            tiny_model_dir,
            args=make_config(tmp_path, max_steps=1),
            train_dataset=tiny_dataset(),
            **env,
        )
    assert trainer.reward_func_names == ["CounterEnvironment"]
    trainer.train()
    assert trainer.state.global_step == 1 and "sent/high_cov_frac" in trainer.state.log_history[0]


def test_positional_model_reward_funcs_args_train_dataset(tiny_model_dir, tmp_path):
    """`SETGRPOTrainer(model, reward_funcs, args, train_dataset)`, positional as TRL allows."""
    args = make_config(tmp_path, max_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SETGRPOTrainer(tiny_model_dir, length_reward, args, tiny_dataset())
    assert trainer.args is args and trainer.reward_func_names == ["length_reward"]
    trainer.train()
    assert trainer.state.global_step == 1


def test_curriculum_feeds_low_then_high_semantic_entropy(tiny_model_dir, tmp_path):
    """A real run: the generated batches follow the stages, and curriculum and online-SE metrics are logged."""
    se = [0.7, 0.1, 0.5, 0.3, 0.0, 0.6, 0.2, 0.4]  # stage 0 = the four lowest (0.0-0.3), stage 1 = the rest
    dataset = tiny_dataset(8).add_column("semantic_entropy", se)
    seen = []

    def recording_reward(completions, semantic_entropy, **kwargs):
        seen.append(sorted(set(semantic_entropy)))
        return length_reward(completions)

    args = make_config(
        tmp_path,
        curriculum=True,
        max_steps=8,
        per_device_train_batch_size=4,
        steps_per_generation=2,  # 8 completions = 2 prompts per rollout batch, each batch feeds 2 steps
        num_train_epochs=1,
    )
    trainer = SETGRPOTrainer(model=tiny_model_dir, reward_funcs=recording_reward, args=args, train_dataset=dataset)
    trainer.train()
    assert len(seen) == 4  # 4 rollout batches of 2 prompts: stage 0 twice, then stage 1 twice
    assert all(max(batch) <= 0.3 for batch in seen[:2]) and all(min(batch) >= 0.4 for batch in seen[2:])
    assert sorted(x for batch in seen[:2] for x in batch) == [0.0, 0.1, 0.2, 0.3]  # every stage-0 prompt once
    logs = [e for e in trainer.state.log_history if "curriculum/stage" in e]
    # logged on the 4 generating steps (1, 3, 5, 7)
    assert [e["curriculum/stage"] for e in logs] == [0.0, 0.0, 1.0, 1.0]
    assert [e["curriculum/progress"] for e in logs] == [0.0, 0.25, 0.5, 0.75]
    assert logs[0]["curriculum/se_max"] <= 0.3 and logs[-1]["curriculum/se_min"] >= 0.4
    assert "semantic_entropy/mean" in trainer.state.log_history[0]


def test_the_trainer_checks_the_semantic_entropy_column_once(tiny_model_dir, tmp_path, monkeypatch):
    """The constructor (before the model loads) and the sampler read one validated column."""
    import sec_trl.curriculum as curriculum

    checked = []
    real = curriculum._check_values
    monkeypatch.setattr(curriculum, "_check_values", lambda values, what: checked.append(what) or real(values, what))
    se = [0.75, 0.15, 0.55, 0.35, 0.05, 0.65, 0.25, 0.45]  # values no other test uses (the cache is by content)
    dataset = tiny_dataset(8).add_column("semantic_entropy", se)
    args = make_config(tmp_path, curriculum=True, max_steps=1, steps_per_generation=2, num_train_epochs=1)
    trainer = SETGRPOTrainer(model=tiny_model_dir, reward_funcs=length_reward, args=args, train_dataset=dataset)
    trainer.get_train_dataloader()
    assert trainer._curriculum_sampler.semantic_entropy.tolist() == se
    assert [what for what in checked if what.startswith("Semantic-entropy column")] == [
        "Semantic-entropy column 'semantic_entropy'"
    ]


def test_curriculum_rejects_a_dataset_without_semantic_entropy_before_loading(tmp_path):
    args = make_config(tmp_path, curriculum=True, num_train_epochs=1)
    with pytest.raises(ValueError, match="semantic_entropy.*sec_trl.rank"):
        SETGRPOTrainer(
            model=str(tmp_path / "no-such-model"),
            reward_funcs=length_reward,
            args=args,
            train_dataset=tiny_dataset(),
        )


# ----------------------------------------------------------------------------------- curriculum stage restart
def _restart_run(tiny_model_dir, out, resume=None, **overrides):
    """2 stages x 2 rollout batches x 2 optimizer steps (gas 1, spg 2): stage 1 starts at optimizer step 4."""
    se = [0.7, 0.1, 0.5, 0.3, 0.0, 0.6, 0.2, 0.4]
    dataset = tiny_dataset(8).add_column("semantic_entropy", se)
    settings = dict(
        curriculum=True,
        curriculum_stage_restart=True,
        max_steps=8,
        steps_per_generation=2,
        num_train_epochs=1,
        beta=0.1,
        learning_rate=1e-2,
        lr_scheduler_type="linear",
        save_strategy="steps",
        save_steps=2,
    )
    args = make_config(out, **{**settings, **overrides})
    snapshots = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SETGRPOTrainer(
            model=tiny_model_dir, reward_funcs=length_reward, args=args, train_dataset=dataset, callbacks=[Snapshot()]
        )
        trainer.train(resume_from_checkpoint=resume)
    return trainer, snapshots


def _adam_steps(trainer):
    return {int(state["step"]) for state in trainer.optimizer.state.values()}


def _ref_equals(trainer, params):
    return all(torch.equal(p.detach(), params[n]) for n, p in trainer.ref_model.named_parameters())


def _learning_rates(trainer):
    return {e["step"]: e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e}


@pytest.fixture(scope="module")
def restart_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("restart")
    trainer, snapshots = _restart_run(tiny_model_dir, out)
    return out, trainer, snapshots


def test_stage_restart_resets_optimizer_schedule_and_reference(restart_run):
    out, trainer, snapshots = restart_run
    assert trainer.stage_restarts == [4]  # once, at the first rollout batch of stage 1
    assert _adam_steps(trainer) == {4}  # Adam's moments were re-created at the boundary: 4 steps, not 8
    assert _ref_equals(trainer, snapshots[4])  # the reference is the policy at the end of stage 0
    assert not _ref_equals(trainer, snapshots[8])
    lr = _learning_rates(trainer)
    assert [lr[s] for s in range(1, 9)] == pytest.approx([1e-2, 7.5e-3, 5e-3, 2.5e-3] * 2)  # linear, per stage
    # the reference model is saved with the checkpoints written after the restart, and only those
    assert [(out / "out" / f"checkpoint-{s}" / "sec_trl_ref_model.pt").exists() for s in (2, 4, 6, 8)] == [
        False,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize("checkpoint, restarts", [(2, [4]), (4, [4]), (6, [])])
def test_stage_restart_across_resume(tiny_model_dir, tmp_path, restart_run, checkpoint, restarts):
    """Saved before the boundary (2) or exactly at it (4): the resumed run restarts once. Saved after it (6): no
    second restart; optimizer state and reference model come from the checkpoint."""
    out, full, full_snapshots = restart_run
    trainer, _ = _restart_run(tiny_model_dir, tmp_path, resume=str(out / "out" / f"checkpoint-{checkpoint}"))
    assert trainer.stage_restarts == restarts
    assert _adam_steps(trainer) == {4}
    if checkpoint == 6:
        assert _ref_equals(trainer, full_snapshots[4])  # loaded, not reset to the policy at step 6
    lr = _learning_rates(trainer)
    assert [lr[s] for s in range(checkpoint + 1, 9)] == pytest.approx(
        [_learning_rates(full)[s] for s in range(checkpoint + 1, 9)]
    )


def test_without_stage_restart_the_run_is_continuous(tiny_model_dir, tmp_path):
    trainer, snapshots = _restart_run(tiny_model_dir, tmp_path, curriculum_stage_restart=False)
    assert trainer.stage_restarts == [] and _adam_steps(trainer) == {8}
    assert not _ref_equals(trainer, snapshots[4])
