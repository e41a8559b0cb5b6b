"""Synthetic datasets written to disk in real formats (shapes, driving), generated once and
published atomically (:mod:`.publish`)."""

from __future__ import annotations

from ...errors import ConfigError


def synth_classes(kind: str | None) -> list[str]:
    """The class list a generator's datasets will have, without generating anything."""
    if kind == "shapes":
        from .shapes import SHAPE_CLASSES

        return list(SHAPE_CLASSES)
    if kind == "driving":
        return []  # depth sequences have no classes
    raise ConfigError(f"data.synth.kind: unknown generator {kind!r} (shapes, driving)")
