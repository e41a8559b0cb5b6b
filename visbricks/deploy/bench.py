"""What ``visbricks bench`` runs: one backend of a run's weights or exported file, or ``--compare``
(eager, ONNX Runtime fp32 and int8 of the same weights, one after the other).

The timing itself is ``benchmark.py``'s; this module only picks the models to time, exporting
and quantizing where no file exists yet, so ``benchmark`` and ``quantize`` never import each
other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import VisbricksError
from .benchmark import BenchReport, benchmark, gemm_peak_gflops, model_flops


@dataclass
class CompareReport:
    """Several backends of the same weights, timed one after the other in one process."""

    reports: list[BenchReport] = field(default_factory=list)

    def __str__(self) -> str:
        base = self.reports[0]
        lines = [str(r) + "\n" for r in self.reports]
        lines.append(f"side by side (speed-up = {base.label} p50 / backend p50):")
        lines.append(f"{'backend':<28} {'batch':>5} {'p50 ms':>9} {'images/s':>9} {'speed-up':>9}")
        for r in self.reports:
            for row, ref in zip(r.rows, base.rows):
                lines.append(
                    f"{r.label:<28} {row.batch:>5} {row.p50_ms:9.2f} {row.images_per_s:9.1f} "
                    f"{ref.p50_ms / row.p50_ms:8.2f}x"
                )
        return "\n".join(lines)


def bench_weights(
    path: str,
    batches: tuple[int, ...] = (1, 8),
    backend: str | None = None,
    device: str | None = None,
    warmup: int = 5,
    iters: int = 30,
    fuse: bool = True,
    compare: bool = False,
    calib: int = 64,
) -> BenchReport | CompareReport:
    """What ``visbricks bench`` does: weights or an exported file, one backend or ``compare``
    (eager, ONNX Runtime fp32 and int8 of the same weights, one after the other)."""
    from ..engine.precision import select_device
    from .runtime import OnnxRuntimeModel, backend_for, describe, load_any

    run = load_any(path, backend if not compare else None)
    dev = select_device(device or run.cfg.device)
    if isinstance(run.model, OnnxRuntimeModel) and dev.type == "cuda":
        run.model = OnnxRuntimeModel(run.weights, run.info, dev)
    channels, size = run.cfg.model.in_channels, run.task.img_size
    # FLOPs of the network, from an eager copy when only the exported graph is at hand.
    eager_model = run.model if backend_for(run.weights) == "eager" else None
    flops = model_flops(
        eager_model if eager_model is not None else run.task.build_model(load_pretrained=False),
        channels,
        size,
        dev,
    )
    peak = gemm_peak_gflops(dev)
    common = dict(
        batches=batches,
        in_channels=channels,
        warmup=warmup,
        iters=iters,
        device=dev,
        flops_per_image=flops,
        gemm_peak=peak,
    )
    if not compare:
        label = describe(run) + ("" if eager_model is None or fuse else " (BatchNorm unfolded)")
        return benchmark(run.model, size, fuse=fuse, label=label, **common)
    if eager_model is None:
        raise VisbricksError("bench --compare takes our weights (run folder or best.safetensors)")
    import tempfile
    from pathlib import Path

    from .export import existing_export, export
    from .quantize import default_output, quantize
    from .runtime import load_exported

    report = CompareReport()
    label = "eager PyTorch" + (" (conv+BN fused)" if fuse else "")
    report.reports.append(benchmark(run.model, size, fuse=fuse, label=label, **common))
    with tempfile.TemporaryDirectory(prefix="visbricks-bench-") as tmp:  # gone after the runs
        folder = Path(tmp)
        fp32 = existing_export(run)  # export's file from these weights, or a fresh one
        if fp32 is None:
            fp32 = folder / "fp32.onnx"
            export(run, fp32, "onnx")
        onnx_run = load_exported(fp32, device=dev)
        report.reports.append(benchmark(onnx_run.model, size, label=describe(onnx_run), **common))
        # The int8 file quantize wrote beside the weights (calibrated, evaluated) when there is
        # one; otherwise quantized here for speed only, on ``calib`` training images.
        int8 = default_output(run, "onnxruntime")
        if not int8.is_file():
            int8 = folder / "model.int8.onnx"
            quantize(
                run, int8, "onnxruntime", calib, evaluate=False, bench_batches=(), fp32_onnx=fp32
            )
        int8_run = load_exported(int8, device=dev)
        report.reports.append(benchmark(int8_run.model, size, label=describe(int8_run), **common))
    pt2 = default_output(run, "torch")
    if pt2.is_file():  # quantize --backend torch was run: its int8 program too, compiled
        pt2_run = load_exported(pt2, device=dev, compile=True)
        try:
            report.reports.append(benchmark(pt2_run.model, size, label=describe(pt2_run), **common))
        except Exception as e:  # torch.compile needs a C++ compiler; the rest stands
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"warning: {pt2.name} under torch.compile not timed ({first})")
    return report
