"""Backbone names every layer may need without building a network (no torch import)."""

DEFAULT_BACKBONE = "efficientnet_lite0"
RANDOM = "random"
"""``--weights random``: untrained parameters, for tests and smoke runs only."""
