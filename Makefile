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

test-unit: venv
	$(PYTEST) tests/unit -q

test-integration: venv
	$(PYTEST) tests/integration

# The whole suite: unit, integration (real compression, real Triton) and e2e (real control plane).
test: venv tools
	$(PYTEST) tests/unit tests/integration tests/e2e

-include mk/*.mk
