"""Test, sandbox and benchmark harness for the LMS operator: a separate distribution
(`lms-harness`, harness/pyproject.toml) that the operator's wheel and image never carry.

- `podrunner` (with `mapping`, `status`, `lifecycle`): plays kubelet for the project's pods on a kwok cluster,
  preStop hooks before SIGTERM included
- `serviceproxy`: plays kube-proxy for the project's Services (started by the pod runner)
- `faultproxy`: counting, fault-injecting proxy in front of the API server
- `operator`: `lms operator` as a local process (the one way tests, benches and the sandbox start it)
- `cluster`: pinned binaries, kwok clusters, API clients, token kubeconfigs
- `ports`, `processes`: free ports, process-group stop, bounded waits
- `scale`: the parts of bench/scale.py
"""
