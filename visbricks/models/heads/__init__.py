"""Heads, registered by name in ``visbricks.registry.HEADS``."""

from . import classification, ssd  # noqa: F401
