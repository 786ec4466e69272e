// Wrapper module pinning KEDA (Apache-2.0): its operator and metrics server run as
// host processes in the sandbox when autoscaling is switched on.
module lms.dev/tools/keda

go 1.26.0

require github.com/kedacore/keda/v2 v2.21.0 // indirect

// Repeated from KEDA's own go.mod: a main module ignores its dependencies' replaces.
replace github.com/nexus-rpc/nexus-proto-annotations v0.1.0 => github.com/nexus-rpc/nexus-proto-annotations v0.1.1-0.20260629224316-835bd8d49cb4
