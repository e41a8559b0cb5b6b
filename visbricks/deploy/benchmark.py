"""``visbricks bench``: how fast trained weights run — latency percentiles, images/s, size, FLOPs.

The timed region is the network's forward pass on a ready tensor of the run's input size
(decoding, resizing and post-processing are the caller's and excluded), under
``torch.inference_mode`` after warm-up iterations; on CUDA every iteration is synchronised so
the clock sees the kernels, not their launch.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import VisbricksError
from .summary import total_flops


@dataclass
class BenchRow:
    batch: int
    p50_ms: float
    p90_ms: float
    images_per_s: float  # batch / median latency
    peak_mem_mb: float | None  # CUDA: peak allocated during the timed loop; CPU: None


@dataclass
class BenchReport:
    device: str
    threads: int
    img_size: tuple[int, int]
    params: int
    flops_per_image: int  # torch.utils.flop_counter: a multiply-add counts as 2 FLOPs
    rows: list[BenchRow]
    process_peak_rss_mb: float

    def __str__(self) -> str:
        h, w = self.img_size
        lines = [
            f"device {self.device} ({self.threads} threads), input {w}x{h}, "
            f"{self.params / 1e6:.2f} M params, {self.flops_per_image / 1e9:.3f} GFLOPs/image",
            f"{'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'images/s':>9} {'peak MB':>8}",
        ]
        for r in self.rows:
            mem = f"{r.peak_mem_mb:8.1f}" if r.peak_mem_mb is not None else f"{'-':>8}"
            lines.append(
                f"{r.batch:>5} {r.p50_ms:9.2f} {r.p90_ms:9.2f} {r.images_per_s:9.1f} {mem}"
            )
        lines.append(f"process peak RSS {self.process_peak_rss_mb:.0f} MB (CPU memory, whole run)")
        return "\n".join(lines)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


@torch.inference_mode()
def benchmark(
    model: nn.Module,
    img_size: tuple[int, int],
    batches: tuple[int, ...] = (1, 8),
    in_channels: int = 3,
    warmup: int = 5,
    iters: int = 30,
    device: torch.device | str = "cpu",
) -> BenchReport:
    """Time ``model`` on random inputs of ``img_size`` (height, width) for each batch size."""
    if warmup < 0 or iters < 1 or not batches or min(batches) < 1:
        raise VisbricksError(
            f"need warmup >= 0, iters >= 1 and batch sizes >= 1; got "
            f"warmup={warmup}, iters={iters}, batches={batches}"
        )
    device = torch.device(device)
    model = model.to(device).eval()
    height, width = img_size
    cuda = device.type == "cuda"
    rows = []
    for batch in batches:
        x = torch.randn(batch, in_channels, height, width, device=device)
        for _ in range(warmup):
            model(x)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) * 1000)
        p50, p90 = (float(v) for v in np.percentile(times, [50, 90]))
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        rows.append(BenchRow(batch, p50, p90, batch * 1000 / p50, peak))
    flops = total_flops(model, torch.randn(1, in_channels, height, width, device=device))
    return BenchReport(
        device=str(device),
        threads=torch.get_num_threads(),
        img_size=(height, width),
        params=sum(p.numel() for p in model.parameters()),
        flops_per_image=flops,
        rows=rows,
        process_peak_rss_mb=_peak_rss_mb(),
    )
