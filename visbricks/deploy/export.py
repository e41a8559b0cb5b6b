"""``visbricks export``: trained weights to ONNX or a torch.export program, checked against eager.

What is exported is the network (backbone → neck → head): images in, the same raw outputs the
task's ``postprocess`` takes (class logits, box deltas, disparities) out, as a tuple in the order
of ``output_names``. Decoding and NMS stay outside the graph (``batched_nms`` does not export
with the dynamo exporter). The batch dimension is dynamic. A file is written only after its
outputs matched eager PyTorch on a batch of a different size from the export example; the JSON
next to it holds what a consumer needs to prepare inputs: size, normalisation, class names.

The PyTorch-native format is ``torch.export``'s ``.pt2`` (``torch.export.load(path).module()``):
TorchScript is deprecated in this torch (``torch.jit.trace`` warns so) and its tracer rejects
outputs that do not depend on the input, such as the detector's anchors.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import VisbricksError
from .loading import LoadedRun


class ExportError(VisbricksError):
    pass


def _output_name(key: object) -> str:
    """("disp", 0) → "disp_0"; plain strings stay."""
    if isinstance(key, tuple):
        return "_".join(str(k) for k in key)
    return str(key)


class TensorOutputs(nn.Module):
    """The model with its dict output flattened into a tuple in a fixed key order."""

    def __init__(self, model: nn.Module, keys: list) -> None:
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        if isinstance(out, torch.Tensor):
            return (out,)
        return tuple(out[k] for k in self.keys)


@dataclass
class ExportReport:
    path: Path
    format: str
    output_names: list[str]
    max_abs_diff: dict[str, float]
    checked_batch: int

    def __str__(self) -> str:
        worst = max(self.max_abs_diff.values())
        return (
            f"exported {self.format} to {self.path} ({self.path.stat().st_size / 2**20:.1f} MB); "
            f"outputs {', '.join(self.output_names)}; checked against eager PyTorch on a batch "
            f"of {self.checked_batch}: max |difference| {worst:.2e}"
        )


def compare_outputs(
    names: list[str], reference: list, candidate: list, atol: float, rtol: float
) -> dict[str, float]:
    """Max absolute difference per output; ExportError naming the first one out of tolerance."""
    diffs = {}
    for name, ref, got in zip(names, reference, candidate, strict=True):
        ref = torch.as_tensor(ref, dtype=torch.float32)
        got = torch.as_tensor(got, dtype=torch.float32)
        if ref.shape != got.shape:
            raise ExportError(
                f"output {name}: exported shape {tuple(got.shape)} != eager {tuple(ref.shape)}"
            )
        diff = (ref - got).abs()
        diffs[name] = float(diff.max()) if diff.numel() else 0.0
        bound = atol + rtol * ref.abs()
        if not bool((diff <= bound).all()):
            raise ExportError(
                f"output {name} differs from eager PyTorch by up to {diffs[name]:.3g} "
                f"(tolerance {atol} + {rtol}·|value|); the file was not written"
            )
    return diffs


def export(
    run: LoadedRun,
    out: str | Path,
    fmt: str = "onnx",
    atol: float = 1e-4,
    rtol: float = 1e-3,
    check_batch: int = 3,
) -> ExportReport:
    """Export ``run``'s network to ``out`` (``onnx`` or ``pt2``) and verify it."""
    if fmt not in ("onnx", "pt2"):
        raise ExportError(f"export format must be 'onnx' or 'pt2', got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = run.model.cpu().eval()
    height, width = run.task.img_size
    channels = run.cfg.model.in_channels
    # Batch 2 for the trace: a batch of 1 would be specialised as a constant.
    example = torch.randn(2, channels, height, width)
    with torch.no_grad():
        sample = model(example)
    keys = sorted(sample, key=str) if isinstance(sample, dict) else [None]
    names = [_output_name(k) for k in keys] if keys != [None] else ["output"]
    wrapper = TensorOutputs(model, keys).eval()

    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")  # keeps the suffix loaders check
    try:
        try:
            if fmt == "onnx":
                _export_onnx(wrapper, example, tmp, names)
            else:
                batch = torch.export.Dim("batch")
                program = torch.export.export(
                    wrapper, (example,), dynamic_shapes={"images": {0: batch}}
                )
                torch.export.save(program, str(tmp))
        except ExportError:
            raise
        except Exception as e:  # the exporters fail deep inside torch; say what and where
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(
                f"{run.cfg.model.backbone} ({run.cfg.task}) could not be exported to {fmt}: "
                f"{first}"
            ) from e
        check = torch.randn(check_batch, channels, height, width)
        with torch.no_grad():
            reference = [t.numpy() for t in wrapper(check)]
        candidate = _run_exported(tmp, fmt, check)
        diffs = compare_outputs(names, reference, candidate, atol, rtol)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    _write_sidecar(run, out, fmt, names, (height, width), channels)
    return ExportReport(out, fmt, names, diffs, check_batch)


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path, names: list[str]) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so before it fails deep inside)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError("ONNX export needs: pip install 'visbricks[deploy]'") from e
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        wrapper,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=names,
        dynamic_shapes={"images": {0: batch}},
        verbose=False,
    )
    # One self-contained file: the weights inside, not in a side file that is easily lost.
    program.save(str(path), external_data=False)


def _run_exported(path: Path, fmt: str, images: torch.Tensor) -> list:
    if fmt == "pt2":
        loaded = torch.export.load(str(path)).module()
        with torch.no_grad():
            return [t.numpy() for t in loaded(images)]
    try:
        import onnxruntime
    except ImportError as e:
        raise ExportError("checking an ONNX export needs: pip install onnxruntime") from e
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def _write_sidecar(
    run: LoadedRun, out: Path, fmt: str, names: list[str], size: tuple[int, int], channels: int
) -> None:
    info = {
        "format": fmt,
        "task": run.cfg.task,
        "input": {
            "name": "images",
            "shape": ["batch", channels, size[0], size[1]],
            "dtype": "float32",
            "layout": "RGB, 0..1 then (x - mean) / std",
            "mean": list(run.task.mean),
            "std": list(run.task.std),
        },
        "outputs": names,
        "classes": list(run.classes),
        "weights": str(run.weights),
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
