"""Model bricks; importing this registers every backbone, neck and head."""

from . import backbones, heads, necks  # noqa: F401
from .model import VisionModel

__all__ = ["VisionModel"]
