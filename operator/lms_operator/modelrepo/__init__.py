"""Triton model repositories: layout of published versions and config.pbtxt."""
