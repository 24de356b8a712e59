# qpart: two commands set up a fresh machine.
#   make demo   venv + pinned deps + dataset, trains the default model if absent (a short schedule, into
#               $(DEMO_MODELS)), builds the demo's catalog, runs server and device
#   make demo-text   the same for a language model: text generated through a split
#   make test   venv + pinned deps + dataset, runs the test suite
#   make test-board   the device part on an emulated arm64 board (debootstrap + qemu-user; root; cached)
PYTHON ?= python3
VENV ?= .venv
MODELS ?= model-repo
# the demo's own repository: its model is trained on a short schedule and its catalog holds only what the demo
# asks for, so neither is mistaken for model-repo's (`make demo DEMO_MODELS=model-repo` uses a trained one there)
DEMO_MODELS ?= demo-models
DEMO_TEXT_MODELS ?= demo-text-models
# The CPU build of torch. On machines without a local wheel, add the CPU index, e.g.
#   make demo TORCH_PIP_FLAGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
TORCH_PIP_FLAGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.qpart-installed

.PHONY: demo demo-text test test-board dataset protos install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIP_FLAGS) $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

dataset:
	@sh scripts/ensure-dataset.sh
	@sh scripts/ensure-text.sh

demo: $(STAMP) dataset
	$(BIN)/qpart demo --models $(DEMO_MODELS)

demo-text: $(STAMP) dataset
	$(BIN)/qpart demo-text --models $(DEMO_TEXT_MODELS)

test: $(STAMP) dataset
	@sh scripts/ensure-test-tools.sh
	$(BIN)/python -m pytest -q

test-board: $(STAMP) dataset
	$(BIN)/python -m qpart.testbed.board

protos: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
