# sparqforge: every target creates the virtual environment first when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sparqforge-installed
# torch is pinned to the CPU build that installs without a multi-GB CUDA download.
TORCH ?= torch==2.13.0
# The suite's tests are independent: two workers use both cores of the project machine.
PYTEST_ARGS ?= -n 2

.PHONY: venv demo test sim bench bitstream clean

venv: $(STAMP)

# The QONNX extra and Brevitas (which the QONNX tests export with) install with torch held
# at the pinned build: an unpinned resolution would replace it.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(PY) -m pip install --quiet -c $(VENV)/constraints.txt -e ".[qonnx,test,explore]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/sparqforge demo

# pytest exits with 5 when it collects no tests; that must fail, not pass.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

sim: $(STAMP)
	$(PY) -m pytest -m sim $(PYTEST_ARGS)

# make bitstream BOARD=ulx3s-85f [CONFIG=file.json] [SEEDS=3] [ROUTER=router1]: see
# docs/boards.md.
BOARD ?= ulx3s-85f
bitstream: $(STAMP)
	$(VENV)/bin/sparqforge build --board $(BOARD) $(if $(CONFIG),--config $(CONFIG)) \
	    $(if $(SEEDS),--seeds $(SEEDS)) $(if $(ROUTER),--router $(ROUTER))

bench: $(STAMP)
	$(VENV)/bin/sparqforge bench all --json

clean:
	rm -rf build sim_build .pytest_cache
