"""Checkpoints and RNG state: written atomically (``visbricks.files``), so a crash mid-save never
leaves a truncated checkpoint behind."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_write

# What Trainer._checkpoint writes and a resume reads back.
RESUME_KEYS = ("model", "optimizer", "schedule", "scaler", "epoch", "best", "rng", "generator")
RESUME_KEYS += ("config",)

def read_checkpoint(path: str | Path, need: tuple[str, ...] = ("model", "config")) -> dict:
    """A visbricks checkpoint (``last.ckpt``), loaded without unpickling; WeightsError names the
    file and what is wrong with it (missing, pickled objects, truncated, not a checkpoint)."""
    import pickle

    from ..errors import WeightsError

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or ["pickled object"])[0]
        raise WeightsError(
            f"{path}: refused — it contains pickled Python objects, which visbricks never loads "
            f"({first[:120]})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(
            f"{path}: not a readable checkpoint (truncated or corrupt? {first[:160]})"
        ) from None
    if not isinstance(obj, dict) or any(k not in obj for k in need):
        found = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(
            f"{path}: not a visbricks training checkpoint (needs {', '.join(need)}; found "
            f"{found}); a plain state dict goes to model.pretrained=PATH instead"
        )
    if not isinstance(obj["config"], dict):
        raise WeightsError(f"{path}: its 'config' entry is not a mapping")
    return obj


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | Path, metadata=None) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or non-contiguous storage; published weights are plain copies.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def get_rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, as ``torch.load(weights_only=True)`` reads it."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
