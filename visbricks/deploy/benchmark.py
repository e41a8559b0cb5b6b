"""``visbricks bench``: how fast trained weights run, and how far from the machine's roofline.

The timed region is the network's forward pass on a ready tensor of the run's input size
(decoding, resizing and post-processing are the caller's and excluded), under
``torch.inference_mode`` after warm-up iterations; on CUDA every iteration is synchronised so
the clock sees the kernels, not their launch. Eager models run with convolution + BatchNorm
folded into one convolution (what every deployment runtime does; ``fuse=False`` to compare).

Roofline: FLOPs per image come from ``torch.utils.flop_counter`` on the eager network (a
multiply-add counts 2); achieved FLOP/s = FLOPs × images/s, and its share is taken of the fp32
GEMM peak measured in the same process, on the same device and threads (a large square
``torch.mm``), so the percentage says how much of what this machine can do the model uses.
"""

from __future__ import annotations

import copy
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import VisbricksError
from .summary import total_flops


@dataclass
class BenchRow:
    batch: int
    p50_ms: float
    p90_ms: float
    images_per_s: float  # batch / median latency
    peak_mem_mb: float | None  # CUDA: peak allocated during the timed loop; CPU: None
    gflops_per_s: float | None = None  # achieved: FLOPs/image × images/s
    peak_share: float | None = None  # achieved / measured GEMM peak (0..1)


@dataclass
class BenchReport:
    device: str
    threads: int
    img_size: tuple[int, int]
    params: int
    flops_per_image: int  # torch.utils.flop_counter: a multiply-add counts as 2 FLOPs
    rows: list[BenchRow]
    process_peak_rss_mb: float
    gemm_peak_gflops: float | None = None
    fused: int = 0  # conv + BN pairs folded
    label: str = "eager"

    def __str__(self) -> str:
        h, w = self.img_size
        peak = (
            f"; fp32 GEMM peak measured {self.gemm_peak_gflops:.1f} GFLOP/s"
            if self.gemm_peak_gflops
            else ""
        )
        fused = f", {self.fused} conv+BN fused" if self.fused else ""
        lines = [
            f"{self.label} on {self.device} ({self.threads} threads), input {w}x{h}, "
            f"{self.params / 1e6:.2f} M params, {self.flops_per_image / 1e9:.3f} GFLOPs/image"
            f"{fused}{peak}",
            f"{'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'images/s':>9} {'GFLOP/s':>9} "
            f"{'% peak':>7} {'peak MB':>8}",
        ]
        for r in self.rows:
            mem = f"{r.peak_mem_mb:8.1f}" if r.peak_mem_mb is not None else f"{'-':>8}"
            achieved = f"{r.gflops_per_s:9.2f}" if r.gflops_per_s is not None else f"{'-':>9}"
            share = f"{100 * r.peak_share:6.1f}%" if r.peak_share is not None else f"{'-':>7}"
            lines.append(
                f"{r.batch:>5} {r.p50_ms:9.2f} {r.p90_ms:9.2f} {r.images_per_s:9.1f} "
                f"{achieved} {share} {mem}"
            )
        lines.append(f"process peak RSS {self.process_peak_rss_mb:.0f} MB (CPU memory, whole run)")
        return "\n".join(lines)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def gemm_peak_gflops(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int | None = None,
    min_seconds: float = 0.3,
) -> float:
    """Best-of-runs GFLOP/s of a square ``size``² matmul on ``device`` with torch's threads: the
    machine's practical compute ceiling for this dtype (2·n³ FLOPs per product)."""
    device = torch.device(device)
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up: library initialisation, clock ramp
    _sync(device)
    best, spent = 0.0, 0.0
    while spent < min_seconds:
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        dt = time.perf_counter() - start
        spent += dt
        best = max(best, 2 * n**3 / dt / 1e9)
    return best


def fuse_conv_bn(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval) with every BatchNorm that directly consumes a convolution's
    output folded into that convolution; (copy, number of pairs folded).

    Pairs are found by running ``example`` and watching which BatchNorm receives which
    convolution's output tensor, so any topology works without tracing. The folded copy is
    checked against the original; a model whose conv output also feeds something else (where
    folding would be wrong) is returned unfused.
    """
    model = model.eval()
    fused = copy.deepcopy(model)
    produced: dict[int, nn.Conv2d] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    seen: set[int] = set()

    def on_conv(module, inputs, output):
        if isinstance(output, torch.Tensor):
            produced[id(output)] = module

    def on_bn(module, inputs, output):
        conv = produced.get(id(inputs[0]))
        if conv is not None and id(module) not in seen and module.track_running_stats:
            pairs.append((conv, module))
            seen.add(id(module))

    hooks = []
    for m in fused.modules():
        if type(m) is nn.Conv2d:
            hooks.append(m.register_forward_hook(on_conv))
        elif type(m) is nn.BatchNorm2d:
            hooks.append(m.register_forward_hook(on_bn))
    try:
        with torch.no_grad():
            fused(example)
    finally:
        for h in hooks:
            h.remove()
    if not pairs:
        return model, 0
    # Folding twice into one conv (a conv feeding two BNs) would be wrong: skip those.
    convs = [id(c) for c, _ in pairs]
    pairs = [(c, b) for c, b in pairs if convs.count(id(c)) == 1]
    parents = {id(child): (parent, name) for parent in fused.modules()
               for name, child in parent.named_children()}  # fmt: skip
    for conv, bn in pairs:
        folded = fuse_conv_bn_eval(conv, bn)
        conv.weight, conv.bias = folded.weight, folded.bias
        parent, name = parents[id(bn)]
        setattr(parent, name, nn.Identity())
    with torch.no_grad():
        ref, got = _flat(model(example)), _flat(fused(example))
    ok = all(torch.allclose(r.float(), g.float(), atol=1e-3, rtol=1e-3) for r, g in zip(ref, got))
    return (fused, len(pairs)) if ok else (model, 0)


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out, key=str) for t in _flat(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    return []


def model_flops(model: nn.Module, in_channels: int, img_size: tuple[int, int], device) -> int:
    """FLOPs of one image through ``model`` (torch.utils.flop_counter; 2 per multiply-add)."""
    h, w = img_size
    return total_flops(model, torch.randn(1, in_channels, h, w, device=device))


@torch.inference_mode()
def benchmark(
    model: nn.Module,
    img_size: tuple[int, int],
    batches: tuple[int, ...] = (1, 8),
    in_channels: int = 3,
    warmup: int = 5,
    iters: int = 30,
    device: torch.device | str = "cpu",
    fuse: bool = True,
    flops_per_image: int | None = None,
    gemm_peak: float | None = None,
    label: str = "eager",
) -> BenchReport:
    """Time ``model`` on random inputs of ``img_size`` (height, width) for each batch size.

    ``model`` is an eager network or a runtime wrapper (``deploy.runtime``); for the latter give
    ``flops_per_image`` (of the eager network: the graph computes the same). ``gemm_peak``
    (GFLOP/s) gives the roofline share; ``None`` leaves it out."""
    if warmup < 0 or iters < 1 or not batches or min(batches) < 1:
        raise VisbricksError(
            f"need warmup >= 0, iters >= 1 and batch sizes >= 1; got "
            f"warmup={warmup}, iters={iters}, batches={batches}"
        )
    device = torch.device(device)
    model = model.to(device).eval()
    height, width = img_size
    eager = not getattr(model, "is_runtime", False)
    if flops_per_image is None:
        flops_per_image = model_flops(model, in_channels, img_size, device) if eager else 0
    params = sum(p.numel() for p in model.parameters()) or int(getattr(model, "num_params", 0))
    n_fused = 0
    if fuse and eager:
        example = torch.randn(2, in_channels, height, width, device=device)
        model, n_fused = fuse_conv_bn(model, example)
    cuda = device.type == "cuda"
    rows = []
    for batch in batches:
        x = torch.randn(batch, in_channels, height, width, device=device)
        for _ in range(warmup):
            model(x)
        _sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            _sync(device)
            times.append((time.perf_counter() - start) * 1000)
        p50, p90 = (float(v) for v in np.percentile(times, [50, 90]))
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        ips = batch * 1000 / p50
        achieved = flops_per_image * ips / 1e9 if flops_per_image else None
        share = achieved / gemm_peak if achieved is not None and gemm_peak else None
        rows.append(BenchRow(batch, p50, p90, ips, peak, achieved, share))
    return BenchReport(
        device=str(device),
        threads=torch.get_num_threads(),
        img_size=(height, width),
        params=params,
        flops_per_image=flops_per_image,
        rows=rows,
        process_peak_rss_mb=_peak_rss_mb(),
        gemm_peak_gflops=gemm_peak,
        fused=n_fused,
        label=label,
    )
