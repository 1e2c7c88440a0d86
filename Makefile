# The two commands a new user needs are `make run` and `make test`; both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# One stamp per install set, so neither `make run` nor `make test` reinstalls every time:
# serving needs the runtime plus what the reference servers use (the `escalation` extra);
# testing and linting need the dev extras (which include it).
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

JS     := tests/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: install js run test eval bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[escalation]'
	touch $(RUN_STAMP)

$(DEV_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP) $(RUN_STAMP)

install: $(DEV_STAMP)

run: $(RUN_STAMP)
	$(BIN)/msev15 serve --with-reference-servers

# The Node tests of the AG-UI and AI SDK clients (run from pytest); skipped when Node is absent.
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	npm ci --prefix $(JS) --no-audit --no-fund
	touch $(JS_STAMP)

js:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(JS_STAMP); \
	else \
		echo "Node.js/npm not found: the AG-UI and AI SDK client tests (tests/js) will be skipped."; \
	fi

test: $(DEV_STAMP) js
	$(BIN)/python -m pytest --cov=msev15 --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

# The conversation tests in evals/ against this service built in-process (the offline assistant
# unless the environment or .env names a model), with the reference MCP servers.
eval: $(RUN_STAMP)
	TOOL_APPROVAL="$${TOOL_APPROVAL-update_order_status}" $(BIN)/msev15 eval evals --with-reference-servers $(EVAL_ARGS)

# msev15/ is --strict; tests/ (and the benchmarks they import) check every body, without --strict
# (pyproject.toml's override for them).
lint: $(DEV_STAMP)
	$(BIN)/mypy --strict msev15
	$(BIN)/mypy tests
	$(BIN)/ruff check msev15 tests benchmarks

bench: $(DEV_STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .coverage htmlcov $(JS)/node_modules
