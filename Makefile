# The two commands a new user needs are `make run` and `make test`; both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

JS     := tests/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: install js run test bench lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
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

test: $(STAMP) js
	$(BIN)/python -m pytest --cov=msev15 --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

# msev15/ is --strict; tests/ (and the benchmarks they import) check every body, without --strict
# (pyproject.toml's override for them).
lint: $(STAMP)
	$(BIN)/mypy --strict msev15
	$(BIN)/mypy tests
	$(BIN)/ruff check msev15 tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .coverage htmlcov $(JS)/node_modules
