# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first and pinned, so pip never pulls a CUDA build on a CPU-only machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e '.[dev,audio,serve]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rnnkit train --corpus shakespeare --out runs/demo --cell rnn --hidden 256 \
		--max-time 150 --overwrite
	$(VENV)/bin/rnnkit generate runs/demo --prompt "ROMEO:" --max-new-tokens 300 --num-samples 2 --seed 1

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/char_lm.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
