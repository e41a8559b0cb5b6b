"""Shared tensor mechanics used by several tasks: box coding, anchors, matching, camera geometry."""
