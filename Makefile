# Entry points, each self-sufficient on a fresh machine with Python 3.11:
#   make pipeline   -> installs (once) and runs the full pipeline on the embedded default
#   make test       -> installs (once) and runs the whole test suite (what CI runs)
#   make test-fast  -> the unit tests only (no test marked slow or e2e): the inner loop, ~2.5 min
PYTHON ?= python3.11
VENV   ?= .venv
STAMP  := $(VENV)/.installed

.PHONY: install pipeline test test-fast bench
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

pipeline: $(STAMP)
	$(VENV)/bin/sftflow pipeline

# Three workers (pytest-xdist): a test mostly waits on its servers and subprocesses, so three share 2 cores well
# (962 tests: 21 min on 2 cores this way; one worker left the cores half idle and CI took 35 min).
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 3 --dist worksteal

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -n 3 --dist worksteal -m "not slow and not e2e"

bench: $(STAMP)
	for b in benchmarks/*.py; do $(VENV)/bin/python $$b || exit 1; done
