# ferkeras: `make train` then `make test` on a fresh machine (Python 3.11).
# Uses the active virtualenv if there is one, else creates .venv here.
PY ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,.venv/bin/python)
STAMP := $(dir $(PY)).ferkeras-installed
RUN_NAME ?= quickstart-$(shell date +%Y%m%d-%H%M%S)
export KERAS_BACKEND = tensorflow
export TF_CPP_MIN_LOG_LEVEL = 2
export ORT_DISABLE_TELEMETRY = 1

.PHONY: install train test test-fast lint export bench clean

$(PY):
	python3 -m venv .venv

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) -m ferkeras.cli train recipes/quickstart.yaml --run-dir runs/$(RUN_NAME)

# One pytest worker per core (pytest-xdist); each test file runs whole on one worker, so a
# file's module fixtures (a trained run shared by its tests) are built once.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile --durations=30

test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check ferkeras tests bench

export: $(STAMP)
	$(PY) -m ferkeras.commands.make_export

bench: $(STAMP)
	$(PY) bench/input_pipeline.py
	$(PY) bench/training_speed.py
	$(PY) bench/noisy_grid.py --configs ce,cycle_ce --seeds 0,1,2
	$(PY) bench/noisy_grid.py --configs oracle --seeds 0
	$(PY) bench/noisy_grid.py --configs ce,oracle --seeds 0 --model vgg4 --width 32 \
		--epochs 12 --work bench/.work/noisy_grid_full
	$(PY) bench/noisy_fer2013.py
	$(PY) bench/ship_ferplus.py
	$(PY) bench/inference.py
	$(PY) bench/serve_load.py

clean:
	rm -rf runs export .pytest_cache .ruff_cache
