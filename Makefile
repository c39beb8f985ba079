# The two set-up commands of the README. Each creates/updates .venv itself (Python 3.10+; CPU-only machines get the
# pinned CPU torch, see pyproject.toml).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: demo test lint clean mutate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the project's dependencies or its C++ parts change (the install compiles kernels/*.cpp).
$(VENV)/.installed: pyproject.toml CMakeLists.txt $(wildcard kernels/*.cpp kernels/*.h) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/fastpose demo --out $(DEMO_OUT)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml; slow: ~0.5 mutants/s on 2 busy cores, not part
# of `make test`). MUTANTS selects mutant names, e.g. make mutate MUTANTS='fastpose.decode*'. The tests run from
# mutants/tests, so ./shared links to ../shared for the tests that read ../shared/data (removed afterwards).
MUTANTS ?=
mutate: $(VENV)/.installed
	test -e shared || ln -s ../shared shared
	$(BIN)/mutmut run --max-children 2 $(MUTANTS); status=$$?; test -L shared && rm shared; exit $$status

clean:
	rm -rf $(VENV) $(DEMO_OUT) mutants
