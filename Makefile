# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   set up, then audit the two sample scorers (v1 must fail its gate, v2 pass)
#   make test   set up, then run the test suite (what CI runs, via .ci/run)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-0.1.0

.PHONY: demo demo-run test lint bench sample-data clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	@$(MAKE) --no-print-directory demo-run

# The demo itself, on whatever sensaudit is given (tests run it with `python -m sensaudit`).
SENSAUDIT ?= $(BIN)/sensaudit
demo-run:
	@echo "== scorer_v1: trained on the extract where long ads happened to be the good ones"
	@$(SENSAUDIT) run configs/scorer_v1.yaml; code=$$?; \
	  if [ $$code -ne 1 ]; then echo "demo: expected scorer_v1 to fail its copy_length gate (exit 1), got $$code"; exit 1; fi
	@echo "== scorer_v2: retrained on data resampled to remove the length-quality correlation"
	@$(SENSAUDIT) run configs/scorer_v2.yaml
	@echo "== compare v1 -> v2 on the same rows: what the retrain changed"
	@$(SENSAUDIT) compare sample_data/scorer_v1.pt2 sample_data/scorer_v2.pt2 \
	  --config configs/scorer_v2.yaml --out reports/compare
	@echo "== demo OK: v1 flagged for copy_length (exit 1), v2 passed (exit 0); reports in reports/"

# Lint and type checks first: a check nobody runs rots.
test: $(STAMP)
	$(BIN)/ruff check sensaudit tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check sensaudit tests benchmarks scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/end_to_end.py
	$(BIN)/python benchmarks/methods.py

sample-data: $(STAMP)
	$(BIN)/python scripts/make_sample_data.py --out sample_data

clean:
	rm -rf $(VENV) reports .pytest_cache
