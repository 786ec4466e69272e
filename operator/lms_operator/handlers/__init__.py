"""Thin kopf entry points: decorators in main.py, kopf settings in settings.py (the CLI is cli/operator.py)."""
