# ml_hpc: `make demo` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Which PyTorch build to install. Default: the CPU build (CI, laptops, this project's tests).
# On a GPU cluster install the CUDA build instead:  make install TORCH='torch>=2.6'
TORCH  ?= torch==2.13.0
# System packages the tests need: a real single-node SLURM cluster, and headless Chromium for the browser test.
SYS_PKGS := slurmctld slurmd slurm-client chromium chromium-driver
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install sysdeps demo test check nbtest pytest bench clean

$(VENV)/.installed: settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

sysdeps:
	@missing=""; for p in $(SYS_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; fi

# The main job on the embedded default (the local executor, no cluster needed): a config, then the same training as a notebook job,
# then a table of both runs and their curves in runs/demo-summary.png (examples/browse_results.ipynb browses them).
demo: install
	$(BIN)/mlhpc train examples/digits.yaml --run-dir runs/demo-digits
	$(BIN)/mlhpc run examples/train_digits.ipynb --run-dir runs/demo-notebook -p total_updates 300
	@echo "notebook job: output notebook runs/demo-notebook/output.ipynb, stats runs/demo-notebook/stats.csv, log runs/demo-notebook/train.log"
	$(BIN)/mlhpc results runs/demo-digits runs/demo-notebook --plot runs/demo-summary.png

# Everything CI runs: sync checks, notebook tests (slow ones too), integration tests on a real SLURM cluster.
test: install sysdeps
	$(MAKE) check
	$(MAKE) nbtest
	$(MAKE) pytest

check: install
	PATH=$(abspath $(BIN)):$$PATH bash tools/check_sync.sh

nbtest: install
	$(BIN)/nbdev_test --flags slow --n_workers 2 --timing

pytest: install sysdeps
	$(BIN)/python -m pytest tests -v --durations=40 -n 2 --dist loadgroup

bench: install
	$(BIN)/python bench/bench_trainer.py
	$(BIN)/python bench/bench_checkpoint.py
	$(BIN)/python bench/bench_sweep.py
	$(BIN)/python bench/bench_results.py
	$(BIN)/python bench/bench_notebook.py --threads 1 --updates 45000
	$(BIN)/python bench/bench_exit.py
	$(BIN)/python bench/bench_kernel_wait.py

clean:
	rm -rf $(VENV) runs _proc _docs *.egg-info
