# `make demo` and `make test` are the only set-up commands: each creates .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test venv venv-dev clean

$(VENV)/.base: pyproject.toml constraints.txt setup.py src/twotower/index/_kernels.c
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

# two workers (the CI machine's two cores), each test module on one worker so its
# module-scoped fixtures are built once; `.venv/bin/pytest FILE` still runs in one process
test: $(VENV)/.dev
	$(PY) -m pytest -q -n 2 --dist loadscope

clean:
	rm -rf $(VENV) build src/*.egg-info
	find src -name "*.so" -delete
