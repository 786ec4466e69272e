# The README's two commands are `make serve-example` and `make test`.
# Cluster tooling (tools, sandbox, sandbox-down, test-e2e-kind) lives in mk/*.mk.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv test test-unit serve-example render

venv:
	@scripts/bootstrap

render: venv
	$(VENV)/bin/lms render examples/minilm-cpu.yaml

test-unit: venv
	$(PY) -m pytest tests/unit -q

-include mk/*.mk
