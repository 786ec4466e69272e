"""The LargeModelService API: schema, spec parsing, validation, version keys, status."""
