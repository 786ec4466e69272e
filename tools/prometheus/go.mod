// Wrapper module pinning Prometheus (Apache-2.0), built with only Kubernetes service
// discovery, to scrape Triton's metrics in the sandbox when autoscaling is switched on.
module lms.dev/tools/prometheus

go 1.26.7

require github.com/prometheus/prometheus v0.316.0 // indirect
