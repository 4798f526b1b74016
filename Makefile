# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs latentjax (runtime dependencies only), runs both stages
#               on the embedded digits
#   make test   creates .venv, installs latentjax with its test extras (PyTorch and diffusers as
#               references), runs ruff and the suite, less the tests marked slow (under 20
#               minutes on 2 CPU cores with an empty compilation cache: what CI runs), two test
#               files at a time (pytest-xdist; one process used one core)
# and more:     make test-all  the whole suite, the slow tests too (multi-process, notebook)
#               make bench   runs every benchmark and writes benchmarks/BENCHMARKS.md
#               make mutate  plants the bugs of tools/mutants.py one at a time, runs the tests
#                            that should catch each, and writes tools/mutation_results.md
PYTHON ?= python3
VENV := .venv
RUNTIME := $(VENV)/.installed-runtime
TESTS := $(VENV)/.installed-test
BENCH := $(VENV)/.installed-bench

.PHONY: demo test test-all bench mutate lint clean

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e .
	touch $(RUNTIME)

$(TESTS): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(TESTS) $(RUNTIME)

$(BENCH): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	touch $(BENCH) $(TESTS) $(RUNTIME)

demo: $(RUNTIME)
	$(VENV)/bin/latentjax demo --workdir runs/demo

test: $(TESTS)
	$(VENV)/bin/ruff check latentjax tests benchmarks tools
	$(VENV)/bin/python -m pytest tests -q -m "not slow" -n 2 --dist loadfile --durations=30

test-all: $(TESTS)
	$(VENV)/bin/ruff check latentjax tests benchmarks tools
	$(VENV)/bin/python -m pytest tests -q -n 2 --dist loadfile --durations=30

bench: $(BENCH)
	$(VENV)/bin/python -m benchmarks

mutate: $(TESTS)
	$(VENV)/bin/python tools/mutate.py

lint: $(TESTS)
	$(VENV)/bin/ruff check latentjax tests benchmarks tools
	$(VENV)/bin/ruff format --check latentjax tests benchmarks tools

clean:
	rm -rf $(VENV) runs
