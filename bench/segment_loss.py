"""Segmentation loss speed: ``SegmentationLoss`` against the textbook form, alternating in one
process on the same logits. Prints forward and backward milliseconds and their ratios.

    python bench/segment_loss.py [--batch 8] [--size 384x288] [--classes 11] [--rounds 5]

The textbook form is what the loss computed before (and what ``tests/test_segment_metrics.py``
checks it against): ``F.cross_entropy`` with class weights on the logits, then a softmax and a
one-hot map of the labels for the soft Dice. Ours shares one log-softmax between the terms and
gathers each pixel's true-class probability instead of building the one-hot map. The logits
arrive as the network leaves them under CPU bf16 autocast: bfloat16, channels-last (``--layout
nchw`` for float32 NCHW, the fp32 path); 10 % of the pixels carry the ignore index.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from visbricks.models.seg_losses import IGNORE_INDEX, SegmentationLoss


def textbook(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, num_classes: int
) -> torch.Tensor:
    logits = logits.float()
    ce = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)
    valid = (target != IGNORE_INDEX)[:, None].float()
    prob = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2)
    onehot = onehot.float() * valid
    inter, denom = (prob * onehot).sum((0, 2, 3)), (prob + onehot).sum((0, 2, 3))
    return ce + 1 - ((2 * inter + 1) / (denom + 1)).mean()


def timed(fn, logits: torch.Tensor) -> tuple[float, float, float]:
    """(forward ms, backward ms, loss value)."""
    logits.grad = None
    start = time.perf_counter()
    loss = fn(logits)
    middle = time.perf_counter()
    loss.backward()
    end = time.perf_counter()
    return (middle - start) * 1000, (end - middle) * 1000, loss.item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", default="384x288", help="WxH")
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--layout", choices=["bf16-cl", "nchw"], default="bf16-cl")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.batch, args.classes, height, width, generator=g)
    if args.layout == "bf16-cl":
        logits = logits.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    logits.requires_grad_()
    target = torch.randint(0, args.classes, (args.batch, height, width), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = IGNORE_INDEX
    weights = torch.rand(args.classes, generator=g) * 4 + 0.1  # median-frequency-like spread
    ours = SegmentationLoss(args.classes, class_weights=weights.tolist(), dice_weight=1.0)
    runs = {
        "textbook": lambda x: textbook(x, target, weights, args.classes),
        "ours": lambda x: ours(x, target)["loss"],
    }
    for fn in runs.values():  # warm-up
        timed(fn, logits)
    times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn, logits))
    print(
        f"CE (class weights) + Dice, {args.batch} x {args.classes} x {height}x{width}, "
        f"{args.layout}, {torch.get_num_threads()} threads, median of {args.rounds}"
    )
    median = {k: [statistics.median(t[i] for t in v) for i in range(3)] for k, v in times.items()}
    for name, (fwd, bwd, value) in median.items():
        print(f"{name:9s} forward {fwd:6.1f} ms  backward {bwd:6.1f} ms  loss {value:.6f}")
    (tf, tb, _), (of, ob, _) = median["textbook"], median["ours"]
    both = (of + ob) / (tf + tb)
    print(f"ours / textbook: forward {of / tf:.2f}, backward {ob / tb:.2f}, both {both:.2f}")


if __name__ == "__main__":
    main()
