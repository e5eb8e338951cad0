# cifarzoo: `make install [TORCH=cpu]`, `make demo [DATA=fake]`, `make ui`, `make test`.
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# TORCH=cpu: torch and torchvision from PyTorch's CPU wheel index (a few hundred MB, no CUDA libraries);
# empty: pip's default torch, the CUDA build on Linux x86_64 (~5.5 GB in the venv with its CUDA libraries).
TORCH      ?=
TORCH_INDEX = https://download.pytorch.org/whl/$(TORCH)
# Extra pip requirement specs installed before the project (CI pins the torch pair on disk here).
TORCH_SPEC ?=

# The demo sweep: ResNet-preact-20 on a CIFAR-10 subset, two augmentations x three seeds.
# Offline: `make demo DATA=fake`, or `make demo DATA_ROOT=/path/with/cifar-10-batches-py`.
DATA       ?= cifar10
DATA_ROOT  ?=
DEMO_ARGS  ?= data.train_size=2000 data.test_size=1000 train.epochs=3 aug=standard,none seed=1,2,3
EXPERIMENT ?= demo

.PHONY: install demo ui serve test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(strip $(TORCH)),$(PY) -m pip install -q torch torchvision --index-url $(TORCH_INDEX))
	$(if $(strip $(TORCH_SPEC)),$(PY) -m pip install -q $(TORCH_SPEC))
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) run.py -m data=$(DATA) data.download=true $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) \
		tracking.experiment=$(EXPERIMENT) $(DEMO_ARGS)
	$(PY) -m cifarzoo.runs --experiment $(EXPERIMENT)
	@echo; echo "median test error over the seeds of each configuration (python -m analysis table --experiment $(EXPERIMENT)):"
	$(PY) -m analysis table --experiment $(EXPERIMENT)
	@echo; echo "open the MLflow UI on these runs: make ui   (then http://127.0.0.1:$(or $(PORT),5000))"

ui: install  ## the MLflow UI on the runs' store (outputs/mlflow.db or $$MLFLOW_TRACKING_URI): PORT=5000
	$(VENV)/bin/mlflow ui --port $(or $(PORT),5000) --backend-store-uri \
		"$$($(PY) -c 'from cifarzoo.paths import default_tracking_uri; print(default_tracking_uri())')"

serve: install  ## MLflow server for cluster sweeps: HOST=0.0.0.0 PORT=5000 (runs: tracking.uri=http://host:port)
	$(PY) -m cifarzoo.tracking serve --host $(or $(HOST),127.0.0.1) --port $(or $(PORT),5000)

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --max-worker-restart=0 --timeout=900 --durations=25

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m cifarzoo.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) outputs/runs outputs/multirun
