"""Configs: shipped presets or any YAML, dotted ``key=value`` overrides, and strict validation.

The schema is the defaults themselves (``configs/defaults/base.yaml`` plus the task's file): a key
that is not there is unknown, a value whose type differs from the default's is wrong, and both
errors name the key and suggest the closest valid one. No torch import here, so argument errors
are instant.

Ranges and types live next to the default, as the start of its trailing comment, ended by ``;``
(see the top of ``base.yaml``)::

    epochs: 10        # [1, inf); passes over the training set
    grad_clip: null   # (0, inf) | null; max gradient norm
    betas: [0.9, 0.999]  # [0, 1) len 2; ...

Grammar of that spec (space-separated, every part optional, in this order):
``[lo, hi]`` / ``(lo, hi)`` / mixed — an interval, ``inf``/``-inf`` allowed, applied to a number
or to every number of a (nested) list; a type ``int | float | str | bool | list | mapping`` (for
null defaults, or a list's elements); ``len N`` — a list of exactly N items; ``{a, b, c}`` —
the allowed strings; then ``| null`` (null allowed) and ``| mapping`` (a string key that also takes
a mapping). A key whose default is not null rejects null unless ``| null`` says otherwise. A
comment that does not parse as a spec up to its first ``;`` is plain text.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


# A config is hand-written: a few anchors at most, and far below a megabyte. Beyond these, a
# document is refused before it is built: a "billion laughs" file (anchors of anchors) is tiny
# on disk, and even with under 100 aliases expands to ~10^9 values once anything walks it
# (validation, deepcopy, saving), so the expanded size is bounded too; an alias inside its own
# anchor (a list holding itself) would recurse forever.
MAX_YAML_ALIASES = 100
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 1_000_000


class _TooManyAliases(yaml.YAMLError):
    pass


class _CountingLoader(yaml.SafeLoader):
    """The safe loader (no value is ever evaluated as code), counting ``*alias`` uses."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise _TooManyAliases(f"more than {MAX_YAML_ALIASES} aliases (*name)")
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        if self.aliases and _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise _TooManyAliases(f"its aliases expand it to more than {MAX_YAML_VALUES:,} values")
        return node


def _expanded_size(node: yaml.Node, memo: dict[int, int | None]) -> int:
    """Values in ``node`` with every alias written out, counted once per shared node (linear in
    the file, however large the expansion). ``memo`` holds None while a node is being counted:
    meeting it again means an alias inside its own anchor."""
    key = id(node)
    if key in memo:
        size = memo[key]
        if size is None:
            raise _TooManyAliases("an alias refers to the anchor it is inside (a recursive value)")
        return size
    memo[key] = None
    size = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            size += _expanded_size(child, memo)
            if size > MAX_YAML_VALUES:  # stop early: the answer is already "too many"
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo) + _expanded_size(v, memo)
            if size > MAX_YAML_VALUES:
                break
    memo[key] = size
    return size


# PyYAML follows YAML 1.1, whose floats need a dot: `optim.lr=1e-3` would be the string "1e-3"
# and refused. YAML 1.2 (and every user) reads it as a number; so does this loader.
_CountingLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load_limited(text: str) -> Any:
    """``yaml.safe_load`` that refuses more than ``MAX_YAML_ALIASES`` aliases
    (``_TooManyAliases``, a ``yaml.YAMLError``) before anything is built from them."""
    loader = _CountingLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict:
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(
                f"{path}: {size / 2**20:.1f} MB is too large for a config "
                f"(at most {MAX_YAML_BYTES // 2**20} MB); is it the right file?"
            )
        with open(path, encoding="utf-8") as f:
            data = safe_load_limited(f.read(MAX_YAML_BYTES + 1))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except _TooManyAliases as e:
        raise ConfigError(
            f"{path}: {e}: refused as a possible alias bomb (a config needs a few anchors at "
            f"most; write the values out)"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
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


@dataclass
class Spec:
    """What a key accepts beyond its default's type, parsed from the default's comment."""

    text: str  # as written, for error messages
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    has_range: bool = False
    kind: str | None = None  # int | float | str | bool | list | mapping
    length: int | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    mapping: bool = False


_SPEC_RE = re.compile(
    r"""^\s*
    (?:(?P<open>[\[(])\s*(?P<lo>[-+]?(?:inf|[0-9.e+-]+))\s*,\s*
       (?P<hi>[-+]?(?:inf|[0-9.e+-]+))\s*(?P<close>[\])]))?\s*
    (?P<kind>int|float|str|bool|list|mapping)?\s*
    (?:len\s+(?P<len>[0-9]+))?\s*
    (?:\{(?P<choices>[^}]*)\})?\s*
    (?P<flags>(?:\|\s*(?:null|mapping)\s*)*)$""",
    re.VERBOSE,
)


def parse_spec(comment: str) -> Spec | None:
    """The spec at the start of a default's comment (up to its first ``;``), or None."""
    head = comment.split(";", 1)[0] if ";" in comment else None
    if head is None or not head.strip():
        return None
    m = _SPEC_RE.match(head)
    if not m:
        return None
    spec = Spec(head.strip())
    if m["open"]:
        try:
            spec.lo, spec.hi = float(m["lo"]), float(m["hi"])
        except ValueError:
            return None
        spec.has_range = True
        spec.lo_open, spec.hi_open = m["open"] == "(", m["close"] == ")"
    spec.kind = m["kind"]
    spec.length = int(m["len"]) if m["len"] else None
    if m["choices"] is not None:
        spec.choices = tuple(c.strip() for c in m["choices"].split(",") if c.strip())
    flags = m["flags"] or ""
    spec.nullable = "null" in flags
    spec.mapping = "mapping" in flags
    return spec


def read_specs(path: Path) -> dict[str, Spec]:
    """``{dotted key: Spec}`` from the trailing comments of a defaults file."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    specs: dict[str, Spec] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            key = prefix + str(key_node.value)
            line = lines[key_node.start_mark.line]
            # The comment of the key's line: the first " #" outside quotes (defaults hold none).
            hash_at = line.find(" #", key_node.end_mark.column)
            if hash_at >= 0:
                spec = parse_spec(line[hash_at + 2 :])
                if spec is not None:
                    specs[key] = spec
            walk(value_node, key + ".")

    walk(yaml.compose(text), "")
    return specs


def _numbers(value: Any) -> list[Any] | None:
    """Every leaf of a number or (nested) list of numbers; None when something is no number."""
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            sub = _numbers(v)
            if sub is None:
                return None
            out += sub
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return None


def _check_spec(key: str, value: Any, default: Any, spec: Spec | None) -> None:
    """Null, type, length, choice and range of one key's value; ConfigError names key and spec.

    With a spec, the spec decides which types are allowed (``[0, inf) {auto}``: a count or
    "auto"); without a type in it, the default's type applies.
    """
    allowed = f" (allowed: {spec.text})" if spec else ""
    if value is None:
        if default is None or (spec and spec.nullable):
            return
        raise ConfigError(f"config key {key!r} cannot be null{allowed}")
    if spec is None:
        return
    kind = spec.kind
    numeric = spec.has_range or kind in ("int", "float")

    def wrong() -> ConfigError:
        what = kind or (type(default).__name__ if default is not None else "")
        if isinstance(default, list) and not isinstance(value, list):
            what = f"a list of {kind}" if kind in ("int", "float", "str") else "list"
        if what and spec.text not in (what, kind):
            what = f"{what} ({spec.text})"
        what = what or spec.text
        got = f"{type(value).__name__} {value!r}"
        return ConfigError(f"config key {key!r} must be {what}, got {got}")

    if isinstance(value, str):
        if spec.choices is not None:
            if value in spec.choices:
                return
            close = difflib.get_close_matches(value, spec.choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if numeric:  # a number or a word (optim.lr: 0.01 or auto): name the number's type
                plain = isinstance(default, (int, float)) and not isinstance(default, bool)
                number = kind or (type(default).__name__ if plain else "a number")
                raise ConfigError(
                    f"config key {key!r} must be {number} ({spec.text}), got str {value!r}{hint}"
                )
            raise ConfigError(f"config key {key!r} must be {spec.text}, got {value!r}{hint}")
        if kind == "str" and isinstance(default, list):
            raise wrong()  # one name where a list of names is due (train.callbacks)
        if kind == "str" or (kind is None and not numeric and isinstance(default, str)):
            return
        raise wrong()
    if isinstance(value, dict):
        if spec.mapping or kind == "mapping" or (kind is None and isinstance(default, dict)):
            return
        raise wrong()
    if isinstance(value, bool):
        if kind == "bool" or (kind is None and isinstance(default, bool)):
            return
        raise wrong()
    if isinstance(value, list):
        # `int`/`float`/`str` name a list's items only where the key is a list (`[1, inf) int`
        # on tune.batch_candidates, `str` on train.callbacks); on a scalar key
        # (train.max_batches: null, `int`) a list is wrong, and would fail later as a TypeError
        # deep in training.
        items = kind in ("int", "float", "str") and isinstance(default, list)
        if not (kind == "list" or items or (kind is None and isinstance(default, list))):
            raise wrong()
        if spec.length is not None and len(value) != spec.length:
            raise ConfigError(
                f"config key {key!r} must be a list of {spec.length} ({spec.text}), got {value!r}"
            )
        if kind == "str":  # names (train.callbacks): a number there failed in the registry
            if any(not isinstance(v, str) for v in value):
                raise ConfigError(f"config key {key!r} must be a list of str, got {value!r}")
            return
        if not numeric:
            return
        numbers = _numbers(value)
        if numbers is None:
            raise ConfigError(f"config key {key!r} must hold numbers ({spec.text}), got {value!r}")
    else:  # int or float
        if not (numeric or (kind is None and isinstance(default, (int, float)))):
            raise wrong()
        if isinstance(default, list) or spec.length is not None or kind == "list":
            # one number where a list is due (data.aug.ratio=1; model.anchors.sizes=0.5, whose
            # null default says nothing of a list: its `list` does)
            raise wrong()
        numbers = [value]
    want_int = kind == "int" or (
        kind is None and isinstance(default, int) and not isinstance(default, bool)
    )
    for v in numbers:
        if want_int and not isinstance(v, int):
            raise ConfigError(f"config key {key!r} must be int ({spec.text}), got {value!r}")
        low_ok = v > spec.lo if spec.lo_open else v >= spec.lo
        high_ok = v < spec.hi if spec.hi_open else v <= spec.hi
        if not (low_ok and high_ok):  # NaN fails both
            raise ConfigError(f"config key {key!r} must be in {spec.text}, got {value!r}")


def _check_name(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"config key 'name' must be a non-empty string, got {value!r}")
    if value in (".", "..") or any(c in value for c in "/\\\0") or value != value.strip():
        raise ConfigError(
            f"config key 'name' must be one folder name (no '/', '\\', '..' or surrounding "
            f"spaces): the run goes to <project>/<task>/<name>; got {value!r}"
        )


# What `device` takes (base.yaml): the training and deploy code knows CPUs and CUDA only.
DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(value: Any, key: str = "device") -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``: anything else failed inside torch.device."""
    if not (isinstance(value, str) and DEVICE_RE.fullmatch(value)):
        raise ConfigError(f"config key {key!r} must be auto, cpu, cuda or cuda:N, got {value!r}")


_PLAIN = (type(None), bool, int, float, str)


def _check_plain(key: str, value: Any) -> None:
    """Only what YAML's core schema means by data: no dates, bytes, sets or tagged objects."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"config key {key!r}: mapping keys must be strings, got {k!r}")
            _check_text(key, k)
            _check_plain(f"{key}.{k}", v)
    elif isinstance(value, list):
        for v in value:
            _check_plain(key, v)
    elif not isinstance(value, _PLAIN):
        raise ConfigError(
            f"config key {key!r}: {type(value).__name__} values are not allowed "
            f"(numbers, strings, booleans, null, lists and mappings only), got {value!r}"
        )
    elif isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"config key {key!r} is NaN")
    elif isinstance(value, str):
        _check_text(key, value)


def _check_text(key: str, value: str) -> None:
    """A string the file system and UTF-8 files can hold. YAML's ``"\\ud999"`` escape makes a
    lone UTF-16 surrogate, which no file name or config.yaml can encode (a run failed creating
    its folder); the ``\\udc80``-``\\udcff`` ones are how Python carries a path's undecodable
    bytes from the command line, and stand for those bytes."""
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        bad = value[e.start : e.end]
        raise ConfigError(
            f"config key {key!r} holds {bad!r}, a lone UTF-16 surrogate and no character "
            f"(a \\u escape must name a whole character), got {value!r}"
        ) from None


def validate(cfg: Mapping, schema: Mapping, specs: Mapping[str, Spec], prefix: str = "") -> None:
    """Check every key of the final config against its default and spec (null, type, range)."""
    for key, default in schema.items():
        full = prefix + key
        value = cfg.get(key)
        if full == "name":
            _check_name(value)
        elif full == "device":
            check_device(value)
        _check_spec(full, value, default, specs.get(full))
        if isinstance(default, dict) and default and isinstance(value, dict):
            validate(value, default, specs, full + ".")


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
        # An ``auto`` default also takes the explicit value it stands for (workers: 2, amp: false).
        if default == "auto" and isinstance(value, (bool, int)):
            return True
        return isinstance(value, str)  # a mapping only where the key's spec says "| mapping"
    if isinstance(default, list):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def _merge(
    base: dict,
    update: Mapping,
    schema: Mapping | None,
    root: Mapping,
    path: str = "",
    specs: Mapping[str, Spec] | None = None,
) -> None:
    """Merge ``update`` into ``base`` in place, checking every key against ``schema``.

    ``schema`` is the part of the defaults at ``path`` (None inside an open mapping); ``root`` is
    the whole schema, for suggestions.
    """
    specs = specs or {}
    for key, value in update.items():
        full = path + str(key)
        if not isinstance(key, str):
            raise ConfigError(f"config key {full!r} must be a string")
        _check_plain(full, value)
        if schema is not None:
            if key not in schema:
                raise ConfigError(f"unknown config key {full!r}{_suggest(full, root)}")
            default = schema[key]
            if full == "img_size":
                parse_img_size(value)
            elif full == "name" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # name=123 means the folder "123"
            elif full in specs:
                _check_spec(full, value, default, specs[full])
            elif not _type_ok(default, value):
                raise ConfigError(
                    f"config key {full!r} must be {type(default).__name__}, "
                    f"got {type(value).__name__} {value!r}"
                )
            sub_schema = default if isinstance(default, dict) and default else None
        else:
            sub_schema = None  # inside an open mapping: anything goes
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, sub_schema, root, full + ".", specs)
        else:
            base[key] = copy.deepcopy(value)


# The smallest side an image is resized to. torch's antialiased resize of a uint8 image to 1x1
# fails an internal assert (classify's eval resize, every letterbox), so 1 is refused here.
MIN_IMG_SIDE = 2


def parse_img_size(value: Any) -> tuple[int, int]:
    """``320`` → (320, 320); ``{width: 640, height: 192}`` → (192, 640) as (height, width)."""

    def side(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= MIN_IMG_SIDE

    if side(value):
        return value, value
    if isinstance(value, Mapping) and set(value) == {"width", "height"}:
        w, h = value["width"], value["height"]
        if side(w) and side(h):
            return h, w
    raise ConfigError(
        f"img_size must be an int >= {MIN_IMG_SIDE} or {{width: W, height: H}} (each >= "
        f"{MIN_IMG_SIDE}), got {value!r}"
    )


def _check_scale_jitter(cfg: Mapping) -> None:
    """``data.aug.scale_jitter`` (locate, detect, segment) against ``img_size``: the image is
    fitted to img_size, then scaled by a factor from that range; its longer side must keep
    MIN_IMG_SIDE pixels, else the resize to 1x1 fails inside torch (parse_img_size)."""
    aug = cfg.get("data", {}).get("aug")
    jitter = aug.get("scale_jitter") if isinstance(aug, Mapping) else None
    if not isinstance(jitter, list) or len(jitter) != 2:
        return  # null (off), or a task without it; the spec checked its form
    side = min(parse_img_size(cfg["img_size"]))
    if min(jitter) * side < MIN_IMG_SIDE:
        raise ConfigError(
            f"config key 'data.aug.scale_jitter' shrinks img_size={cfg['img_size']!r} to under "
            f"{MIN_IMG_SIDE} pixels: its smaller factor must be at least {MIN_IMG_SIDE}/{side} = "
            f"{MIN_IMG_SIDE / side:.3g}, got {jitter!r}"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. optim.lr=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key (write key=value, e.g. optim.lr=0.01)")
    try:
        # A tag (!!python/..., !!binary, !custom) asks YAML to build a typed object: refused,
        # whatever the safe loader would make of it.
        if any(isinstance(t, yaml.TagToken) for t in yaml.scan(raw)):
            raise ConfigError(f"override {key!r}: YAML tags (!!...) are not allowed in values")
        value = safe_load_limited(raw) if raw.strip() else None
    except _TooManyAliases as e:
        raise ConfigError(f"override {key!r}: {e}: refused as a possible alias bomb") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"override {key!r}: cannot parse the value {raw!r} ({first})") from None
    return key.split("."), value


# What describes a preset's own data source: reset when the user points it at other data.
_DATA_SOURCE_KEYS = ("format", "train", "val", "classes")


def _own_data(
    pairs: list[tuple[list[str], Any]], synthetic: bool
) -> list[tuple[list[str], Any]]:
    """``data=PATH`` is ``data.root=PATH``; ``epochs=N`` without ``train.time`` switches a
    preset's time budget off (N epochs, as asked). Giving ``data.root`` to a preset with synthetic
    data replaces its data source: the generator (``data.synth``) and the format/split/class
    keys go back to the task defaults (auto-detection) unless those are overridden too."""
    pairs = [(["data", "root"], v) if k == ["data"] and not isinstance(v, dict) else (k, v)
             for k, v in pairs]
    given = {tuple(k[:2]) for k, _ in pairs}  # data.synth.n_train=8 counts as giving data.synth
    if ("epochs",) in given and ("train", "time") not in given:
        # A preset states a time budget; epochs=N on top asks for N epochs instead.
        pairs = [(["train", "time"], None), *pairs]
    if ("data", "root") not in given or not synthetic:
        return pairs
    keys = ("synth", *_DATA_SOURCE_KEYS)
    return [(["data", k], _RESET) for k in keys if ("data", k) not in given] + pairs


def _mapping_at(cfg: dict, keys: list[str]) -> dict | None:
    """The mapping at dotted ``keys`` of ``cfg``, or None if a key is missing or no mapping."""
    node: Any = cfg
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node if isinstance(node, dict) else None


class _Reset:
    """Marker override: put the key back to its task default (see ``_own_data``)."""


_RESET = _Reset()


ENV_OVERRIDES = "VISBRICKS_OVERRIDES"
_announced: set[str] = set()


def env_overrides() -> list[str]:
    """The ``key=value`` overrides in ``$VISBRICKS_OVERRIDES`` (shell-quoted, space-separated).

    They come after the command line's, so they win: a CI smoke run or the README test shrinks
    every command it runs (``epochs=1 data.synth.n_train=64``) without editing the commands.
    Said once per process on stderr, so a run never differs from its command unannounced.
    """
    raw = os.environ.get(ENV_OVERRIDES, "").strip()
    if not raw:
        return []
    try:
        found = shlex.split(raw)
    except ValueError as e:
        raise ConfigError(f"${ENV_OVERRIDES}: cannot split {raw!r} ({e})") from None
    if raw not in _announced:
        _announced.add(raw)
        print(f"${ENV_OVERRIDES} adds: {' '.join(found)}", file=sys.stderr)
    return found


def load_config(
    name: str | Path | Mapping = "classify-shapes", overrides: Iterable[str] = ()
) -> Config:
    """Resolve a preset name, YAML path or dict plus ``key=value`` overrides; checked.

    For a preset or YAML file, ``$VISBRICKS_OVERRIDES`` follows ``overrides`` (see
    :func:`env_overrides`); a dict (a saved run's config) takes only the given overrides.
    """
    if isinstance(name, Mapping):
        user, source, stem = dict(name), "<dict>", "config"
    else:
        path, stem = _find_config(name)
        user, source = _read_yaml(path), str(path)
        overrides = [*overrides, *env_overrides()]
    preset_data = user.get("data") if isinstance(user.get("data"), Mapping) else {}
    override_pairs = _own_data(
        [parse_override(o) for o in overrides], synthetic=bool(preset_data.get("synth"))
    )

    # The task decides which defaults apply, so it is read first (an override may change it).
    task = user.get("task", "classify")
    for keys, value in override_pairs:
        if keys == ["task"]:
            task = value
    tasks = sorted(p.stem for p in DEFAULTS_DIR.glob("*.yaml") if p.stem != "base")
    defaults = task_defaults(task) if isinstance(task, str) else task
    task_file = DEFAULTS_DIR / f"{defaults}.yaml"
    if not isinstance(task, str) or defaults not in tasks:
        close = difflib.get_close_matches(str(task), tasks, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown task {task!r} in {source}{hint} (tasks: {', '.join(tasks)})")

    cfg = _read_yaml(DEFAULTS_DIR / "base.yaml")
    _merge(cfg, _read_yaml(task_file), None, cfg)  # task defaults extend the schema
    specs = schema_specs(defaults)
    schema = copy.deepcopy(cfg)
    try:
        _merge(cfg, user, schema, schema, specs=specs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    for keys, value in override_pairs:
        if value is _RESET:
            node, default = cfg, schema
            for k in keys[:-1]:
                node, default = node[k], default[k]
            node[keys[-1]] = copy.deepcopy(default[keys[-1]])
            continue
        if value == {} and _mapping_at(cfg, keys):
            # key={} empties the mapping (as key=null switches it off) instead of merging
            # nothing into it: data.synth={} and data.synth=null mean the same thing.
            _mapping_at(cfg, keys[:-1])[keys[-1]] = {}
            continue
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(cfg, nested, schema, schema, specs=specs)
    validate(cfg, schema, specs)
    _check_scale_jitter(cfg)
    if cfg.get("name") is None:
        cfg["name"] = stem
        _check_name(stem)
    return _wrap(cfg)


_SPEC_CACHE: dict[str, dict[str, Spec]] = {}


def task_defaults(task: str) -> str:
    """The defaults file a task's config is built on: its own (``configs/defaults/<task>.yaml``),
    or for a task registered elsewhere (a user's ``@TASKS.register`` class) the shipped task it
    names in ``config_defaults`` (its keys and their checks)."""
    if (DEFAULTS_DIR / f"{task}.yaml").is_file():
        return task
    from .registry import TASKS

    if task in TASKS:
        return getattr(TASKS.get(task), "config_defaults", task)
    return task


def schema_specs(task: str) -> dict[str, Spec]:
    """The specs of base.yaml with the task file's on top (cached: the files ship with us)."""
    if task not in _SPEC_CACHE:
        specs = read_specs(DEFAULTS_DIR / "base.yaml")
        specs.update(read_specs(DEFAULTS_DIR / f"{task}.yaml"))
        _SPEC_CACHE[task] = specs
    return _SPEC_CACHE[task]


def save_config(cfg: Mapping, path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(_plain(cfg), f, sort_keys=False)


def section_kwargs(fn: Any, section: Mapping, where: str, **given: Any) -> dict[str, Any]:
    """Keyword arguments for ``fn`` from config ``section`` (a loss's weights and switches): every
    key of the section by its own name, then ``given`` (values the task computes) on top. A key
    ``fn`` has no parameter for is a ConfigError naming ``where.key``: the YAML and the
    constructor cannot drift apart, leaving a key that silently changes nothing."""
    import inspect

    params = inspect.signature(fn).parameters
    unused = [k for k in section if k not in params]
    if unused:
        raise ConfigError(
            f"{where}.{unused[0]} is not a parameter of {getattr(fn, '__name__', fn)} "
            f"(it takes {', '.join(p for p in params if p != 'self')})"
        )
    return {**{k: _plain(section[k]) for k in section}, **given}
