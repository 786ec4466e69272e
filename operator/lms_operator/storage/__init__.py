"""Object storage and model sources: URI parsing, the S3 client, version manifests and retention."""
