# Two commands for a newcomer:  `make run` (set up, prepare, train, index, serve)  and  `make test`.
# (`make test` skips two of its checks without Chromium and Debian's docker-compose: `.ci/run` installs them.)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# `make setup` installs what the product runs with (requirements.txt); `make test` and `make bench` add
# the test tools (requirements-dev.txt).
CHECK_PYTHON = $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed to make $(VENV); $(PYTHON) is $$($(PYTHON) -V 2>&1 || echo missing): give another, e.g. make PYTHON=python3.11 run"; exit 1; }
# pip constraints from the environment are ignored: this machine caps torch below the pinned pair
# in /etc/xdg/pip, and the pins in requirements.txt rule (a user's own PIP_CONSTRAINT too).
export PIP_CONSTRAINT := /dev/null
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup run prepare test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(BIN)/python -m pip --version >/dev/null 2>&1 || { $(CHECK_PYTHON) && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }  # a venv left without pip is made again
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(DEV_STAMP)

prepare: setup
	$(BIN)/fbm prepare

run: setup
	$(BIN)/fbm train all
	$(BIN)/fbm index
	$(BIN)/fbm serve

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m slow
	$(BIN)/fbm bench

clean:
	rm -rf artifacts
