# Local control plane for the sandbox and the e2e tests (no Docker needed).
#   make tools          build or reuse pinned kube-apiserver, kube-controller-manager,
#                       kube-scheduler, kubectl, etcd, kwok, kwokctl, helm, versitygw (S3), KEDA,
#                       Prometheus; prints their folder
#   make sandbox        cluster + CRD + operator + pod runner in the background (.sandbox/);
#                       AUTOSCALING=1 adds Prometheus and KEDA (sandbox/autoscaling.sh)
#   make sandbox-down   stop all of it, delete the cluster, remove .sandbox/
#   make upload-example copy the bundled MiniLM to the sandbox bucket (examples/minilm-s3.yaml)
#   make test-e2e       e2e tests on a fresh local cluster (or $KUBECONFIG when set)
#   make test-e2e-kind  the same tests on a kind cluster (needs Docker and kind)

.PHONY: tools sandbox sandbox-down upload-example test-e2e test-e2e-kind

KIND ?= kind
KIND_CLUSTER ?= lms-e2e
LMS_IMAGE ?= lms-operator:dev

tools:
	@tools/build.sh

AUTOSCALING ?= 0

sandbox: venv
	@AUTOSCALING=$(AUTOSCALING) sandbox/up.sh

sandbox-down:
	@sandbox/down.sh

upload-example: venv
	@sandbox/upload-example.sh

test-e2e: venv tools
	$(PYTEST) tests/e2e -m e2e

test-e2e-kind: venv
	@sandbox/kind-e2e.sh "$(KIND)" "$(KIND_CLUSTER)" "$(LMS_IMAGE)"
