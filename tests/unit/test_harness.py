"""The harness's pure parts: the operator's command line, metrics parsing, ports, bounded waits and
the scale bench's figures (the cluster-facing parts run in tests/e2e and bench/scale.py)."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lms_harness.operator import OperatorExited, OperatorProcess, metric_total, operator_command
from lms_harness.ports import free_port, free_ports
from lms_harness.processes import WaitTimeout, wait_until
from lms_harness.scale.measure import compare_snapshots, percentile, ready_curve, request_counts, request_mix
from lms_harness.scale.recorder import ready_pod_status
from lms_harness.scale.report import targets
from lms_harness.scale.setup import strip_conflicting_defaults


def test_operator_command_for_namespaces_and_for_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMS_FAULT_EXIT_AT", "before_job_create")  # an outer shell's crash point is not inherited
    argv, env = operator_command(Path("/k"), ("a", "b"), Path("/r"), 9000, 0, 15.0, standalone=True)
    assert argv[:4] == [sys.executable, "-m", "lms_operator.cli", "operator"]
    assert argv[4:] == ["--namespace", "a", "--namespace", "b", "--repository-root", "/r", "--metrics-port", "9000",
                        "--liveness-port", "0", "--resync-seconds", "15.0", "--standalone"]
    assert env["KUBECONFIG"] == "/k" and "LMS_FAULT_EXIT_AT" not in env
    argv, env = operator_command(Path("/k"), extra_env={"LMS_FAULT_EXIT_AT": "after_job_create"},
                                 profile=Path("/p.prof"))
    assert argv[1:4] == ["-m", "cProfile", "-o"] and "--all-namespaces" in argv
    assert env["LMS_FAULT_EXIT_AT"] == "after_job_create"


def test_the_operator_command_is_accepted_by_lms_operator() -> None:
    from lms_operator.cli import build_parser

    argv, _ = operator_command(Path("/k"), ("a",), Path("/r"), 1, 2, 20.0, standalone=True)
    args = build_parser().parse_args(argv[argv.index("operator"):])
    assert args.namespaces == ["a"] and args.metrics_port == 1 and args.liveness_port == 2 and args.standalone


def test_an_operator_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    op = OperatorProcess(tmp_path / "missing.kubeconfig", tmp_path / "operator.log", ("a",),
                         repository_root=Path("/nonexistent/lms"))
    with pytest.raises(OperatorExited, match="/nonexistent/lms"):
        op.start(ready_timeout=60)
    assert op.proc is not None and op.proc.returncode == 2


def test_metric_total_sums_matching_samples() -> None:
    text = ('# HELP lms_operator_reconciles_total x\n'
            'lms_operator_reconciles_total{trigger="spec"} 3.0\n'
            'lms_operator_reconciles_total{trigger="sweep"} 2.0\n'
            'lms_operator_reconciles_total_created{trigger="spec"} 99.0\n')
    assert metric_total(text, "lms_operator_reconciles_total") == 5.0
    assert metric_total(text, "lms_operator_reconciles_total", 'trigger="spec"') == 3.0


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


def test_wait_until_returns_the_value_or_names_the_last_error() -> None:
    assert wait_until(lambda: 7, 1, "seven") == 7

    def failing() -> int:
        raise ValueError("not yet")

    with pytest.raises(WaitTimeout, match="waiting for it.*ValueError: not yet"):
        wait_until(failing, 0.2, "it", interval=0.05)


def test_percentile_and_ready_curve() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile([4.0], 99) == 4.0
    curve = ready_curve([3.0, 1.0, 2.0], points=2)
    assert curve[0] == [0.0, 0] and curve[-1] == [3.0, 3]
    assert ready_curve([]) == []


def test_compare_snapshots_counts_only_real_changes() -> None:
    before = {"LargeModelService/a": ("1", 1, "t1"), "deployments/a-triton": ("5", 1, "t1"), "services/x": ("6", 1, None)}
    after = {"LargeModelService/a": ("1", 1, "t1"), "deployments/a-triton": ("9", 1, "t1"), "jobs/new": ("7", 1, None)}
    diff = compare_snapshots(before, after)
    # a status-only change of a child (resourceVersion alone) is the controllers', not a change
    assert diff["changes"] == 2 and diff["created"] == ["jobs/new"] and diff["deleted"] == ["services/x"]
    after["LargeModelService/a"] = ("2", 1, "t1")
    assert compare_snapshots(before, after)["lms_written"] == ["LargeModelService/a"]


def test_request_counts_and_mix() -> None:
    text = ('apiserver_request_total{code="200",resource="pods",subresource="status",verb="PATCH"} 4\n'
            'apiserver_request_total{code="201",resource="pods",subresource="status",verb="PATCH"} 1\n'
            'apiserver_request_total{code="200",resource="",verb="GET"} 2\n')
    counts = request_counts(text)
    assert counts == {"PATCH pods/status": 5.0, "GET -": 2.0}
    mix = request_mix({"PATCH pods/status": 1.0}, counts)
    assert mix == {"total": 6, "by_verb_resource": {"PATCH pods/status": 4, "GET -": 2}}


def test_strip_conflicting_defaults_only_touches_objects_with_rules() -> None:
    schema = {"properties": {"a": {"type": "object", "default": {}, "x-kubernetes-validations": [{"rule": "x"}]},
                             "b": {"type": "object", "default": {}}}}
    assert strip_conflicting_defaults(schema) == ["/properties/a"]
    assert "default" not in schema["properties"]["a"] and "default" in schema["properties"]["b"]


def test_ready_pod_status_marks_every_container_ready() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "triton", "image": "i"}]}}
    status = ready_pod_status(pod)
    assert status["phase"] == "Running" and status["containerStatuses"][0]["ready"] is True
    assert {c["type"] for c in status["conditions"]} == {"PodScheduled", "Initialized", "ContainersReady", "Ready"}


def test_targets_are_false_for_missing_figures() -> None:
    result = {"all_ready_s": None, "apply_to_deployment_p99_s": 1.5, "restart_recheck_s": 30.0, "restart_changes": 0,
              "paced": {"apply_to_deployment_p99_s": 0.4}}
    got = targets(result, 300.0)
    assert got == {"all_ready_s<=120": False, "apply_to_deployment_p99_s<=2": True, "operator_peak_rss_mib<=512": True,
                   "restart_recheck_s<=60": True, "restart_changes==0": True, "paced apply_to_deployment_p99_s<=2": True}


def test_harness_modules_run_as_commands() -> None:
    for module in ("lms_harness.operator", "lms_harness.podrunner", "lms_harness.faultproxy"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "--kubeconfig" in done.stdout, (module, done.stderr)


def test_timeline_first_and_p99_windows() -> None:
    from lms_harness.timeline import Sample, Timeline, p99_ms
    from lms_operator.serving.loadgen import RequestRecord

    timeline = Timeline(None, None, "ns", "dep", "hpa", "http://prometheus", "q")
    timeline.samples = [Sample(0.0, 1, 1, 1, 0.0), Sample(1.0, 1, 1, 2, 5e4), Sample(2.0, 2, 1, 2, 6e4),
                        Sample(3.0, 2, 2, 2, 1e4)]
    assert timeline.first(lambda s: (s.desired or 0) >= 2) == 1.0
    assert timeline.first(lambda s: s.ready >= 2) == 3.0
    assert timeline.first(lambda s: s.ready >= 2, after=3.5) is None
    assert timeline.as_rows()[1] == {"t": 1.0, "replicas": 1, "ready": 1, "desired": 2, "queue_us": 50000.0}
    assert timeline.describe(last=2).splitlines()[1:] == ["   2.0 | 2 | 1 | 2 | None | 60000", "   3.0 | 2 | 2 | 2 | None | 10000"]

    records = [RequestRecord(100.0 + i, 0.010 * (i + 1), True) for i in range(100)]
    records.append(RequestRecord(150.0, 99.0, False, "UNAVAILABLE"))    # failures never count as latency
    assert p99_ms(records, 100.0, 200.0) == pytest.approx(990.1, abs=0.5)
    assert p99_ms(records, 100.0, 110.0) == pytest.approx(99.1, abs=0.5)  # only requests started in the window
    assert p99_ms(records, 300.0, 400.0) is None


def test_hpa_reading_is_the_first_metric_the_controller_manager_read() -> None:
    from kubernetes import client

    from lms_harness.timeline import hpa_reading

    def status(*metrics: client.V2MetricStatus) -> client.V2HorizontalPodAutoscalerStatus:
        return client.V2HorizontalPodAutoscalerStatus(desired_replicas=2, current_replicas=1, current_metrics=list(metrics))

    def external(value: str | None = None, average: str | None = None) -> client.V2MetricStatus:
        return client.V2MetricStatus(type="External", external=client.V2ExternalMetricStatus(
            metric=client.V2MetricIdentifier(name="s0-prometheus"),
            current=client.V2MetricValueStatus(value=value, average_value=average)))

    assert hpa_reading(None) is None and hpa_reading(status()) is None
    assert hpa_reading(status(external(value="35123m"))) == 35.123
    assert hpa_reading(status(external(average="40k"), external(value="1"))) == 40000.0
    assert hpa_reading(status(external(), external(value="7"))) == 7.0   # an unread metric is skipped
