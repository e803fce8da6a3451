# Entry points: `make demo` (upscale a real clip with the default model), `make app` (the web
# page on http://127.0.0.1:7860) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .cache/installed

APP_STAMP := .cache/installed-app

.PHONY: install demo app test lint bench ray device-pack

$(STAMP): pyproject.toml
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[weights,clips,dev]"
	$(PYTHON) -c "from skipvsr.kernels import main; main()"  # the fused CPU kernel, built once
	mkdir -p .cache && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m skipvsr demo -o out/demo_x4.mp4 --overwrite

$(APP_STAMP): $(STAMP)
	$(PIP) install -q -e ".[weights,clips,app]"
	touch $(APP_STAMP)

app: $(APP_STAMP)
	$(PYTHON) -m skipvsr app

test: $(STAMP)
	$(PYTHON) -m pytest -p no:cacheprovider

lint: $(STAMP)
	ruff format --check skipvsr tests benchmarks scripts
	ruff check skipvsr tests benchmarks scripts

# Ray for `skipvsr upscale --ray` (optional; the plain path never imports it).
ray: $(STAMP)
	$(PIP) install -q -e ".[ray]"

bench: $(STAMP)
	$(PYTHON) benchmarks/bench.py --json out/bench.json

# The inputs of the GPU job (scripts/device_job.py) in the git-ignored .device/; needs the
# training cache (scripts/prepare_train_data.py).
device-pack: $(STAMP)
	$(PYTHON) scripts/device_job.py pack
