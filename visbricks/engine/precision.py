"""The device and what it computes fastest: mixed precision, memory layout, data-loader workers.

``train.amp``, ``model.channels_last`` and ``workers`` default to ``auto``; the functions here turn
``auto`` into a concrete choice from what torch reports about the device (never by parsing
/proc/cpuinfo), so a run prints and records the mode it actually used.

Rules (documented in configs/defaults/base.yaml too):
- amp auto: CUDA → fp16 with a GradScaler; a CPU with native bf16 (AMX tiles or AVX-512-BF16,
  as torch.cpu reports them) → bf16 autocast; anything else → fp32. bf16 keeps fp32's exponent
  range, so it needs no loss scaling.
- channels_last auto: on with CUDA and with CPU bf16 (oneDNN's and cuDNN's fast convolution
  kernels take NHWC; bf16 AMX convolutions run NHWC natively). For fp32 on a CPU the gain
  depends on the model and the machine (ResNet-18 at 224 px trained 1.28x faster NHWC on an AMD
  EPYC, the demo SSD at 128 px 1.07x; an earlier row of docs/benchmarks.md has that SSD 0.88x),
  so the Trainer measures both on the run's model (engine/layout.py), keeping NCHW unless NHWC
  is clearly faster; this rule's answer there, off, is what deterministic runs and inference
  use, since their layout must not depend on a timing.
- workers auto: worker processes (persistent, with prefetch) so that augmentation overlaps the
  step: on CUDA all but one core up to 8; on a CPU a quarter of the cores, at least 1 and at most
  4, leaving the rest to compute (even with cached decodes, the main process would otherwise
  spend the transform and collate time of every batch waiting: detect-shapes' box-aware
  augmentation is several % of a bf16 step on 2 cores). 0 on a single core, and 0 for
  ``deterministic`` runs: their workers would restart every epoch (so that an epoch's
  augmentation depends only on (seed, epoch)) and lose their decode caches each time.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import torch

from ..config import check_device
from ..errors import ConfigError, VisbricksError

AMP_CHOICES = ("auto", "fp32", "bf16", "fp16", True, False)


def select_device(spec: str) -> torch.device:
    """``device``: ``auto`` is CUDA when present, else the CPU; a CUDA device asked for where
    there is none is one error, not a late failure inside the first step."""
    check_device(spec)  # a command's --device too, not only the config's key
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VisbricksError(f"device={spec!r} but CUDA is not available here; use device=auto")
    return device


def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bf16 matrix math natively (AMX tiles or AVX-512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in checks:
        fn = getattr(torch.cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:  # very old CPUs / builds without the probe
            continue
    return False


def cuda_has_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class Precision:
    """The arithmetic of a run: ``mode`` is fp32, bf16 or fp16 (what config.yaml records)."""

    mode: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)

    @property
    def enabled(self) -> bool:
        return self.mode != "fp32"

    @property
    def needs_scaler(self) -> bool:
        # fp16's narrow exponent underflows small gradients; bf16 has fp32's range.
        return self.mode == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        names = {"fp32": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler"}
        return f"{names[self.mode]} on {self.device_type}"


def resolve_amp(spec: object, device: torch.device, key: str = "train.amp") -> Precision:
    """``auto | true | false | fp32 | bf16 | fp16`` → the :class:`Precision` used on ``device``.

    ``true`` asks for mixed precision whatever the hardware (fp16 on CUDA, bf16 elsewhere —
    emulated and slow on CPUs without native bf16); ``false``/``fp32`` turns it off.
    """
    if isinstance(spec, str):
        spec = spec.lower()
    if spec not in AMP_CHOICES:
        raise ConfigError(f"{key} must be auto, true, false, fp32, bf16 or fp16; got {spec!r}")
    dev = device.type
    if spec in (False, "fp32"):
        return Precision("fp32", dev)
    if spec in ("bf16", "fp16"):
        if spec == "bf16" and dev == "cuda" and not cuda_has_bf16(device):
            raise ConfigError(f"{key}=bf16 but this GPU has no bf16 support; use fp16 or auto")
        if dev not in ("cuda", "cpu"):
            raise ConfigError(f"{key}={spec} is supported on cuda and cpu, not {dev}")
        return Precision(spec, dev)
    if dev == "cuda":
        return Precision("fp16", dev)
    if dev == "cpu" and (spec is True or cpu_has_native_bf16()):
        return Precision("bf16", dev)
    return Precision("fp32", dev)


def resolve_channels_last(
    spec: object, device: torch.device, precision: Precision, key: str = "model.channels_last"
) -> bool:
    """``auto | true | false`` (null counts as auto) → whether to use NHWC (rule above)."""
    if spec is None or spec == "auto":
        return device.type == "cuda" or (device.type == "cpu" and precision.mode == "bf16")
    if isinstance(spec, bool):
        if not spec and device.type == "cpu" and precision.mode == "bf16":
            # Seen here (torch 2.14.1, AMX CPU): a ResNet-18 trained under CPU bf16 autocast in
            # NCHW reached train-mode accuracy 1.0 but eval-mode 0.0 (its BatchNorm running
            # statistics went wrong); the same run channels-last was right. Not silently wrong:
            # CPU bf16 always runs channels-last, and says so.
            warnings.warn(
                f"{key}=false is not used with bf16 autocast on a CPU (NCHW gave wrong "
                "BatchNorm statistics here); training channels-last",
                stacklevel=2,
            )
            return True
        return spec
    raise ConfigError(f"{key} must be auto, true or false; got {spec!r}")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(
    spec: object,
    device: torch.device,
    cached: bool = False,
    cores: int | None = None,
    deterministic: bool = False,
) -> int:
    """``auto`` or a count → DataLoader worker processes (rule above). ``cached`` (decodes kept
    in memory) does not change the count today: the transforms still need overlapping."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0:
            raise ConfigError(f"workers must be auto or a count >= 0; got {spec}")
        return spec
    if spec != "auto":
        raise ConfigError(f"workers must be auto or a count >= 0; got {spec!r}")
    cores = cores or cpu_count()
    if deterministic or cores <= 1:
        return 0
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return max(1, min(4, cores // 4))


def to_float32(value):
    """``value`` with every low-precision floating tensor (nested in dicts, lists, tuples) as
    float32: losses, box coding and metrics see fp32 whatever ran under autocast."""
    if isinstance(value, torch.Tensor):
        if value.dtype in (torch.bfloat16, torch.float16):
            return value.float()
        return value
    if isinstance(value, dict):
        return type(value)((k, to_float32(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(to_float32(v) for v in value)
    return value
