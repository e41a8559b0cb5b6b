"""Heads, registered by name in ``visbricks.registry.HEADS``."""

from . import classification, locate, ssd  # noqa: F401
