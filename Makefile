# Two commands set up a fresh machine: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test install install-test translations system-deps lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed translations
install-test: $(VENV)/.installed-test translations

translations: $(VENV)/.installed
	$(BIN)/pybabel compile --statistics -d nurture/translations 2>&1 | grep -v '^$$' || true

run: install
	$(BIN)/nurture db upgrade
	$(BIN)/nurture user ensure-admin
	@echo "Open http://$(HOST):$(PORT)/ and log in with the credentials above."
	$(BIN)/nurture run --host $(HOST) --port $(PORT)

# Debian's chromium drives the browser tests (Playwright never downloads a browser of its own);
# Debian's spamassassin scores the built-in mails offline.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v spamassassin >/dev/null 2>&1 || missing="$$missing spamassassin"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

test: install-test system-deps
	$(BIN)/ruff check nurture tests migrations
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check nurture tests migrations
	$(BIN)/ruff format --check nurture tests migrations

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

bench: install-test
	$(BIN)/python bench/run.py
