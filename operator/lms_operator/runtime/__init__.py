"""The controller runtime: the operator's configuration (config.py) and its Controller (controller.py).

Sits between reconcile/ (one pass over one resource) and handlers/ (kopf's decorators): the
Controller decides when passes run (locks, priority slots, coalescing, backoff, requeues, the
periodic resync); the configuration is read and checked once at start-up. Nothing here is
module-level mutable state: both live in kopf's memo.
"""
