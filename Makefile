# `make demo` and `make test` are the only set-up commands: each creates .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test venv venv-dev clean

$(VENV)/.base: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) -e '.[dev]'
	touch $@

venv: $(VENV)/.base
venv-dev: $(VENV)/.dev

demo: $(VENV)/.base
	$(VENV)/bin/twotower tutorial

test: $(VENV)/.dev
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info
