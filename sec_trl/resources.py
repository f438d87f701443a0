"""Files the package ships beside its code: the model-card templates, the recipes, the accelerate configs.

Their source is the repository's top-level `model_cards/`, `recipes/` and `accelerate_configs/` folders; the wheel
installs them as `sec_trl/model_cards/` etc. (`[tool.setuptools.package-dir]` in pyproject.toml), so a run from
an installed package finds the same files as a run from a checkout. `python -m sec_trl.resources` prints where they
are (e.g. to pass a shipped accelerate config to `accelerate launch --config_file`).
"""

from __future__ import annotations

from pathlib import Path


_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`sec_trl/<name>/` when installed from a wheel, else the checkout's top-level `<name>/` (editable or source)."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"sec_trl's {name}/ folder is missing (looked in {name}/ inside the package and beside it): reinstall "
        "sec_trl (pip install sec_trl, or pip install -e . in a checkout)."
    )


def recipe_path(name: str) -> Path:
    """A shipped recipe by file name, e.g. `recipe_path("smollm2_arith_cpu.yaml")`."""
    return resource_dir("recipes") / name


def template_path(name: str) -> Path:
    """A shipped model-card template by file name."""
    return resource_dir("model_cards") / name


FOLDERS = ("recipes", "accelerate_configs", "model_cards")


def main() -> None:
    """`python -m sec_trl.resources`: each shipped folder and its files."""
    for name in FOLDERS:
        folder = resource_dir(name)
        print(f"{name}: {folder}")
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", "."))):
            print(f"    {path.name}")


if __name__ == "__main__":
    main()
