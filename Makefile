# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(shell find proto -name '*.proto')

.PHONY: install gen run demo test test-tools screenshots check typecheck-tree fmt clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

gen: $(STAMP)
	rm -rf gen/tgbroadcast/v1/*_pb2*.py gen/tgbroadcast/v1/*_pb2*.pyi
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iproto \
		--python_out=gen --grpc_python_out=gen \
		--mypy_out=gen --mypy_grpc_out=gen \
		$(PROTOS)
	cp proto/tgbroadcast/v1/*.proto gen/tgbroadcast/v1/

run: $(STAMP)
	$(BIN)/tgbroadcast run $(ARGS)

demo: $(STAMP)
	$(BIN)/python -m tgbroadcast.launcher.demo $(ARGS)

# The suite waits on real servers (and rate limits) more than it computes: four pytest
# workers (pytest-xdist) kept two cores only 0.6 busy, six keep them about 0.75 busy and end
# the run a tenth sooner; a worker that runs out of tests steals some from another, so the
# long ones do not end the run alone. `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 6

test: $(STAMP) test-tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=15 $(ARGS)

# System tools the tests run as child processes: pgbouncer (tests/fixtures/pgbouncer.py) and
# chromium, the browser the dashboard's tests drive (tests/fixtures/browser.py).
# Installed with apt-get when missing (as root, or through sudo); skipped quietly without apt.
test-tools:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || ! command -v apt-get >/dev/null || \
		{ SUDO=$$(test "$$(id -u)" = 0 || echo sudo -n); \
		  $$SUDO apt-get install -y -qq pgbouncer >/dev/null 2>&1 || \
		  { $$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq pgbouncer >/dev/null; } || \
		  echo 'could not install pgbouncer: its tests skip (fail with CI=true)'; }
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || ! command -v apt-get >/dev/null || \
		{ SUDO=$$(test "$$(id -u)" = 0 || echo sudo -n); \
		  $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || \
		  { $$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq chromium >/dev/null; } || \
		  echo 'could not install chromium: the dashboard tests skip (fail with CI=true)'; }

# A screenshot of every page of the dashboard (docs/ui/*.png, shown in the README and
# docs/ui.md), taken in the system chromium against the service and the simulator.
screenshots: $(STAMP) test-tools
	$(BIN)/python -m tests.ui_screenshots docs/ui

# mypy finds modules by folder: the installed shape (tgbroadcast.core is core/, ...) as links.
TYPECHECK := $(VENV)/typecheck/tgbroadcast
typecheck-tree:
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	ln -s $(abspath gen/tgbroadcast/__init__.py) $(abspath gen/tgbroadcast/py.typed) \
		$(abspath gen/tgbroadcast/v1) $(TYPECHECK)/
	for part in core launcher server simulator worker; do ln -s $(abspath .)/$$part $(TYPECHECK)/$$part; done

check: $(VENV)/.bench-installed typecheck-tree
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(MAKE) --no-print-directory gen
	git diff --exit-code -- gen/
	@test -z "$$(git status --porcelain -- gen/)" || { git status --porcelain -- gen/; echo 'gen/ is out of date: run make gen and commit'; exit 1; }

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks (docs/benchmarks.md and docs/bench/*.png): `make bench` (full, about 14 minutes,
# 30 at most), `make bench-quick` or `make bench ARGS=--quick` (a few minutes). Not part of
# `make test`.
.PHONY: bench bench-quick
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick $(ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
