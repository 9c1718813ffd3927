# Each target sets itself up from a fresh clone: a .venv with the package,
# its [hermes] extra (hermes-agent from PyPI) and the test tools.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-host test-compat test-wheel bench reliability clean

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

# The release as users get it: `python -m build` (an sdist, and the wheel built from it), the
# wheel installed (not editable) with [hermes,test] into a fresh venv, then its console script,
# the demo and a smoke subset of the tests run against the installed package, from a folder
# where the source tree is not importable (tests/test_package.py checks where it came from);
# last, the real WebUI started through the wheel's launcher (python server.py, each snapshot found).
WHEEL_VENV ?= .venv-wheel
SMOKE_TESTS ?= tests/test_package.py tests/test_launcher.py tests/test_cli.py tests/test_installer.py
WHEEL_PYTEST = cd $(WHEEL_VENV) && WEBUI_INSIGHTS_TEST_INSTALLED=1 bin/python -I -m pytest -q -p no:cacheprovider \
	--rootdir $(CURDIR) -c $(CURDIR)/pyproject.toml
test-wheel: $(STAMP)
	rm -rf dist $(WHEEL_VENV)
	$(PY) -m build --quiet --outdir dist .
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$$(ls dist/*.whl)[hermes,test]"
	cd $(WHEEL_VENV) && bin/webui-insights --version
	cd $(WHEEL_VENV) && bin/webui-insights demo
	$(WHEEL_PYTEST) $(addprefix $(CURDIR)/,$(SMOKE_TESTS))
	$(WHEEL_PYTEST) $(CURDIR)/tests/test_real_host_launcher.py -k "server.py or no-host"

bench: $(STAMP)
	$(PY) -m benchmarks

# The fault-injection suite with many more generated inputs, then its table
# (exit 1 unless every scenario is 0 host errors / 0 lost after recovery), and the model of
# the world (tests/test_world_model.py) with 2000 histories of 40 steps.
reliability: $(STAMP)
	WEBUI_INSIGHTS_HYPOTHESIS_EXAMPLES=2000 $(PY) -m pytest -q tests/reliability
	WEBUI_INSIGHTS_MODEL_RANDOM=1 WEBUI_INSIGHTS_MODEL_EXAMPLES=2000 WEBUI_INSIGHTS_MODEL_STEPS=40 $(PY) -m pytest -q tests/test_world_model.py
	$(PY) tests/reliability/report.py --full

clean:
	rm -rf $(VENV) .venv-compat $(WHEEL_VENV) dist .pytest_cache .hypothesis
