# Two commands on a fresh machine (Python 3.11): each installs into .venv first when it is missing.
#   make run    the main job: teachers, ensemble, HetComp student and MF baseline on the embedded ml-100k
#   make test   the linter, then the default test suite (what CI runs, through .ci/run)
# ARGS="..." passes arguments to the run (make run ARGS="--dataset ml-1m --data_path=data/"),
# PYTEST_ARGS="..." to pytest (make test PYTEST_ARGS="-m slow").

VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint docs-check

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip<26"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

run: $(VENV)/.installed
	$(PY) run_recbole_hetcomp.py $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# docs/errors.md is generated: rerun every case (about 7 minutes here) and fail if the page is not current
docs-check: $(VENV)/.installed
	$(PY) docs/make_errors.py --check
