"""LMS Operator: compress a model, publish a Triton repository, serve it on Kubernetes."""
__version__ = "0.1.0"
