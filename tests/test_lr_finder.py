"""The learning-rate range test (engine/lr_finder.py) and ``batch_size: auto``
(engine/batch_size.py): the suggestion rule on curves with a known answer, a sweep on a quadratic
whose divergence point is known, the model left bitwise untouched, and both ``auto`` values
resolved by the Trainer and written to the run's config.yaml."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from conftest import tiny_config, write_colour_folder
from visbricks.data.bundle import DataBundle
from visbricks.engine.batch_size import choose_batch_size
from visbricks.engine.lr_finder import (
    beta_for,
    lr_range_test,
    smooth,
    suggest_lr,
    sweep_lrs,
)
from visbricks.tasks import build_task


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("lr") / "colours", n_per_class=8, size=24)


# --- The rule ------------------------------------------------------------------------------------


def test_suggestion_is_the_steepest_descent_of_a_known_curve():
    # loss = 2 - tanh((log10 lr - x0) / 0.4) falls fastest at x0 exactly; the divergence after
    # the minimum (a steep rise) must not move the suggestion.
    lrs = sweep_lrs(1e-7, 10.0, 161)  # 0.05 decades apart
    x = np.log10(lrs)
    x0 = -3.0
    curve = 2 - np.tanh((x - x0) / 0.4) + np.where(x > -0.5, 30 * (x + 0.5) ** 2, 0.0)
    lr, rule = suggest_lr(lrs, curve.tolist())
    assert rule.startswith("steepest descent")
    assert abs(math.log10(lr) - x0) <= 0.051, lr
    # Moved to another decade, the suggestion moves with it.
    lr2, _ = suggest_lr(lrs, (2 - np.tanh((x + 5) / 0.4)).tolist())
    assert abs(math.log10(lr2) + 5) <= 0.051


def test_a_curve_without_a_descent_takes_a_tenth_of_where_the_loss_starts_to_rise():
    # classify-shapes from scratch: 100 sweep steps are too few to learn at any lr, so the loss
    # stays flat (noise of 0.5 %) until it diverges; steepest descent then picked noise (1e-8).
    lrs = sweep_lrs(1e-7, 10.0, 100)
    x = np.log10(lrs)
    noise = 1 + 0.005 * np.random.default_rng(0).uniform(-1, 1, len(x))
    curve = 1.9 * noise * (1 + np.where(x > -2.5, (x + 2.5) ** 2, 0.0))
    lr, rule = suggest_lr(lrs, curve.tolist())
    assert "starts to rise" in rule
    # 10 % above the running minimum (≥ 1.9 · 0.995) at (x + 2.5)² ≈ 0.0945: x ≈ -2.19.
    assert abs(math.log10(lr) - (-2.19 - 1)) <= 0.1, lr
    rising = np.linspace(1.0, 3.0, 30)  # only rises: the edge is 10 % above the start
    lrs = sweep_lrs(1e-4, 1.0, 30)
    lr, rule = suggest_lr(lrs, rising.tolist())
    edge = int(np.nonzero(rising[3:] > rising[3] * 1.1)[0][0]) + 3
    assert lr == pytest.approx(lrs[edge] / 10) and "starts to rise" in rule
    lr, rule = suggest_lr(lrs, [2.0] * 30)  # neither falls nor rises
    assert lr == pytest.approx(lrs[3] / 10) and "minimum" in rule


def test_smoothing_is_a_bias_corrected_moving_average():
    assert smooth([2.0] * 7, 0.9) == pytest.approx([2.0] * 7)  # no warm-up bias
    losses = [3.0, 1.0, 4.0, 1.0, 5.0]
    avg, want = 0.0, []
    for k, v in enumerate(losses, 1):
        avg = 0.8 * avg + 0.2 * v
        want.append(avg / (1 - 0.8**k))
    assert smooth(losses, 0.8) == pytest.approx(want)
    assert beta_for(100) == pytest.approx(0.98)  # fastai's and Lightning's at 100 steps
    assert beta_for(20) == pytest.approx(0.9)


# --- A sweep on a quadratic ---------------------------------------------------------------------


class _Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


class _QuadraticTask:
    """loss = a/2 (w - c)^2: plain gradient descent shrinks the error by |1 - lr·a| a step, so
    it converges for lr < 2/a and diverges beyond."""

    metric, metric_mode = "val/loss", "min"
    a, c = 4.0, 3.0

    def to_device(self, batch, device, channels_last=False):
        return batch

    def forward(self, model, batch):
        return {"w": model.w}

    def loss(self, outputs, batch):
        return {"loss": self.a / 2 * (outputs["w"] - self.c) ** 2}

    def batch_size(self, batch):
        return len(batch["x"])


def test_sweep_on_a_quadratic_stops_past_divergence_and_suggests_a_stable_lr(tmp_path):
    cfg = tiny_config(
        tmp_path,
        tmp_path / "runs",
        "optim.name=sgd",
        "optim.momentum=0.0",
        "optim.weight_decay=0.0",
        "train.amp=fp32",
        "workers=0",
        "tune.lr_start=1.0e-5",
        "tune.lr_end=100.0",
        "tune.lr_steps=80",
        "batch_size=1",
    )
    data = DataBundle([{"x": torch.zeros(1)}] * 400, [], [])
    model = _Quadratic()
    task = _QuadraticTask()
    result = lr_range_test(cfg, model, data, task, torch.device("cpu"), out_dir=tmp_path)
    diverge = 2 / task.a
    assert result.planned == 80 and len(result.lrs) < 80  # stopped early
    assert "4x its minimum" in result.stopped
    assert result.lrs[-1] > diverge  # only once the lr passed the divergence point
    assert result.suggestion < diverge  # a learning rate at which training converges
    assert result.suggestion > 1e-3 / task.a  # and not one at which nothing moves
    assert result.losses[0] == pytest.approx(task.a / 2 * task.c**2)
    assert model.w.item() == 0.0  # the sweep trained a copy
    assert (tmp_path / "lr_find.png").stat().st_size > 0
    rows = (tmp_path / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "step,lr,loss,smoothed" and len(rows) == len(result.lrs) + 1


# --- On a real model ------------------------------------------------------------------------------


def test_range_test_leaves_the_model_and_rngs_bitwise_unchanged(tmp_path, colours):
    cfg = tiny_config(colours, tmp_path / "runs", "tune.lr_steps=20", "workers=0")
    task = build_task(cfg)
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = lr_range_test(cfg, model, task.build_data(), task, torch.device("cpu"))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():  # weights and BatchNorm statistics alike
        assert torch.equal(v, after[k]), k
    assert torch.equal(rng, torch.get_rng_state())
    assert len(result.lrs) >= 2 and cfg.tune.lr_start <= result.suggestion <= cfg.tune.lr_end


def test_auto_lr_and_batch_size_are_resolved_recorded_and_trained_with(tmp_path, colours):
    from visbricks.engine.trainer import Trainer

    cfg = tiny_config(
        colours,
        tmp_path / "runs",
        "optim.lr=auto",
        "batch_size=auto",
        "tune.lr_steps=20",
        "tune.batch_candidates=[4, 8, 64]",
        "epochs=1",
        "workers=0",
    )
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task=task)
    # The caller's config keeps "auto"; the run's holds the numbers.
    assert cfg.optim.lr == "auto" and cfg.batch_size == "auto"
    saved = yaml.safe_load((trainer.run_dir / "config.yaml").read_text())
    lr = saved["optim"]["lr"]
    assert isinstance(lr, float) and lr == float(f"{trainer.lr_find.suggestion:.3g}")
    assert trainer.optimizer.param_groups[0]["initial_lr"] == lr
    # 16 training images: 64 is capped to 16.
    assert saved["batch_size"] in (4, 8, 16) and trainer.settings.batch_size == saved["batch_size"]
    assert (trainer.plots_dir / "lr_find.png").is_file()
    trainer.fit()
    rows = (trainer.run_dir / "results.csv").read_text().splitlines()
    assert len(rows) == 2
    ckpt = torch.load(trainer.weights_dir / "last.ckpt", weights_only=True)
    assert ckpt["config"]["optim"]["lr"] == lr  # a resume keeps the choice
    assert ckpt["config"]["batch_size"] == saved["batch_size"]


def test_cpu_batch_choice_is_one_of_the_capped_candidates(tmp_path, colours):
    cfg = tiny_config(colours, tmp_path / "runs", "tune.batch_candidates=[2, 5, 100]")
    task = build_task(cfg)
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice = choose_batch_size(cfg, model, task.build_data(), task, torch.device("cpu"))
    assert set(choice.measured) == {2, 5, 16}  # 100 capped by the 16 training images
    assert choice.batch_size in choice.measured
    assert choice.batch_size == max(choice.measured, key=choice.measured.get)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert "batch_size=auto" in choice.describe()


def test_tune_lr_command(tmp_path, colours, capsys):
    from visbricks.cli import main

    out = tmp_path / "tune"
    args = [
        "tune", "lr", "classify-shapes", f"data.root={colours}", "data.synth=null",
        "img_size=32", "batch_size=8", "model.backbone=mobilenet_v3_small", "workers=0",
        "--steps", "20", "--start", "1e-5", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "suggested optim.lr=" in printed and "from 1.0e-05" in printed
    assert (out / "lr_find.png").is_file() and (out / "lr_find.csv").is_file()


def test_the_range_test_is_spent_from_the_time_budget(tmp_path, colours):
    """train.time is the run's wall clock: the lr range test of optim.lr=auto is not free."""
    from visbricks.engine.trainer import Trainer

    cfg = tiny_config(
        colours, tmp_path / "runs", "optim.lr=auto", "tune.lr_steps=10", "train.time=600",
        "workers=0",
    )
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task=task)
    assert trainer.tuning_s > 0 and trainer.budget.spent == trainer.tuning_s
    assert trainer.budget.remaining() <= 600 - trainer.tuning_s
