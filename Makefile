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
	$(BIN)/pip install -q -e ".[dev,export,t2i,deploy]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m distill.demo

# One pytest-xdist worker per core (at most 4; tests/conftest.py gives each worker one intra-op thread), which
# keeps both cores of a small machine busy through the suite's many tiny-model tests. --durations=10: the ten
# slowest tests, so a test that outgrows the fast suite's budget shows up.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto --maxprocesses=4 --durations=10

# In workers too (each worker builds its own module-scoped fixtures, e.g. tests/test_deploy.py's programs).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -n auto --maxprocesses=4 -p no:cacheprovider --durations=10

# Benchmarks behind the tables of docs/benchmarks.md: each script timed, every ratio compared with the previous run
# (benchmarks/results/rerun.json), then every table rendered from the JSON results (benchmarks/update_docs.py).
bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

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
