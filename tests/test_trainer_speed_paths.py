"""The Trainer's fast paths: bf16 autocast and channels-last still learn and stay exact where it
matters (losses, box coding, warps in fp32), the fp32 branch of machines without native bf16,
data-wait accounting, progress without a terminal, and plots of the weights eval uses."""

from __future__ import annotations

import csv

import matplotlib.axes
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from conftest import preset_config, tiny_config, write_colour_folder
from visbricks.config import load_config
from visbricks.data.synth.driving import write_driving
from visbricks.data.synth.shapes import write_detection
from visbricks.engine import precision
from visbricks.engine.plots import plot_history
from visbricks.engine.precision import resolve_amp, to_float32
from visbricks.engine.trainer import Trainer
from visbricks.errors import ConfigError
from visbricks.metrics.base import EvalResult
from visbricks.tasks import build_task

pytestmark = pytest.mark.cost(14)  # seconds here: scheduled early (conftest.py)


def _trainer(cfg) -> Trainer:
    task = build_task(cfg)
    return Trainer(cfg, task.build_model(), task.build_data(), task=task)


def _rows(trainer: Trainer) -> list[dict]:
    with open(trainer.run_dir / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("speed") / "colours")


def test_without_native_bf16_auto_trains_fp32_nchw_as_before(tmp_path, colours, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    trainer = _trainer(tiny_config(colours, tmp_path, "epochs=1", "device=cpu"))
    assert trainer.precision.mode == "fp32" and not trainer.channels_last
    assert not trainer.scaler.is_enabled()
    dtypes = []
    conv = trainer.model.backbone.body.conv1 if hasattr(trainer.model.backbone, "body") else None
    conv = conv or next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes.append((o.dtype, o.is_contiguous())))
    trainer.fit()
    assert set(dtypes) == {(torch.float32, True)}  # fp32, NCHW
    saved = yaml.safe_load((trainer.run_dir / "config.yaml").read_text())
    assert saved["train"]["amp"] == "fp32" and saved["model"]["channels_last"] is False
    assert isinstance(saved["workers"], int)
    row = _rows(trainer)[0]
    assert row["amp"] == "fp32"
    assert 0.0 <= float(row["data_wait"]) <= 1.0 and float(row["img_s"]) > 0


def test_bf16_runs_convolutions_in_bf16_channels_last_and_losses_in_fp32(tmp_path, colours):
    trainer = _trainer(tiny_config(colours, tmp_path, "epochs=1", "train.amp=bf16"))
    assert trainer.precision.mode == "bf16" and trainer.channels_last
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    conv.register_forward_hook(
        lambda m, i, o: seen.append((o.dtype, o.is_contiguous(memory_format=torch.channels_last)))
    )
    losses = []
    original = trainer.task.loss

    def loss(outputs, batch):
        out = original(outputs, batch)
        losses.append(out["loss"].dtype)
        return out

    trainer.task.loss = loss
    trainer.fit()
    assert (torch.bfloat16, True) in seen  # training steps
    assert (torch.float32, True) in seen  # validation stays fp32
    assert set(losses) == {torch.float32}
    assert yaml.safe_load((trainer.run_dir / "config.yaml").read_text())["train"]["amp"] == "bf16"
    # The master weights stay fp32.
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_bf16_gradients_match_fp32_and_a_bf16_run_learns_and_resumes_bitwise(tmp_path):
    root = write_colour_folder(tmp_path / "colours", n_per_class=24, seed=3)
    # Same weights, same batch: the bf16 step's loss and gradient direction are fp32's. (Whole
    # loss curves are not compared: from scratch at this lr, training is chaotic step to step.)
    task = build_task(tiny_config(root, tmp_path / "g"))
    batch = next(iter(DataLoader(task.build_data().train, batch_size=16)))
    model = task.build_model()
    grads, losses = {}, {}
    for amp in ("fp32", "bf16"):
        model.zero_grad()
        with resolve_amp(amp, torch.device("cpu")).autocast():
            outputs = task.forward(model, batch)
        loss = task.loss(to_float32(outputs), batch)["loss"]
        loss.backward()
        losses[amp] = loss.item()
        grads[amp] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    # bf16 keeps 8 mantissa bits: through BatchNorm on tiny maps a fresh ResNet-18's conv
    # gradients agree with fp32's to a cosine of ~0.9 (the linear head's to ~1.0).
    assert torch.nn.functional.cosine_similarity(grads["fp32"], grads["bf16"], dim=0) > 0.8

    straight = _trainer(tiny_config(root, tmp_path / "a", "epochs=3", "train.amp=bf16"))
    metrics = straight.fit()
    curve = [r["train/loss"] for r in straight.history]
    assert curve[-1] < 0.5 * curve[0] and metrics["val/top1"] == 1.0, (curve, metrics)
    # bf16 on a CPU is deterministic too: a run interrupted after epoch 1 and resumed ends
    # bitwise where the uninterrupted one did.
    interrupted = _trainer(tiny_config(root, tmp_path / "b", "epochs=3", "train.amp=bf16"))
    train_epoch = interrupted._train_epoch

    def crash_in_epoch_2(epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return train_epoch(epoch)

    interrupted._train_epoch = crash_in_epoch_2
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    ckpt = interrupted.weights_dir / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["config"]
    resumed = _trainer(load_config(saved, [f"resume={ckpt}"]))
    assert resumed.epoch == 1
    resumed.fit()
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def _loss_fp32_vs_bf16(task, model, batch) -> tuple[dict, dict]:
    with torch.no_grad():
        reference = task.loss(task.forward(model, batch), batch)
        with resolve_amp("bf16", torch.device("cpu")).autocast():
            outputs = task.forward(model, batch)
        low = task.loss(to_float32(outputs), batch)
    return reference, low


def test_detection_loss_and_box_coding_under_bf16_match_fp32(tmp_path):
    data = write_detection(tmp_path / "shapes", n_train=4, n_val=2, width=64, height=64, seed=2)
    cfg = preset_config("detect-shapes", data, tmp_path, "img_size=64", "workers=0")
    task = build_task(cfg)
    bundle = task.build_data()
    batch = next(iter(DataLoader(bundle.train, batch_size=4, collate_fn=bundle.collate_fn)))
    model = task.build_model().eval()
    reference, low = _loss_fp32_vs_bf16(task, model, batch)
    for k, v in reference.items():
        if isinstance(v, torch.Tensor) and v.ndim == 0:
            assert low[k].dtype == torch.float32
            assert low[k].item() == pytest.approx(v.item(), rel=0.05), k


def test_depth_photometric_loss_under_bf16_matches_fp32(tmp_path):
    drive = write_driving(
        tmp_path / "drive", sequences=2, frames=6, width=128, height=64, val_sequences=1, seed=4
    )
    cfg = load_config(
        "depth-driving",
        [
            f"data.root={drive}",
            "data.synth=null",
            "img_size={width: 128, height: 64}",
            f"project={tmp_path}",
            "data.cache=false",
            "data.aug.hflip=0.0",
            "data.aug.color_p=0.0",
        ],
    )
    task = build_task(cfg)
    batch = next(iter(DataLoader(task.build_data().train, batch_size=2)))
    model = task.build_model().eval()
    reference, low = _loss_fp32_vs_bf16(task, model, batch)
    assert low["photo"].item() == pytest.approx(reference["photo"].item(), rel=0.03)
    assert low["loss"].item() == pytest.approx(reference["loss"].item(), rel=0.03)
    with resolve_amp("bf16", torch.device("cpu")).autocast():
        outputs = task.forward(model, batch)
    cams = [v for k, v in outputs.items() if isinstance(k, tuple) and k[0] == "cam_T_cam"]
    assert cams and all(c.dtype == torch.float32 for c in cams)  # warps see fp32 poses


def test_progress_without_a_terminal_prints_lines_and_train_losses(tmp_path, colours, capsys):
    cfg = tiny_config(
        colours, tmp_path, "epochs=2", "train.val_every=2", "train.log_every=50", "batch_size=4"
    )
    _trainer(cfg).fit()
    out = capsys.readouterr().out  # captured: not a TTY
    assert "epoch 1/2 2/4 (50%) loss=" in out and "epoch 1/2 4/4 (100%)" in out
    epoch1 = next(line for line in out.splitlines() if line.startswith("epoch 1/2:"))
    assert "train/loss=" in epoch1 and "val/" not in epoch1  # no validation in epoch 1
    epoch2 = next(line for line in out.splitlines() if line.startswith("epoch 2/2:"))
    assert "train/loss=" in epoch2 and "val/top1=" in epoch2 and "data wait" in epoch2
    assert "channels_last=" in out and "workers=" in out


def test_metric_lines_join_sparse_validation_points(tmp_path, monkeypatch):
    drawn = {}
    original = matplotlib.axes.Axes.plot

    def plot(self, xs, ys, *args, **kwargs):
        drawn[self.get_title() or len(drawn)] = (list(xs), list(ys))
        return original(self, xs, ys, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    rows = [
        {"epoch": 1, "train/loss": 1.0},
        {"epoch": 2, "train/loss": 0.8, "val/top1": 0.5},
        {"epoch": 3, "train/loss": 0.6},
        {"epoch": 4, "train/loss": 0.5, "val/top1": 0.9},
        {"epoch": 5, "train/loss": 0.4},
    ]
    plot_history(rows, tmp_path)
    assert (tmp_path / "metrics.png").is_file()
    # Titles are set after plotting, so look the series up by their values.
    series = list(drawn.values())
    assert ([2, 4], [0.5, 0.9]) in series
    assert ([1, 2, 3, 4, 5], [1.0, 0.8, 0.6, 0.5, 0.4]) in series


def test_plots_show_the_best_weights_also_after_resume(tmp_path, colours, monkeypatch):
    """pr_curve/confusion matrix must be those of best.safetensors (what eval uses)."""
    scores = {1: 0.5, 2: 0.9, 3: 0.3, 4: 0.2}

    def run(cfg):
        trainer = _trainer(cfg)

        def evaluate(model, loader, device, plots_dir=None):
            epoch = trainer.epoch + 1
            if plots_dir is not None:
                (plots_dir / "confusion_matrix.png").write_text(f"epoch {epoch}")
            return EvalResult({"val/top1": scores[epoch]})

        monkeypatch.setattr(trainer.task, "evaluate", evaluate)
        monkeypatch.setattr(trainer.task, "draw_batch", lambda *a, **k: None)
        trainer.fit()
        return trainer

    first = run(tiny_config(colours, tmp_path, "epochs=3", "train.plots=true"))
    plot = first.plots_dir / "confusion_matrix.png"
    assert plot.read_text() == "epoch 2"
    assert yaml.safe_load((first.weights_dir / "best.yaml").read_text())["epoch"] == 2
    ckpt = first.weights_dir / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["config"]
    run(load_config(saved, [f"resume={ckpt}", "epochs=4"]))
    assert plot.read_text() == "epoch 2"
    assert {r["amp"] for r in _rows(first)} == {first.precision.mode}


def test_loader_workers_persist_except_in_deterministic_runs(tmp_path, colours):
    fast = _trainer(tiny_config(colours, tmp_path, "workers=1", "deterministic=false"))
    assert fast.workers == 1 and fast.train_loader.persistent_workers
    assert fast.train_loader.prefetch_factor == 4
    # Deterministic: workers restart each epoch, seeded from (seed, epoch), so resume is exact.
    exact = _trainer(tiny_config(colours, tmp_path, "workers=1"))
    assert not exact.train_loader.persistent_workers
    trained = exact.fit()
    assert "val/top1" in trained and 0.0 <= exact.history[-1]["data_wait"] <= 1.0


def test_a_failing_torch_compile_is_named_with_the_key_to_turn_it_off(
    tmp_path, colours, monkeypatch
):
    class Broken(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            raise RuntimeError("inductor: no C++ compiler found\nlong trace ...")

    monkeypatch.setattr(torch, "compile", lambda module: Broken(module))
    trainer = _trainer(tiny_config(colours, tmp_path, "epochs=1", "train.compile=true"))
    with pytest.raises(ConfigError, match=r"train.compile=true.*no C\+\+ compiler found.*false"):
        trainer.fit()


def test_a_failing_compiled_loss_is_named_and_an_uncompiled_models_errors_stay_its_own(
    tmp_path, colours, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("inductor: no C++ compiler found\nlong trace ...")

    monkeypatch.setattr(torch, "compile", lambda fn: broken)
    trainer = _trainer(tiny_config(colours, tmp_path, "epochs=1", "train.compile=loss"))
    assert trainer.train_model is trainer.model  # only the loss was handed to torch.compile
    with pytest.raises(ConfigError, match=r"train.compile=loss.*no C\+\+ compiler found.*false"):
        trainer.fit()
    # The model is not compiled: its own error on the first step is not blamed on the compiler.
    trainer = _trainer(tiny_config(colours, tmp_path / "b", "epochs=1", "train.compile=loss"))
    monkeypatch.setattr(trainer.model, "forward", lambda x: broken())
    with pytest.raises(RuntimeError, match="no C"):
        trainer.fit()
