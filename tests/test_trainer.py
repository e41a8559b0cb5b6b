from __future__ import annotations

import csv
import math

import pytest
import torch
import yaml

from conftest import tiny_config, write_colour_folder
from visbricks.cli import run_training
from visbricks.config import load_config
from visbricks.engine.ema import ModelEMA
from visbricks.engine.trainer import Trainer
from visbricks.errors import TrainingDiverged
from visbricks.tasks import build_task

pytestmark = pytest.mark.cost(10)  # seconds here: scheduled early (conftest.py)


def _fit(cfg):
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task=task)
    trainer.fit()
    return trainer


@pytest.fixture
def colours(tmp_path):
    return write_colour_folder(tmp_path / "colours")


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, colours):
    # Freeze + unfreeze, EMA, warm-up and accumulation all carry state across the resume.
    extra = (
        "train.freeze={backbone: 1}",
        "train.ema=true",
        "train.accumulate=2",
        "sched.warmup_epochs=0.5",
        "train.lr_mult={backbone: 0.5}",
    )
    straight = _fit(tiny_config(colours, tmp_path / "a", "epochs=2", *extra))

    first = _fit(tiny_config(colours, tmp_path / "b", "epochs=1", *extra))
    ckpt = first.weights_dir / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["config"]
    resumed_cfg = load_config(saved, [f"resume={ckpt}", "epochs=2"])
    resumed = _fit(resumed_cfg)

    assert resumed.run_dir == first.run_dir
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for k, v in straight.ema.module.state_dict().items():
        assert torch.equal(v, resumed.ema.module.state_dict()[k]), k
    with open(resumed.run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_ema_tau_sets_how_fast_the_average_ramps_up(tmp_path, colours):
    # The recursion written out independently for a one-weight model whose weight is the step.
    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(0.0)
    ema = ModelEMA(model, decay=0.9, tau=5.0)
    expected = 0.0
    for step in range(1, 21):
        model.weight.data.fill_(float(step))
        ema.update(model)
        d = 0.9 * (1 - math.exp(-step / 5.0))
        expected = d * expected + (1 - d) * step
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    # The key reaches the Trainer's average (2,000 steps, YOLOv5's, when not set).
    cfg = tiny_config(colours, tmp_path / "t", "train.ema=true", "train.ema_tau=50")
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task=task)
    assert trainer.ema.tau == 50.0


def test_freeze_keeps_params_out_of_optimizer_and_bn_statistics_fixed(tmp_path, colours):
    cfg = tiny_config(colours, tmp_path, "epochs=1", "train.freeze={backbone: 1}")
    task = build_task(cfg)
    model = task.build_model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = Trainer(cfg, model, task.build_data(), task=task)
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in model.backbone.parameters())
    assert all(id(p) in in_optimizer for p in model.head.parameters())
    trainer.fit()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed while frozen"
    # The head did train.
    assert trainer.history[0]["train/loss"] > 0


def test_unfreeze_adds_groups_and_lr_mult_applies(tmp_path, colours):
    cfg = tiny_config(
        colours,
        tmp_path,
        "epochs=2",
        "train.freeze={backbone: 1}",
        "train.lr_mult={backbone: 0.1}",
        "sched.name=constant",
    )
    trainer = _fit(cfg)
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["backbone/decay"] == pytest.approx(0.001)
    assert lrs["default/decay"] == pytest.approx(0.01)
    assert lrs["backbone/no_decay"] == pytest.approx(0.001)
    nd = next(g for g in trainer.optimizer.param_groups if g["name"] == "backbone/no_decay")
    assert nd["weight_decay"] == 0.0


def test_run_folder_contents_and_no_overwrite(tmp_path, colours):
    cfg = tiny_config(colours, tmp_path, "epochs=1", "train.plots=true", "train.tensorboard=true")
    t1, _ = run_training(cfg)
    t2, _ = run_training(cfg)
    assert t1.run_dir.name == "classify-shapes" and t2.run_dir.name == "classify-shapes-2"
    run = t1.run_dir
    for name in (
        "config.yaml",
        "results.csv",
        "weights/last.ckpt",
        "weights/best.safetensors",
        "weights/best.yaml",
        "plots/loss.png",
        "plots/metrics.png",
        "plots/samples.png",
        "plots/predictions.png",
        "plots/confusion_matrix.png",
    ):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["data"]["root"] == str(colours) and resolved["optim"]["lr"] == 0.01
    with open(run / "results.csv") as f:
        row = next(csv.DictReader(f))
    assert {"epoch", "lr", "train/loss", "val/loss", "val/top1", "time"} <= set(row)
    best = yaml.safe_load((run / "weights/best.yaml").read_text())
    assert best["classes"] == ["blue", "red"] and "val/top1" in best["metrics"]


def test_nan_loss_stops_with_step_named_and_keeps_last_checkpoint(tmp_path, colours):
    cfg = tiny_config(colours, tmp_path, "epochs=2")
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task=task)
    trainer.fit()
    ckpt = trainer.weights_dir / "last.ckpt"
    saved = ckpt.read_bytes()

    cfg2 = load_config(cfg.to_dict(), [f"resume={ckpt}", "epochs=3"])
    task2 = build_task(cfg2)
    trainer2 = Trainer(cfg2, task2.build_model(), task2.build_data(), task=task2)
    original = task2.loss
    calls = {"n": 0}

    def exploding(outputs, batch):
        calls["n"] += 1
        out = original(outputs, batch)
        if calls["n"] == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    task2.loss = exploding
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 2 \(batch 1\)"):
        trainer2.fit()
    assert ckpt.read_bytes() == saved  # the last good checkpoint is intact


def test_classifier_learns(tmp_path):
    """A real run must learn the red/blue rule from noisy images (held-out val, from scratch)."""
    root = write_colour_folder(tmp_path / "colours", n_per_class=24, seed=3)
    cfg = tiny_config(root, tmp_path, "epochs=4", "deterministic=false")
    trainer, metrics = run_training(cfg)
    assert trainer.history[-1]["train/loss"] < 0.5 * trainer.history[0]["train/loss"]
    assert metrics["val/top1"] == 1.0, metrics


def test_relative_data_root_is_recorded_absolute_so_eval_elsewhere_reads_the_same_data(
    tmp_path, monkeypatch
):
    """Trained with data.root=colours in one folder, evaluated from another: the run's config
    names the folder it read, so eval finds it (before, eval looked for ./colours where it ran
    and a synthetic preset regenerated its data there)."""
    from visbricks.cli import main
    from visbricks.engine.checkpoint import read_checkpoint

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = write_colour_folder(home / "colours").resolve()
    monkeypatch.chdir(home)
    args = ["data.root=colours", "data.synth=null", "project=runs", "img_size=32",
            "batch_size=8", "epochs=1", "train.tensorboard=false", "train.plots=false",
            "model.backbone=mobilenet_v3_small"]
    assert main(["train", "classify-shapes", *args]) == 0
    run = home / "runs" / "classify" / "classify-shapes"
    recorded = [
        yaml.safe_load((run / "config.yaml").read_text())["data"]["root"],
        yaml.safe_load((run / "weights" / "best.yaml").read_text())["config"]["data"]["root"],
        read_checkpoint(run / "weights" / "last.ckpt", ("config",))["config"]["data"]["root"],
    ]
    assert recorded == [str(data)] * 3
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(run)]) == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing read or written here
