"""Local serving: pip-installed Triton with the onnxruntime shim backend, clients, load generator."""
