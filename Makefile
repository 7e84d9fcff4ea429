# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing and install the project with pinned torch.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-slow install clean-venv

$(STAMP): pyproject.toml Makefile onebigstate/kernels/csrc/obs_scan_cpu.cpp
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, from the pinned CPU wheel, so nothing later pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	# the core, the lab and the test tools in one resolution with torch==2.13.0 pinned, so no package can
	# replace it (`pip install onebigstate` alone is the core: torch, numpy, pydantic, pyyaml)
	$(PY) -m pip install -q -e '.[lab,dev]'
	# the compiled CPU scan (C++, torch's extension tooling), built once into .venv and cached;
	# without a compiler the project still installs and backend 'auto' runs the Python scan
	$(PY) -m onebigstate.kernels.cpu || true
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/obs demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean-venv:
	rm -rf $(VENV)
