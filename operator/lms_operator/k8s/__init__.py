"""The operator's one Kubernetes API client: paths, server-side apply, error mapping."""
