"""Training speed at the machine's limit: images/s and roofline share per precision and layout.

For ResNet-18 classification at 224 px and for the demo detector (detect-shapes, 128 px) one
training step (forward, fp32 loss, backward, optimizer) is timed under

    fp32 NCHW | fp32 channels-last | bf16 channels-last | auto (what the Trainer picks here)

(on CUDA: fp16 channels-last instead of bf16). Roofline share = achieved FLOP/s (forward +
backward FLOPs counted by torch.utils.flop_counter) ÷ the GEMM peak *of the precision used*,
measured in this run with a large matrix multiply. Then the data-wait share of detect-shapes
(time blocked on the loader ÷ step time) from a real Trainer run with the default ``workers``.

    python bench/train_speed.py                    # all of it (~5 min on 2 cores)
    python bench/train_speed.py --only resnet18    # one model
    python bench/train_speed.py --quick            # plumbing check: tiny data, 2 steps
    python bench/train_speed.py --wait-workers auto,1   # compare worker settings for data wait

    python bench/train_speed.py --only trainer --trainer-modes eager,compile
        # the Trainer itself, fp32: ResNet-18 224 px batch 16 FLOP/s ÷ the fp32 GEMM peak

The ``trainer`` part runs visbricks' Trainer (``train.amp=fp32``, in-memory tensors, workers 0,
SGD) for whole epochs and divides its achieved FLOP/s (FLOPs of one forward + backward counted
by torch.utils.flop_counter, times images/s of the steady-state epochs) by the fp32 GEMM peak
measured in the same run, per layout (NCHW, channels-last) and with ``train.compile=true``
(the first epoch, which compiles, is timed apart: what a budget must amortise).

Timings are meaningful only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from visbricks.config import load_config
from visbricks.engine.precision import (
    Precision,
    cpu_has_native_bf16,
    resolve_amp,
    resolve_channels_last,
    select_device,
    to_float32,
)
from visbricks.engine.trainer import Trainer
from visbricks.tasks import build_task


def gemm_peak(mode: str, device: torch.device, seconds: float) -> float:
    """Best FLOP/s of a large GEMM in ``mode``'s dtype on ``device``: the better of a square
    matrix multiply and the same-size GEMM run as a 1x1 convolution. On a CPU the two go
    through different libraries (matmul: MKL/OpenBLAS; conv: oneDNN), and MKL's sgemm ran at
    0.235 TFLOP/s on the AMD EPYC here while oneDNN's convolutions trained ResNet-18 at 0.35:
    the peak is what the machine can do, whichever library reaches it."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    # (n x n) @ (n x n) as a 1x1 convolution: n input channels, n filters, n = 64 x 32 pixels.
    image = torch.randn(1, n, 64, n // 64, device=device).to(dtype)
    weight = torch.randn(n, n, 1, 1, device=device).to(dtype)
    if device.type == "cpu":
        image = image.to(memory_format=torch.channels_last)
    gemms = [lambda: a @ b, lambda: torch.nn.functional.conv2d(image, weight)]
    best = 0.0
    with torch.no_grad():
        for gemm in gemms:
            deadline = time.perf_counter() + seconds / len(gemms)
            while True:
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(4):
                    gemm()
                _sync(device)
                best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
                if time.perf_counter() > deadline:
                    break
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(task, model, optimizer, batch, precision: Precision) -> None:
    with precision.autocast():
        outputs = task.forward(model, batch)
    loss = task.loss(to_float32(outputs), batch)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def time_training(
    task, cfg, batches: list[dict], precision: Precision, channels_last: bool, args
) -> tuple[float, float]:
    """(images/s, FLOPs per image) of training steps over ``batches`` (cycled)."""
    device = select_device(cfg.device)
    model = task.build_model(load_pretrained=False).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    moved = [task.to_device(b, device, channels_last) for b in batches]
    per_batch = task.batch_size(moved[0])
    with FlopCounterMode(display=False) as counter:
        _step(task, model, optimizer, moved[0], precision)
    flops = counter.get_total_flops() / per_batch
    for i in range(args.warmup):
        _step(task, model, optimizer, moved[i % len(moved)], precision)
    _sync(device)
    done, start = 0, time.perf_counter()
    while done < args.steps or (time.perf_counter() - start < args.seconds and not args.quick):
        _step(task, model, optimizer, moved[done % len(moved)], precision)
        done += 1
    _sync(device)
    return done * per_batch / (time.perf_counter() - start), flops


def collect_batches(task, n: int) -> list[dict]:
    data = task.build_data()
    loader = torch.utils.data.DataLoader(
        data.train, batch_size=task.cfg.batch_size, shuffle=True, collate_fn=data.collate_fn
    )
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def resnet18_config(args, project: Path, batch: int, classes: list[str], extra: list[str] = ()):
    """classify-shapes as ResNet-18 at 224 px on given tensors (no data of its own)."""
    return load_config(
        "classify-shapes",
        [
            "data.synth=null",
            f"data.classes={classes}",
            "img_size=224",
            f"batch_size={batch}",
            f"device={args.device}",
            f"project={project}",
            *extra,
        ],
    )


def resnet18_setup(args, project: Path):
    classes = [f"c{i}" for i in range(10)]
    batch = args.batch or (128 if torch.cuda.is_available() else 32)
    cfg = resnet18_config(args, project, batch, classes)
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.randn(batch, 3, 224, 224, generator=g),
            "label": torch.randint(0, len(classes), (batch,), generator=g),
        }
        for _ in range(2)
    ]
    return "ResNet-18 classify 224px", cfg, build_task(cfg), batches


def detector_overrides(args, project: Path) -> list[str]:
    extra = [f"device={args.device}", f"project={project}"]
    if args.quick:
        extra += [
            f"data.root={project / 'shapes-det' / 'data.yaml'}",
            "data.synth.n_train=48",
            "data.synth.n_val=16",
        ]
    return extra


def detector_setup(args, project: Path):
    cfg = load_config("detect-shapes", detector_overrides(args, project))
    task = build_task(cfg)
    task.prepare_data()
    return "SSD detect-shapes 128px (demo)", cfg, task, collect_batches(task, 4)


def data_wait(args, project: Path, workers: str) -> tuple[float, int, float]:
    """(data-wait share, workers used, images/s) of the last epoch of a detect-shapes run."""
    epochs = 1 if args.quick else args.wait_epochs
    overrides = detector_overrides(args, project) + [
        f"workers={workers}",
        f"epochs={epochs}",
        "train.val_every=1000",
        "train.plots=false",
        "train.tensorboard=false",
        f"name=wait-{workers}",
    ]
    if args.quick:
        overrides.append("train.max_batches=3")
    cfg = load_config("detect-shapes", overrides)
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task=task)
    # Only the training epochs: the final validation is not part of the data-wait figure.
    while trainer.epoch < epochs:
        trainer._apply_freeze(trainer.epoch)
        stats = trainer._train_epoch(trainer.epoch)
        trainer.epoch += 1
    return stats["data_wait"], trainer.workers, stats["img_s"]


def trainer_roofline(args, project: Path, peak: float) -> None:
    """The Trainer's fp32 FLOP/s ÷ ``peak`` for ResNet-18 224 px (``--trainer-batch``), per mode."""
    from trainer_overhead import Fixed  # pre-made tensors: no decoding in the timed loop

    from visbricks.tasks import DataBundle

    batch = args.trainer_batch
    steps = 2 if args.quick else args.trainer_steps
    classes = [f"c{i}" for i in range(10)]
    data = Fixed(steps * batch, 224, len(classes))
    print(f"\nTrainer, ResNet-18 classify 224px, batch {batch}, fp32, {steps} steps per epoch")
    print(f"  {'mode':<34}{'img/s':>9}{'TFLOP/s':>9}{'roofline':>10}{'1st epoch':>11}")
    for mode in args.trainer_modes.split(","):
        mode = mode.strip()
        overrides = {
            "eager": ["model.channels_last=false"],
            "cl": ["model.channels_last=true"],
            "compile": ["model.channels_last=false", "train.compile=true"],
            "cl-compile": ["model.channels_last=true", "train.compile=true"],
        }[mode]
        cfg = resnet18_config(
            args,
            project,
            batch,
            classes,
            [
                "workers=0",
                "train.amp=fp32",
                "epochs=1000",
                "train.plots=false",
                "train.tensorboard=false",
                "optim.name=sgd",
                "optim.lr=0.01",
                "optim.momentum=0.9",
                "sched.name=cosine",
                *overrides,
            ],
        )
        task = build_task(cfg)
        trainer = Trainer(cfg, task.build_model(), DataBundle(data, data, classes), task=task)
        sample = {"image": data.x[:batch], "label": data.y[:batch]}
        with FlopCounterMode(display=False) as counter:  # eager: the FLOPs are the model's
            out = trainer.model(sample["image"].to(trainer.device))["logits"]
            torch.nn.functional.cross_entropy(out, sample["label"].to(trainer.device)).backward()
        trainer.model.zero_grad(set_to_none=True)
        flops = counter.get_total_flops() / batch
        t0 = time.perf_counter()
        trainer._train_epoch(0)  # compiles when train.compile=true; warms caches otherwise
        first = time.perf_counter() - t0
        times = []
        for epoch in range(1, 2 if args.quick else 4):
            t0 = time.perf_counter()
            trainer._train_epoch(epoch)
            times.append(time.perf_counter() - t0)
        ips = steps * batch / min(times)
        print(
            f"  {mode:<34}{ips:>9.1f}{ips * flops / 1e12:>9.3f}"
            f"{100 * ips * flops / peak:>9.1f}%{first:>10.1f}s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["resnet18", "detector", "wait", "trainer"], default=None)
    ap.add_argument("--trainer-batch", type=int, default=16, help="the Trainer part's batch")
    ap.add_argument("--trainer-steps", type=int, default=12, help="steps per timed epoch")
    ap.add_argument(
        "--trainer-modes",
        default="eager,cl,compile,cl-compile",
        help="the Trainer part: eager (NCHW), cl (channels-last), compile, cl-compile",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None, help="ResNet-18 batch (default 32 / 128)")
    ap.add_argument("--steps", type=int, default=5, help="at least this many timed steps")
    ap.add_argument("--seconds", type=float, default=15.0, help="and at least this long")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--wait-epochs", type=int, default=2, help="data wait: last of N epochs")
    ap.add_argument("--wait-workers", default="auto", help="comma list, e.g. auto,0,1")
    ap.add_argument("--quick", action="store_true", help="tiny data and 2 steps (plumbing)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.seconds, args.warmup = 2, 0.0, 1
    device = select_device(args.device)
    project = Path(tempfile.mkdtemp(prefix="train_speed-"))
    print(f"device: {device}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    if device.type == "cpu":
        print(f"native bf16 (AMX / AVX-512-BF16, from torch.cpu): {cpu_has_native_bf16()}")
    auto = resolve_amp("auto", device)
    low = "fp16" if device.type == "cuda" else "bf16"
    modes = [
        ("fp32 NCHW", resolve_amp("fp32", device), False),
        ("fp32 channels-last", resolve_amp("fp32", device), True),
        (f"{low} channels-last", resolve_amp(low, device), True),
        (
            f"auto ({auto.mode}, channels-last "
            f"{'on' if resolve_channels_last('auto', device, auto) else 'off'})",
            auto,
            resolve_channels_last("auto", device, auto),
        ),
    ]
    if args.only in (None, "resnet18", "detector"):
        peak_seconds = 0.5 if args.quick else 3.0
        peaks = {m: gemm_peak(m, device, peak_seconds) for m in ("fp32", low)}
        for m, p in peaks.items():
            print(f"GEMM peak {m}: {p / 1e12:.2f} TFLOP/s")
        setups = []
        if args.only in (None, "resnet18"):
            setups.append(resnet18_setup)
        if args.only in (None, "detector"):
            setups.append(detector_setup)
        for setup in setups:
            title, cfg, task, batches = setup(args, project)
            print(f"\n{title}, batch {cfg.batch_size}")
            print(f"  {'mode':<34}{'img/s':>9}{'TFLOP/s':>9}{'roofline':>10}{'vs fp32':>9}")
            base = None
            for name, prec, cl in modes:
                ips, flops = time_training(task, cfg, batches, prec, cl, args)
                base = base or ips
                achieved = ips * flops
                share = achieved / peaks[prec.mode]
                print(
                    f"  {name:<34}{ips:>9.1f}{achieved / 1e12:>9.3f}{100 * share:>9.1f}%"
                    f"{ips / base:>8.2f}x"
                )
    if args.only in (None, "trainer"):
        peak = gemm_peak("fp32", device, 0.5 if args.quick else 3.0)
        print(f"\nGEMM peak fp32: {peak / 1e12:.3f} TFLOP/s")
        trainer_roofline(args, project, peak)
    if args.only in (None, "wait"):
        print("\ndata wait, detect-shapes, default settings except workers (training steps only):")
        for workers in args.wait_workers.split(","):
            share, used, ips = data_wait(args, project, workers.strip())
            print(
                f"  workers={workers} ({used} processes): data wait {100 * share:.1f}% "
                f"of step time, {ips:.1f} img/s"
            )


if __name__ == "__main__":
    main()
