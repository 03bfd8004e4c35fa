# The README's two commands:
#   make run    create .venv, install ghostnest, run the main job on embedded data
#   make test   create .venv, install ghostnest with its test, export and segmentation extras, run the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install
run: $(VENV)/.installed
	$(BIN)/ghostnest train --recipe quickstart

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test,export,segmentation]"
	touch $@

# make gpu-check [STEP="env tests"]: verify and measure everything on the CUDA GPU present (docs/gpu.md), in
# resumable steps; writes benchmarks/results/cuda-*.json and the GPU section of docs/benchmarks.md. Needs a
# Python with ghostnest importable (GPU_PYTHON); it does not install anything (a lent GPU machine is offline).
GPU_PYTHON ?= $(BIN)/python
.PHONY: gpu-check
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py $(foreach s,$(STEP),--step $(s))
