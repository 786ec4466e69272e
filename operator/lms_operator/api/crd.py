"""The CustomResourceDefinition, generated from api.schema.

crds/largemodelservices.yaml is this function's output; a unit test keeps the
committed file (and the Helm chart's copy) identical to it.
"""
from __future__ import annotations

from typing import Any

import yaml

from lms_operator.api import schema as s


def build_crd() -> dict[str, Any]:
    root = {
        "type": "object",
        "description": "A model to compress, gate on quality and serve on Triton.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": s.SPEC,
            "status": s.STATUS,
        },
        "required": ["spec"],
        "x-kubernetes-validations": s.ROOT_RULES,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{s.PLURAL}.{s.GROUP}"},
        "spec": {
            "group": s.GROUP,
            "names": {"kind": s.KIND, "listKind": f"{s.KIND}List", "plural": s.PLURAL, "singular": s.SINGULAR,
                      "shortNames": s.SHORT_NAMES, "categories": ["lms"]},
            "scope": "Namespaced",
            "versions": [{
                "name": s.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": s.PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated values out in full: anchors would make the CRD hard to read and diff."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_crd() -> str:
    header = "# Generated from operator/lms_operator/api/schema.py by `lms crd`; do not edit by hand.\n"
    return header + yaml.dump(build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=120)
