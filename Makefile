# Care plan repository: `make run` serves, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run serve migrate test lint lint-check typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: install what is missing, migrate, serve on $FHIR_HOST:$FHIR_PORT (default 127.0.0.1:8080)
run: $(STAMP) migrate
	exec $(BIN)/fhir-server serve

migrate: $(STAMP)
	$(BIN)/fhir-server migrate

## test: install what is missing and run the suite on SQLite and PostgreSQL: on one worker per core
## (at most four; each file's tests on one worker), then the tests that time themselves (marked
## `alone`) with nothing beside them. Exit status 5 is pytest's "no test selected" (a narrow PYTEST_ARGS).
## The parallel part lists its twenty slowest tests, to keep the suite's time in sight.
PYTEST_WORKERS ?= -n auto --maxprocesses 4 --dist loadfile
test: $(STAMP)
	rm -f .pytest-postgres-count
	$(BIN)/python -m pytest $(PYTEST_WORKERS) -m "not alone" --durations=20 $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]

## lint: ruff check and format the code
lint: $(STAMP)
	$(BIN)/ruff check --fix app capability tests bench alembic
	$(BIN)/ruff format app capability tests bench alembic

lint-check: $(STAMP)
	$(BIN)/ruff check app capability tests bench alembic

## typecheck: mypy --strict on app/ (configured in pyproject.toml)
typecheck: $(STAMP)
	$(BIN)/mypy

## bench: drive running servers over HTTP (see BENCHMARKS.md)
bench: $(STAMP)
	$(BIN)/python -m bench.crud $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache
