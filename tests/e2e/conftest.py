"""Fixtures for end-to-end tests against a real control plane.

Without KUBECONFIG the session starts its own kwok cluster (real etcd, kube-apiserver,
kube-controller-manager and kube-scheduler; fake CPU and GPU nodes) from the binaries
`make tools` builds, plus the pod runner that really runs the project's pods on CPU-pool
nodes, and an S3 server (versitygw, bucket lms). With KUBECONFIG set (e.g. a kind cluster) the
tests run against that cluster.
Every wait is bounded and every process started here is stopped, even when a test fails.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lms_harness.cluster import ClusterError, cluster_down, cluster_up, podrunner_command, tools_bin
from lms_harness.processes import WaitTimeout, kill_group, wait_until
from lms_harness.s3server import S3Error, start_s3, stop_s3

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll predicate until it returns something truthy; fail the test after timeout seconds.

    Exceptions from the predicate count as "not yet"; the last one is shown on timeout.
    """
    try:
        return wait_until(predicate, timeout, what, interval)
    except WaitTimeout as exc:
        pytest.fail(str(exc), pytrace=False)


@dataclass
class Cluster:
    """A control plane the tests talk to."""

    kubeconfig: Path
    kubectl_bin: str
    local: bool                       # started by this session (kwok + pod runner)
    state_dir: Path | None = None     # pod runner state (PVC folders, pod logs) when local
    name: str | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    s3: dict[str, str] | None = None  # AWS_* of the session's S3 server (bucket lms) when local

    def pvc_dir(self, namespace: str, claim: str) -> Path:
        """Local folder that backs a PVC for pods the runner runs (local clusters only)."""
        assert self.state_dir is not None, "only a local cluster maps PVCs to folders"
        return self.state_dir / "pvc" / namespace / claim


def _tools_bin() -> str:
    """Folder with the pinned binaries (built on first use, reused from the cache after)."""
    try:
        return tools_bin()
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's cluster: KUBECONFIG when set, else a fresh local kwok cluster + pod runner."""
    given = os.environ.get("KUBECONFIG")
    if given:
        kubectl_bin = shutil.which("kubectl")
        if kubectl_bin is None:
            pytest.fail("KUBECONFIG is set but kubectl is not on PATH", pytrace=False)
        yield Cluster(Path(given), kubectl_bin, local=False)
        return

    bin_dir = _tools_bin()
    name = f"lms-e2e-{os.getpid()}"
    base = tmp_path_factory.mktemp("cluster")
    kubeconfig = base / "kubeconfig"
    state_dir = base / "state"
    cluster = Cluster(kubeconfig, str(Path(bin_dir) / "kubectl"), local=True, state_dir=state_dir, name=name)
    runner_out = open(base / "podrunner.out", "wb")

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # pytest then runs the teardown below

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        try:
            cluster_up(name, kubeconfig, bin_dir, timeout=300)
        except ClusterError as exc:
            pytest.fail(str(exc), pytrace=False)
        state_dir.mkdir(parents=True, exist_ok=True)
        runner = subprocess.Popen(podrunner_command(kubeconfig, state_dir), stdout=runner_out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        cluster.processes.append(runner)
        try:
            cluster.s3 = start_s3(base, bin_dir)
        except S3Error as exc:
            pytest.fail(str(exc), pytrace=False)
        yield cluster
    finally:
        for proc in reversed(cluster.processes):
            kill_group(proc, 30.0)
        stop_s3(base)
        runner_out.close()
        cluster_down(name, bin_dir, timeout=120)
        signal.signal(signal.SIGTERM, previous)


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Kubectl:
    """Run the cluster's kubectl: kubectl("get", "pods", "-n", ns, input=None, check=True)."""
    def run(*args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [cluster.kubectl_bin, "--kubeconfig", str(cluster.kubeconfig), *args]
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}", pytrace=False)
        return done

    return run


@dataclass
class K8s:
    """Typed API groups of the official Python client, bound to the cluster."""

    client: Any
    core: Any
    apps: Any
    batch: Any
    custom: Any
    apiext: Any


@pytest.fixture(scope="session")
def k8s(cluster: Cluster) -> Iterator[K8s]:
    """Kubernetes Python client for the session's cluster."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield K8s(api, client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api),
              client.CustomObjectsApi(api), client.ApiextensionsV1Api(api))
    api.close()


@pytest.fixture
def namespace(k8s: K8s, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, ready for pods (default ServiceAccount exists); deleted after."""
    labels: dict[str, str] = {}
    marker = request.node.get_closest_marker("namespace_labels")
    if marker is not None:
        labels.update(marker.args[0])
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    k8s.core.create_namespace({"metadata": {"name": name, "labels": labels}})
    try:
        wait_for(lambda: k8s.core.read_namespaced_service_account("default", name), 60,
                 f"the default ServiceAccount in namespace {name}")
        yield name
    finally:
        from kubernetes.client.rest import ApiException

        try:
            k8s.core.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "namespace_labels(labels): labels for the test's namespace fixture")


def to_json(obj: Any) -> str:
    """Manifest dict as JSON for `kubectl apply -f -`."""
    return json.dumps(obj)
