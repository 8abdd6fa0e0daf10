# Two commands on a fresh machine: `make demo` (build the demo and serve the app) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
REQ_HASH := $(shell cat requirements.txt requirements-test.txt | sha256sum | cut -c1-12)
VENV ?= $(HOME)/.cache/vsearch/venv-$(REQ_HASH)
BIN := $(VENV)/bin
PORT ?= 8501
DATA ?=
ifeq ($(strip $(DATA)),)
CONFIG ?= config/config.yml
else
CONFIG ?= config/fashion.yml
endif

.PHONY: demo test venv catalog model index serve lint bench nmslib-simd clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt -r requirements-test.txt
	@touch $@

catalog: venv
ifeq ($(strip $(DATA)),)
	$(BIN)/python -m ingest.synthetic --config $(CONFIG)
else
	$(BIN)/python -m ingest.catalog import-kaggle "$(DATA)" --config $(CONFIG)
endif

model: catalog
	$(BIN)/python -m vectorizer.train --config $(CONFIG) --if-missing

index: model
	$(BIN)/python build_index.py --config $(CONFIG)

serve: venv
	@$(BIN)/python -c "import socket,sys; sys.exit(socket.socket().connect_ex(('127.0.0.1', $(PORT))) == 0)" \
	  || { echo "Port $(PORT) is already taken (another app?). Stop it, or run: make demo PORT=8502"; exit 1; }
	@echo "Starting on http://localhost:$(PORT) (until the model and the index are loaded, a page says so)"
	@$(BIN)/python -m util.local_servers --port $(PORT) --pid $$$$ & \
	  exec $(BIN)/streamlit run front_end.py --server.port $(PORT) --server.headless true -- --config $(CONFIG)

demo: index serve

browser:
	@command -v chromium >/dev/null || { (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null \
	  || echo "Could not install Chromium (needs root and Debian's packages): the browser test will fail."; }

test: venv browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/pip install --disable-pip-version-check -q -r bench/requirements.txt
	$(BIN)/python bench/run_all.py --config $(CONFIG) $(if $(QUICK),--quick)

nmslib-simd: venv
	$(BIN)/pip install pybind11
	$(BIN)/pip install --force-reinstall --no-deps --no-binary nmslib nmslib==2.1.2

clean:
	rm -rf data/demo .pytest_cache
