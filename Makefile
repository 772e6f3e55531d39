# zdf — every target installs what it needs first, so a fresh clone needs only
# `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all install check unit_test test fault demo bench clean

all: install

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]' --config-settings editable_mode=compat
	touch $(STAMP)

check: $(STAMP)
	$(BIN)/ruff check zdf tests bench
	$(BIN)/ruff format --check zdf tests bench
	$(BIN)/mypy

unit_test test: $(STAMP)
	$(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

fault: $(STAMP)
	$(BIN)/pytest -q -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/zdf demo

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]' --config-settings editable_mode=compat
	$(BIN)/pytest -q -s bench --benchmark-columns=min,median,mean,max,rounds $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
