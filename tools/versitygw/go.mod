// Wrapper module pinning versitygw (Apache-2.0), the S3-compatible server the
// sandbox and the integration tests run over a posix folder.
module lms.dev/tools/versitygw

go 1.26.0

require github.com/versity/versitygw v1.8.0 // indirect
