# Two commands do all the set-up:  `make demo` (main job)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Datasets are read from here (MNIST/raw/*.gz); override with `make demo BNROBUST_DATA=/path`.
export BNROBUST_DATA ?= $(abspath $(CURDIR)/../shared/data)

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: pip takes the CPU build from local disk instead of a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,ray]'
	touch $@

demo: $(BIN)/.installed  ## Table 1 at the paper's settings (5 seeds x 4 models, real MNIST)
	$(BIN)/bnrobust run mnist37-linear --scale paper

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed  ## trainer/attacks and MLP trainer vs plain PyTorch; corruption suites; VGG8 on the CPU; Ray vs in-process sweep (~20 min)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_mlp.py
	$(BIN)/python benchmarks/bench_corruptions.py
	$(BIN)/python benchmarks/bench_vgg_cpu.py
	$(BIN)/python benchmarks/bench_ray.py

clean:
	rm -rf $(VENV) results
