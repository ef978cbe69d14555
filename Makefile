# The two set-up commands: `make demo` and `make test`. Each creates .venv and installs the project when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench reproduce lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch/torchvision come from pip's index (wheels on local disk where the machine has them).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,export,t2i]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m distill.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -p no:cacheprovider

# Benchmarks behind the README's tables (under 20 minutes on 2 cores), then the tables copied into README.md.
bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/overhead.py --steps 10 --rounds 2 --warmup 2
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/sampling_quality.py --repeats 3
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/scaling.py --batches 16 64 --sizes 16 32 64 --repeats 3
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/speed_features.py --steps 5 --rounds 1
	$(BIN)/python benchmarks/update_readme.py

# Retrain the shipped teacher, evaluator and students from their configs into runs/reproduce (hours on a CPU).
reproduce: $(STAMP)
	$(BIN)/python benchmarks/reproduce.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf runs lightning_logs .pytest_cache .ruff_cache
