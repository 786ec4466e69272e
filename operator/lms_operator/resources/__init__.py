"""Pure builders: a LargeModelService in, Kubernetes objects (plain dicts) out. No API calls here."""
