"""Rebuild a trained model from what a run published: ``best.safetensors`` + ``best.yaml``,
a run folder, or a ``last.ckpt`` (which carries its config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from ..config import Config, load_config
from ..engine.checkpoint import read_checkpoint
from ..engine.weights import read_state_dict
from ..errors import WeightsError


@dataclass
class LoadedRun:
    cfg: Config
    task: object
    model: nn.Module
    classes: list[str]
    weights: Path
    info: dict
    # The weights an on-the-fly export (``--backend`` on our weights) came from: outputs of
    # eval / predict / report go beside them, not into the temporary folder of the export.
    source: Path | None = None

    @property
    def origin(self) -> Path:
        """The file the user named: where this run's outputs belong."""
        return self.source or self.weights


def _locate(path: Path) -> tuple[Path, dict]:
    """(weights file, its info dict with 'config' and 'classes')."""
    if path.is_dir():
        if (path / "weights").is_dir():
            path = path / "weights"
        path = path / "best.safetensors"
    if not path.is_file():
        raise WeightsError(
            f"no weights at {path} (give a run folder, best.safetensors or last.ckpt)"
        )
    if path.suffix == ".ckpt":
        ckpt = read_checkpoint(path, ("model", "config", "classes"))
        return path, {
            "config": ckpt["config"],
            "classes": ckpt["classes"],
            "epoch": ckpt.get("epoch"),
        }
    meta = path.with_suffix(".yaml")
    if not meta.is_file():
        raise WeightsError(
            f"{path} has no {meta.name} beside it: it holds the config and classes the model needs"
        )
    try:
        info = yaml.safe_load(meta.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{meta}: not readable YAML ({first})") from None
    if (
        not isinstance(info, dict)
        or not isinstance(info.get("config"), dict)
        or not isinstance(info.get("classes"), list)
    ):
        raise WeightsError(
            f"{meta}: expected a mapping with 'config' and 'classes' (as training writes it)"
        )
    return path, info


def load_run(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    device: str | torch.device = "cpu",
) -> LoadedRun:
    from ..tasks import build_task

    weights, info = _locate(Path(path))
    config = dict(info["config"])
    config["resume"] = None
    config.setdefault("data", {})["classes"] = list(info["classes"])
    cfg = load_config(config, overrides)
    cfg["model"]["pretrained"] = None  # the published weights replace any initialisation
    task = build_task(cfg)
    model = task.build_model(load_pretrained=False)
    state = read_state_dict(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"{weights} does not match the model its config describes "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.to(device).eval()
    return LoadedRun(cfg, task, model, list(info["classes"]), weights, info)
