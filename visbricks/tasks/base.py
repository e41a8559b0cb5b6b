"""What every task shares: config → data preparation, model assembly, pretrained weights.

A task turns the config into a model and datasets and knows its loss, its metrics and how to
draw a batch; the Trainer knows none of these and drives any task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .. import models as _models  # noqa: F401  (registers backbones, necks and heads)
from ..config import Config, parse_img_size
from ..data.bundle import DataBundle
from ..data.io import set_max_pixels
from ..data.normalize import resolve_normalization
from ..engine.weights import LoadReport, load_weights, read_state_dict, resolve_imagenet
from ..errors import ConfigError, WeightsError
from ..metrics.base import EvalResult, Evaluator
from ..models.backbones import TimmBackbone, build_backbone
from ..models.heads import build_head
from ..models.model import VisionModel
from ..registry import HEADS, NECKS, check_arguments


class Task:
    name = "task"
    metric = "val/loss"  # what picks best.safetensors unless train.metric says otherwise
    metric_mode = "min"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.img_size = parse_img_size(cfg.img_size)  # (height, width)
        self.mean, self.std = resolve_normalization(cfg.data.normalize)
        self._classes: list[str] | None = None
        set_max_pixels(cfg.data.get("max_pixels"))  # decompression-bomb limit of every decode

    # ---- data -------------------------------------------------------------------------------
    @property
    def data_root(self) -> Path:
        if self.cfg.data.root is None:
            raise ConfigError("data.root is not set: give the dataset folder (data.root=PATH)")
        return Path(self.cfg.data.root).expanduser()

    def prepare_data(self) -> None:
        """Generate the synthetic data of ``data.synth`` at ``data.root`` when it is absent."""
        synth = dict(self.cfg.data.synth or {})
        if not synth:
            if not self.data_root.exists():
                raise ConfigError(f"data.root: dataset not found: {self.data_root}")
            return
        kind = synth.pop("kind", None)
        self.generate(kind, self.data_root, synth)

    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        raise ConfigError(f"task {self.name!r} cannot generate data.synth kind {kind!r}")

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            synth = dict(self.cfg.data.synth or {})
            if self.cfg.data.classes:  # given (or saved with the weights): no data needed
                self._classes = list(self.cfg.data.classes)
            elif synth and not self.data_root.exists():
                # Reading classes never generates data (prepare_data does, explicitly): a
                # generator's class list is known without running it.
                from ..data.synth import synth_classes

                self._classes = synth_classes(synth.get("kind"))
            else:
                if not synth:
                    self.prepare_data()  # only checks that data.root exists, naming the key
                self._classes = self.find_classes()
        return self._classes

    def find_classes(self) -> list[str]:
        raise NotImplementedError

    # The class count a model is built with when no data is at hand (``use_data_free_classes``).
    placeholder_classes = 2
    # False for tasks whose class list is fixed by the task itself (lanes, depth): find_classes
    # then reads no data.
    classes_from_data = True

    def use_data_free_classes(self) -> str | None:
        """Make ``self.classes`` answerable without generating or requiring data, for commands
        that only build the model (``visbricks summary``): ``data.classes``, else a generator's
        class list (``data.synth``), else the dataset's own when ``data.root`` exists, else
        ``placeholder_classes`` placeholder names. Returns the line that names a placeholder
        when one was used (a summary must not pass a guessed head width off as the real one),
        else None."""
        d = self.cfg.data
        if not self.classes_from_data:
            self._classes = self.find_classes()
            return None
        root = None if d.root is None else Path(d.root).expanduser()
        if self._classes is not None or d.classes or d.synth or (root and root.exists()):
            return None  # self.classes finds them without generating anything
        n = self.placeholder_classes
        self._classes = [f"class{i}" for i in range(n)]
        why = "data.root is not set" if root is None else f"data.root {root} does not exist"
        return (
            f"classes: {n} placeholder classes ({why}; pass data.classes=[a,b,...] or "
            "data=PATH for the real count)"
        )

    def build_data(self) -> DataBundle:
        """Train and val datasets: the one place data is prepared (generated on first use by a
        preset with ``data.synth``, else checked to exist) before it is read. Every entry point
        (train, eval, demo, quantize, the Python API) goes through here."""
        self.prepare_data()
        return self.datasets()

    def datasets(self) -> DataBundle:
        """The train and val datasets of prepared data (a task's own reading)."""
        raise NotImplementedError

    def to_device(self, batch: dict, device: torch.device, channels_last: bool = False) -> dict:
        """Move every tensor of a batch (nested lists too) to ``device``; NHWC images if asked."""

        def move(v):
            if isinstance(v, torch.Tensor):
                v = v.to(device, non_blocking=True)
                if channels_last and v.ndim == 4 and v.is_floating_point():
                    v = v.contiguous(memory_format=torch.channels_last)
                return v
            if isinstance(v, list):
                return [move(x) for x in v]
            return v

        return {k: move(v) for k, v in batch.items()}

    def network_input(self, batch: dict) -> torch.Tensor:
        """The image tensor of a batch that the exported network takes (calibration, export)."""
        return batch["image"]

    def forward(self, model: nn.Module, batch: dict) -> dict:
        """Model outputs for a batch; tasks with several networks or inputs override this."""
        return model(self.network_input(batch))

    def batch_size(self, batch: dict) -> int:
        return len(self.network_input(batch))

    # ---- model ------------------------------------------------------------------------------
    # The head used when model.head is null, and the outputs this task's loss and decoding read
    # (a head that declares ``outputs`` must provide them; see ``head_name``).
    default_head: str | None = None
    head_outputs: tuple[str, ...] = ()

    @property
    def head_name(self) -> str:
        """``model.head``, or this task's default head when it is null."""
        name = self.cfg.model.get("head") or self.default_head
        if name is None:
            raise ConfigError(f"model.head is null and task {self.name!r} has no default head")
        declared = getattr(HEADS.get(name), "outputs", None)
        missing = [k for k in self.head_outputs if declared is not None and k not in declared]
        if missing:
            raise ConfigError(
                f"model.head {name!r} gives {', '.join(declared)} but task {self.name!r} needs "
                f"{', '.join(self.head_outputs)} (default head: {self.default_head!r})"
            )
        return name

    def make_head(
        self, in_channels: list[int], strides: list[int], **task_kwargs: Any
    ) -> nn.Module:
        """The head of ``model.head`` with ``task_kwargs`` and ``model.head_args`` on top."""
        head_args = dict(self.cfg.model.get("head_args") or {})
        return build_head(self.head_name, in_channels, strides, head_args, **task_kwargs)

    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        return self.make_head(in_channels, strides)

    def build_model(self, load_pretrained: bool = True) -> nn.Module:
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

    # ---- training and evaluation --------------------------------------------------------------
    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def evaluator(self, dataset: Dataset, split: str = "val") -> Evaluator:
        """A fresh evaluator of this task's metrics for ``dataset``, keys prefixed ``split/``."""
        raise NotImplementedError

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[Any, Any]:
        """``(predictions, targets)`` of a batch, as this task's evaluator's ``update`` takes."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: dict, evaluator: Evaluator) -> None:
        """One batch (already on the device) into ``evaluator``: outputs, loss terms, pairs."""
        outputs = self.forward(model, batch)
        evaluator.add_losses(self.loss(outputs, batch), self.batch_size(batch))
        evaluator.update(*self.eval_pairs(outputs, batch))

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        loader,
        device: torch.device,
        plots_dir: Path | None = None,
        split: str = "val",
    ) -> EvalResult:
        """The evaluator's result over ``loader``; with ``plots_dir``, its figures written there.

        The caller puts ``model`` in eval mode.
        """
        evaluator = self.evaluator(loader.dataset, split)
        for batch in loader:
            self.eval_step(model, self.to_device(batch, device), evaluator)
        result = evaluator.compute()
        if plots_dir is not None:
            result.plots(plots_dir)
        return result

    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None:
        """samples.png (targets) or, with ``outputs``, predictions.png."""

    # ---- inference on raw images (predict) ----------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        raise NotImplementedError

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        raise NotImplementedError


def _cached_imagenet(arch: str | None) -> Path | None:
    """torchvision's ImageNet weights file for ``arch`` if the hub cache holds one."""
    from ..engine.weights import torchvision_weights_files

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
