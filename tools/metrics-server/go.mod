// Wrapper module pinning metrics-server (Apache-2.0): it runs as a host process in the
// sandbox when the CPU HorizontalPodAutoscaler needs resource metrics, scraping the
// pod runner's kubelet /metrics/resource endpoint. Its own Kubernetes libraries (v0.33):
// built against v0.36 it panics at start (its generated OpenAPI models are keyed by the old names).
module lms.dev/tools/metrics-server

go 1.26.0

require sigs.k8s.io/metrics-server v0.8.0 // indirect
