# Set-up and main jobs. Everything installs itself into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned so that pip takes the wheels this machine kind keeps on disk.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
VARIANT ?= lstm-last

.PHONY: setup data train test test-slow

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

data: setup
	$(PY) -m common.data fetch

train: data
	$(PY) -m torch_impl.train --variant $(VARIANT)

test: data
	$(PY) -m pytest -q

test-slow: data
	$(PY) -m pytest -q -m slow

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
