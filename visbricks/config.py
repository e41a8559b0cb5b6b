"""Configs: shipped presets or any YAML, dotted ``key=value`` overrides, and strict validation.

The schema is the defaults themselves (``configs/defaults/base.yaml`` plus the task's file): a key
that is not there is unknown, a value whose type differs from the default's is wrong, and both
errors name the key and suggest the closest valid one. No torch import here, so argument errors
are instant.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULTS_DIR = CONFIG_DIR / "defaults"


class Config(dict):
    """A nested dict that also reads as attributes: ``cfg.optim.lr == cfg["optim"]["lr"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return _plain(self)


def _wrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Config({k: _wrap(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)  # safe loader: no config value is ever evaluated as code
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def list_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _find_config(name: str | Path) -> tuple[Path, str]:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path, path.stem
    preset = CONFIG_DIR / f"{name}.yaml"
    if preset.is_file():
        return preset, str(name)
    close = difflib.get_close_matches(str(name), list_presets(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"no preset or config file {str(name)!r}{hint} (presets: {', '.join(list_presets())})"
    )


def _flat_keys(tree: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        keys.append(prefix + k)
        if isinstance(v, Mapping) and v:
            keys += _flat_keys(v, prefix + k + ".")
    return keys


def _suggest(key: str, schema: Mapping) -> str:
    candidates = _flat_keys(schema)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close:  # a misspelt leaf under the right section: compare last components
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1)]
    return f"; did you mean {close[0]!r}?" if close else ""


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True  # null defaults accept anything; null values switch a feature off
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        # Strings that name a choice may also take a mapping (normalize: {mean, std}).
        return isinstance(value, (str, dict))
    if isinstance(default, list):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def _merge(
    base: dict, update: Mapping, schema: Mapping | None, root: Mapping, path: str = ""
) -> None:
    """Merge ``update`` into ``base`` in place, checking every key against ``schema``.

    ``schema`` is the part of the defaults at ``path`` (None inside an open mapping); ``root`` is
    the whole schema, for suggestions.
    """
    for key, value in update.items():
        full = path + str(key)
        if schema is not None:
            if key not in schema:
                raise ConfigError(f"unknown config key {full!r}{_suggest(full, root)}")
            default = schema[key]
            if full == "img_size":
                parse_img_size(value)
            elif not _type_ok(default, value):
                raise ConfigError(
                    f"config key {full!r} must be {type(default).__name__}, "
                    f"got {type(value).__name__} {value!r}"
                )
            sub_schema = default if isinstance(default, dict) and default else None
        else:
            sub_schema = None  # inside an open mapping: anything goes
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, sub_schema, root, full + ".")
        else:
            base[key] = copy.deepcopy(value)


def parse_img_size(value: Any) -> tuple[int, int]:
    """``320`` → (320, 320); ``{width: 640, height: 192}`` → (192, 640) as (height, width)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if isinstance(value, Mapping) and set(value) == {"width", "height"}:
        w, h = value["width"], value["height"]
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            return h, w
    raise ConfigError(f"img_size must be a positive int or {{width: W, height: H}}, got {value!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. optim.lr=0.01)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse the value ({e})") from None
    return key.strip().split("."), value


def load_config(
    name: str | Path | Mapping = "classify-shapes", overrides: Iterable[str] = ()
) -> Config:
    """Resolve a preset name, YAML path or dict plus ``key=value`` overrides; checked."""
    if isinstance(name, Mapping):
        user, source, stem = dict(name), "<dict>", "config"
    else:
        path, stem = _find_config(name)
        user, source = _read_yaml(path), str(path)
    override_pairs = [parse_override(o) for o in overrides]

    # The task decides which defaults apply, so it is read first (an override may change it).
    task = user.get("task", "classify")
    for keys, value in override_pairs:
        if keys == ["task"]:
            task = value
    task_file = DEFAULTS_DIR / f"{task}.yaml"
    if not task_file.is_file():
        tasks = sorted(p.stem for p in DEFAULTS_DIR.glob("*.yaml") if p.stem != "base")
        close = difflib.get_close_matches(str(task), tasks, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown task {task!r} in {source}{hint} (tasks: {', '.join(tasks)})")

    cfg = _read_yaml(DEFAULTS_DIR / "base.yaml")
    _merge(cfg, _read_yaml(task_file), None, cfg)  # task defaults extend the schema
    schema = copy.deepcopy(cfg)
    try:
        _merge(cfg, user, schema, schema)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    for keys, value in override_pairs:
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(cfg, nested, schema, schema)
    if cfg.get("name") is None:
        cfg["name"] = stem
    return _wrap(cfg)


def save_config(cfg: Mapping, path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(_plain(cfg), f, sort_keys=False)
