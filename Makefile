# The two set-up commands of the README. Each creates/updates .venv itself (Python 3.10+; CPU-only machines get the
# pinned CPU torch, see pyproject.toml).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: demo test lint clean

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

clean:
	rm -rf $(VENV) $(DEMO_OUT)
