# Two entry points (see README): `make serve` runs the service, `make test` the suite.
# Both build .venv on first use. CPU machines take torch 2.13.0 (CPU build); set
# TORCH_SPEC to a CUDA build on GPU hosts.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= data

.PHONY: install system-deps serve test bench bench-quick lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

system-deps:
	bash scripts/system-deps.sh

serve: install
	$(VENV)/bin/prolip-retrieval serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: install system-deps
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench

bench-quick: install
	$(PY) -m bench --quick

lint: install
	$(VENV)/bin/ruff check models indexer service tests bench scripts prolip_retrieval
