"""Every command line in the README and in docs/ parses with the real parsers: flags exist, values validate, files
exist.

The commands that need a GPU, the Hub or many minutes (the reference recipe, a Qwen LoRA run, the paper's benchmarks)
cannot run here; parsing them with the parser each command uses (`train.py`, `sec_trl.rank`, `sec_trl.evaluate`,
`sec_trl.hub`, and `SETGRPOConfig`'s validation) is what keeps them true. The CPU commands are run for real elsewhere:
`make train` by CI-like fresh-clone checks, the README's Python snippet and `train.py --max_steps 1` by
`tests/test_real_use.py`, the rank / evaluate CLIs by `tests/test_rank.py` and `tests/test_evaluate.py`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# the README is a map; the flag reference and the longer examples live in docs/ and are held to the same standard
DOCS = [README, *(path.read_text() for path in sorted((ROOT / "docs").glob("*.md")))]
# overrides that let a GPU / vLLM command's arguments be validated on a CPU machine without vLLM
CPU_OVERRIDES = ["--use_cpu", "true", "--bf16", "false", "--use_vllm", "false"]


def _commands() -> list[str]:
    """Command lines from the README and docs/: fenced bash blocks (with continuations) and inline `...` spans."""
    found = []
    text = "\n".join(DOCS)
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    for span in re.findall(r"`([^`\n]+)`", text):
        if span.startswith(("accelerate launch", "python -m sec_trl", "python benchmarks/", "make ")):
            found.append(span.strip())
    return list(dict.fromkeys(found))


COMMANDS = _commands()


def _is_template(words: list[str]) -> bool:
    return "..." in words or any("<" in w and ">" in w for w in words)


def _strip_optional(command: str) -> str:
    """`[--config recipes/x.yaml]` (optional parts written in brackets) is checked with the part included."""
    return re.sub(r"\[([^\]]+)\]", r"\1", command)


def _split_launch(words: list[str]) -> tuple[list[str], list[str]]:
    """(accelerate launch's own arguments, the script and its arguments)."""
    for i, word in enumerate(words):
        if word in ("train.py", "-m"):
            return words[2:i], words[i:]
    pytest.skip(f"prose, not a command: {' '.join(words)}")


def _load_train_module():
    from sec_trl import train

    return train


def _check_config_files(args: list[str]) -> list[str]:
    """Config files named by the command exist (examples such as rank.yaml, written by the user, are dropped)."""
    out = []
    skip = False
    for i, word in enumerate(args):
        if skip:
            skip = False
            continue
        if word in ("--config", "--config_file") and i + 1 < len(args):
            path = args[i + 1]
            if path.startswith(("recipes/", "accelerate_configs/")):
                assert (ROOT / path).is_file(), f"{path} does not exist"
                out += [word, str(ROOT / path)]
            skip = True
            continue
        out.append(word)
    return out


def _parse_train(args: list[str], tmp_path: Path) -> None:
    train = _load_train_module()
    args = _check_config_files(args)
    if "--output_dir" not in args:
        args += ["--output_dir", str(tmp_path / "out")]
    train.make_parser().parse_args_and_config(args=train.with_default_recipe([*args, *CPU_OVERRIDES]))


def _parse_module(module: str, args: list[str], tmp_path: Path) -> None:
    if module == "sec_trl.train":  # the installed package's train.py
        return _parse_train(args, tmp_path)
    args = _check_config_files(args)
    if module in ("sec_trl.resources", "sec_trl.regularizers"):  # print where the files are / the docs table
        assert not args, args
        proc = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-2000:]
    elif module == "sec_trl.rank":
        from sec_trl.ranking.cli import make_parser

        make_parser().parse_args_and_config(args=args)
    elif module == "sec_trl.evaluate":
        from sec_trl.evaluation.cli import make_parser

        make_parser().parse_args_and_config(args=args)
    elif module == "sec_trl.hub":
        from sec_trl.hub import make_parser

        make_parser().parse_args_and_config(args=args)  # the real main() would push; parsing is what runs offline
    else:
        raise AssertionError(f"unknown module {module}")


@pytest.mark.parametrize("command", COMMANDS, ids=range(len(COMMANDS)))
def test_readme_command_parses(command, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    words = shlex.split(_strip_optional(command))
    if _is_template(words):
        pytest.skip("a template with placeholders, not a command")
    if words[:2] == ["python", "-m"] and words[-1] == "--help":  # run for real: the help exits 0
        proc = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
        return
    if words[0] == "make":
        targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
        assert words[1] in targets, f"no Makefile target {words[1]!r}"
    elif words[0] == "pip":
        assert words[1] == "install"
    elif words[:2] == ["accelerate", "launch"]:
        launch, script = _split_launch(words)
        _check_config_files(launch)
        if script[0] == "train.py":
            _parse_train(script[1:], tmp_path)
        else:
            _parse_module(script[1], script[2:], tmp_path)
    elif words[:2] == ["python", "-m"]:
        _parse_module(words[2], words[3:], tmp_path)
    elif words[0] == "python" and words[1].startswith("benchmarks/"):
        script = ROOT / words[1]
        assert script.is_file(), script
        text = script.read_text()
        for flag in (w for w in words[2:] if w.startswith("--")):
            assert f'"{flag}"' in text or f"'{flag}'" in text, f"{words[1]} has no flag {flag}"
    else:
        pytest.skip(f"not a project command: {command}")


def test_the_readme_has_the_commands_users_copy():
    text = " ".join(COMMANDS)
    for expected in ("make train", "make test", "python -m sec_trl.rank", "python -m sec_trl.evaluate", "train.py"):
        assert expected in text
    assert len(COMMANDS) >= 15


def test_every_relative_link_of_the_readme_and_docs_exists():
    """The README is a map: each of its links, and each of docs/'s, leads to a file of the repository."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to missing {target}"


def test_the_config_table_of_the_docs_is_the_configs_own():
    """docs/configuration.md's field table is generated from SETGRPOConfig's fields (defaults and help): regenerate
    it with `python -c "from sec_trl.config import fields_table; print(fields_table())"` when a field changes."""
    from sec_trl.config import fields_table

    text = (ROOT / "docs" / "configuration.md").read_text()
    block = text.split("-->\n", 1)[1].split("\n<!-- /fields -->", 1)[0] if "<!-- /fields -->" in text else ""
    assert block == fields_table()
