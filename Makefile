# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs latentjax, runs both stages on the embedded digits
#   make test   creates .venv, installs latentjax with its test extras, runs the suite
# and one more: make bench  runs every benchmark and writes benchmarks/BENCHMARKS.md
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/latentjax demo --workdir runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check latentjax configs tests benchmarks
	$(VENV)/bin/python -m pytest tests -q

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check latentjax configs tests benchmarks
	$(VENV)/bin/ruff format --check latentjax configs tests benchmarks

clean:
	rm -rf $(VENV) runs
