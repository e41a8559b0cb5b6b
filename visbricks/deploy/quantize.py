"""``visbricks quantize``: static int8 post-training quantization, calibrated on real images.

Two backends, one contract: the int8 file takes the same input tensor as the fp32 network and
returns the same outputs, so the task's decoding (softmax, anchors + box coder + NMS, depth
scaling) runs unchanged outside the graph.

- ``onnxruntime`` (default): the verified fp32 ONNX export, then ONNX Runtime's static QDQ
  quantization — per-channel int8 weights, uint8 activations (the fast pair on x86 with VNNI),
  ranges from the calibration images. ``<weights>.int8.onnx``.
- ``torch``: torchao's pt2e flow with ``X86InductorQuantizer`` (the quantizer inductor lowers to
  oneDNN int8 kernels), saved as a ``torch.export`` program ``<weights>.int8.pt2``; run it under
  ``torch.compile`` for speed (``bench`` does).

Calibration uses ``calib`` images of the run's *training* split with the evaluation transform
(no augmentation): ranges must reflect what the model sees at inference. Layers named in
``float_layers`` (module names of our model, e.g. ``head`` or ``backbone.features.0``) stay in
float; when int8 loses more than ``max_drop`` points of the task's metric and no layers were
named, the head is kept in float and quantization retried, and the report says so.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..config import load_config
from ..errors import ConfigError, VisbricksError
from .export import existing_export, export, read_sidecar, wrap_outputs, write_sidecar
from .loading import LoadedRun
from .runtime import OnnxRuntimeModel, ProgramModel

QUANT_BACKENDS = ("onnxruntime", "torch")


class QuantizeError(VisbricksError):
    pass


# ---- data ---------------------------------------------------------------------------------------
def split_loader(
    run: LoadedRun, split: str = "val", limit: int | None = None, batch_size: int | None = None
) -> DataLoader:
    """A loader over ``split`` of the run's data with the evaluation transform (no augmentation).

    ``limit`` takes that many images spread evenly over the split (calibration)."""
    config = run.cfg.to_dict()
    if split == "train":  # the val pipeline (eval transform) pointed at the training split
        config["data"]["val"] = config["data"]["train"]
    from ..tasks import build_task

    task = build_task(load_config(config))
    data = task.build_data()
    dataset = data.val
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--calib must be at least 1, got {limit}")
        n = len(dataset)
        dataset = Subset(dataset, np.linspace(0, n - 1, min(limit, n)).round().astype(int))
    return DataLoader(
        dataset,
        batch_size=batch_size or run.cfg.batch_size,
        collate_fn=data.collate_fn,
        num_workers=0,
    )


def calibration_batches(run: LoadedRun, n: int, batch_size: int = 8) -> list[torch.Tensor]:
    """``n`` training images as input tensors, ready for the network."""
    loader = split_loader(run, "train", n, batch_size)
    cpu = torch.device("cpu")
    return [run.task.network_input(run.task.to_device(b, cpu)).float() for b in loader]


def val_metrics(run: LoadedRun, device: str | torch.device = "cpu") -> dict[str, float]:
    """The task's metrics of ``run.model`` (any backend) on the validation split."""
    loader = split_loader(run, "val")
    result = run.task.evaluate(run.model.to(device), loader, torch.device(device), None)
    return dict(getattr(result, "metrics", result))  # an EvalResult, or a plain dict


# ---- quantization -------------------------------------------------------------------------------
def _onnx_nodes_under(model_path: Path, modules: list[str]) -> list[str]:
    """Names of ONNX nodes the exporter traced inside the given modules of our network (the
    dynamo exporter records each node's module path in ``pkg.torch.onnx.name_scopes``)."""
    import onnx

    prefixes = tuple(f"model.{m}" for m in modules)
    graph = onnx.load(str(model_path)).graph
    names = []
    for node in graph.node:
        scopes = next(
            (p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), ""
        )
        if any(f"'{p}'" in scopes or f"'{p}." in scopes for p in prefixes):
            names.append(node.name)
    return names


def quantize_onnx(
    run: LoadedRun,
    out: Path,
    batches: list[torch.Tensor],
    float_layers: list[str],
    fp32_onnx: Path | None = None,
) -> dict:
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as e:
        raise QuantizeError("int8 with ONNX Runtime needs: pip install 'visbricks[deploy]'") from e

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"images": x.numpy()}

    with tempfile.TemporaryDirectory(prefix="visbricks-quant-") as tmp_folder:
        folder = Path(tmp_folder)
        fp32 = fp32_onnx or existing_export(run)
        if fp32 is None:
            fp32 = folder / "fp32.onnx"
            export(run, fp32, "onnx")  # verified against eager before anything is quantized
        excluded = _onnx_nodes_under(fp32, float_layers) if float_layers else []
        try:  # shape inference only: node names (and the float layers found above) stay valid
            from onnxruntime.quantization.shape_inference import quant_pre_process

            prepared = folder / "prepared.onnx"
            quant_pre_process(str(fp32), str(prepared), skip_optimization=True)
            fp32 = prepared
        except Exception:  # optional step: quantize the export as it is
            pass
        if float_layers and not excluded:
            raise QuantizeError(
                f"--float {','.join(float_layers)}: no layer of the model has that name"
            )
        tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
        try:
            quantize_static(
                str(fp32),
                str(tmp),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
            )
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return {"float_nodes": len(excluded)}


def _split_reused_modules(module: torch.fx.GraphModule) -> int:
    """Give each call of a module that is called more than once (torchvision's BasicBlock calls
    its one ``relu`` twice) its own name in the nodes' ``nn_module_stack``.

    The x86 quantizer groups nodes into patterns by that name; two calls under one name form a
    "partition with more than one output node" and it gives up on the whole model."""
    groups: dict[str, list] = defaultdict(list)
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack:
            groups[list(stack.values())[-1][0]].append(node)
    split = 0
    for nodes in groups.values():
        members = set(nodes)
        if sum(any(u not in members for u in n.users) for n in nodes) > 1:
            split += 1
            for node in nodes:
                stack = dict(node.meta["nn_module_stack"])
                key = list(stack)[-1]
                fqn, cls = stack[key]
                stack[key] = (f"{fqn}@{node.name}", cls)
                node.meta["nn_module_stack"] = stack
    return split


def quantize_torch(
    run: LoadedRun,
    out: Path,
    batches: list[torch.Tensor],
    float_layers: list[str],
    fp32_onnx: Path | None = None,
) -> dict:
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:
        raise QuantizeError("int8 with --backend torch needs: pip install torchao") from e
    wrapper, _, _, example = wrap_outputs(run)
    wrapper = copy.deepcopy(wrapper).eval()
    batch = torch.export.Dim("batch")
    try:
        graph = torch.export.export(wrapper, (example,), dynamic_shapes={"images": {0: batch}})
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise QuantizeError(
            f"{run.cfg.model.backbone}: torch.export cannot trace it for pt2e ({first}); "
            "use --backend onnxruntime"
        ) from e
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    names = {n for n, _ in wrapper.named_modules()}
    for layer in float_layers:
        if f"model.{layer}" not in names:
            raise QuantizeError(f"--float {layer}: no layer of the model has that name")
        for name in names:  # a module's submodules too: their own names match first
            if name == f"model.{layer}" or name.startswith(f"model.{layer}."):
                quantizer.set_module_name_qconfig(name, None)
    module = graph.module()
    _split_reused_modules(module)
    prepared = prepare_pt2e(module, quantizer)
    with torch.no_grad():
        for x in batches:
            prepared(x)
    converted = convert_pt2e(prepared)
    program = torch.export.export(converted, (example,), dynamic_shapes={"images": {0: batch}})
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    try:
        torch.export.save(program, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {}


@dataclass
class QuantizeReport:
    path: Path
    backend: str
    metric: str
    fp32: float
    int8: float
    float_layers: list[str]
    calib: int
    sizes_mb: tuple[float, float]
    latency_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    retried: bool = False

    @property
    def drop_points(self) -> float:
        return 100 * (self.fp32 - self.int8)

    def __str__(self) -> str:
        batches = sorted({b for v in self.latency_ms.values() for b in v})
        head = f"{'':<6} {self.metric:>12} {'size MB':>8}" + "".join(
            f" {f'p50 ms @{b}':>11}" for b in batches
        )
        lines = [f"int8 ({self.backend}, calibrated on {self.calib} training images)", head]
        for name, value, size in (
            ("fp32", self.fp32, self.sizes_mb[0]),
            ("int8", self.int8, self.sizes_mb[1]),
        ):
            lat = self.latency_ms.get(name, {})
            cells = "".join(f" {lat[b]:11.2f}" if b in lat else f" {'-':>11}" for b in batches)
            lines.append(f"{name:<6} {value:12.4f} {size:8.2f}{cells}")
        ratios = [
            f"batch {b}: {self.latency_ms['fp32'][b] / self.latency_ms['int8'][b]:.2f}x"
            for b in batches
            if b in self.latency_ms.get("fp32", {}) and b in self.latency_ms.get("int8", {})
        ]
        lines.append(
            f"metric change {-self.drop_points:+.2f} points"
            + (f"; int8 speed-up over fp32 eager {', '.join(ratios)}" if ratios else "")
        )
        kept = ", ".join(self.float_layers) if self.float_layers else "none"
        lines.append(
            f"layers kept in float: {kept}"
            + (" (int8 of the whole model lost too much: retried)" if self.retried else "")
        )
        lines.append(f"written: {self.path} (+ {self.path.with_suffix('.json').name})")
        return "\n".join(lines)


def default_output(run: LoadedRun, backend: str) -> Path:
    return run.weights.with_suffix(".int8.onnx" if backend == "onnxruntime" else ".int8.pt2")


def quantize(
    run: LoadedRun,
    out: str | Path | None = None,
    backend: str = "onnxruntime",
    calib: int = 200,
    float_layers: list[str] | None = None,
    max_drop: float | None = 1.0,
    evaluate: bool = True,
    bench_batches: tuple[int, ...] = (1, 8),
    bench_iters: int = 20,
    fp32_onnx: Path | None = None,
) -> QuantizeReport:
    """Quantize ``run`` (eager weights) to int8 with ``backend``; evaluate and time both.

    ``fp32_onnx``: a verified export of these weights to start from (else ``<weights>.onnx``
    when export wrote it from them, else a fresh export)."""
    if backend not in QUANT_BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(QUANT_BACKENDS)}, got {backend!r}")
    if not isinstance(run.model, torch.nn.Module) or hasattr(run.model, "session"):
        raise ConfigError("quantize takes our weights (a run folder or best.safetensors)")
    out = Path(out) if out else default_output(run, backend)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".onnx" if backend == "onnxruntime" else ".pt2"
    if out.suffix != suffix:
        raise ConfigError(f"--out for --backend {backend} must end in {suffix}, got {out.name}")
    run.model.cpu().eval()
    modules = {name for name, _ in run.model.named_modules()}
    for layer in float_layers or []:  # named before any time is spent
        if layer not in modules:
            raise QuantizeError(f"--float {layer}: no layer of the model has that name")
    batches = calibration_batches(run, calib)
    n_calib = sum(len(b) for b in batches)
    layers = list(float_layers or [])
    fp32_metric = val_metrics(run)[run.task.metric] if evaluate else float("nan")

    def make(kept: list[str]) -> tuple[LoadedRun, float]:
        quant = quantize_onnx if backend == "onnxruntime" else quantize_torch
        quant(run, out, batches, kept, fp32_onnx)
        wrapper, keys, names, example = wrap_outputs(run)
        extra = {
            "quantized": {
                "backend": backend,
                "dtype": "int8",
                "scheme": "static QDQ, per-channel int8 weights, uint8 activations"
                if backend == "onnxruntime"
                else "pt2e X86InductorQuantizer (static, per-channel weights)",
                "calibration_images": n_calib,
                "float_layers": kept,
            }
        }
        write_sidecar(
            run, out, "onnx" if backend == "onnxruntime" else "pt2",
            keys, names, tuple(example.shape[2:]), example.shape[1], extra,
        )  # fmt: skip
        info = read_sidecar(out)
        model = OnnxRuntimeModel(out, info) if backend == "onnxruntime" else ProgramModel(out, info)
        int8_run = LoadedRun(run.cfg, run.task, model, run.classes, out, info)
        metric = val_metrics(int8_run)[run.task.metric] if evaluate else float("nan")
        return int8_run, metric

    int8_run, int8_metric = make(layers)
    retried = False
    if (
        evaluate
        and not layers
        and max_drop is not None
        and 100 * (fp32_metric - int8_metric) > (max_drop)
    ):
        layers, retried = ["head"], True
        int8_run, int8_metric = make(layers)

    report = QuantizeReport(
        out,
        backend,
        run.task.metric,
        fp32_metric,
        int8_metric,
        layers,
        n_calib,
        (run.weights.stat().st_size / 2**20, out.stat().st_size / 2**20),
        retried=retried,
    )
    if bench_batches:
        from .benchmark import benchmark

        h, w = run.task.img_size
        channels = run.cfg.model.in_channels
        if backend == "torch":  # the reference int8 graph is only fast once inductor lowers it
            int8_run.model = ProgramModel(out, int8_run.info, compile=True)
        for name, model, fuse in (("fp32", run.model, True), ("int8", int8_run.model, False)):
            try:
                bench = benchmark(
                    model, (h, w), bench_batches, channels, warmup=3, iters=bench_iters, fuse=fuse
                )
            except VisbricksError:
                raise
            except Exception as e:  # torch.compile needs a C++ compiler: time what we can
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                print(f"warning: {name} latency not measured ({first})")
                continue
            report.latency_ms[name] = {r.batch: r.p50_ms for r in bench.rows}
    return report
