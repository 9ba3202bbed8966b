# make run   : set up the venv and run the default `demo` recipe end to end (offline, CPU)
# make test  : set up the venv and run the test suite (what CI runs), on two pytest-xdist workers (TEST_WORKERS)
# make test-fast : the same without the tests marked slow (real engines, servers, subprocesses, a full pipeline)
# make lint : ruff's checks as configured in pyproject.toml (CI runs them before the tests)
# make docs : the docs site (MkDocs, strict: broken anchors fail; tests/test_docs.py checks every link)
VENV ?= .venv
STAMP := $(VENV)/.frpo-bench-installed
SHARED_DATA := $(abspath ../shared/data)
# Tests and CI read the published datasets from ../shared/data when it is there.
export FRPO_BENCH_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup browser run test test-fast lint docs clean
setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

# the tests' Chromium (for report.html's browser test), from the system's packages; `make run` needs none
browser:
	bash scripts/setup_browser.sh

run: setup
	$(VENV)/bin/frpo-bench run demo

# two workers: the suite keeps a 2-core machine about half idle (servers starting, subprocesses); tests that hold a
# vLLM engine or the Ray cluster run one at a time on one worker (tests/conftest.py)
TEST_WORKERS ?= 2
test: setup browser
	$(VENV)/bin/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadgroup tests

test-fast: setup browser
	$(VENV)/bin/python -m pytest -q -m "not slow" tests

lint: setup
	$(VENV)/bin/ruff check frpo_bench tests benchmarks

docs: setup
	$(VENV)/bin/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) runs site
