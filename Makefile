# Set-up and main jobs; `make help` lists them. Everything installs itself into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# torch: the pinned default build (CUDA wheels, installed from this machine's local wheel cache),
# or TORCH=cpu for PyTorch's CPU-only wheels (no CUDA libraries, a much smaller .venv).
TORCH ?= default
TORCH_VERSIONS := torch==2.14.1 torchvision==0.29.1
TORCH_SPEC_default := $(TORCH_VERSIONS)
TORCH_SPEC_cpu := $(TORCH_VERSIONS) --index-url https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= $(TORCH_SPEC_$(TORCH))
# JAX: cpu (pyproject's jax), or JAX=cuda13 / JAX=cuda12 on an NVIDIA GPU machine ("jax[cuda13]").
JAX ?= cpu
JAX_SPEC := $(if $(filter cpu,$(JAX)),,"jax[$(JAX)]")

# glibc's malloc hands the training step's large buffers back to the kernel after every step and
# page-faults them in again (10-44k minor faults per step, both frameworks); keeping them made
# every variant train faster in both frameworks here (docs/PERFORMANCE.md). MALLOC= (empty) turns it off.
MALLOC ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296
export GLIBC_TUNABLES := $(MALLOC)

# What `make train` trains: FRAMEWORK torch|jax, VARIANT rnn|gru|lstm|lstm-last, EPOCHS (the
# trainer's default when empty), ARGS any other trainer flags, RUN the run folder.
FRAMEWORK ?= torch
VARIANT ?= lstm-last
EPOCHS ?=
ARGS ?=
RUN ?= runs/$(FRAMEWORK)-$(VARIANT)$(if $(EPOCHS),-$(EPOCHS)ep)
TRAIN := $(PY) -m $(FRAMEWORK)_impl.train

.PHONY: help setup data train resume test test-slow compare check-framework

help:
	@echo "make setup [TORCH=cpu] [JAX=cuda13]  .venv with everything (TORCH=cpu: CPU-only torch wheels)"
	@echo "make data                            fetch MNIST into data/mnist (sha256-checked)"
	@echo "make train [FRAMEWORK=torch|jax] [VARIANT=lstm-last] [EPOCHS=N] [ARGS='--lr 0.001 ...']"
	@echo "                                     train into RUN (default runs/FRAMEWORK-VARIANT[-Nep]);"
	@echo "                                     run it again after Ctrl-C or a kill: it resumes that run"
	@echo "make resume RUN=runs/...             resume an interrupted run (its framework from its config)"
	@echo "make test                            the test suite: tests/ and parity/"
	@echo "make test-slow                       opt-in full-MNIST checks"
	@echo "make compare [ARGS='--variants gru']  the comparison report, into runs/compare (ARGS='--seeds 0 1 2': the spread over seeds)"
	@echo "make web MODEL=model.onnx [PORT=8000] the draw-a-digit page on onnxruntime-web (localhost)"
	@echo "now: FRAMEWORK=$(FRAMEWORK) VARIANT=$(VARIANT) EPOCHS=$(or $(EPOCHS),default) RUN=$(RUN) TORCH=$(TORCH) JAX=$(JAX)"

setup: $(VENV)/.installed

# To switch TORCH or JAX on an existing .venv: rm -rf .venv first.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]' $(JAX_SPEC)
	touch $@

data: setup
	$(PY) -m common.data fetch

check-framework:
	@case "$(FRAMEWORK)" in torch|jax) ;; *) echo "error: FRAMEWORK must be torch or jax, got '$(FRAMEWORK)'" >&2; exit 2;; esac

# A finished run is reported, an interrupted one (state saved, no summary) resumed, else a new one starts.
train: data check-framework
	@if [ -f "$(RUN)/summary.json" ]; then \
		echo "$(RUN) is finished (summary.json); choose another RUN=... or remove it to train again" >&2; exit 2; \
	elif [ -f "$(RUN)/train_state.safetensors" ]; then \
		echo "resuming $(RUN)"; $(TRAIN) --resume "$(RUN)" $(ARGS); \
	elif [ -f "$(RUN)/config.json" ]; then \
		echo "$(RUN) stopped before its first checkpoint: nothing to resume; remove it to start again" >&2; exit 2; \
	else \
		$(TRAIN) --variant $(VARIANT) $(if $(EPOCHS),--epochs $(EPOCHS)) --out "$(RUN)" $(ARGS); \
	fi

resume: data
	@test -f "$(RUN)/train_state.safetensors" || { echo "error: no interrupted run in $(RUN); give RUN=runs/..." >&2; exit 2; }
	$(PY) -m $$($(PY) -c "import json,sys; print(json.load(open(sys.argv[1]))['framework'])" "$(RUN)/config.json")_impl.train --resume "$(RUN)" $(ARGS)

# One pytest worker per core (pytest-xdist); each test file stays on one worker, so its
# module fixtures (trained runs, exports) are built once.
test: data
	$(PY) -m pytest -q -n auto --dist loadfile

test-slow: data
	$(PY) -m pytest -q -m slow

compare: data
	$(PY) -m benchmarks.compare $(ARGS)

# The draw-a-digit page: `make web MODEL=path/to/model.onnx` (PORT=8000). Installs the pinned
# onnxruntime-web from export/web/package-lock.json on first use.
MODEL ?= model.onnx
PORT ?= 8000

.PHONY: web web-deps

web-deps: export/web/node_modules/.package-lock.json

export/web/node_modules/.package-lock.json: export/web/package-lock.json
	cd export/web && npm ci --no-audit --no-fund

web: setup web-deps
	$(PY) -m export.serve_web $(MODEL) --port $(PORT)
