# Two entry points on a fresh machine (see README): `make demo` and `make test`.
# Everything is installed into ./.venv from the package registries; nothing is downloaded at run time.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The differential conf test runs PyTorch's own parser from the CPU build of torch 2.13 (pip finds the
# local wheel on this project's machines; elsewhere add --index-url https://download.pytorch.org/whl/cpu).
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' '$(TORCH_SPEC)'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m toolkit demo --out out/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) out
