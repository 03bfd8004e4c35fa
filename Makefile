# The README's two commands:
#   make run    create .venv, install ghostnest, run the main job on embedded data
#   make test   create .venv, install ghostnest with the extras the tests need, run the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install
run: $(VENV)/.installed
	$(BIN)/ghostnest train --recipe quickstart

test: $(VENV)/.installed browser
	$(BIN)/python -m pytest -q

# Chromium for the report page's browser check (tests/test_report_html.py, docs/report.md): installed from the
# distribution's packages where this runs as root with apt-get; elsewhere the check is skipped with its reason.
.PHONY: browser
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && export DEBIAN_FRONTEND=noninteractive && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	echo "note: chromium could not be installed (needs root and apt-get); the report page's browser check is skipped"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test,export,explain,tensorboard,segmentation]"
	touch $@

# make gpu-check [STEP="env tests"]: verify and measure everything on the CUDA GPU present (docs/gpu.md), in
# resumable steps; writes benchmarks/results/cuda-*.json and the GPU section of docs/benchmarks.md. Needs a
# Python with ghostnest importable (GPU_PYTHON); it does not install anything (the machine of a short GPU run is offline).
GPU_PYTHON ?= $(BIN)/python
.PHONY: gpu-check
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py $(foreach s,$(STEP),--step $(s))
