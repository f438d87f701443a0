"""The SENT model card: content, images, the "How to load" switch, and that no local path or token leaks."""

import os
import struct
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from sec_trl.hub import push_failure_message
from sec_trl.model_card import (
    SE_HISTOGRAM_FILENAME,
    _series,
    assert_card_is_clean,
    plot_training_curves,
    render_model_card,
)
from sec_trl.publishing import redact


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECRET = "hf_secret123"


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0


def _log_history() -> list[dict]:
    """What GRPO logs: entropy every step; reward and online semantic entropy only on the generating (odd) steps."""
    history = []
    for step in range(1, 7):
        entry = {"step": step, "epoch": step / 6, "loss": 0.01 * step, "entropy": 2.6 - 0.1 * step}
        if step % 2:
            entry.update({"reward": 0.05 * step, "reward_std": 0.1, "semantic_entropy/mean": 1.2 - 0.15 * step})
        history.append(entry)
    history.append({"step": 6, "epoch": 1.0, "train_runtime": 12.3, "train_loss": 0.03})  # the end-of-train entry
    return history


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    from sec_trl import SETGRPOConfig

    tmp_path = tmp_path_factory.mktemp("card")
    return SETGRPOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        report_to="none",
        curriculum=True,
        num_train_epochs=1,  # one pass of the curriculum
        remove_unused_columns=False,  # curriculum=True needs the semantic-entropy column in the batches
        hub_token=SECRET,
        steps_per_generation=2,
        gradient_accumulation_steps=1,
        cov_ratio=0.25,
    )


@pytest.fixture(scope="module")
def rendered(args):
    """The card of a full-model run on a Hub base model and a Hub dataset, written into args.output_dir."""
    text = render_model_card(
        output_dir=args.output_dir,
        args=args,
        log_history=_log_history(),
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        dataset_name="open-r1/DAPO-Math-17k-Processed",
        hub_model_id="someone/smollm2-sent",
        license="apache-2.0",
    )
    return text


def test_card_content(rendered, args):
    out = Path(args.output_dir)
    assert (out / "README.md").read_text(encoding="utf-8") == rendered

    # the method and both citations
    assert "arXiv 2512.04359" in rendered
    assert "@article{cao2025sent," in rendered
    assert "title  = {Efficient Reinforcement Learning with Semantic and Token Entropy for LLM Reasoning}" in rendered
    assert "author = {Cao and Bai and Peng and Wang and Yang and Huo and Zhang and Gao}" in rendered
    assert "eprint = {arXiv:2512.04359}" in rendered
    assert "@software{vonwerra2020trl," in rendered

    # the settings, read off the config
    for row in (
        "| `token_regularizer` | sent |",
        "| `low_entropy_quantile` | 0.8 |",
        "| `cov_ratio` | 0.25 |",
        "| `kl_cov_coef` | 0.1 |",
        "| `high_cov_coef` | 2.0 |",
        "| `low_cov_coef` | 0.5 |",
        "| `low_entropy_kl_coef` | 0.0 |",
        f"| `beta` | {args.beta!r} |",
        f"| `loss_type` | {args.loss_type} |",
        "| `steps_per_generation` | 2 |",
        "| `gradient_accumulation_steps` | 1 |",
        "| `num_iterations` | 1 |",
        f"| `num_generations` | {args.num_generations} |",
        f"| `learning_rate` | {args.learning_rate!r} |",
        f"| `max_completion_length` | {args.max_completion_length} |",
        f"| `temperature` | {args.temperature!r} |",
        "| `curriculum` | true |",
        f"| `curriculum_stages` | {args.curriculum_stages} |",
        f"| `curriculum_epochs_per_stage` | {args.curriculum_epochs_per_stage} |",
        "| `curriculum_shuffle_within_stage` | true |",
    ):
        assert row in rendered, row
    assert "identically zero" not in rendered  # two micro-batches per rollout batch: the KL term is active

    # the metadata
    data = ModelCard(rendered).data
    assert data.library_name == "transformers"
    assert data.tags == ["trl", "grpo", "sent", "sec_trl"]
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data.datasets == ["open-r1/DAPO-Math-17k-Processed"]
    assert data.license == "apache-2.0"

    # the curves: referenced relatively, written as PNGs
    for name in ("reward.png", "entropy.png", "semantic_entropy.png"):
        assert f"](assets/{name})" in rendered
        _assert_png(out / "assets" / name)
    assert "| `reward` | 3 |" in rendered  # odd steps only
    assert "| `entropy` | 6 |" in rendered
    assert "| `semantic_entropy/mean` | 3 |" in rendered

    # how to load: a full model
    assert 'AutoModelForCausalLM.from_pretrained("someone/smollm2-sent")' in rendered
    assert "AutoPeftModelForCausalLM" not in rendered


def test_card_has_no_local_path_or_token(rendered, args):
    assert os.path.abspath(args.output_dir) not in rendered
    assert str(Path(args.output_dir).parent) not in rendered
    home = os.path.expanduser("~")
    if len(home) > 1 and home != "/":
        assert home not in rendered
    assert SECRET not in rendered
    assert "secret123" not in rendered


def test_local_base_model_and_dataset_are_shown_by_name(args, tmp_path):
    model_dir = tmp_path / "my-local-model"
    model_dir.mkdir()
    data_file = tmp_path / "my_prompts.jsonl"
    data_file.write_text('{"prompt": "1+1", "answer": "2"}\n')
    out = tmp_path / "run"
    text = render_model_card(
        output_dir=out,
        args=args,
        log_history=_log_history(),
        base_model=str(model_dir),
        dataset_name=str(data_file),
        hub_model_id=None,
    )
    assert "my-local-model (local)" in text
    assert "my_prompts.jsonl (local)" in text
    assert str(tmp_path) not in text
    data = ModelCard(text).data
    assert data.base_model is None
    assert data.datasets is None
    assert data.license is None
    assert 'AutoModelForCausalLM.from_pretrained("<repo_id>")' in text  # no Hub id: a placeholder, not the dir


@pytest.mark.parametrize("name", ["./models/base-x", "~/models/base-x", "/nonexistent/models/base-x"])
def test_path_like_names_are_local_even_when_missing(args, tmp_path, name):
    text = render_model_card(
        output_dir=tmp_path / "run",
        args=args,
        log_history=[],
        base_model=name,
        dataset_name="generated arithmetic",
        hub_model_id="someone/x",
    )
    assert "base-x (local)" in text
    assert name not in text
    assert ModelCard(text).data.base_model is None
    assert "- **Training data:** generated arithmetic" in text  # free text: shown, not in the metadata
    assert ModelCard(text).data.datasets is None
    assert "No reward, token-entropy or semantic-entropy values were logged" in text
    assert "](assets/" not in text


def test_adapter_switch_and_se_histogram(args, tmp_path):
    out = tmp_path / "lora-run"
    out.mkdir()
    (out / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    ranked = tmp_path / "ranked"
    plot_training_curves(_log_history(), ranked)  # any PNG stands in for rank.py's histogram
    histogram = ranked / "reward.png"

    text = render_model_card(
        output_dir=out,
        args=args,
        log_history=_log_history(),
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        dataset_name=None,
        hub_model_id="someone/smollm2-sent-lora",
        se_histogram=str(histogram),
    )
    assert 'AutoPeftModelForCausalLM.from_pretrained("someone/smollm2-sent-lora")' in text
    assert "AutoModelForCausalLM.from_pretrained" not in text
    assert "a LoRA adapter" in text
    assert f"](assets/{SE_HISTOGRAM_FILENAME})" in text
    _assert_png(out / "assets" / SE_HISTOGRAM_FILENAME)
    assert str(ranked) not in text

    # a second render (e.g. by push_to_hub) without the histogram keeps the copy already in assets/
    again = render_model_card(
        output_dir=out,
        args=args,
        log_history=_log_history(),
        base_model=None,
        dataset_name=None,
        hub_model_id="someone/smollm2-sent-lora",
    )
    assert f"](assets/{SE_HISTOGRAM_FILENAME})" in again


def test_plot_training_curves_only_plots_logged_steps(tmp_path):
    history = _log_history()
    assert [step for step, _ in _series(history, "reward")] == [1, 3, 5]
    assert [step for step, _ in _series(history, "entropy")] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in _series(history, "semantic_entropy/mean")] == [1, 3, 5]

    written = plot_training_curves(history, tmp_path / "a")
    assert written == ["reward.png", "entropy.png", "semantic_entropy.png"]
    for name in written:
        _assert_png(tmp_path / "a" / name)

    only_entropy = [{"step": 1, "entropy": 1.0}, {"step": 2, "entropy": float("nan")}, {"step": 3, "loss": 0.0}]
    assert plot_training_curves(only_entropy, tmp_path / "b") == ["entropy.png"]
    assert plot_training_curves([], tmp_path / "c") == []
    assert not (tmp_path / "c").exists()


def test_assert_card_is_clean_raises_on_a_dirty_card():
    assert_card_is_clean("a clean card", ["/home/alice/run", SECRET, None, ""])
    with pytest.raises(ValueError, match="line 2") as info:
        assert_card_is_clean("# card\nsaved in /home/alice/run/out\n", ["/home/alice/run"])
    assert "/home/alice" not in str(info.value)  # the error does not repeat the forbidden string
    with pytest.raises(ValueError) as info:
        assert_card_is_clean(f"token: {SECRET}", [None, SECRET])
    assert SECRET not in str(info.value)


def test_render_refuses_a_card_that_leaks_the_output_dir(args, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="forbidden string"):
        render_model_card(
            output_dir=out,
            args=args,
            log_history=[],
            base_model=None,
            dataset_name=None,
            hub_model_id=None,
            model_name=f"model from {os.path.abspath(out)}",
        )
    assert not (out / "README.md").exists()


def test_tokens_are_redacted(args, tmp_path, monkeypatch):
    assert redact(f"a {SECRET} b {SECRET}", [SECRET, None, ""]) == "a [REDACTED] b [REDACTED]"
    monkeypatch.setenv("HF_TOKEN", "hf_fromtheenvironment42")
    text = render_model_card(
        output_dir=tmp_path / "run",
        args=args,
        log_history=[],
        base_model=None,
        dataset_name=None,
        hub_model_id=None,
        model_name=f"leaky {SECRET} hf_fromtheenvironment42",
    )
    assert "# leaky [REDACTED] [REDACTED]" in text
    assert "fromtheenvironment" not in text and "secret123" not in text


def test_push_failure_message_names_the_directory_only(tmp_path, monkeypatch):
    from huggingface_hub.errors import OfflineModeIsEnabled

    message = push_failure_message(
        OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled."),
        "/home/alice/runs/smollm2-sent",
        repo_id="someone/smollm2-sent",
    )
    assert "/home/alice" not in message  # outside the current directory: the name only
    assert "'smollm2-sent'" in message
    assert "offline mode" in message
    assert "python -m sec_trl.hub --output_dir smollm2-sent --hub_model_id someone/smollm2-sent" in message
    assert "trainer.push_to_hub()" not in message

    # inside the current directory: the relative path, so the printed command works from there
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "run1").mkdir(parents=True)
    inside = push_failure_message(ConnectionError("x"), str(tmp_path / "runs" / "run1"), repo_id="me/run1")
    assert "--output_dir runs/run1 --hub_model_id me/run1" in inside and str(tmp_path) not in inside

    network = push_failure_message(ConnectionError("Name or service not known"), "out")
    assert "could not be reached" in network
    assert "--output_dir out --hub_model_id <repo_id>" in network
