# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= garments
HM_DIR ?= ../shared/data/hm
DEMO_ARGS ?=

.PHONY: demo test venv clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m tfmodels demo --data $(DATA) --hm-dir $(HM_DIR) --out demo_out $(DEMO_ARGS)

test: venv
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) demo_out
