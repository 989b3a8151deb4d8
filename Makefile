# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   set up, then walk the sample loop: v1's suspect found (exit 1), resample, v2 passes
#   make test   set up, then run the test suite (what CI runs, via .ci/run)
#   make test-fast  the quick loop while editing: the tests not marked slow, no lint
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-0.1.0

.PHONY: demo demo-run docs docs-chart docs-screenshots test test-fast lint bench sample-data clean test-torch-next version-fixtures

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	@$(MAKE) --no-print-directory demo-run

# The demo itself, on whatever sensaudit is given (tests run it with `python -m sensaudit`):
# `sensaudit demo`, as a user of the installed package runs it, so the two cannot drift. It
# copies the sample (sensaudit/sample/, package data) into $(DEMO_DIR) and runs the story
# there; it overwrites nothing, so an earlier run's folder (make's own output) goes first.
SENSAUDIT ?= $(BIN)/sensaudit
DEMO_DIR := sensaudit-demo
demo-run:
	@rm -rf $(DEMO_DIR)
	@$(SENSAUDIT) demo $(DEMO_DIR)

# The charts the README and the docs show, refreshed from the demo's reports (tests/test_docs.py
# checks that each committed copy is what the demo draws, under the pinned matplotlib).
DOCS_CHARTS := compare/chart-compare-shares.png:compare-shares.png \
  scorer_v1/chart-shares.png:checks/chart-shares-v1.png \
  scorer_v2/chart-shares.png:checks/chart-shares-v2.png \
  scorer_v1/chart-suspects.png:checks/chart-suspects.png \
  scorer_v1/chart-monotonicity.png:checks/chart-monotonicity.png \
  scorer_v1/chart-robustness.png:checks/chart-robustness.png \
  scorer_v1/chart-contributions.png:reports-chart-contributions.png \
  docs_more_checks/chart-linearity.png:checks/chart-linearity.png \
  docs_more_checks/chart-layer_health.png:checks/chart-layer_health.png
docs-chart: demo
	$(SENSAUDIT) run docs/examples/more_checks.yaml --out $(DEMO_DIR)/reports/docs_more_checks \
	  --quiet; test $$? -eq 1
	@for pair in $(DOCS_CHARTS); do cp "$(DEMO_DIR)/reports/$${pair%%:*}" "docs/$${pair#*:}"; done

# Screenshots of the demo's HTML reports for the docs (headless Chromium; docs/screenshots.json
# records the pages' structure, which tests/test_docs.py holds the demo's pages to).
docs-screenshots: demo
	$(BIN)/python scripts/docs_screenshots.py

# The docs site (mkdocs.yml) into site/. Strict: a broken link or anchor, or a page left out
# of the nav, fails the build; `make test` builds it too.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Lint, type and layer checks first: a check nobody runs rots. Then the docs, built strictly.
test: $(STAMP)
	$(BIN)/ruff check sensaudit tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/vulture sensaudit vulture_whitelist.py --min-confidence 60
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest

# The quick loop while editing (under 2 minutes on 2 cores): every module's tests except those
# marked slow (the sample demo, Ray, fresh interpreters, deliberate hangs; pyproject.toml says
# which). `make test` and CI run them all.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The next torch release beside the pinned one (torch 2.14.1, about 6 GB with its CUDA
# libraries): the model-file tests, the files each release wrote, and the sample audit, under
# it. Run before changing the model-file checks; CI keeps the pinned torch.
NEXT_TORCH := 2.14.1
NEXT_VENV := .venv-torch-next
NEXT_STAMP := $(NEXT_VENV)/.installed-$(NEXT_TORCH)
MODEL_FILE_TESTS := tests/test_torch_versions.py tests/test_pt2_safety.py tests/test_pt2_operators.py \
  tests/test_torchscript_limits.py \
  tests/test_torchscript_safety.py tests/test_bad_inputs.py tests/test_models.py \
  tests/test_pickle_walk.py tests/test_trust_model_code.py tests/test_model_class_file.py \
  tests/test_exported_members.py

$(NEXT_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(NEXT_VENV)
	sed 's/^torch==.*/torch==$(NEXT_TORCH)/' constraints.txt > $(NEXT_VENV)/constraints.txt
	$(NEXT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -c $(NEXT_VENV)/constraints.txt -e '.[dev]'
	touch $(NEXT_STAMP)

test-torch-next: $(NEXT_STAMP)
	$(NEXT_VENV)/bin/python -m pytest $(MODEL_FILE_TESTS)
	@$(MAKE) --no-print-directory demo-run SENSAUDIT=$(NEXT_VENV)/bin/sensaudit

# Model files written by the next torch, for tests/test_torch_versions.py (the pinned torch's
# are written by `$(BIN)/python scripts/make_version_fixtures.py`).
version-fixtures: $(NEXT_STAMP)
	$(NEXT_VENV)/bin/python scripts/make_version_fixtures.py

lint: $(STAMP)
	$(BIN)/ruff check sensaudit tests benchmarks scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/end_to_end.py
	$(BIN)/python benchmarks/compare.py
	$(BIN)/python benchmarks/methods.py
	$(BIN)/python benchmarks/discovery.py

sample-data: $(STAMP)
	$(BIN)/python scripts/make_sample_data.py --out sensaudit/sample/sample_data

clean:
	rm -rf $(VENV) reports $(DEMO_DIR) site .pytest_cache
