# The two commands a fresh machine needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint typecheck unit versions images bench clean

$(STAMP): constraints.txt requirements-dev.txt core/pyproject.toml plugins/*/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e 'core[testing]' $(foreach p,$(wildcard plugins/*/pyproject.toml),-e $(dir $(p))) -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/splitmirror demo --dir splitmirror-demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The run also writes which database versions ran where (splitmirror.testing.versions), which
# `make versions` turns into the tables of docs/databases/.
unit: $(STAMP)
	SPLITMIRROR_VERSIONS_REPORT=build/tested-versions.json $(BIN)/pytest

versions: $(STAMP)
	$(BIN)/python -m splitmirror.testing.versions build/tested-versions.json docs/databases/postgresql.md docs/databases/mysql.md docs/databases/oracle.md
	cp build/tested-versions.json docs/databases/tested-versions.json

# The offline database images (compose/build-images) when a Docker engine answers; without one
# the container tests skip, saying so.  .ci/run starts an engine first.
images:
	@if docker info >/dev/null 2>&1; then compose/build-images; \
	else echo "make images: no Docker engine answers; container tests will skip (.ci/run installs and starts one)"; fi

test: lint typecheck images unit

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) splitmirror-demo .pytest_cache .mypy_cache .ruff_cache
