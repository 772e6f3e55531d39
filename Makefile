# zdf — every target installs what it needs first, so a fresh clone needs only
# `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

HOSTS_RUNS ?= 5

.PHONY: all install check unit_test test fault hosts-deps hosts-test demo bench clean

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

fault: $(STAMP) hosts-deps
	$(BIN)/pytest -q -m slow $(PYTEST_ARGS)

# The namespaced tests (tests/hosts) need root, iproute2 and nftables; as root this
# installs what is missing, elsewhere they skip and say why.
hosts-deps:
	@if [ "$$(id -u)" = 0 ] && ! command -v nft >/dev/null && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables; \
	fi

# Every namespaced scenario, HOSTS_RUNS times in a row (stops at the first failure).
hosts-test: $(STAMP) hosts-deps
	@for i in $$(seq $(HOSTS_RUNS)); do \
		echo "== hosts-test run $$i of $(HOSTS_RUNS)"; \
		$(BIN)/pytest -q tests/hosts $(PYTEST_ARGS) || exit 1; \
	done

demo: $(STAMP)
	$(BIN)/zdf demo

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]' --config-settings editable_mode=compat
	$(BIN)/pytest -q -s bench --benchmark-columns=min,median,mean,max,rounds $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
