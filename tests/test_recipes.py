"""Every recipe parses through train.py's real parser, passes validation, and keeps the KL term active; the reference
run and its baselines carry the papers' settings."""

from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
REFERENCE = "deepseek_r1_distill_1.5b_dapo_sent.yaml"
BASELINES = {
    "deepseek_r1_distill_1.5b_dapo_kl_cov.yaml": "kl_cov",
    "deepseek_r1_distill_1.5b_dapo_clip_cov.yaml": "clip_cov",
}


@pytest.fixture(scope="module")
def parser():
    """A factory: TrlParser keeps a parsed config's values as defaults, so each recipe gets a fresh parser."""
    from sec_trl import train

    return train.make_parser


def _parse(parser, name):
    # bf16 and vLLM need a GPU: switched off here so that the rest of the recipe is validated on the CPU
    return parser().parse_args_and_config(
        ["--config", str(ROOT / "recipes" / name), "--bf16", "false", "--use_cpu", "true", "--use_vllm", "false"]
    )


def test_there_are_recipes():
    assert len(RECIPES) >= 5
    assert {REFERENCE, *BASELINES} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_is_not_inert(parser, recipe):
    script_args, training_args, model_args = _parse(parser, recipe.name)
    assert training_args.token_regularizer in ("sent", "kl_cov", "clip_cov")
    # the KL term of sent / kl_cov acts only off-policy; clip_cov recipes keep the same rollout layout
    assert not training_args.kl_term_is_inert, f"{recipe.name}: each rollout batch must feed > 1 optimizer step"
    if training_args.curriculum:
        assert training_args.num_train_epochs == 1


def _rollout_settings(args):
    keys = (
        "num_generations",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "steps_per_generation",
        "max_completion_length",
        "temperature",
        "top_p",
        "learning_rate",
        "lr_scheduler_type",
        "beta",
        "loss_type",
        "entropy_coef",
        "seed",
    )
    return {k: getattr(args, k) for k in keys}


def test_reference_recipe_aggregates_like_the_reference_code(parser):
    """Token mean per micro-batch / accumulation steps = TRL's bnpo (the SENT fork and Entropy-Mechanism code)."""
    _, args, _ = _parse(parser, REFERENCE)
    assert args.loss_type == "bnpo"
    assert (args.low_entropy_quantile, args.cov_ratio, args.kl_cov_coef) == (0.8, 2e-4, 0.1)
    assert (args.high_cov_coef, args.low_cov_coef, args.low_entropy_kl_coef, args.beta) == (2.0, 0.5, 0.0, 0.001)
    assert (args.curriculum_stages, args.curriculum_epochs_per_stage) == (2, 5)
    # two optimizer steps per rollout batch of 2048 completions, 1024 per step (4 per GPU x 8 GPUs x 32)
    assert args.steps_per_generation == 2 * args.gradient_accumulation_steps


@pytest.mark.parametrize("name, regularizer", BASELINES.items())
def test_baseline_recipes_use_their_papers_coefficients(parser, name, regularizer):
    _, args, model_args = _parse(parser, name)
    _, reference, reference_model = _parse(parser, REFERENCE)
    assert args.token_regularizer == regularizer
    if regularizer == "kl_cov":  # KL-Cov's 7B recipe: coefficient 1 on the top 0.2 % by covariance
        assert (args.kl_cov_coef, args.cov_ratio) == (1.0, 2e-3)
        assert not args.kl_term_is_inert
    else:  # Clip-Cov: PPO clip ratios 1 / 1, band (1, 5), 0.02 % of the tokens
        assert (args.epsilon, args.epsilon_high) == (1.0, 1.0)
        assert (args.clip_cov_lower, args.clip_cov_upper, args.cov_ratio) == (1.0, 5.0, 2e-4)
    # only the method differs from the SENT run: no curriculum, the same rollouts / optimisation / KL to reference
    assert not args.curriculum
    assert _rollout_settings(args) == _rollout_settings(reference)
    assert model_args.model_name_or_path == reference_model.model_name_or_path
    # the same number of passes over the data as the SENT run's 2 half-data stages x 5 epochs each
    assert args.num_train_epochs == reference.curriculum_epochs_per_stage
