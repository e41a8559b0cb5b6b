"""The model role of a task: backbone → neck → head from the registries, pretrained weights."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...config import Config
from ...engine.weights import LoadReport, load_weights, read_state_dict, resolve_imagenet
from ...errors import ConfigError, WeightsError
from ...models.backbones import TimmBackbone, build_backbone
from ...models.heads import build_head
from ...models.model import VisionModel
from ...registry import HEADS, NECKS, check_arguments


@contextmanager
def model_memory() -> Iterator[None]:
    """Building a model whose config sizes multiply past this machine's memory (a lanes head
    of model.lanes x row_anchors x row_cells outputs, model.head_args channels) fails with
    torch's allocator error from deep inside a layer; it becomes one line naming what to
    lower. Each size has a range in the defaults, their product has none."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        text = str(e)
        if not (isinstance(e, MemoryError) or "allocate" in text or "out of memory" in text):
            raise
        wanted = re.search(r"allocate ([0-9]+) bytes", text)
        size = f" ({int(wanted[1]) / 2**30:,.1f} GiB for one tensor)" if wanted else ""
        raise ConfigError(
            f"the model this config describes does not fit in memory{size}: lower its sizes "
            "(model.* counts, channels in model.head_args / model.neck_args)"
        ) from None


class ModelRole:
    cfg: Config
    name: str

    # The head used when model.head is null, and the outputs this task's loss and decoding read
    # (a head that declares ``outputs`` must provide them; see ``head_name``).
    default_head: str | None = None
    head_outputs: tuple[str, ...] = ()
    # The output stride a head must declare (``output_stride``, models/heads/__init__.py) for
    # this task, e.g. 1 for per-pixel logits; None: any. ``head_kind`` names such heads.
    head_output_stride: int | None = None
    head_kind = "head for this task"

    @property
    def head_name(self) -> str:
        """``model.head``, or this task's default head when it is null."""
        name = self.cfg.model.get("head") or self.default_head
        if name is None:
            raise ConfigError(f"model.head is null and task {self.name!r} has no default head")
        wanted = self.head_output_stride
        if wanted is not None and not self._head_fits(name):
            fitting = [n for n in HEADS.names() if self._head_fits(n)]
            raise ConfigError(
                f"model.head {name!r} is not a {self.head_kind}: task {self.name!r} needs "
                f"{', '.join(self.head_outputs)} at output stride {wanted} (heads that give "
                f"them: {', '.join(fitting)})"
            )
        declared = getattr(HEADS.get(name), "outputs", None)
        missing = [k for k in self.head_outputs if declared is not None and k not in declared]
        if missing:
            raise ConfigError(
                f"model.head {name!r} gives {', '.join(declared)} but task {self.name!r} needs "
                f"{', '.join(self.head_outputs)} (default head: {self.default_head!r})"
            )
        return name

    def _head_fits(self, name: str) -> bool:
        cls = HEADS.get(name)
        outputs = getattr(cls, "outputs", None) or ()
        return getattr(cls, "output_stride", None) == self.head_output_stride and all(
            k in outputs for k in self.head_outputs
        )

    def make_head(
        self, in_channels: list[int], strides: list[int], **task_kwargs: Any
    ) -> nn.Module:
        """The head of ``model.head`` with ``task_kwargs`` and ``model.head_args`` on top."""
        head_args = dict(self.cfg.model.get("head_args") or {})
        return build_head(self.head_name, in_channels, strides, head_args, **task_kwargs)

    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        return self.make_head(in_channels, strides)

    def build_model(self, load_pretrained: bool = True) -> nn.Module:
        with model_memory():
            return self._build_model(load_pretrained)

    def _build_model(self, load_pretrained: bool) -> nn.Module:
        m = self.cfg.model
        # Random initialisation is part of the run: the same seed builds the same model.
        torch.manual_seed(self.cfg.seed)
        backbone = build_backbone(
            m.backbone, in_channels=m.in_channels, **dict(m.get("backbone_args") or {})
        )
        channels, strides = backbone.out_channels, backbone.strides
        neck = None
        if m.neck:
            # A neck is sized to the data (channels, levels), so model.neck_args reaches it;
            # a wrong keyword is named here rather than as a TypeError from inside the class.
            kwargs = dict(m.neck_args or {})
            cls = NECKS.get(m.neck)
            check_arguments(
                cls, f"model.neck_args for neck {m.neck!r}", "", channels, strides, **kwargs
            )
            try:
                neck = cls(channels, strides, **kwargs)
            except ConfigError as e:  # e.g. a wrong block option: say where it was set
                raise ConfigError(f"model.neck_args for neck {m.neck!r}: {e}") from None
            channels, strides = neck.out_channels, neck.strides
        elif m.neck_args:
            raise ConfigError("model.neck_args is set but model.neck is null")
        model = VisionModel(backbone, self.build_head(channels, strides), neck)
        if load_pretrained:
            self.load_pretrained(model)
        return model

    def load_pretrained(self, model: nn.Module) -> LoadReport | None:
        source = self.cfg.model.pretrained
        if source is None:
            return None
        rules = getattr(model.backbone, "imagenet_rules", None)
        if source == "auto":
            # The own-data presets' default: torchvision's ImageNet file when it is already in
            # the torch hub cache (never downloaded), else random initialisation, said once.
            cached = _cached_imagenet(getattr(model.backbone, "tv_name", None))
            if cached is None:
                print(
                    "model.pretrained=auto: no cached ImageNet weights for this backbone; "
                    "training from random initialisation (model.pretrained=imagenet fetches)"
                )
                return None
            return load_weights(model, cached, "mapping", rules)
        if source == "imagenet" and isinstance(model.backbone, TimmBackbone):
            return load_timm_pretrained(model.backbone, self.cfg.model.in_channels)
        if source == "imagenet":
            return load_weights(model, resolve_imagenet(model.backbone.tv_name), "mapping", rules)
        state = read_state_dict(source)
        strategy = self.cfg.model.pretrained_strategy
        if strategy == "auto":
            # Our own files carry backbone./head. names; anything else is taken as a
            # torchvision/timm classifier file and mapped onto the backbone.
            ours = any(k.startswith(("backbone.", "head.", "neck.")) for k in state)
            strategy = "key" if ours else "mapping"
        return load_weights(model, state, strategy, rules if strategy == "mapping" else None)


def _cached_imagenet(arch: str | None) -> Path | None:
    """torchvision's ImageNet weights file for ``arch`` if the hub cache holds one."""
    from ...engine.weights import torchvision_weights_files

    if arch is None:
        return None
    try:
        files = torchvision_weights_files(arch)
    except (ValueError, KeyError):
        return None
    return next((cache for _, cache in files if cache.is_file()), None)


def load_timm_pretrained(backbone: TimmBackbone, in_channels: int = 3) -> LoadReport:
    """``model.pretrained=imagenet`` on a ``timm:`` backbone: the weights timm itself publishes
    for that model name (its own download/cache, Hugging Face hub included, and its own
    first-conv adaptation for ``in_channels`` != 3), loaded by key into the backbone."""
    import timm

    try:
        reference = timm.create_model(
            backbone.tv_name, pretrained=True, features_only=True, in_chans=in_channels
        )
    except Exception as e:  # noqa: BLE001 - offline, unknown tag, no weights: one message
        raise WeightsError(
            f"model.pretrained=imagenet: timm could not provide pretrained weights for "
            f"{backbone.tv_name!r} ({type(e).__name__}: {e}); put them in timm's cache "
            "(Hugging Face hub) or pass model.pretrained=/path/to/weights"
        ) from None
    return load_weights(backbone.body, reference.state_dict(), "key")
