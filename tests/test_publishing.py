"""sec_trl.publishing: how names and paths are shown, what is scrubbed from text and JSON, what counts as a secret,
and that atomic writes never leave half a file."""

import json
import os
import stat
from types import SimpleNamespace

import pytest

from sec_trl.publishing import (
    LOCAL_PLACEHOLDER,
    REDACTED,
    atomic_path,
    check_clean,
    display_name,
    holds_local_root,
    is_hub_id,
    is_local_name,
    is_local_path,
    local_roots,
    looks_secret,
    model_display_name,
    redact,
    scrub_json,
    scrub_text,
    secrets_of,
    shown_path,
    write_json_atomic,
    write_text_atomic,
)


TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"

LOCAL = [
    ("/home/alice/models/base-x", "base-x"),  # POSIX absolute
    ("/home/alice/models/base-x/", "base-x"),
    ("~/models/base-x", "base-x"),  # home
    ("C:\\Users\\alice\\models\\base-x", "base-x"),  # Windows drive
    ("C:/Users/alice/base-x", "base-x"),
    ("\\\\server\\share\\base-x", "base-x"),  # UNC
    ("./base-x", "base-x"),  # relative
    ("../data/prompts.jsonl", "prompts.jsonl"),
    (".\\base-x", "base-x"),
    ("prompts.jsonl", "prompts.jsonl"),  # a data file's name
    ("runs/a/base-x", "base-x"),  # more than one "/": not a Hub id
    ("/", LOCAL_PLACEHOLDER),
]
HUB_IDS = ["org/name", "Qwen/Qwen2.5-0.5B-Instruct", "open-r1/DAPO-Math-17k-Processed", "gpt2"]


@pytest.mark.parametrize(("path", "shown"), LOCAL)
def test_local_paths_are_shown_by_their_last_component(path, shown):
    assert is_local_path(path) and is_local_name(path)
    assert display_name(path) == shown


@pytest.mark.parametrize("name", HUB_IDS)
def test_hub_ids_are_not_local_and_shown_as_they_are(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of that name exists here
    assert is_hub_id(name)
    assert not is_local_path(name) and not is_local_name(name)
    assert display_name(name) == name


def test_existing_relative_folder_is_local_and_free_text_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydata").mkdir()
    assert is_local_path("mydata") and display_name("mydata") == "mydata"
    assert not is_local_path("otherdata")
    assert display_name("generated arithmetic") == "generated arithmetic"  # text, no separator: as is
    assert display_name("my models/x") == "x"  # a separator, yet no valid Hub id: a path


def test_model_display_name_names_the_embedded_model(tmp_path, monkeypatch):
    from sec_trl.embedded import EMBEDDED_MODEL_NAME, default_cache_dir

    monkeypatch.setenv("SEC_TRL_CACHE", str(tmp_path))
    assert model_display_name(None) == EMBEDDED_MODEL_NAME
    assert model_display_name("embedded") == EMBEDDED_MODEL_NAME
    assert model_display_name(str(default_cache_dir())) == EMBEDDED_MODEL_NAME  # its cache path, never shown
    assert model_display_name(str(tmp_path / "mine")) == "mine"
    assert model_display_name("org/name") == "org/name"


def test_shown_path_is_relative_inside_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "outputs" / "run") == os.path.join("outputs", "run")
    assert shown_path("outputs/run/") == os.path.join("outputs", "run")
    assert shown_path("/elsewhere/outputs/run") == "run"


def test_scrub_json_replaces_local_paths_and_keeps_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    roots = local_roots([tmp_path])
    home = os.path.expanduser("~")
    config = {
        "base_model_name_or_path": str(tmp_path / "models" / "base"),
        "_name_or_path": "org/name",  # a Hub id: kept
        "files": [f"{home}/cache/tokenizer.json", "C:\\Users\\alice\\model", "not/a/rooted/path"],
        "chat_template": "{{ '/' }} </s>",
        "n": 3,
    }
    scrubbed = scrub_json(config, roots, {"base_model_name_or_path": "org/base"})
    assert scrubbed == {
        "base_model_name_or_path": "org/base",
        "_name_or_path": "org/name",
        "files": ["tokenizer.json", "model", "not/a/rooted/path"],
        "chat_template": "{{ '/' }} </s>",
        "n": 3,
    }
    assert scrub_json(config["files"][0], roots) == "tokenizer.json"  # no replacement: the base name


def test_scrub_text_replaces_paths_under_the_roots_only(tmp_path):
    roots = [str(tmp_path)]
    text = f"saved to {tmp_path}/run/out, from org/name; see https://example.com{tmp_path}/x and {tmp_path}z"
    assert holds_local_root(text, roots)
    scrubbed = scrub_text(text, roots)
    assert scrubbed == f"saved to out, from org/name; see https://example.com{tmp_path}/x and {tmp_path}z"
    assert not holds_local_root(scrubbed, roots)
    assert not holds_local_root("model org/name, https://example.com/home/x", ["/home"])


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        (TOKEN, True),
        ("hf_short12", True),  # a token prefix
        ("ghp_0123456789abcdef", True),
        ("a1b2c3d4e5f6g7h8i9j0k1", True),  # long, opaque, letters and digits
        ("org/name", False),
        ("generated arithmetic prompts 2", False),  # spaces: prose, not a token
        ("abcdefghijklmnopqrstuvwxyz", False),  # no digit
        ("hf_", False),  # too short
        ("hf_ with space", False),
        (None, False),
        (12345678, False),
    ],
)
def test_looks_secret(value, secret):
    assert looks_secret(value) is secret


def test_secrets_of_args_and_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "  hf_FromTheEnvironment0  ")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    args = SimpleNamespace(hub_token=TOKEN, wandb_token="wb_9f8e7d6c5b4a3f2e1d0c", max_tokens=512, name="x")
    assert secrets_of(args) == [TOKEN, "wb_9f8e7d6c5b4a3f2e1d0c", "hf_FromTheEnvironment0"]
    monkeypatch.delenv("HF_TOKEN")
    assert secrets_of(None) == []
    text = redact(f"token={TOKEN}; again {TOKEN}; org/name", secrets_of(args))
    assert text == f"token={REDACTED}; again {REDACTED}; org/name"


def test_check_clean_names_the_line_never_the_string():
    check_clean("clean text", ["/home/alice", None, "", "  "])
    with pytest.raises(ValueError, match=r"The report contains forbidden string #1 .* on line 2") as info:
        check_clean(f"line one\ntoken {TOKEN}\n", ["/home/alice", TOKEN], what="The report")
    assert TOKEN not in str(info.value)


def test_atomic_writes(tmp_path):
    path = tmp_path / "data.json"
    write_json_atomic(path, {"a": [1, 2]})
    assert path.read_text() == '{\n "a": [\n  1,\n  2\n ]\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    write_text_atomic(tmp_path / "card.md", "héllo\n")
    assert (tmp_path / "card.md").read_text(encoding="utf-8") == "héllo\n"
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})  # fails while writing: the old file stays whole
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.name.startswith(".plot.png.tmp-") and tmp.suffix == ".png"
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.md", "data.json"]  # no temporary file left
