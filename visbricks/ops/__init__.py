"""Shared tensor mechanics used by several tasks: box coding, paired-box IoU, anchors, matching,
camera geometry."""
