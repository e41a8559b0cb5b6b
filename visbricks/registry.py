"""Name → constructor registries. A new brick is one class plus one ``@REGISTRY.register`` line."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from .errors import ConfigError


def check_arguments(
    fn: Callable[..., Any], where: str, hint: str, /, *args: Any, **kwargs: Any
) -> None:
    """Raise one ConfigError ``"{where}: {why}{hint}"`` unless ``fn(*args, **kwargs)`` binds.

    Every brick built from user keywords (backbone, neck, head, block) calls this first, so a
    misspelt or missing keyword is named where it was set, not raised as a TypeError from inside.
    """
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}{hint}") from None


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(
        self, name: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(obj: Callable[..., Any]) -> Callable[..., Any]:
            key = name or obj.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return add

    def get(self, name: str) -> Callable[..., Any]:
        if not isinstance(name, str):  # from an open mapping ({block: 1}): a TypeError below
            raise ConfigError(
                f"a {self.kind} is named by a string, got {type(name).__name__} {name!r} "
                f"(available: {', '.join(sorted(self._items))})"
            )
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}{hint} (available: {', '.join(sorted(self._items))})"
            )
        return self._items[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
BLOCKS = Registry("block")
DATASETS = Registry("dataset format")
TASKS = Registry("task")
CALLBACKS = Registry("callback")
