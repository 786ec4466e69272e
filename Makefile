# The README's two commands are `make serve-example` and `make test`.
# Cluster tooling (tools, sandbox, sandbox-down, test-e2e-kind) lives in mk/*.mk.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv test test-unit test-integration serve-example render
PYTEST := $(PY) -m pytest -p no:cacheprovider --strict-markers -ra

venv:
	@scripts/bootstrap

serve-example: venv
	scripts/serve-example

render: venv
	$(VENV)/bin/lms render examples/minilm-cpu.yaml

# Both tiers run on LMS_TEST_WORKERS processes (pytest-xdist), one test file per process.
LMS_TEST_WORKERS ?= 2
XDIST := -n $(LMS_TEST_WORKERS) --dist loadfile

test-unit: venv
	$(PYTEST) $(XDIST) tests/unit -q

test-integration: venv
	$(PYTEST) $(XDIST) tests/integration

# The whole suite: unit, integration (real compression, real Triton) and e2e (real control plane),
# the unit and integration tiers on both cores while tools/build.sh builds the binaries (scripts/test).
test: venv
	@LMS_TEST_WORKERS=$(LMS_TEST_WORKERS) scripts/test

-include mk/*.mk
