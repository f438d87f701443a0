"""The installed package's view of its files: shipped recipes by name, and everything shipped is in the wheel.

The end-to-end check (the wheel in a fresh venv, outside the repository) is `make check-installed`
(tests/check_installed.py), run by CI after `make test`; these are its fast parts.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from sec_trl import resources
from sec_trl.train import DEFAULT_RECIPE, resolve_config, with_default_recipe


ROOT = Path(__file__).resolve().parents[1]
SHIPPED = DEFAULT_RECIPE.parent / "qwen2.5_0.5b_lora_single_gpu.yaml"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A directory with no recipes/ folder, as a user of the installed package has."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "given",
    ["recipes/qwen2.5_0.5b_lora_single_gpu.yaml", "qwen2.5_0.5b_lora_single_gpu.yaml", "qwen2.5_0.5b_lora_single_gpu"],
)
def test_a_missing_config_is_the_shipped_recipe_of_that_name(elsewhere, given, capsys):
    assert resolve_config(given) == str(SHIPPED)
    assert f"using the shipped {SHIPPED}" in capsys.readouterr().err


def test_a_config_that_exists_wins_over_the_shipped_one(elsewhere, capsys):
    (elsewhere / "recipes").mkdir()
    (elsewhere / "recipes" / SHIPPED.name).write_text("max_steps: 3\n")
    assert resolve_config(f"recipes/{SHIPPED.name}") == f"recipes/{SHIPPED.name}"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("given", ["recipes/nope.yaml", "other/smollm2_arith_cpu.yaml", "/abs/smollm2_arith_cpu.yaml"])
def test_no_fallback_for_unknown_names_or_other_folders(elsewhere, given):
    with pytest.raises(FileNotFoundError, match=r"no such file.*smollm2_arith_cpu\.yaml"):
        resolve_config(given)


def test_with_default_recipe_resolves_both_config_spellings(elsewhere):
    shipped = str(DEFAULT_RECIPE)
    assert with_default_recipe(["--config", "recipes/smollm2_arith_cpu.yaml", "--max_steps", "2"]) == [
        "--config",
        shipped,
        "--max_steps",
        "2",
    ]
    # TrlParser reads only `--config PATH`: the `=` form is rewritten to it
    assert with_default_recipe(["--max_steps", "2", "--config=smollm2_arith_cpu.yaml"]) == [
        "--max_steps",
        "2",
        "--config",
        shipped,
    ]
    assert with_default_recipe(["--max_steps", "2"]) == ["--config", shipped, "--max_steps", "2"]


def test_the_shipped_recipe_parses_from_elsewhere(elsewhere):
    from sec_trl.train import make_parser

    argv = with_default_recipe(["--config", "recipes/smollm2_arith_cpu.yaml", "--output_dir", str(elsewhere / "o")])
    _, training_args, _ = make_parser().parse_args_and_config(args=argv)
    assert training_args.token_regularizer == "sent" and training_args.max_completion_length == 32


def test_every_shipped_file_is_in_the_wheel():
    """Each file of model_cards/, recipes/, accelerate_configs/ matches a package-data glob of pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for folder in resources.FOLDERS:
        package = f"sec_trl.{folder}"
        assert config["package-dir"][package] == folder
        assert package in config["packages"]
        globs = config["package-data"][package]
        for path in (ROOT / folder).iterdir():
            assert any(fnmatch.fnmatch(path.name, g) for g in globs), f"{folder}/{path.name} would not be shipped"


def test_python_m_sec_trl_resources_lists_the_folders(capsys):
    resources.main()
    out = capsys.readouterr().out
    for folder in resources.FOLDERS:
        assert f"{folder}: {resources.resource_dir(folder)}" in out
    assert "    smollm2_arith_cpu.yaml" in out and "    zero3.yaml" in out
