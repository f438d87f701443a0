"""Every metric SETGRPOTrainer logs (`sent/*`, `kl_cov/*`, `clip_cov/*`, `semantic_entropy/*`, `curriculum/*`),
checked by value on a batch built so that the expected value is known by hand.

The regulariser batch (`designed_batch`): a model whose next-token distribution barely depends on the context
(`helpers.models.fixed_logits`) gives the boosted token "7" a log-probability near -0.3 and any other token one
near -12. Four completions of 3 valid tokens each plus one padding position:

    completion   tokens        advantage   log ratio logp - old_logp   covariance (A - mean A)(logp - mean logp)
    0            7 7 7 | pad   +1          +0.3  (r = 1.35)            +(logp_7 - mean) ~ +6: the 3 highest
    1            7 7 7 | pad   -1          -0.4  (r = 0.67)            -(logp_7 - mean) ~ -6: the 3 lowest
    2            x x x | pad    0          +0.05 -0.05 +0.05           exactly 0 (mean A is exactly 0)
    3            x x x | pad    0          -0.05 +0.05 -0.05           exactly 0

The padding positions get a log ratio of 7.0, which would show in any mean that forgot the mask. With N = 12
valid tokens and cov_ratio = 0.25, every covariance selection takes k = floor(0.25 * 12) = 3 tokens.
"""

import math

import pytest
import torch
from helpers.models import fixed_logits, save_causal_lm
from helpers.trainer import batch, make_trainer, tiny_dataset


LOG_RATIO = torch.tensor(
    [[0.3, 0.3, 0.3, 7.0], [-0.4, -0.4, -0.4, 7.0], [0.05, -0.05, 0.05, 7.0], [-0.05, 0.05, -0.05, 7.0]]
)
MASK = torch.tensor([[1, 1, 1, 0]] * 4)
ADVANTAGES = [1.0, -1.0, 0.0, 0.0]
N_VALID = 12
APPROX = dict(abs=1e-5)  # log ratios are rebuilt as logp - (logp - d): float32 rounding at |logp| ~ 12


@pytest.fixture(scope="module")
def seven_model_dir(embedded_dir, tmp_path_factory):
    return save_causal_lm(
        embedded_dir, tmp_path_factory.mktemp("seven"), edit=fixed_logits({"7": 1.0}), tie_word_embeddings=False
    )


def designed_batch(trainer):
    tokenizer = trainer.processing_class
    seven, x = tokenizer.convert_tokens_to_ids("7"), tokenizer.convert_tokens_to_ids("x")
    prompt_ids = torch.tensor([tokenizer("What is 3 + 4?").input_ids] * 4)
    completion_ids = torch.tensor([[seven] * 4, [seven] * 4, [x] * 4, [x] * 4])
    inputs, (logps, entropies) = batch(trainer, prompt_ids, completion_ids, MASK, ADVANTAGES)
    # the premise of the table above: "7" is far more likely than "x" at every position
    assert logps[:2, :3].min() > -1.0 and logps[2:, :3].max() < -10.0
    inputs["old_per_token_logps"] = logps - LOG_RATIO
    return inputs, entropies


def _mean_abs(*values):
    return sum(abs(v) for v in values) / len(values)


def _run(seven_model_dir, tmp_path, **settings):
    trainer = make_trainer(seven_model_dir, tmp_path, loss_type="bnpo", **settings)
    inputs, entropies = designed_batch(trainer)
    trainer._compute_loss(trainer.model, inputs)
    return {key: values[-1] for key, values in trainer._metrics["train"].items()}, entropies


def test_sent_metrics(seven_model_dir, tmp_path):
    metrics, entropies = _run(
        seven_model_dir, tmp_path, token_regularizer="sent", low_entropy_quantile=1.0, cov_ratio=0.25
    )
    # low_entropy_quantile = 1: L is all 12 valid tokens; |log ratio| over them: 3 x 0.3, 3 x 0.4, 6 x 0.05
    assert metrics["sent/low_entropy_frac"] == 1.0
    assert metrics["sent/low_entropy_abs_log_ratio"] == pytest.approx((3 * 0.3 + 3 * 0.4 + 6 * 0.05) / 12, **APPROX)
    # the 3 highest covariances are completion 0's tokens, the 3 lowest completion 1's
    assert metrics["sent/high_cov_frac"] == 3 / N_VALID
    assert metrics["sent/high_cov_tokens"] == 3 and metrics["sent/low_cov_tokens"] == 3  # k itself
    assert metrics["sent/high_cov_abs_log_ratio"] == pytest.approx(0.3, **APPROX)
    assert metrics["sent/low_cov_frac"] == 3 / N_VALID
    assert metrics["sent/low_cov_abs_log_ratio"] == pytest.approx(0.4, **APPROX)
    # the largest entropy inside L = the largest over the valid tokens (not over the padding)
    assert metrics["sent/entropy_threshold"] == pytest.approx(entropies[MASK.bool()].max().item())


def test_sent_low_entropy_metrics_with_a_quantile(seven_model_dir, tmp_path):
    metrics, entropies = _run(
        seven_model_dir, tmp_path, token_regularizer="sent", low_entropy_quantile=0.5, cov_ratio=0.25
    )
    # L = the floor(0.5 * 12) = 6 valid tokens of lowest entropy; the threshold is the 6th smallest entropy
    valid = MASK.bool()
    order = torch.argsort(entropies[valid], stable=True)
    assert metrics["sent/low_entropy_frac"] == 6 / N_VALID
    assert metrics["sent/entropy_threshold"] == pytest.approx(entropies[valid][order[5]].item())
    in_l = LOG_RATIO[valid][order[:6]]
    assert metrics["sent/low_entropy_abs_log_ratio"] == pytest.approx(_mean_abs(*in_l.tolist()), **APPROX)


def test_kl_cov_metrics(seven_model_dir, tmp_path):
    metrics, _ = _run(seven_model_dir, tmp_path, token_regularizer="kl_cov", cov_ratio=0.25)
    # the 3 highest covariances over all valid tokens: completion 0's
    assert metrics["kl_cov/high_cov_frac"] == 3 / N_VALID
    assert metrics["kl_cov/high_cov_tokens"] == 3
    assert metrics["kl_cov/high_cov_abs_log_ratio"] == pytest.approx(0.3, **APPROX)
    assert not any(key.startswith("sent/") or key.startswith("clip_cov/") for key in metrics)


def test_clip_cov_metrics(seven_model_dir, tmp_path):
    metrics, _ = _run(
        seven_model_dir,
        tmp_path,
        token_regularizer="clip_cov",
        cov_ratio=0.25,
        clip_cov_lower=-1.0,
        clip_cov_upper=1.0,
    )
    # PPO clipping (epsilon 0.2): completion 0 has A > 0 and r = e^0.3 = 1.35 > 1.2, completion 1 has A < 0 and
    # r = e^-0.4 = 0.67 < 0.8: 6 tokens, mean |log ratio| (3 x 0.3 + 3 x 0.4) / 6
    assert metrics["clip_cov/ppo_clipped_frac"] == 6 / N_VALID
    assert metrics["clip_cov/ppo_clipped_abs_log_ratio"] == pytest.approx(0.35, **APPROX)
    # candidates: covariance in (-1, 1) and not PPO-clipped = the 6 tokens of completions 2 and 3 (covariance 0);
    # 3 of them are drawn, each with |log ratio| 0.05 whichever they are
    assert metrics["clip_cov/cov_clipped_frac"] == 3 / N_VALID
    assert metrics["clip_cov/cov_clipped_tokens"] == 3
    assert metrics["clip_cov/cov_clipped_abs_log_ratio"] == pytest.approx(0.05, **APPROX)


@pytest.mark.parametrize("regularizer", ["none", "sent"])
def test_logp_advantage_covariance_is_logged_for_every_method(seven_model_dir, tmp_path, regularizer):
    trainer = make_trainer(seven_model_dir, tmp_path, loss_type="bnpo", token_regularizer=regularizer)
    inputs, _ = designed_batch(trainer)
    # the likely "7" completions rewarded, the unlikely "x" ones not; mean A = 0.25, so the centering matters
    advantages = [1.0, 0.5, 0.0, -0.5]
    inputs["advantages"] = torch.tensor(advantages)
    trainer._compute_loss(trainer.model, inputs)
    logged = trainer._metrics["train"]["cov/logp_advantage"][-1]
    # by hand: the population covariance of (logp, A) over the 12 valid tokens (the padding excluded)
    logps = inputs["old_per_token_logps"] + LOG_RATIO  # designed_batch's log-probs, as the batch was built
    valid = MASK.bool()
    lp = logps.detach()[valid].double()
    adv = torch.tensor(advantages, dtype=torch.float64).unsqueeze(1).expand(4, 4)[valid]
    expected = ((lp - lp.mean()) * (adv - adv.mean())).mean().item()
    assert expected > 2.5  # logp ~ -0.3 vs ~ -12 at A = +0.75 vs -0.25 on average: confident tokens reinforced
    assert logged == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# semantic_entropy/*: the online semantic entropy of the GRPO groups
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_semantic_entropy_metrics(tiny_model_dir, tmp_path, mode):
    trainer = make_trainer(tiny_model_dir, tmp_path)  # num_generations = 4: 8 completions are 2 groups
    texts = [
        # group 1: answers 2, 2, 2, 3 -> clusters of sizes 3 and 1
        "\\boxed{2}",
        "The answer is 2.",
        "\\boxed{2}",
        "\\boxed{3}",
        # group 2: 4 different answers -> 4 singletons
        "\\boxed{1}",
        "\\boxed{2}",
        "\\boxed{3}",
        "\\boxed{4}",
    ]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    prompts = [[{"role": "user", "content": "What is 1 + 1?"}]] * 8
    inputs = [{"prompt": p} for p in prompts]
    if mode == "eval":
        trainer.model.eval()
    rewards = trainer._calculate_rewards(inputs, prompts, completions, [[1]] * 8)
    assert rewards[:, 0].tolist() == [float(len(t)) for t in texts]  # the rewards themselves are TRL's, unchanged

    group_1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.5623
    group_2 = math.log(4)  # 1.3863
    metrics = trainer._metrics[mode]
    assert metrics["semantic_entropy/mean"] == [pytest.approx((group_1 + group_2) / 2)]
    assert metrics["semantic_entropy/num_clusters"] == [pytest.approx((2 + 4) / 2)]


def test_semantic_entropy_is_not_logged_when_turned_off(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path, log_semantic_entropy=False)
    completions = [[{"role": "assistant", "content": f"\\boxed{{{i}}}"}] for i in range(4)]
    prompts = [[{"role": "user", "content": "?"}]] * 4
    trainer._calculate_rewards([{"prompt": p} for p in prompts], prompts, completions, [[1]] * 4)
    assert not any(key.startswith("semantic_entropy/") for key in trainer._metrics["train"])


# --------------------------------------------------------------------------------------------------------------------
# curriculum/*: a real run
# --------------------------------------------------------------------------------------------------------------------


def test_curriculum_metrics(tiny_model_dir, tmp_path):
    """Shuffling off, so the order is the SE order: ranked SE 0.0 0.1 0.2 0.3 | 0.4 0.5 0.6 0.7 (2 stages of 4),
    2 prompts per rollout batch -> chunks (0.0, 0.1), (0.2, 0.3), (0.4, 0.5), (0.6, 0.7).

    gradient_accumulation_steps = steps_per_generation = 2: one rollout batch per optimizer step, generated at the
    first of its 2 micro-steps, so each logged step is one chunk (a position computed from the optimizer step
    alone, or from the micro-step alone, is off by a factor of 2).
    """
    se = [0.7, 0.1, 0.5, 0.3, 0.0, 0.6, 0.2, 0.4]
    dataset = tiny_dataset(8).add_column("semantic_entropy", se)
    trainer = make_trainer(
        tiny_model_dir,
        tmp_path,
        train_dataset=dataset,
        curriculum=True,
        curriculum_shuffle_within_stage=False,
        num_generations=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        steps_per_generation=2,
        max_steps=4,
        num_train_epochs=1,
        token_regularizer="none",
        log_semantic_entropy=False,
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "curriculum/stage" in e]
    assert [e["step"] for e in logs] == [1, 2, 3, 4]
    assert [e["curriculum/stage"] for e in logs] == [0.0, 0.0, 1.0, 1.0]
    assert [e["curriculum/progress"] for e in logs] == [0.0, 0.25, 0.5, 0.75]
    assert [e["curriculum/se_min"] for e in logs] == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert [e["curriculum/se_max"] for e in logs] == pytest.approx([0.1, 0.3, 0.5, 0.7])
