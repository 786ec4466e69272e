"""Level-based reconcile steps: validate, ensure compression, ensure serving, derive status."""
