# Two entry points: `make run` (the whole job on the embedded default) and `make test` (the suite).
# Both create or reuse .venv. torch is installed first from its pinned CPU build so that pip never
# resolves a newer (CUDA) torch for the other packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test compile clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rankadaptor run

test: $(STAMP)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -q postgresql >/dev/null; } \
		|| echo "PostgreSQL is not installed: the PostgreSQL-backed MLflow tests will be skipped"
	$(BIN)/python -m pytest -q

compile: $(STAMP)
	$(BIN)/rankadaptor compile

clean:
	rm -rf runs mlruns .cache
