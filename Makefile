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

# Every benchmark prints a table of ratios measured side by side in the same run (see benchmarks/*.py).
BENCH_EXPERIMENTS ?= mnist37-linear,bn-eps-sweep-mnist,input-dim-linear
bench: $(BIN)/.installed  ## speed vs plain PyTorch and Foolbox, concurrent processes, whole experiments, GPU, Ray vs in-process sweep (~1.5 h on 2 CPUs)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_mlp.py
	$(BIN)/python benchmarks/bench_attacks.py
	$(BIN)/python benchmarks/bench_concurrency.py
	$(BIN)/python benchmarks/bench_experiments.py --ids $(BENCH_EXPERIMENTS)
	$(BIN)/python benchmarks/bench_gpu.py
	$(BIN)/python benchmarks/bench_corruptions.py
	$(BIN)/python benchmarks/bench_vgg_cpu.py
	$(BIN)/python benchmarks/bench_ray.py

clean:
	rm -rf $(VENV) results
