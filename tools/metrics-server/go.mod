// Wrapper module pinning metrics-server (Apache-2.0): it runs as a host process in the
// sandbox when the CPU HorizontalPodAutoscaler needs resource metrics, scraping the
// pod runner's kubelet /metrics/resource endpoint. The Kubernetes libraries are raised from
// metrics-server's own v0.33 to KEDA's v0.36.4 (tools/keda), so the build reuses their compiled
// packages; v0.8.0 builds against them unchanged.
module lms.dev/tools/metrics-server

go 1.26.0

require (
	github.com/go-logr/logr v1.4.3 // indirect
	k8s.io/api v0.36.4 // indirect
	k8s.io/apimachinery v0.36.4 // indirect
	k8s.io/apiserver v0.36.4 // indirect
	k8s.io/client-go v0.36.4 // indirect
	k8s.io/component-base v0.36.4 // indirect
	k8s.io/klog/v2 v2.140.0 // indirect
	k8s.io/kube-openapi v0.0.0-20260821135717-be32def86098 // indirect
	k8s.io/metrics v0.36.4 // indirect
	sigs.k8s.io/metrics-server v0.8.0 // indirect
)
