# codesign: make demo | make test | make profile TARGET=rpi4
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TARGET ?= host
PYTEST_ARGS ?=
RUN_ARGS ?=
PROFILE_ARGS ?=

.PHONY: install demo test lint profile bench-extraction bench-search bench-accuracy clean firmware

install: $(STAMP)

# torch is installed first and pinned to the CPU wheel, so that nothing later (sentence-transformers,
# pulled by the packaged model) can resolve a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,packaged-model]' torch==2.13.0
	touch $(STAMP)

demo: install
	$(BIN)/codesign run $(RUN_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check toolchain tests benchmarks

firmware:
	$(MAKE) -C firmware_stubs

profile: install
	$(BIN)/codesign profile --target $(TARGET) --run-if-missing $(PROFILE_ARGS)

bench-extraction: install
	$(BIN)/python benchmarks/extraction_bench.py

bench-search: install
	$(BIN)/python benchmarks/search_bench.py

bench-accuracy: install
	$(BIN)/python benchmarks/accuracy_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
