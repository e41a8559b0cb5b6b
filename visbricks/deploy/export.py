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
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import VisbricksError, WeightsError
from ..files import atomic_write
from .loading import LoadedRun


class ExportError(VisbricksError):
    pass


def output_name(key: object) -> str:
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


def wrap_outputs(run: LoadedRun) -> tuple[TensorOutputs, list, list[str], torch.Tensor]:
    """(tuple-output wrapper, output keys, output names, example batch) of a run's network."""
    model = run.model.cpu().eval()
    height, width = run.task.img_size
    channels = run.cfg.model.in_channels
    # Batch 2 for the trace: a batch of 1 would be specialised as a constant.
    example = torch.randn(2, channels, height, width)
    with torch.no_grad():
        sample = model(example)
    keys = sorted(sample, key=str) if isinstance(sample, dict) else [None]
    names = [output_name(k) for k in keys] if keys != [None] else ["output"]
    return TensorOutputs(model, keys).eval(), keys, names, example


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
    wrapper, keys, names, example = wrap_outputs(run)
    channels, height, width = example.shape[1:]

    diffs: dict[str, float] = {}

    def write(tmp_name: str) -> None:
        tmp = Path(tmp_name)  # ends in out's suffix: the loaders go by it
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
                f"{run.cfg.model.backbone} ({run.cfg.task}) could not be exported to {fmt}: {first}"
            ) from e
        check = torch.randn(check_batch, channels, height, width)
        with torch.no_grad():
            reference = [t.numpy() for t in wrapper(check)]
        candidate = _run_exported(tmp, fmt, check)
        # Verified before it is renamed into place: a failed check leaves no file at out.
        diffs.update(compare_outputs(names, reference, candidate, atol, rtol))

    atomic_write(out, write, suffix=out.suffix)
    write_sidecar(run, out, fmt, keys, names, (height, width), channels)
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


def _json_key(key: object) -> object:
    return list(key) if isinstance(key, tuple) else key


def preprocess_info(run: LoadedRun) -> dict:
    """How an RGB uint8 image becomes the input tensor, in words and numbers."""
    cfg, task = run.cfg, run.task
    steps: dict = {"image": "RGB uint8 HWC → float CHW / 255, then (x - mean) / std"}
    if hasattr(task, "to_original"):  # box tasks: letterbox, boxes mapped back to the image
        steps.update(
            resize="letterbox: scale = min(H / h, W / w), resized image centred on a canvas "
            "of the input size filled with 114, then padded bottom/right to a multiple of 32",
            fill=114,
            pad_to_stride=32,
            inverse="image_xy = (canvas_xy - (pad_x, pad_y)) / scale, clipped to the image",
        )
    elif cfg.task in ("classify", "multilabel"):
        ratio = cfg.data.aug.crop_ratio
        steps.update(
            resize=f"short side (or both sides when not square) to input / {ratio} "
            "(bilinear, antialiased), then centre crop to the input size",
            crop_ratio=ratio,
        )
    else:
        steps.update(resize="bilinear resize to the input size")
    return steps


def decode_info(run: LoadedRun) -> dict:
    """What the outputs mean, enough to decode them without our source."""
    cfg, task = run.cfg, run.task
    if cfg.task == "detect":
        head = run.model.head
        gen = head.anchor_generator
        return {
            "kind": "ssd",
            "cls_logits": "(batch, A, C + 1): column 0 is background, class c is column c + 1",
            "background_column": 0,
            "scores": "sigmoid of columns 1..C (cls_loss focal or qfl)"
            if task.focal
            else "softmax over all C + 1 columns, then drop column 0",
            "box_deltas": "(batch, A, 4) SSD deltas (dx, dy, dw, dh) / variances",
            "decode": "cx = acx + dx*vx*aw, cy = acy + dy*vy*ah, w = aw*exp(min(dw*vw, clip)), "
            "h = ah*exp(min(dh*vh, clip)) → XYXY input pixels",
            "variances": list(task.box_coder.variances),
            "clip": task.box_coder.clip,
            "anchors": {
                "output": "anchors (A, 4) XYXY input pixels, the same for every image",
                "order": "level, then y, then x, then k (sizes × aspect ratios)",
                "sizes": gen.sizes,
                "aspect_ratios": gen.aspect_ratios,
                "strides": head.strides,
                "clip": gen.clip,
            },
            "nms": {
                "per_class_iou": cfg.eval.nms_thresh,
                "score_thresh": cfg.eval.conf_thresh,
                "topk_candidates": cfg.eval.topk_candidates,
                "max_detections": cfg.eval.max_detections,
            },
        }
    if cfg.task == "locate":
        return {
            "kind": "locate",
            "boxes": "(batch, 4) XYXY input-canvas pixels (undo the letterbox)",
            "logits": "(batch, C) softmax over the classes",
        }
    if cfg.task == "multilabel":
        return {
            "kind": "multilabel",
            "logits": "(batch, C) sigmoid per class",
            "threshold": cfg.eval.threshold,
        }
    if cfg.task == "classify":
        return {"kind": "classify", "logits": "(batch, C) softmax over the classes"}
    if cfg.task == "depth":
        m = cfg.model
        return {
            "kind": "depth",
            "disp": "sigmoid disparity s; depth = 1 / (1/max + (1/min - 1/max) * s)",
            "min_depth": m.get("min_depth"),
            "max_depth": m.get("max_depth"),
        }
    if hasattr(task, "decode_info"):  # tasks that describe their own outputs (lanes)
        return task.decode_info()
    return {"kind": cfg.task}


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | Path) -> dict:
    meta = sidecar_path(path)
    if not meta.is_file():
        raise WeightsError(
            f"{path} has no {meta.name} beside it: it holds the config, classes and output names "
            f"needed to prepare inputs and decode outputs (export/quantize write it)"
        )
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        # Truncated (a copy cut short) or hand-edited: say where, not a parser traceback.
        raise WeightsError(
            f"{meta}: not valid JSON ({e.msg}: line {e.lineno}, column {e.colno}); it is "
            f"written by export/quantize beside {Path(path).name}: export the model again"
        ) from None
    except UnicodeDecodeError as e:
        raise WeightsError(
            f"{meta}: not UTF-8 text (byte {e.start}); export the model again"
        ) from None
    if not isinstance(info, dict):
        raise WeightsError(
            f"{meta}: expected a JSON object as export writes it, got {type(info).__name__}"
        )
    # The fields the runtime reads, with their types: a wrong one would fail deep inside
    # load_config or ONNX Runtime instead of naming this file.
    wanted = {"config": dict, "classes": list, "output_keys": list, "input": dict}
    for key, kind in wanted.items():
        if key not in info:
            raise WeightsError(f"{meta}: missing {key!r} (re-export the model with this version)")
        if not isinstance(info[key], kind):
            raise WeightsError(
                f"{meta}: {key!r} must be a {'mapping' if kind is dict else 'list'}, "
                f"got {type(info[key]).__name__}; export the model again"
            )
    shape = info["input"].get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(_dim_ok(d) for d in shape[1:])):
        raise WeightsError(
            f"{meta}: input.shape must be [batch, channels, height, width] with positive ints, "
            f"got {shape!r}; export the model again"
        )
    if not all(isinstance(c, str) for c in info["classes"]) or not info["output_keys"]:
        raise WeightsError(
            f"{meta}: 'classes' must be names and 'output_keys' non-empty; export the model again"
        )
    return info


def _dim_ok(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def write_sidecar(
    run: LoadedRun,
    out: Path,
    fmt: str,
    keys: list,
    names: list[str],
    size: tuple[int, int],
    channels: int,
    extra: dict | None = None,
) -> None:
    """The JSON beside an exported file: everything needed to feed it and decode its outputs,
    and the resolved config our tools rebuild the task from."""
    model = getattr(run.model, "model", run.model)  # an eager run's network
    info = {
        "format": fmt,
        "task": run.cfg.task,
        "input": {
            "name": "images",
            "shape": ["batch", channels, size[0], size[1]],
            "dtype": "float32",
            "layout": "NCHW, RGB, 0..1 then (x - mean) / std",
            "mean": list(run.task.mean),
            "std": list(run.task.std),
        },
        "preprocess": preprocess_info(run),
        "outputs": names,
        "output_keys": [_json_key(k) for k in keys],
        "decode": decode_info(run),
        "classes": list(run.classes),
        "params": sum(p.numel() for p in model.parameters()),
        "weights": str(run.weights),
        "config": run.cfg.to_dict(),
        **(extra or {}),
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=1, default=str))


def existing_export(run: LoadedRun) -> Path | None:
    """``<weights>.onnx`` when ``export`` wrote it from these very weights (and after them), and
    its graph is still the one its JSON describes (a file copied over it is not reused)."""
    path = run.weights.with_suffix(".onnx")
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        return None
    try:
        info = read_sidecar(path)
        same = info.get("weights") == str(run.weights)
    except Exception:
        return None
    fresh = path.stat().st_mtime >= run.weights.stat().st_mtime
    if not (same and fresh):
        return None
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = [o.name for o in session.get_outputs()]
        check_outputs(path, info, got, got != sidecar_output_names(info))
        check_input(path, info, session.get_inputs()[0].shape)
    except Exception as e:  # unreadable or another model's graph: export afresh instead
        why = e if isinstance(e, WeightsError) else f"{path}: not loadable ({type(e).__name__})"
        print(f"warning: not reusing {path.name}: {why}", file=sys.stderr)
        return None
    return path


def sidecar_output_names(info: dict) -> list[str]:
    """The output names export gave the graph, as its JSON records them."""
    names = info.get("outputs")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    keys = info["output_keys"]
    if keys == [None]:  # a network returning one tensor, not a dict
        return ["output"]
    return [output_name(tuple(k) if isinstance(k, list) else k) for k in keys]


def check_outputs(path: Path, info: dict, got: list[str], mismatch: bool) -> None:
    """The graph's outputs against those its JSON promises the task: a file copied over another
    model's (a classifier's over a detector's) is refused here, naming both, instead of failing
    inside the task's decoding or ONNX Runtime with a shape error."""
    if not mismatch:
        return
    meta = path.with_suffix(".json").name
    raise WeightsError(
        f"{path}: the exported network's outputs ({', '.join(got) or 'none'}) do not match the "
        f"task {info.get('task') or info['config'].get('task')!r} that {meta} describes "
        f"(outputs {', '.join(sidecar_output_names(info))}); the file belongs to another model: "
        f"export this one again"
    )


def check_input(path: Path, info: dict, shape: list) -> None:
    """The graph's fixed input dims (channels, height, width) against the JSON's."""
    expected = [int(d) for d in info["input"]["shape"][1:]]
    fixed = [d if isinstance(d, int) else None for d in list(shape)[1:]]
    if len(fixed) != 3 or any(d is not None and d != e for d, e in zip(fixed, expected)):
        raise WeightsError(
            f"{path}: the exported network takes inputs {list(shape)}, but "
            f"{path.with_suffix('.json').name} describes (batch, {', '.join(map(str, expected))}); "
            f"the file belongs to another model: export this one again"
        )
