"""The operator's ClusterRole: every call it makes is allowed, nothing more (no wildcards, no Secrets)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lms_operator.k8s.paths import PLURALS

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "deploy" / "rbac" / "clusterrole.yaml"


def rules() -> list[dict[str, Any]]:
    return list(yaml.safe_load(ROLE.read_text())["rules"])


def allowed(group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules())


def test_no_wildcards_and_no_secrets() -> None:
    for rule in rules():
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert "secrets" not in rule["resources"]


def test_every_call_of_the_operator_is_allowed() -> None:
    calls = [("serving.lms.dev", "largemodelservices", v) for v in ("get", "list", "watch")]
    calls += [("serving.lms.dev", "largemodelservices/status", "patch"),
              ("batch", "jobs", "create"), ("batch", "jobs", "get"), ("batch", "jobs", "watch"), ("batch", "jobs", "delete"),
              ("", "pods", "list"), ("", "persistentvolumeclaims", "get"), ("", "events", "create"),
              ("apps", "deployments", "patch"), ("apps", "deployments", "get"), ("apps", "deployments", "watch")]
    for kind in ("services", "poddisruptionbudgets", "horizontalpodautoscalers", "scaledobjects"):
        group = {"services": "", "poddisruptionbudgets": "policy", "horizontalpodautoscalers": "autoscaling",
                 "scaledobjects": "keda.sh"}[kind]
        calls += [(group, kind, "create"), (group, kind, "patch")]
    calls += [(group, kind, verb) for group, kind in (("autoscaling", "horizontalpodautoscalers"),
                                                      ("keda.sh", "scaledobjects")) for verb in ("get", "delete")]
    missing = [c for c in calls if not allowed(*c)]
    assert missing == []


def test_the_resource_itself_is_read_only_only_its_status_is_written() -> None:
    assert not any(allowed("serving.lms.dev", "largemodelservices", v) for v in ("patch", "update", "create", "delete"))


def test_every_kind_the_client_knows_is_covered() -> None:
    granted = {(g, r) for rule in rules() for g in rule["apiGroups"] for r in rule["resources"]}
    for (api_version, _kind), plural in PLURALS.items():
        group = api_version.split("/")[0] if "/" in api_version else ""
        assert (group, plural) in granted, plural


def test_delete_only_on_jobs_and_the_two_autoscaler_kinds() -> None:
    deletable = {(g, r) for rule in rules() if "delete" in rule["verbs"]
                 for g in rule["apiGroups"] for r in rule["resources"]}
    assert deletable == {("batch", "jobs"), ("autoscaling", "horizontalpodautoscalers"), ("keda.sh", "scaledobjects")}
