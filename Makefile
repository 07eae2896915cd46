# spikeforge: two commands do all the set-up on a fresh clone.
#   make demo   venv + install + fetch MNIST + one epoch of the Bondarev network
#   make test   venv + install + test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-quick bench-deps data lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch pinned first: anything unpinned would pull a multi-GB CUDA build.
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[test,events,distributed]"
	touch $(STAMP)

data: $(STAMP)
	$(VENV)/bin/spikeforge data fetch mnist

demo: data
	$(VENV)/bin/spikeforge train configs/bondarev-mnist.toml --set train.epochs=1 --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

# Peers for the benchmarks, installed without their dependencies so torch stays 2.13.0.
bench-deps: $(STAMP)
	$(PIP) install --quiet --no-deps "snntorch==1.0.0"
	# BindsNET's model code needs only torch, numpy and scipy (already here); its package
	# __init__ would also import torchvision, gymnasium, OpenCV: the benchmark skips it.
	$(PIP) install --quiet --no-deps "bindsnet==0.3.4"

bench: bench-deps data
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

bench-quick: bench-deps data
	for b in benchmarks/*.py; do $(PY) $$b --quick || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
