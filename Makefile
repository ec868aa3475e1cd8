# Entry points: `make run` (the whole job on the embedded default), `make test` (the suite), `make test-fast`
# (the suite without the end-to-end and other slow tests: the inner loop), `make lint` and `make compile`.
# Both create or reuse .venv. torch is installed first from its pinned CPU build so that pip never
# resolves a newer (CUDA) torch for the other packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# test processes (pytest-xdist); each test file runs whole in one of them, so its module fixtures (servers) start once
WORKERS ?= 2

.PHONY: run test test-fast lint compile clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m pipelines run

test: $(STAMP)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -q postgresql >/dev/null; } \
		|| echo "PostgreSQL is not installed: the PostgreSQL-backed MLflow tests will be skipped"
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src components pipelines tests benchmarks

compile: $(STAMP)
	$(BIN)/python -m pipelines compile

clean:
	rm -rf runs mlruns .cache
