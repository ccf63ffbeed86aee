# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint benchmark blender-binary

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Inference only: numpy, onnxruntime, OpenEXR. Then denoise the shipped example render.
demo: $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	$(BIN)/kprcan demo

# Blender 5.0 as a module lives in a side environment: one interpreter cannot hold two bpy versions.
BPY5 := .venv-bpy5/bin/python
$(BPY5):
	$(PYTHON) -m venv .venv-bpy5
	.venv-bpy5/bin/python -m pip install -q "bpy==5.0.1" numpy

# A real Blender binary for tests/test_blender_binary.py: Debian's, where apt-get runs as root. Never fails:
# without it that test skips and says why.
blender-binary:
	@command -v blender >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  blender >/dev/null; } || echo "make: no blender binary installed (needs apt-get as root)"

# Everything the tests need (torch CPU 2.13.0, bpy 4.5 and 5.0, OIDN, Debian's blender, ...), then the suite.
test: $(BIN)/python $(BPY5) blender-binary
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/ruff check .
	@# pytest exits 5 when it collected no test: that must fail, not pass silently.
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo 'no tests collected' >&2; exit 1; fi; exit $$rc

lint: $(BIN)/python
	$(BIN)/ruff check .

# Needs OIDN (pyoidn) for the baseline rows; no torch. Means something on an idle machine only: the output
# is marked NOT AN IDLE MACHINE when the load average or other processes' CPU time says otherwise.
benchmark: $(BIN)/python
	$(BIN)/python -m pip install -q -e . "pyoidn>=2.3"
	$(BIN)/python benchmarks/benchmark_speed.py --models fast --frames 1 --rounds 5   # quality: a GPU model
