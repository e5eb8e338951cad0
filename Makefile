# cifarzoo: two commands to start — `make demo` and `make test`.
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# Extra pip requirement specs installed before the project (CI pins the torch pair on disk here).
TORCH_SPEC ?=

# The demo sweep: ResNet-preact-20 on a CIFAR-10 subset, two augmentations x three seeds.
# Offline: `make demo DATA=fake`, or `make demo DATA_ROOT=/path/with/cifar-10-batches-py`.
DATA       ?= cifar10
DATA_ROOT  ?=
DEMO_ARGS  ?= data.train_size=2000 data.test_size=1000 train.epochs=3 aug=standard,none seed=1,2,3
EXPERIMENT ?= demo

.PHONY: install demo serve test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(strip $(TORCH_SPEC)),$(PY) -m pip install -q $(TORCH_SPEC))
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) run.py -m data=$(DATA) data.download=true $(if $(DATA_ROOT),data.root=$(DATA_ROOT)) \
		tracking.experiment=$(EXPERIMENT) $(DEMO_ARGS)
	$(PY) -m cifarzoo.runs --experiment $(EXPERIMENT)

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
