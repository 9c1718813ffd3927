# Each target sets itself up from a fresh clone: a .venv with the package,
# its [hermes] extra (hermes-agent from PyPI) and the test tools.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-host test-compat bench reliability clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[hermes,test]'
	touch $@

demo: $(STAMP)
	$(PY) -m webui_insights demo

test: $(STAMP)
	$(PY) -m pytest -q

# The real hermes-webui server (each snapshot in ../shared/hosts, or WEBUI_SRC=/path/to/hermes-webui)
# with the real hermes-agent and a fake LLM on 127.0.0.1, end to end (tests/hosts/README.md).
test-host: $(STAMP)
	$(PY) -m pytest -q -m "real_host or real_host_hint" tests

# The suite again in one virtual environment per hermes-agent (oldest, newest)
# and wrapt (1.x, 2.x) combination; writes compat/RESULTS.md and the README table.
test-compat: $(STAMP)
	$(PY) compat/run_matrix.py

bench: $(STAMP)
	$(PY) -m benchmarks

# The fault-injection suite with many more generated inputs, then its table
# (exit 1 unless every scenario is 0 host errors / 0 lost after recovery).
reliability: $(STAMP)
	WEBUI_INSIGHTS_HYPOTHESIS_EXAMPLES=2000 $(PY) -m pytest -q tests/reliability
	$(PY) tests/reliability/report.py --full

clean:
	rm -rf $(VENV) .venv-compat .pytest_cache .hypothesis
