"""Loading weights into a model that may not match the file: by key, by shape, or by mapping rules.

Nothing is ever unpickled from a weights file: ``.pt/.pth/.ckpt`` go through
``torch.load(weights_only=True)`` and ``.safetensors`` through safetensors.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError

StateDict = dict[str, torch.Tensor]
# A value transform receives the source tensor and the destination shape and returns a tensor of
# that shape (e.g. ``tile_input_channels`` for a 6-channel first conv).
Transform = Callable[[torch.Tensor, torch.Size], torch.Tensor]


@dataclass
class Rule:
    """Rename keys matching ``pattern`` (``re.sub`` with ``replace``), maybe transforming values."""

    pattern: str
    replace: str
    transform: Transform | None = None


@dataclass
class LoadReport:
    source: str
    strategy: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not filled
    unexpected: list[str] = field(default_factory=list)  # in the file, not used
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"load_weights({self.source}, strategy={self.strategy}): "
            f"{len(self.loaded)} loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched"
        ]
        for name, src, dst in self.mismatched:
            lines.append(f"  shape-mismatched: {name}: file {list(src)} vs model {list(dst)}")
        for title, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                shown = ", ".join(names[:8]) + (
                    f" ... (+{len(names) - 8})" if len(names) > 8 else ""
                )
                lines.append(f"  {title}: {shown}")
        return "\n".join(lines)


def tile_input_channels(src: torch.Tensor, dst_shape: torch.Size) -> torch.Tensor:
    """Widen a first-conv weight (O, 3, k, k) to (O, 3n, k, k): repeat and divide by n.

    Dividing keeps the response to n identical stacked images equal to the pretrained one
    (Monodepth2's pose encoder does this for two stacked frames).
    """
    if src.ndim != 4 or len(dst_shape) != 4 or dst_shape[1] % src.shape[1]:
        return src
    n = dst_shape[1] // src.shape[1]
    return src.repeat(1, n, 1, 1) / n


def _unwrap(obj: object, source: str) -> StateDict:
    """Find the state dict inside the common checkpoint layouts."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict", "model_state"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            # DataParallel / DDP checkpoints prefix every key with "module.".
            if all(k.startswith("module.") for k in tensors):
                tensors = {k[len("module.") :]: v for k, v in tensors.items()}
            return tensors
    raise WeightsError(
        f"{source}: no tensors found (expected a state dict or a checkpoint with one)"
    )


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> StateDict:
    """Read a state dict from a file (or pass a dict through), never unpickling objects."""
    if isinstance(source, Mapping):
        return _unwrap(source, "<state dict>")
    path = Path(source).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own Rust-side error types
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "pickled object"
        raise WeightsError(
            f"{path}: refused — the file contains pickled Python objects, which visbricks never "
            f"loads (weights_only=True). Re-save only the state_dict. ({first})"
        ) from None
    except (RuntimeError, OSError, EOFError) as e:
        raise WeightsError(f"{path}: cannot read weights ({e})") from None
    return _unwrap(obj, str(path))


def _apply_rules(
    src: StateDict, rules: Iterable[Rule | tuple], dst: StateDict
) -> tuple[StateDict, list[str]]:
    """Rename (and transform) source keys: the first matching rule wins; others keep names."""
    compiled = [r if isinstance(r, Rule) else Rule(*r) for r in rules]
    out: StateDict = {}
    dropped: list[str] = []
    for key, value in src.items():
        for rule in compiled:
            if re.search(rule.pattern, key):
                new_key = re.sub(rule.pattern, rule.replace, key, count=1)
                if rule.transform is not None and new_key in dst:
                    value = rule.transform(value, dst[new_key].shape)
                key = new_key
                break
        if key in out:
            dropped.append(key)  # two source keys map to one name: keep the first, report the rest
            continue
        out[key] = value
    return out, dropped


def load_weights(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    strategy: str = "key",
    mapping: Mapping[str, str] | Iterable[Rule | tuple] | None = None,
    verbose: bool = True,
) -> LoadReport:
    """Load what fits from ``source`` into ``model`` and report the rest (docs/architecture.md §6).

    - ``key``: same names and shapes load; everything else is reported.
    - ``shape``: for a renamed but equal architecture — tensors are paired in order, from the
      first one onward, and loading stops at the first pair whose shapes differ.
    - ``mapping``: ``mapping`` is a dict of exact renames ``{file_key: model_key}`` or a list of
      ``Rule``/``(pattern, replacement[, transform])`` regex rules; then loaded by key.
    """
    name = str(source) if not isinstance(source, Mapping) else "<state dict>"
    src = read_state_dict(source)
    dst = model.state_dict()
    report = LoadReport(source=name, strategy=strategy)
    to_load: StateDict = {}

    if strategy == "shape":
        src_items, dst_items = list(src.items()), list(dst.items())
        n = 0
        for (_, s_val), (d_key, d_val) in zip(src_items, dst_items):
            if s_val.shape != d_val.shape:
                report.mismatched.append((d_key, tuple(s_val.shape), tuple(d_val.shape)))
                break
            to_load[d_key] = s_val
            n += 1
        report.loaded = list(to_load)
        mismatched_keys = {m[0] for m in report.mismatched}
        report.missing = [k for k, _ in dst_items[n:] if k not in mismatched_keys]
        report.unexpected = [k for k, _ in src_items[n + len(report.mismatched) :]]
    elif strategy in ("key", "mapping"):
        if strategy == "mapping":
            if mapping is None:
                raise WeightsError("strategy='mapping' needs mapping= (a dict of renames or rules)")
            if isinstance(mapping, Mapping):
                rules = [Rule("^" + re.escape(k) + "$", v) for k, v in mapping.items()]
            else:
                rules = list(mapping)
            src, dropped = _apply_rules(src, rules, dst)
            report.unexpected.extend(dropped)
        for key, value in src.items():
            if key not in dst:
                report.unexpected.append(key)
            elif value.shape != dst[key].shape:
                report.mismatched.append((key, tuple(value.shape), tuple(dst[key].shape)))
            else:
                to_load[key] = value
        report.loaded = list(to_load)
        report.missing = [
            k for k in dst if k not in to_load and k not in {m[0] for m in report.mismatched}
        ]
    else:
        raise WeightsError(f"unknown strategy {strategy!r}: use 'key', 'shape' or 'mapping'")

    with torch.no_grad():
        for key, value in to_load.items():
            dst[key].copy_(value.to(dtype=dst[key].dtype))
    # state_dict() tensors share storage with parameters/buffers, so the copies above are in place.
    if verbose:
        print(report)
    return report


def torchvision_weights_files(arch: str) -> list[tuple[str, Path]]:
    """(url, cache path) of every ImageNet weights file torchvision publishes for ``arch``,
    IMAGENET1K_V1 first: the classic file most fine-tuning recipes and caches hold."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    variants = sorted(
        (w for w in enum if w.name.startswith("IMAGENET1K")),
        key=lambda w: w.name != "IMAGENET1K_V1",
    )
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return [(w.url, hub / w.url.rsplit("/", 1)[-1]) for w in variants]


def resolve_imagenet(arch: str) -> Path:
    """Find torchvision's ImageNet file for ``arch`` in the torch hub cache, downloading if allowed.

    Offline with no cached file, the error names the exact file and the folder to put it in.
    """
    try:
        files = torchvision_weights_files(arch)
    except (ValueError, KeyError):
        files = []
    if not files:
        raise WeightsError(f"torchvision publishes no ImageNet weights for {arch!r}")
    for _, cache in files:
        if cache.is_file():
            return cache
    url, cache = files[0]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cache), progress=False)
    except Exception as e:  # noqa: BLE001 - any network failure means the same thing to the user
        raise WeightsError(
            f"ImageNet weights for {arch} are not cached and could not be downloaded "
            f"({type(e).__name__}). Put the file {cache.name} in {cache.parent} "
            "(the torch hub cache; set TORCH_HOME to move it), "
            f"or pass model.pretrained=/path/to/{cache.name}."
        ) from None
    return cache
