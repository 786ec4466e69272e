"""What the operator promises beyond the happy path, on the digits classifier (fast):

- an operator upgrade that keeps the compression format version changes nothing;
- a published version that vanished from (or was altered in) the repository is rebuilt;
- a rollout past its progress deadline is Degraded while an earlier version serves, else Failed.
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Cluster, K8s, Kubectl, wait_for
from .operator_fixtures import (CLAIM, Operator, condition, events_of, operator,  # noqa: F401
                                operator_crds, wait_phase)
from .test_operator_digits import COMPRESS_TIMEOUT, apply, digits, digits_teacher, jobs, replica_sets  # noqa: F401

pytestmark = pytest.mark.e2e

UPGRADED = "99.0.0"


def test_an_upgrade_with_the_same_format_version_leaves_every_resource_alone(
        k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator, digits_teacher: Path, tmp_path: Path) -> None:
    apply(kubectl, namespace, digits("digits", digits_teacher))
    status = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)
    deployment = k8s.apps.read_namespaced_deployment("digits-triton", namespace)
    rs_before = {r.metadata.name for r in replica_sets(k8s, namespace, "digits")}
    jobs_before = {j.metadata.name for j in jobs(k8s, namespace, "digits")}

    # The next release of the package: same code and format version, another package version.
    site = tmp_path / "upgrade"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import lms_operator\nlms_operator.__version__ = {UPGRADED!r}\n")
    operator.stop()
    operator.extra_env["PYTHONPATH"] = str(site)
    shown = subprocess.run([sys.executable, "-m", "lms_operator.cli", "--version"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(site)}, timeout=60)
    assert shown.stdout.strip() == f"lms {UPGRADED}", shown
    operator.start()
    time.sleep(25)  # the start-up pass of every resource plus one resync sweep (20 s in these tests)
    after = wait_phase(k8s, namespace, "digits", {"Ready"}, 30, operator)
    assert after["modelVersion"] == status["modelVersion"] == after["desiredVersion"]
    assert {j.metadata.name for j in jobs(k8s, namespace, "digits")} == jobs_before
    assert {r.metadata.name for r in replica_sets(k8s, namespace, "digits")} == rs_before
    now = k8s.apps.read_namespaced_deployment("digits-triton", namespace)
    assert now.metadata.generation == deployment.metadata.generation
    assert now.metadata.resource_version == deployment.metadata.resource_version


def test_a_wiped_version_is_rebuilt(cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator,
                                    digits_teacher: Path) -> None:
    apply(kubectl, namespace, digits("digits", digits_teacher))
    status = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)
    key = status["modelVersion"]
    version = cluster.pvc_dir(namespace, CLAIM) / namespace / "digits" / key
    first_job = jobs(k8s, namespace, "digits")[0].metadata.uid
    assert (version / ".complete").is_file()

    shutil.rmtree(version)  # a repository volume wiped under a Ready resource
    wait_for(lambda: "Rebuilding" in {e.reason for e in events_of(k8s, namespace, "digits")}, 60,
             "the operator to notice the missing version (next resync)")
    wait_for(lambda: (version / ".complete").is_file(), COMPRESS_TIMEOUT, "the version to be published again")
    status = wait_phase(k8s, namespace, "digits", {"Ready"}, 120, operator)
    assert status["modelVersion"] == key
    rebuilt = jobs(k8s, namespace, "digits")
    assert len(rebuilt) == 1 and rebuilt[0].metadata.uid != first_job


def test_a_rollout_past_its_progress_deadline(k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator,
                                             digits_teacher: Path) -> None:
    nowhere = {"lms.dev/pool": "no-such-pool"}
    stuck = digits("stuck", digits_teacher)
    stuck["spec"]["serving"].update(progressDeadlineSeconds=10, nodePool={"nodeSelector": nowhere})
    apply(kubectl, namespace, stuck)
    status = wait_phase(k8s, namespace, "stuck", {"Failed"}, COMPRESS_TIMEOUT, operator)
    assert condition(status, "Ready")["reason"] == "ProgressDeadlineExceeded", status
    assert condition(status, "ServingReady")["reason"] == "ProgressDeadlineExceeded", status

    good = digits("digits", digits_teacher)
    good["spec"]["serving"]["progressDeadlineSeconds"] = 10
    apply(kubectl, namespace, good)
    served = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)["modelVersion"]
    moved = copy.deepcopy(good)
    moved["spec"]["serving"]["nodePool"] = {"nodeSelector": nowhere}  # same version, pods that cannot schedule
    apply(kubectl, namespace, moved)
    status = wait_phase(k8s, namespace, "digits", {"Degraded"}, 120, operator)
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "ProgressDeadlineExceeded"), status
    assert status["modelVersion"] == served and status["readyReplicas"] >= 1
