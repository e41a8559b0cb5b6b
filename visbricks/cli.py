"""The ``visbricks`` command. Heavy imports happen inside each command, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import VisbricksError

# When the command started (this module loads first): the demo's time= counts from here, so
# importing torch is inside its budget too.
_STARTED: float | None = time.time()


def _command_start() -> float:
    global _STARTED
    started, _STARTED = _STARTED, None  # once: a second call in one process starts anew
    return started if started is not None else time.time()

EPILOG = (
    "Every config key can be overridden as key=value, e.g. optim.lr=0.01 model.backbone=resnet34"
)


def _train(args: argparse.Namespace) -> None:
    from .config import env_overrides, load_config

    overrides = list(args.overrides)
    resume = next((o.split("=", 1)[1] for o in overrides if o.startswith("resume=")), None)
    if resume:
        # Resume continues the saved run: its own config, plus what the user changes (epochs).
        from .engine.checkpoint import RESUME_KEYS, read_checkpoint

        saved = read_checkpoint(resume, RESUME_KEYS)["config"]
        cfg = load_config(saved, [*overrides, *env_overrides()])
    else:
        cfg = load_config(args.config, overrides)
    from .engine.distributed import check_devices, env_world_size, launch_standalone

    if cfg.devices > 1 and env_world_size() == 1:
        # Checked here, once: after the launch each of the N processes would fail on its own.
        check_devices(cfg.devices, cfg.batch_size, str(cfg.device))
        # devices=N: the same command, once per device, under torchrun --standalone.
        code = launch_standalone(cfg.devices, ["train", args.config, *overrides])
        if code:
            raise VisbricksError(f"training under torchrun failed (exit code {code})")
        return
    trainer, _ = run_training(cfg)
    if trainer.dist.is_main:  # one report per run, written by the process that owns the folder
        _report_after("train", trainer.run_dir)


def run_training(cfg):
    from .engine.trainer import Trainer
    from .tasks import build_task

    task = build_task(cfg)
    data = task.build_data()
    model = task.build_model()
    trainer = Trainer(cfg, model, data, task=task)
    metrics = trainer.fit()
    print(f"results: {trainer.run_dir}  (best weights: {trainer.weights_dir / 'best.safetensors'})")
    trainer.dist.close()  # torchrun: leave the process group; one process: nothing
    return trainer, metrics


def _tune_lr(args: argparse.Namespace) -> None:
    from .config import load_config
    from .engine.batch_size import choose_batch_size
    from .engine.lr_finder import lr_range_test
    from .engine.precision import select_device
    from .engine.rundir import check_output, new_run_dir
    from .tasks import build_task

    # The flags are the tune.* keys; $VISBRICKS_OVERRIDES still comes after them.
    flags = [
        f"tune.{key}={value:.6e}" if key != "lr_steps" else f"tune.{key}={value}"
        for key, value in (("lr_start", args.start), ("lr_end", args.end), ("lr_steps", args.steps))
        if value is not None
    ]
    cfg = load_config(args.config, [*args.overrides, *flags])
    task = build_task(cfg)
    data = task.build_data()
    model = task.build_model()
    device = select_device(cfg.device)
    model.to(device)
    batch = cfg.batch_size
    if batch == "auto":
        choice = choose_batch_size(cfg, model, data, task, device)
        print(choice.describe())
        batch = choice.batch_size
    if args.out:
        sources = [cfg.data.root] if cfg.data.root else []
        out = check_output(args.out, sources, "tune lr --out")
        out.mkdir(parents=True, exist_ok=True)
    else:
        out = new_run_dir(cfg.project, "tune", cfg.name)
    result = lr_range_test(cfg, model, data, task, device, batch_size=batch, out_dir=out)
    print(result.format())
    print(f"use it: visbricks train {args.config} optim.lr={result.suggestion:.3g} "
          "(or optim.lr=auto runs this test before training)")


def _eval(args: argparse.Namespace) -> dict:
    from .deploy.report import write_report
    from .deploy.runtime import describe, load_any

    split = args.split
    overrides = list(args.overrides)
    if split != "val":  # the split to evaluate is read where the val split would be
        overrides.append(f"data.val={split}")
    run = load_any(args.weights, args.backend, overrides)
    out_dir = _eval_out(args.out, run)  # checked before any data is read or anything written
    done: dict = {}

    def save(result, images: int) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        done.update(result=result, images=images, path=result.save(out_dir))

    # One pass over the split: the report's evaluation is eval's (metrics.json, figures).
    page = None
    try:
        page = write_report(args.weights, split, out_dir / "report", run=run, on_result=save)
    except (VisbricksError, OSError) as e:
        print(f"warning: eval: report not written ({e})", file=sys.stderr)
        if "result" not in done:  # refused before evaluating: evaluate without a report
            _evaluate_plain(run, split, save)
    result = done["result"]
    where = "validation" if split == "val" else split
    print(f"evaluated {run.origin} ({describe(run)}) on {done['images']} {where} images")
    for k, v in result.metrics.items():
        print(f"  {k:<24} {v:.4f}")
    print(result.table)
    print(f"written: {done['path']}")
    if page is not None:
        print(f"report: {page}")
    return result.metrics


def _evaluate_plain(run, split: str, save) -> None:
    """``eval`` without the report: the task's own evaluation of the split, given to ``save``."""
    from torch.utils.data import DataLoader

    from .engine.precision import resolve_workers, select_device

    device = select_device(run.cfg.device)
    data = run.task.build_data()
    loader = DataLoader(
        data.val,
        batch_size=run.cfg.batch_size,
        collate_fn=data.collate_fn,
        num_workers=resolve_workers(run.cfg.workers, device, bool(run.cfg.data.cache)),
    )
    run.model.to(device).eval()
    save(run.task.evaluate(run.model, loader, device, split=split), len(data.val))


def _report_after(command: str, source, split: str = "val", out=None, run=None) -> None:
    """The run report after ``train`` / ``eval``. A report that cannot be written (data moved,
    a folder in the way) is a warning: the command itself has succeeded."""
    from .deploy.report import write_report

    try:
        page = write_report(source, split, out, run=run)
    except (VisbricksError, OSError) as e:
        print(f"warning: {command}: report not written ({e})", file=sys.stderr)
        return
    print(f"report: {page}")


def _report(args: argparse.Namespace) -> None:
    from .deploy.report import write_report

    page = write_report(args.run, args.split, args.out, args.overrides)
    print(f"report written: {page} (open it in a browser; it works offline)")


def _eval_out(out: str | None, run) -> Path:
    """``--out``, checked against the inputs; by default ``eval/`` in the weights' run folder, or
    ``<weights stem>-eval/`` beside weights that belong to no run folder."""
    from .engine.rundir import check_output, run_dir_of

    if out:
        # Not inside the evaluated data either: the next eval would read confusion_matrix.png as
        # an image of the split. The dataset folder: data.root, or the folder of its YAML/JSON.
        sources: list[Path] = [run.origin]
        if run.cfg.data.root:
            root = Path(run.cfg.data.root).expanduser()
            sources.append(root.parent if root.is_file() else root)
        return check_output(out, sources, "eval --out")
    run_dir = run_dir_of(run.origin)
    if run_dir is not None:
        return run_dir / "eval"
    return run.origin.parent / f"{run.origin.stem}-eval"


def _eval_command(args: argparse.Namespace) -> dict:
    """``eval``: trained weights on a split, or with ``--predictions`` a prediction file scored
    against labels (no model)."""
    if args.predictions is not None:
        return _eval_predictions(args)
    for flag, value in (("--format", args.format), ("--ignore-index", args.ignore_index)):
        if value is not None:
            raise VisbricksError(f"eval {flag} goes with --predictions (scoring a file)")
    return _eval(args)


def _eval_predictions(args: argparse.Namespace) -> dict:
    """``eval --predictions PRED LABELS``: ``metrics/score_files.py`` does the scoring."""
    from .engine.rundir import check_output
    from .errors import ConfigError
    from .metrics.score_files import check_inputs, default_out, labels_folder, score_files

    labels = args.weights  # the positional names the labels here
    if args.overrides or args.backend:
        given = " ".join(args.overrides) or f"--backend {args.backend}"
        raise ConfigError(f"eval --predictions scores a file against labels; {given} does not "
                          "apply (it takes PRED LABELS, --format, --split, --ignore-index, --out)")
    check_inputs(args.predictions, labels)
    out = args.out or default_out(args.predictions, labels)
    # Checked before scoring, written after: a refused --out leaves nothing behind.
    out = check_output(out, [args.predictions, labels, labels_folder(labels)], "eval --out")
    scored = score_files(args.predictions, labels, args.format, args.split, args.ignore_index)
    print(f"scored {args.predictions} ({scored.format}) against {scored.labels}: "
          f"{scored.images} images")
    for warning in scored.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for k, v in scored.result.metrics.items():
        print(f"  {k:<24} {v:.4f}")
    print(scored.result.table)
    path = scored.result.save(out)
    print(f"written: {path}")
    return scored.result.metrics


def _predict(args: argparse.Namespace) -> None:
    from .deploy.predict import predict
    from .deploy.runtime import load_any
    from .engine.rundir import check_output, new_run_dir, run_dir_of, unique_dir

    run = load_any(args.weights, args.backend, args.overrides)
    if args.out:
        out = check_output(args.out, [args.source, run.origin], "predict --out")
    elif (home := run_dir_of(run.origin)) is not None:
        out = unique_dir(home / "predict")  # next to the run the weights belong to
    else:
        out = new_run_dir(run.cfg.project, "predict", run.cfg.name)
    predict(run, args.source, out)
    print(f"predictions written to {out} (annotated images or video + predictions.json)")


def _bench(args: argparse.Namespace) -> None:
    import torch

    from .deploy.bench import bench_weights

    try:
        batches = tuple(int(b) for b in args.batch.split(","))
    except ValueError:
        raise VisbricksError(f"--batch takes sizes like 1,8; got {args.batch!r}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    report = bench_weights(
        args.weights,
        batches,
        backend=args.backend,
        device=args.device,
        warmup=args.warmup,
        iters=args.iters,
        fuse=not args.no_fuse,
        compare=args.compare,
        calib=args.calib,
    )
    print(f"{args.weights}")
    print(report)


def _export(args: argparse.Namespace) -> None:
    from .deploy.export import export
    from .deploy.loading import load_run
    from .engine.rundir import check_output

    run = load_run(args.weights)
    suffix = {"onnx": ".onnx", "pt2": ".pt2"}[args.format]
    out = Path(args.out) if args.out else run.weights.with_suffix(suffix)
    meta = run.weights.with_suffix(".yaml")
    # Next to the weights is the documented default: only the input files themselves are off.
    check_output(out, [run.weights, meta], "export --out", folder=False)
    print(export(run, out, args.format, atol=args.atol))


def _quantize(args: argparse.Namespace) -> None:
    from .deploy.loading import load_run
    from .deploy.quantize import quantize

    run = load_run(args.weights)
    if args.out:
        from .engine.rundir import check_output

        meta = run.weights.with_suffix(".yaml")
        check_output(args.out, [run.weights, meta], "quantize --out", folder=False)
    layers = [x for x in (args.float or "").split(",") if x]
    print(
        quantize(
            run, args.out, args.backend, args.calib, layers, args.max_drop, bench_iters=args.iters
        )
    )


def _summary(args: argparse.Namespace) -> None:
    from .config import load_config, parse_img_size
    from .deploy.summary import summarize
    from .tasks import build_task

    cfg = load_config(args.config, args.overrides)
    task = build_task(cfg)
    # A summary needs the head's width, not the data: nothing is generated or read beyond the
    # class list, and a placeholder count is named as such.
    note = task.use_data_free_classes()
    if note:
        print(note)
    model = task.build_model(load_pretrained=False)
    print(
        summarize(
            model, parse_img_size(cfg.img_size), cfg.model.in_channels, args.depth, args.rf_size
        )
    )


def _data_synth(args: argparse.Namespace) -> None:
    sizes = {k: v for k, v in (("n_train", args.n_train), ("n_val", args.n_val)) if v is not None}
    params: dict = {"seed": args.seed}
    if args.kind == "shapes":
        from .data.synth import shapes

        if args.format == "imagefolder":
            if args.size:
                sizes["size"] = args.size
            writer = shapes.write_classification
        else:
            if args.size:
                sizes["width"] = sizes["height"] = args.size
            writer, params["fmt"] = shapes.write_detection, args.format
        params |= sizes
    elif args.kind == "lanes":
        from .data.synth import lanes

        writer, params["progress"] = lanes.write_lanes, True
    else:
        from .data.synth import driving

        writer, params["progress"] = driving.write_driving, True
    params |= _env_synth_params(f"data synth {args.kind}", writer)
    out = writer(args.out, **params)
    print(f"dataset written to {out}")


def _env_synth_params(what: str, writer) -> dict:
    """The generator parameters among ``$VISBRICKS_OVERRIDES`` (``data.synth.n_train=8``: the keys
    a preset's ``data.synth`` takes), after the flags: ``data synth`` shrinks as a preset's
    generated data does (the README test). Other keys are for configs and are left alone."""
    import inspect

    from .config import ENV_OVERRIDES, env_overrides, parse_override
    from .errors import ConfigError

    skip = ("out", "fmt", "progress")
    accepted = [
        name
        for name, p in inspect.signature(writer).parameters.items()
        if name not in skip and p.default is not inspect.Parameter.empty
    ]
    found = {}
    for text in env_overrides():
        keys, value = parse_override(text)
        if keys[:2] != ["data", "synth"]:
            continue
        if len(keys) == 3:
            items = [(keys[2], value)]
        elif len(keys) == 2 and isinstance(value, dict):
            items = list(value.items())
        else:
            continue
        for key, v in items:
            if key == "kind":  # the command names the generator
                continue
            if key not in accepted:
                raise ConfigError(
                    f"${ENV_OVERRIDES}: data.synth.{key} is not a parameter of "
                    f"`visbricks {what}` (it takes {', '.join(accepted)})"
                )
            found[key] = v
    return found


def _label_value(text: str) -> int:
    """``--ignore-index``: a mask label value, 0..255 (what a label PNG can hold)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"must be a label value 0..255, got {text!r}")
    return value


def _data_check(args: argparse.Namespace) -> None:
    from .data.check import check_dataset, fix_dataset

    if args.fix:
        report, written = fix_dataset(args.data, args.fix)
        print(report.format())
        print(f"cleaned copy written: {written}")
    else:
        report = check_dataset(args.data, strict=args.strict, ignore_index=args.ignore_index)
        print(report.format())
    if args.html:
        _data_health(args.data, args.html, args.ignore_index)


def _data_health(data: str, out: str, ignore_index: int | None) -> None:
    """``data check --html DIR``: the dataset health page (data/health.py) of train and val."""
    from .data.health import format_health, health_report, read_splits
    from .engine.rundir import check_output

    source = Path(data)
    # Not inside the dataset: a folder of PNGs there would be read as images next time.
    sources = [source, source.parent] if source.is_file() else [source]
    out_dir = check_output(out, sources, "data check --html")
    train, val, classes = read_splits(source)
    if ignore_index is not None:
        for split in (train, val):
            if hasattr(split, "ignore_index"):
                split.ignore_index = ignore_index
    path, health = health_report(train, val, classes, out_dir)
    print(format_health(health))
    print(f"health report: {path}")


def _data_convert(args: argparse.Namespace) -> None:
    from .data.formats import convert
    from .engine.rundir import check_output

    check_output(args.out, [args.src], "data convert --out", around=False)
    out = convert(args.src, args.out, to=args.to)
    print(f"converted {args.src} to {args.to} in {out}")


def _data_from_video(args: argparse.Namespace) -> None:
    from .data.from_video import parse_intrinsics, video_to_sequence
    from .engine.rundir import check_output

    check_output(args.out, [args.video], "data from-video --out", around=False)
    intrinsics = parse_intrinsics(args.intrinsics) if args.intrinsics is not None else None
    report = video_to_sequence(args.video, args.out, args.every, args.fov, intrinsics)
    print(report.format())


def _demo(args: argparse.Namespace) -> None:
    from .config import env_overrides, load_config
    from .deploy.loading import load_run
    from .deploy.predict import predict

    start = args.started
    overrides = [o for o in args.overrides if not o.startswith("time=")]
    budget = _demo_budget([*args.overrides, *env_overrides()])
    cfg = load_config(args.preset, overrides)
    if budget is not None:
        # The budget is the whole command's: generating the data (first run) and the
        # predictions after training come out of it, so training gets what is left.
        from .tasks import build_task

        build_task(cfg).prepare_data()
        left = budget - (time.time() - start) - DEMO_RESERVE_S
        if left <= 0:
            raise VisbricksError(
                f"demo time={budget:g}: preparing the data took {time.time() - start:.0f} s, "
                "nothing is left for training; give a larger time="
            )
        cfg = load_config(args.preset, [*overrides, f"train.time={left:.1f}"])
        print(f"demo: {budget:g} s in all, {left:.0f} s of it for training + validation")
    trainer, metrics = run_training(cfg)
    train_time = time.time() - start
    run = load_run(trainer.run_dir)
    out = trainer.run_dir / "predict"
    if hasattr(trainer.task, "sample_files"):  # box tasks know their val images
        images = trainer.task.sample_files(8)
    else:  # an ImageFolder: every eighth val image
        found = sorted((Path(cfg.data.root) / cfg.data.val).rglob("*.png"))
        images = found[:: max(1, len(found) // 8)][:8]
    tmp = out / "inputs"
    tmp.mkdir(parents=True, exist_ok=True)
    for p in images:
        (tmp / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    predict(run, tmp, out)
    print("\n=== visbricks demo ===")
    print(f"task: {cfg.task}  preset: {args.preset}  training+eval time: {train_time:.0f}s")
    for k, v in metrics.items():
        print(f"  {k:<20} {v:.4f}")
    if trainer.last_eval is not None:
        print(trainer.last_eval.table)
    print(f"run folder:      {trainer.run_dir}")
    print(f"  config:        {trainer.run_dir / 'config.yaml'}")
    print(f"  results:       {trainer.run_dir / 'results.csv'}")
    print(f"  plots:         {trainer.plots_dir}")
    print(f"  best weights:  {trainer.weights_dir / 'best.safetensors'}")
    print(f"  predictions:   {out}")
    print(f"TensorBoard:     tensorboard --logdir {trainer.run_dir}")
    print(f"total time:      {time.time() - start:.0f}s")


DEMO_TIME_S = 300.0  # what `visbricks demo` takes in all, by default
DEMO_RESERVE_S = 10.0  # of it, for building the model, predicting and reporting after training


def _demo_budget(overrides: list[str]) -> float | None:
    """``time=SECONDS`` among the demo's arguments (default 300), or None when ``epochs=`` or
    ``train.time=`` asks for something else."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("time=")]
    if any(o.startswith(("epochs=", "train.time=")) for o in overrides):
        if given:
            raise VisbricksError("demo: give time= or epochs= / train.time=, not both")
        return None
    if not given:
        return DEMO_TIME_S
    try:
        value = float(given[-1])
    except ValueError:
        raise VisbricksError(f"demo: time= takes seconds, got {given[-1]!r}") from None
    if not value > 0:
        raise VisbricksError(f"demo: time= must be > 0 seconds, got {given[-1]!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="visbricks",
        description="Modular computer vision: train, evaluate, predict.",
        epilog=EPILOG,
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset or YAML config", epilog=EPILOG)
    t.add_argument("config", help="preset name (e.g. classify-shapes) or path to a YAML config")
    t.add_argument("overrides", nargs="*", help="key=value overrides; resume=PATH continues a run")
    t.set_defaults(func=_train)

    tu = sub.add_parser("tune", help="choose hyper-parameters by measuring: the lr range test")
    tusub = tu.add_subparsers(dest="tune_command", required=True)
    tl = tusub.add_parser(
        "lr",
        help="learning-rate range test: loss over an exponential lr sweep, a suggestion, a plot",
        epilog=EPILOG,
    )
    tl.add_argument("config", help="preset name (e.g. classify-shapes) or path to a YAML config")
    tl.add_argument("overrides", nargs="*", help="key=value overrides, as for train")
    tl.add_argument("--start", type=float, help="first learning rate (tune.lr_start, 1e-7)")
    tl.add_argument("--end", type=float, help="last learning rate (tune.lr_end, 10)")
    tl.add_argument("--steps", type=int, help="steps of the sweep (tune.lr_steps, 100)")
    tl.add_argument("--out", help="folder for lr_find.png/.csv (default: runs/tune/<name>)")
    tl.set_defaults(func=_tune_lr)

    e = sub.add_parser(
        "eval",
        help="metrics of trained weights on the val (or --split) split, or of a prediction file "
        "(--predictions PRED LABELS)",
    )
    e.add_argument(
        "weights",
        help="run folder, best.safetensors, last.ckpt, .onnx or .pt2; with --predictions: the "
        "labels (a dataset folder or data YAML, or a TuSimple/COCO JSON, CULane list, label PNGs)",
    )
    e.add_argument("overrides", nargs="*", help="key=value, e.g. data.root=other/data")
    e.add_argument(
        "--out",
        help="folder for metrics.json and plots (default: <run>/eval; with --predictions: "
        "<PRED name>-eval beside PRED)",
    )
    e.add_argument(
        "--split",
        default="val",
        help="split to evaluate (default val); metrics are named after it, e.g. test/mAP50",
    )
    e.add_argument(
        "--backend",
        choices=["eager", "onnxruntime", "pt2"],
        help="run in this backend (default: from the file type; .onnx, .pt2 or weights)",
    )
    e.add_argument(
        "--predictions",
        metavar="PRED",
        help="score this prediction file against the labels, no model: TuSimple JSON lines, a "
        "folder of CULane .lines.txt, COCO results JSON (boxes, RLE masks), or a folder of "
        "class-index PNGs",
    )
    e.add_argument(
        "--format",
        choices=["auto", "tusimple", "culane", "coco", "masks"],
        help="layout of --predictions (default auto: from the file's extension and content)",
    )
    e.add_argument(
        "--ignore-index",
        type=int,
        help="masks: the label value that means unlabelled (default: the dataset's, else 255)",
    )
    e.set_defaults(func=_eval_command)

    r = sub.add_parser("report", help="offline HTML report of a run: metrics, curves, errors")
    r.add_argument("run", help="run folder, best.safetensors or last.ckpt")
    r.add_argument("overrides", nargs="*", help="key=value, e.g. data.root=other/data")
    r.add_argument("--split", default="val", help="split to evaluate and show (default val)")
    r.add_argument("--out", help="report folder (default: <run>/report)")
    r.set_defaults(func=_report)

    b = sub.add_parser("bench", help="latency p50/p90, images/s, FLOPs, share of the GEMM peak")
    b.add_argument("weights", help="run folder, best.safetensors, last.ckpt, .onnx or .pt2")
    b.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    b.add_argument("--iters", type=int, default=30, help="timed forward passes per batch size")
    b.add_argument("--warmup", type=int, default=5, help="untimed passes first")
    b.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: the run's device)")
    b.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    b.add_argument(
        "--backend",
        choices=["eager", "onnxruntime", "pt2"],
        help="run in this backend (default: from the file type; .onnx, .pt2 or weights)",
    )
    b.add_argument("--no-fuse", action="store_true", help="eager: keep BatchNorm unfolded")
    b.add_argument(
        "--compare",
        action="store_true",
        help="eager, ONNX Runtime and int8 of the same weights side by side, with ratios",
    )
    b.add_argument(
        "--calib", type=int, default=64, help="--compare without a quantize file: calib images"
    )
    b.set_defaults(func=_bench)

    x = sub.add_parser("export", help="ONNX or torch.export .pt2, verified against eager PyTorch")
    x.add_argument("weights", help="run folder, best.safetensors or last.ckpt")
    x.add_argument("--format", choices=["onnx", "pt2"], default="onnx")
    x.add_argument("--out", help="output file (default: next to the weights)")
    x.add_argument("--atol", type=float, default=1e-4, help="allowed absolute difference")
    x.set_defaults(func=_export)

    q = sub.add_parser("quantize", help="post-training static int8, calibrated on training images")
    q.add_argument("weights", help="run folder, best.safetensors or last.ckpt")
    q.add_argument("--calib", type=int, default=200, help="calibration images (training split)")
    q.add_argument(
        "--backend",
        choices=["onnxruntime", "torch"],
        default="onnxruntime",
        help="onnxruntime: static QDQ .int8.onnx; torch: torchao pt2e .int8.pt2",
    )
    q.add_argument("--out", help="output file (default: <weights>.int8.onnx / .int8.pt2)")
    q.add_argument(
        "--float", help="comma-separated layers kept in float, e.g. head or backbone.conv1"
    )
    q.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="metric points int8 may lose before the head is kept in float and retried",
    )
    q.add_argument("--iters", type=int, default=20, help="timed passes for the latency columns")
    q.set_defaults(func=_quantize)

    pr = sub.add_parser("predict", help="annotate images or a video: a file, a folder or a glob")
    pr.add_argument("weights", help="run folder, best.safetensors, last.ckpt, .onnx or .pt2")
    pr.add_argument("source", help="image, folder, glob pattern (quote it) or video file")
    pr.add_argument("overrides", nargs="*", help="key=value, e.g. eval.tta=flip")
    pr.add_argument("--out", help="output folder (default: predict/ in the run folder)")
    pr.add_argument(
        "--backend",
        choices=["eager", "onnxruntime", "pt2"],
        help="run in this backend (default: from the file type; .onnx, .pt2 or weights)",
    )
    pr.set_defaults(func=_predict)

    s = sub.add_parser("summary", help="layers, shapes, parameters, FLOPs, receptive fields")
    s.add_argument("config", help="preset name or YAML config")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--depth", type=int, default=2, help="module nesting depth to list")
    s.add_argument("--rf-size", type=int, default=512, help="probe image size for receptive fields")
    s.set_defaults(func=_summary)

    d = sub.add_parser("data", help="generate, check and convert datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    ds = dsub.add_parser("synth", help="write a synthetic dataset (no download)")
    ds.add_argument("kind", choices=["shapes", "driving", "lanes"])
    ds.add_argument("--out", required=True, help="output folder")
    ds.add_argument(
        "--format",
        default="imagefolder",
        choices=["imagefolder", "coco", "voc", "yolo"],
        help="shapes: imagefolder (+ multi-label CSV) or a detection format",
    )
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--n-train", type=int, help="shapes: training images")
    ds.add_argument("--n-val", type=int, help="shapes: validation images")
    ds.add_argument("--size", type=int, help="shapes: image side in pixels")
    ds.set_defaults(func=_data_synth)
    dc = dsub.add_parser("check", help="validate a dataset and list every bad file")
    dc.add_argument("data", help="data YAML, annotation file or dataset folder (auto-detected)")
    dc.add_argument("--strict", action="store_true", help="stop at the first problem")
    dc.add_argument(
        "--fix", metavar="DIR", help="write a cleaned copy to DIR (the source is never edited)"
    )
    dc.add_argument(
        "--ignore-index",
        type=_label_value,
        metavar="N",
        help="masks: the label value that means unlabelled (CamVid void: 11); default: the "
        "data YAML's, else 255",
    )
    dc.add_argument(
        "--html",
        metavar="DIR",
        help="also write DIR/health.html: class balance, box/mask/image-size statistics, exact "
        "and near duplicates within and across train/val (leakage)",
    )
    dc.set_defaults(func=_data_check)
    dv = dsub.add_parser("convert", help="convert between dataset formats (coco, voc, yolo, ...)")
    dv.add_argument("src", help="data YAML, annotation file or dataset folder (auto-detected)")
    dv.add_argument("--to", required=True, help="a writable format: coco, voc, yolo, ...")
    dv.add_argument("--out", required=True)
    dv.set_defaults(func=_data_convert)
    dfv = dsub.add_parser(
        "from-video",
        help="a video → the sequence layout `train depth data=` reads (static frames dropped)",
    )
    dfv.add_argument("video", help="video file (anything OpenCV decodes: mp4, mov, mkv, avi, ...)")
    dfv.add_argument("--out", required=True, help="new (or empty) output folder")
    dfv.add_argument("--every", type=int, default=1, help="take every N-th frame (default 1)")
    cam = dfv.add_mutually_exclusive_group()
    cam.add_argument(
        "--fov", type=float, help="horizontal field of view in degrees (fx = fy, centred)"
    )
    cam.add_argument(
        "--intrinsics",
        metavar="FX,FY,CX,CY",
        help="fractions of width (fx, cx) and height (fy, cy), as Monodepth2/KITTI: "
        "0.58,1.92,0.5,0.5",
    )
    dfv.set_defaults(func=_data_from_video)

    m = sub.add_parser(
        "demo",
        help="train, evaluate and predict on the embedded default data within time=SECONDS "
        "(default 300, the whole command)",
    )
    m.add_argument("--preset", default="detect-shapes")
    m.add_argument("overrides", nargs="*", help="time=SECONDS, and key=value as for train")
    m.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The console script (argv from sys.argv) counts from the process start; a call with its own
    # argv (tests, notebooks) from now.
    args.started = _command_start() if argv is None else time.time()
    try:
        args.func(args)
    except VisbricksError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        # What the operating system refused (permission, disk full, a folder where a file was
        # expected): one line naming the file, like every other bad input.
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
