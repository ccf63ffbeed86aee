# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bpy5 benchmark

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Inference only: numpy, onnxruntime, OpenEXR. Then denoise the shipped example render.
demo: $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	$(BIN)/kprcan demo

# Everything the tests need (torch CPU 2.13.0, bpy 4.5, OIDN, ...), then the whole suite.
test: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/ruff check .
	@# pytest exits 5 when it collected no test: that must fail, not pass silently.
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo 'no tests collected' >&2; exit 1; fi; exit $$rc

lint: $(BIN)/python
	$(BIN)/ruff check .

benchmark: $(BIN)/python
	$(BIN)/python benchmarks/benchmark_speed.py
