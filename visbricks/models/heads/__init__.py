"""Heads, registered by name in ``visbricks.registry.HEADS``.

A head is a class taking ``(in_channels, strides, **kwargs)`` with ``forward(features,
image_size) -> dict``. Tasks build theirs with :func:`build_head`: the task's own keyword
arguments (``num_classes``, ``anchor_generator`` ...) with the user's ``model.head_args`` on top.

Every module of this package is imported here, so a new head is one file with one
``@HEADS.register`` line. A head declares what it produces, and tasks check that rather than a
list of names:
- ``outputs``: the keys of its output dict (``("logits",)``, ``("boxes", "logits")``, ...);
- ``output_stride``: 1 when its outputs are per pixel at the input size (segmentation logits,
  disparity), None when they are per image or per anchor.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Sequence
from typing import Any

from torch import nn

from ...errors import ConfigError
from ...registry import HEADS, check_arguments

# Import every head module so its classes register (a new head needs no edit here).
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def build_head(
    name: str,
    in_channels: Sequence[int],
    strides: Sequence[int],
    head_args: dict | None = None,
    **task_kwargs: Any,
) -> nn.Module:
    """Head ``name`` for feature maps of ``in_channels``/``strides``.

    ``task_kwargs`` the head does not take are left out (a new head need not accept every
    argument a task offers); ``head_args`` are the user's and must all be accepted: a wrong
    keyword is one ConfigError naming it and the head's parameters.
    """
    cls = HEADS.get(name)
    if head_args is not None and not isinstance(head_args, dict):
        raise ConfigError(f"model.head_args must be a mapping, got {head_args!r}")
    params = inspect.signature(cls).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in task_kwargs.items() if open_kwargs or k in params}
    kwargs.update(head_args or {})
    channels, strides = [int(c) for c in in_channels], [int(s) for s in strides]
    names = [p for p in params if p not in ("in_channels", "strides")]
    hint = f" (its parameters: {', '.join(names)})"
    check_arguments(cls, f"model.head_args for head {name!r}", hint, channels, strides, **kwargs)
    try:
        return cls(channels, strides, **kwargs)
    except ConfigError as e:
        raise ConfigError(f"model.head {name!r}: {e}") from None
