"""Pure parts of the sandbox pod runner: volume/path mapping, command translation, status."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lms_harness.mapping import (TERMINATION_LOG_ENV, Mount, UnsupportedPod, build_local_container,
                                 container_env, container_mounts, expand_vars, rewrite_paths,
                                 substitute_triton_ports, translate_argv)
from lms_harness.status import (ContainerState, endpoint_annotations, pod_phase, pod_status,
                                termination_message)

STATE = Path("/state")
PORTS = {"http": 41000, "grpc": 41001, "metrics": 41002}


def job_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "minilm-compress-abc", "namespace": "team-a", "uid": "u1",
                     "labels": {"app.kubernetes.io/part-of": "lms"}},
        "spec": {
            "nodeName": "lms-cpu-0",
            "restartPolicy": "Never",
            "volumes": [
                {"name": "models", "persistentVolumeClaim": {"claimName": "lms-models"}},
                {"name": "sources", "hostPath": {"path": "/data/sources"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "kube-api-access", "projected": {"sources": []}},
            ],
            "containers": [{
                "name": "compress",
                "image": "lms-operator:dev",
                "command": ["lms", "compress"],
                "args": ["--spec-json", '{"a": 1}', "--out", "/models", "--model-dir", "/sources/minilm"],
                "env": [
                    {"name": "WORK", "value": "/scratch/tmp"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "DERIVED", "value": "$(WORK)/x and $$(WORK)"},
                ],
                "volumeMounts": [
                    {"name": "models", "mountPath": "/models"},
                    {"name": "sources", "mountPath": "/sources", "readOnly": True},
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                ],
            }],
        },
    }


def test_pvc_hostpath_and_emptydir_map_to_local_folders() -> None:
    pod = job_pod()
    mounts = container_mounts(pod["spec"]["containers"][0], pod["spec"]["volumes"], "team-a",
                              STATE / "pods" / "team-a_x", STATE)
    by_path = {m.mount_path: m.local_path for m in mounts}
    assert by_path == {
        "/models": "/state/pvc/team-a/lms-models",
        "/sources": "/data/sources",
        "/scratch": "/state/pods/team-a_x/volumes/scratch",
    }


def test_sub_path_and_unknown_volume() -> None:
    container = {"name": "c", "volumeMounts": [{"name": "models", "mountPath": "/m", "subPath": "team/a"}]}
    volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": "repo"}}]
    assert container_mounts(container, volumes, "ns", STATE / "p", STATE)[0].local_path == "/state/pvc/ns/repo/team/a"
    with pytest.raises(UnsupportedPod, match="volumeMount 'nope'"):
        container_mounts({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, [], "ns", STATE, STATE)


def test_rewrite_paths_only_whole_path_components() -> None:
    mounts = [Mount("/models/cache", "/local/cache"), Mount("/models", "/local/models")]
    assert rewrite_paths("--model-repository=/models/ns/name/key", mounts) == "--model-repository=/local/models/ns/name/key"
    assert rewrite_paths("/models/cache/x", mounts) == "/local/cache/x"
    assert rewrite_paths("/models", mounts) == "/local/models"
    assert rewrite_paths("/modelsX/y", mounts) == "/modelsX/y"
    assert rewrite_paths("/other/models/y", mounts) == "/other/models/y"
    assert rewrite_paths('{"out": "/models"}', mounts) == '{"out": "/local/models"}'


def test_expand_vars_follows_kubernetes_rules() -> None:
    env = {"A": "1"}
    assert expand_vars("$(A)-$(B)-$$(A)", env) == "1-$(B)-$(A)"


def test_container_env_values_field_refs_and_rewrites() -> None:
    pod = job_pod()
    container = pod["spec"]["containers"][0]
    mounts = [Mount("/scratch", "/local/scratch")]
    env = container_env(container, pod, mounts)
    assert env == {"WORK": "/local/scratch/tmp", "POD": "minilm-compress-abc",
                   "DERIVED": "/local/scratch/tmp/x and $(WORK)"}


def test_container_env_refs_need_lookup() -> None:
    pod = job_pod()
    container = {"name": "c", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(UnsupportedPod, match="env K: secret"):
        container_env(container, pod, [])
    assert container_env(container, pod, [], lambda kind, name, key: f"{kind}:{name}:{key}") == {"K": "secret:s:k"}


def test_lms_job_container_translates_to_local_command() -> None:
    pod = job_pod()
    local = build_local_container(pod, pod["spec"]["containers"][0], state_dir=STATE, bin_dir="/venv/bin",
                                  python="/venv/bin/python")
    assert local.argv == ["/venv/bin/lms", "compress", "--spec-json", '{"a": 1}', "--out",
                          "/state/pvc/team-a/lms-models", "--model-dir", "/data/sources/minilm"]
    assert local.env[TERMINATION_LOG_ENV] == "/state/pods/team-a_minilm-compress-abc/compress.termination-log"
    assert local.termination_log == local.env[TERMINATION_LOG_ENV]
    assert not local.triton


def test_termination_log_path_in_args_is_rewritten() -> None:
    pod = job_pod()
    container = {"name": "c", "command": ["sh", "-c", "echo done > /dev/termination-log"]}
    local = build_local_container(pod, container, state_dir=STATE, bin_dir="/b", python="/b/python")
    assert local.argv == ["sh", "-c", f"echo done > {local.termination_log}"]


def test_triton_container_gets_local_ports_and_repository() -> None:
    pod = job_pod()
    container = {
        "name": "triton",
        "command": ["tritonserver", "--model-repository=/models/team-a/minilm/abcd", "--http-port=8000",
                    "--grpc-port", "8001", "--strict-readiness=true"],
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
    }
    local = build_local_container(pod, container, state_dir=STATE, bin_dir="/b", python="/b/python", free_ports=PORTS)
    assert local.triton
    assert local.argv == ["tritonserver", "--model-repository=/state/pvc/team-a/lms-models/team-a/minilm/abcd",
                          "--http-port=41000", "--grpc-port=41001", "--strict-readiness=true", "--metrics-port=41002"]
    assert local.ports == PORTS
    with pytest.raises(UnsupportedPod, match="free ports"):
        build_local_container(pod, container, state_dir=STATE, bin_dir="/b", python="/b/python")


def test_substitute_triton_ports_adds_missing_flags() -> None:
    assert substitute_triton_ports([], PORTS) == ["--http-port=41000", "--grpc-port=41001", "--metrics-port=41002"]


def test_translate_argv() -> None:
    assert translate_argv(["python3", "-c", "print(1)"], "/v/bin", "/v/bin/python") == ["/v/bin/python", "-c", "print(1)"]
    assert translate_argv(["/usr/local/bin/lms", "operator"], "/v/bin", "/v/bin/python") == ["/v/bin/lms", "operator"]
    assert translate_argv(["sh", "-c", "true"], "/v/bin", "/v/bin/python") == ["sh", "-c", "true"]
    with pytest.raises(UnsupportedPod, match="neither command nor args"):
        translate_argv([], "/v/bin", "/v/bin/python")


def test_phase_follows_containers_and_restart_policy() -> None:
    waiting = ContainerState("a")
    running = ContainerState("a", state="running", started_at="t")
    ok = ContainerState("a", state="terminated", exit_code=0, started_at="t", finished_at="t")
    bad = ContainerState("b", state="terminated", exit_code=3, started_at="t", finished_at="t")
    assert pod_phase([waiting], "Never") == "Pending"
    assert pod_phase([running], "Never") == "Running"
    assert pod_phase([ok], "Never") == "Succeeded"
    assert pod_phase([ok, bad], "Never") == "Failed"
    assert pod_phase([ok, bad], "OnFailure") == "Running"
    assert pod_phase([ok], "Always") == "Running"
    assert pod_phase([ok, running], "Never") == "Running"


def test_pod_status_reports_exit_code_message_and_readiness() -> None:
    done = ContainerState("compress", image="img", state="terminated", exit_code=3, reason="Error",
                          message='{"error": "gate"}', started_at="s", finished_at="f")
    status = pod_status([done], "Never", "start", now="now")
    assert status["phase"] == "Failed"
    assert status["podIP"] == "127.0.0.1"
    term = status["containerStatuses"][0]["state"]["terminated"]
    assert term == {"exitCode": 3, "reason": "Error", "startedAt": "s", "finishedAt": "f", "message": '{"error": "gate"}'}
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "False" and ready["PodScheduled"] == "True"

    live = ContainerState("triton", state="running", started_at="s", ready=True)
    status = pod_status([live], "Always", "start", now="now")
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["containerStatuses"][0]["started"] is True
    live.ready = False
    assert {c["type"]: c["status"] for c in pod_status([live], "Always", "s")["conditions"]}["Ready"] == "False"


def test_termination_message_file_then_logs_on_error() -> None:
    assert termination_message(b'{"ok": true}\n', "log", 0, None) == '{"ok": true}'
    assert termination_message(b"", "boom\n", 1, None) == ""
    assert termination_message(b"", "boom\n", 1, "FallbackToLogsOnError") == "boom"
    assert len(termination_message(b"x" * 10000, "", 0, None)) == 4096


def test_endpoint_annotations() -> None:
    assert endpoint_annotations(PORTS) == {"sandbox.lms.dev/grpc": "127.0.0.1:41001",
                                           "sandbox.lms.dev/http": "127.0.0.1:41000",
                                           "sandbox.lms.dev/metrics": "127.0.0.1:41002"}


# -- the kwok configuration that leaves the runner's pods alone ---------------------------------

SANDBOX = Path(__file__).resolve().parents[2] / "sandbox"


def _docs(name: str) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all((SANDBOX / name).read_text()) if d]


def test_kwok_pod_stages_skip_project_pods_except_on_gpu_nodes() -> None:
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"]["lms.dev/pool"] for n in _docs("nodes.yaml")}
    assert sorted(nodes.values()) == ["cpu", "cpu", "gpu", "gpu"]
    gpu_nodes = sorted(name for name, pool in nodes.items() if pool == "gpu")
    stages = [d for d in _docs("kwok.yaml") if d["kind"] == "Stage"]
    pod_stages = [s for s in stages if s["spec"]["resourceRef"]["kind"] == "Pod"]
    assert {s["metadata"]["name"] for s in pod_stages} >= {"pod-ready", "pod-complete", "pod-delete"}
    for stage in pod_stages:
        exprs = {e["key"]: e for e in stage["spec"]["selector"]["matchExpressions"]}
        if stage["spec"].get("next", {}).get("delete"):
            assert set(exprs) == {".metadata.deletionTimestamp"}  # every pod being deleted goes
            continue
        part_of = exprs['.metadata.labels["app.kubernetes.io/part-of"]']
        if part_of["operator"] == "NotIn":
            assert part_of["values"] == ["lms"]
        else:
            assert part_of == {"key": part_of["key"], "operator": "In", "values": ["lms"]}
            assert sorted(exprs[".spec.nodeName"]["values"]) == gpu_nodes
    gpu = [n for n in _docs("nodes.yaml") if n["metadata"]["labels"]["lms.dev/pool"] == "gpu"]
    for node in gpu:
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]


def test_rewrite_is_single_pass_when_state_dir_is_under_a_mount() -> None:
    from lms_harness.mapping import Mount, rewrite_paths

    mounts = [Mount(mount_path="/models", local_path="/tmp/state/pvc/ns/lms-models", read_only=True),
              Mount(mount_path="/tmp", local_path="/tmp/state/volumes/tmp", read_only=False)]
    assert rewrite_paths("--model-repository=/models/ns/m/k", mounts) == \
        "--model-repository=/tmp/state/pvc/ns/lms-models/ns/m/k"
    assert rewrite_paths("/tmp/x /models", mounts) == "/tmp/state/volumes/tmp/x /tmp/state/pvc/ns/lms-models"


# -- graceful termination and the fake pod IP ----------------------------------------------------

def test_prestop_hooks_the_runner_understands() -> None:
    from lms_harness.lifecycle import PreStop, prestop

    assert prestop({"name": "c"}) is None
    assert prestop({"lifecycle": {"preStop": {"sleep": {"seconds": 7}}}}) == PreStop(sleep_s=7.0)
    assert prestop({"lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}}) == PreStop(sleep_s=5.0)
    assert prestop({"lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 1m 2.5s"]}}}}) == \
        PreStop(sleep_s=62.5)
    assert prestop({"lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 3 && kill 1"]}}}}) == \
        PreStop(argv=("/bin/sh", "-c", "sleep 3 && kill 1"))
    assert prestop({"lifecycle": {"preStop": {"exec": {"command": []}}}}).unsupported  # type: ignore[union-attr]
    assert "httpGet" in prestop({"lifecycle": {"preStop": {"httpGet": {"port": 80}}}}).unsupported  # type: ignore[union-attr]


def test_grace_seconds_default_and_cap() -> None:
    from lms_harness.lifecycle import MAX_GRACE_SECONDS, grace_seconds

    assert grace_seconds({"spec": {}}) == 30.0
    assert grace_seconds({"spec": {"terminationGracePeriodSeconds": 0}}) == 0.0
    assert grace_seconds({"spec": {"terminationGracePeriodSeconds": 3600}}) == MAX_GRACE_SECONDS
    assert grace_seconds({"spec": {"terminationGracePeriodSeconds": 5}}, cap=2) == 2


def test_fake_pod_ip_is_stable_distinct_and_in_status() -> None:
    from lms_harness.status import fake_pod_ip

    ips = {fake_pod_ip(f"uid-{i}") for i in range(200)}
    assert len(ips) == 200
    assert fake_pod_ip("uid-1") == fake_pod_ip("uid-1")
    assert all(ip.startswith("10.") and 1 <= int(ip.rsplit(".", 1)[1]) <= 254 for ip in ips)
    body = pod_status([ContainerState(name="c")], "Always", "t0", pod_ip="10.1.2.3")
    assert body["podIP"] == "10.1.2.3" and body["podIPs"] == [{"ip": "10.1.2.3"}] and body["hostIP"] == "127.0.0.1"


class _Runner:
    """Stands in for the API side of the pod runner: records status patches and deletions."""

    def __init__(self, state_dir: Path) -> None:
        import os
        import sys
        import threading

        self.state_dir = state_dir
        self.bin_dir = str(Path(sys.executable).parent)
        self.base_env = dict(os.environ)
        self.lock = threading.Lock()
        self.draining: set[Any] = set()
        self.statuses: list[dict[str, Any]] = []

    def patch_status(self, ns: str, name: str, status: dict[str, Any]) -> bool:
        self.statuses.append(status)
        return True

    def annotate(self, *args: Any) -> None: ...
    def delete_pod(self, *args: Any) -> None: ...
    def lookup(self, *args: Any) -> None: ...
    def materialize_volume(self, *args: Any) -> None: ...
    def track(self, proc: Any) -> None: ...
    def untrack(self, proc: Any) -> None: ...


TERM_RECORDER = """
import signal, sys, time
def term(*_):
    open(sys.argv[1], "w").write(repr(time.monotonic()))
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
open(sys.argv[1] + ".up", "w").write("up")
while True:
    time.sleep(0.05)
"""


@pytest.mark.parametrize(("lifecycle", "graceful", "min_wait"), [
    ({"preStop": {"sleep": {"seconds": 2}}}, True, 1.9),
    ({"preStop": {"exec": {"command": ["sh", "-c", "sleep 1.5"]}}}, True, 1.4),
    ({"preStop": {"exec": {"command": ["sh", "-c", "sleep 0.1; sleep 1"]}}}, True, 1.0),
    ({"preStop": {"sleep": {"seconds": 20}}}, False, 0.0),     # the runner shutting down skips it
])
def test_deleted_pod_runs_prestop_before_sigterm(tmp_path: Path, lifecycle: dict[str, Any], graceful: bool,
                                                 min_wait: float) -> None:
    import time

    from lms_harness.podrunner import PodWorker
    from lms_harness.processes import wait_until

    marker = tmp_path / "term"
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
           "spec": {"terminationGracePeriodSeconds": 10, "restartPolicy": "Always", "containers": [
               {"name": "main", "command": ["python", "-c", TERM_RECORDER, str(marker)], "lifecycle": lifecycle}]}}
    runner = _Runner(tmp_path)
    worker = PodWorker(runner, pod)  # type: ignore[arg-type]
    worker.start()
    wait_until(lambda: (tmp_path / "term.up").exists(), 30, "the container to start")
    assert runner.statuses[-1]["podIP"].startswith("10.")
    stopped = time.monotonic()
    worker.stop(delete=False, graceful=graceful)
    worker.join(30)
    assert not worker.is_alive()
    waited = float(marker.read_text()) - stopped
    assert min_wait <= waited < min_wait + 3.0, waited
