"""One publishing path: a user's own script (SETGRPOConfig(push_to_hub=True), trainer.push_to_hub()) and train.py
both upload through sec_trl.hub's staged copy, checked against a local stand-in of the Hub API (the real
huggingface_hub client, its upload calls patched where the network would start); no token is ever written under
output_dir."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers.hub_stand_in import commits, install, uploaded_files
from helpers.train_flags import LENGTH_REWARD, ROOT, subprocess_env, train_flags, write_jsonl
from helpers.trainer import length_reward, make_config, tiny_dataset

from sec_trl import SETGRPOTrainer
from sec_trl.hub import HubPushError


TOKEN = "hf_StandInTokenNeverToBeWrittenAnywhere0123"
SENT_CARD = b"2512.04359"


def files_holding(folder: Path, needle: str) -> list[str]:
    """Every file under `folder` whose bytes contain `needle`."""
    paths = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return [str(p.relative_to(folder)) for p in paths if needle.encode() in p.read_bytes()]


def assert_clean_upload(remote, repo_id, local_roots):
    assert not [c for c in commits(remote) if c.get("unexpected")], commits(remote)
    files = uploaded_files(remote, repo_id)
    assert files, "nothing was uploaded"
    assert not [name for name in files if name.endswith("training_args.bin")]
    for name, data in files.items():
        assert TOKEN.encode() not in data, f"{name} holds the token"
        for root in local_roots:
            assert str(root).encode() not in data, f"{name} holds the local path {root}"
    assert SENT_CARD in files["README.md"] and b"token_regularizer" in files["README.md"]  # the SENT card
    return files


def test_a_users_script_pushes_through_the_staged_copy(tiny_model_dir, tmp_path, tmp_path_factory, monkeypatch):
    """SETGRPOConfig(push_to_hub=True, hub_token=...), trainer.train() (a checkpoint push per save),
    trainer.save_model() and trainer.push_to_hub(), LoRA on a local model: what TRL users write."""
    from peft import LoraConfig

    remote = install(tmp_path / "hub", setattr=monkeypatch.setattr)
    monkeypatch.chdir(tmp_path)
    args = make_config(
        tmp_path,
        push_to_hub=True,
        hub_model_id="someone/sent-lib",
        hub_token=TOKEN,
        hub_strategy="checkpoint",
        save_strategy="steps",
        save_steps=1,
        max_steps=2,
        steps_per_generation=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SETGRPOTrainer(
            tiny_model_dir,
            length_reward,
            args,
            tiny_dataset(),
            peft_config=LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
        )
    assert commits(remote) == []  # nothing contacted at construction
    trainer.train()
    trainer.save_model()  # Trainer's habit: with push_to_hub, save_model pushes too
    info = trainer.push_to_hub(dataset_name="generated arithmetic")
    assert info.commit_url.startswith("https://huggingface.co/someone/sent-lib/commit/")
    assert trainer.args.hub_token == TOKEN  # the token is still there for the next push

    uploads = [c for c in commits(remote) if c["call"] == "upload_folder"]
    assert [c["commit_message"] for c in uploads] == [
        "Training in progress, step 1",
        "Training in progress, step 2",
        "Model save",
        "End of training",
    ]
    assert all(c["authenticated"] and c["repo_id"] == "someone/sent-lib" for c in uploads)
    files = assert_clean_upload(remote, "someone/sent-lib", [tmp_path_factory.getbasetemp(), tiny_model_dir])
    assert "adapter_model.safetensors" in files and "last-checkpoint/adapter_model.safetensors" in files
    assert "last-checkpoint/optimizer.pt" in files and "optimizer.pt" not in files  # resumable, root stays a model
    assert not [name for name in files if name.startswith("checkpoint-")]  # hub_strategy="checkpoint"
    assert b'"base_model_name_or_path": "' + Path(tiny_model_dir).name.encode() in files["adapter_config.json"]
    assert b"generated arithmetic" in files["README.md"]

    out = Path(args.output_dir)
    assert (out / "training_args.bin").exists() and (out / "checkpoint-2" / "training_args.bin").exists()
    assert files_holding(out, TOKEN) == []
    saved = torch.load(out / "checkpoint-1" / "training_args.bin", weights_only=False)
    assert saved.hub_token is None and saved.hub_model_id == "someone/sent-lib"


def test_a_users_script_offline_trains_and_push_to_hub_raises_with_the_way_out(tiny_model_dir, tmp_path, caplog):
    """The real client, offline: construction contacts nothing, the checkpoint push failure is logged once and
    training goes on, push_to_hub raises a HubPushError that says how to push later."""
    args = make_config(
        tmp_path,
        push_to_hub=True,
        hub_model_id="someone/offline",
        hub_token=TOKEN,
        save_strategy="steps",
        save_steps=1,
        max_steps=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SETGRPOTrainer(tiny_model_dir, length_reward, args, tiny_dataset())
    trainer.train()
    assert trainer.state.global_step == 2 and (Path(args.output_dir) / "checkpoint-2").is_dir()
    assert sum("Pushing to the Hub failed" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(HubPushError, match="offline mode is on") as raised:
        trainer.push_to_hub()
    assert "python -m sec_trl.hub --output_dir" in str(raised.value) and "--hub_model_id someone/offline" in str(
        raised.value
    )
    assert (Path(args.output_dir) / "model.safetensors").exists()  # saved before the push was tried
    assert files_holding(Path(args.output_dir), TOKEN) == []


def test_train_script_pushes_through_the_staged_copy(tiny_model_dir, tmp_path, tmp_path_factory):
    """`python -m sec_trl.train --push_to_hub true --hub_token ...` (LoRA, all_checkpoints, merged model)."""
    rows = [{"prompt": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(4)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    (tmp_path / "my_rewards.py").write_text(LENGTH_REWARD)
    out = tmp_path / "run"
    remote = tmp_path / "hub"
    flags = train_flags(
        reward_funcs="my_rewards.length_reward",
        model_name_or_path=tiny_model_dir,
        dataset_name=data,
        use_peft=True,
        lora_r=2,
        lora_target_modules=["q_proj", "v_proj"],
        save_merged=True,
        max_steps=2,
        output_dir=out,
        push_to_hub=True,
        hub_model_id="someone/sent-script",
        hub_token=TOKEN,
        hub_strategy="all_checkpoints",
        save_strategy="steps",
        save_steps=1,
    )
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), str(tmp_path), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, str(ROOT / "tests" / "helpers" / "hub_stand_in.py"), str(remote), "sec_trl.train"]
    result = subprocess.run(
        [*command, *flags],
        cwd=tmp_path,
        env=subprocess_env(PYTHONPATH=pythonpath),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pushed to https://huggingface.co/someone/sent-script" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    uploads = [c for c in commits(remote) if c["call"] == "upload_folder"]
    assert len(uploads) == 3 and all(c["authenticated"] for c in uploads)  # 2 checkpoints, then the final model
    files = assert_clean_upload(remote, "someone/sent-script", [tmp_path_factory.getbasetemp(), tiny_model_dir])
    assert "checkpoint-1/adapter_model.safetensors" in files and "checkpoint-2/optimizer.pt" in files
    assert "merged/model.safetensors" in files and "adapter_model.safetensors" in files
    assert not [name for name in files if "se_ranking" in name or name.startswith("_")]
    assert files_holding(out, TOKEN) == []
    assert torch.load(out / "training_args.bin", weights_only=False).hub_token is None


@pytest.mark.parametrize(
    "strategy, subfolder",
    [("every_save", None), ("checkpoint", "last-checkpoint"), ("all_checkpoints", "checkpoint-3"), ("end", "-")],
)
def test_checkpoint_push_layout_follows_hub_strategy(tmp_path, strategy, subfolder):
    """The root gets the checkpoint's model and the SENT card of output_dir (never the optimizer state or peft's
    card); `checkpoint` / `all_checkpoints` add the whole checkpoint in a subfolder; `end` pushes nothing."""
    from argparse import Namespace

    from sec_trl.hub import checkpoint_parts, stage_parts

    out = tmp_path / "out"
    checkpoint = out / "checkpoint-3"
    (out / "assets").mkdir(parents=True)
    checkpoint.mkdir()
    (out / "README.md").write_text("SENT card")
    (out / "assets" / "entropy.png").write_bytes(b"png")
    for name in ("model.safetensors", "config.json", "optimizer.pt", "rng_state.pth", "trainer_state.json"):
        (checkpoint / name).write_text("{}")
    (checkpoint / "README.md").write_text("peft card")
    (checkpoint / "training_args.bin").write_bytes(b"args")
    args = Namespace(output_dir=str(out), hub_strategy=strategy, hub_token=None)
    parts = checkpoint_parts(args, checkpoint)
    if strategy == "end":
        assert parts == []
        return
    staged = stage_parts(parts, tmp_path / "staged", args=args)
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    root = ["README.md", "assets/entropy.png", "config.json", "model.safetensors"]
    whole = ["README.md", "config.json", "model.safetensors", "optimizer.pt", "rng_state.pth", "trainer_state.json"]
    assert files == sorted(root + ([f"{subfolder}/{name}" for name in whole] if subfolder else []))
    assert (staged / "README.md").read_text() == "SENT card"
