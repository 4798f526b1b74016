# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs latentjax, runs both stages on the embedded digits
#   make test   creates .venv, installs latentjax with its test extras, runs the suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/latentjax demo --workdir runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check latentjax configs tests
	$(VENV)/bin/python -m pytest tests -q

lint: $(STAMP)
	$(VENV)/bin/ruff check latentjax configs tests
	$(VENV)/bin/ruff format --check latentjax configs tests

clean:
	rm -rf $(VENV) runs
