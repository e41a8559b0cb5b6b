"""``model.channels_last: auto`` in fp32 on a CPU (engine/layout.py): when the probe runs, that it
picks the layout that really is faster (one layout made slower by a known delay), the margin that
keeps NCHW on a near tie, and the Trainer recording the choice in config.yaml."""

from __future__ import annotations

import time

import pytest
import torch
import yaml

from conftest import tiny_config, write_colour_folder
from visbricks.engine import batch_size, layout
from visbricks.engine.layout import choose_channels_last, layout_probe_applies
from visbricks.engine.trainer import Trainer
from visbricks.tasks import build_task

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("layout") / "colours", n_per_class=8)


def _cfg(colours, tmp_path, *extra: str):
    return tiny_config(
        colours,
        tmp_path / "runs",
        "train.amp=fp32",
        "model.channels_last=auto",  # classify-shapes pins false
        "deterministic=false",
        *extra,
    )


def test_the_probe_runs_only_for_auto_fp32_cpu_and_not_deterministic(colours, tmp_path):
    assert layout_probe_applies(_cfg(colours, tmp_path), CPU)
    assert not layout_probe_applies(_cfg(colours, tmp_path, "deterministic=true"), CPU)
    assert not layout_probe_applies(_cfg(colours, tmp_path, "train.amp=bf16"), CPU)
    assert not layout_probe_applies(_cfg(colours, tmp_path, "model.channels_last=false"), CPU)
    assert not layout_probe_applies(_cfg(colours, tmp_path), torch.device("cuda"))


def _is_channels_last(model: torch.nn.Module) -> bool:
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("slow", ["NCHW", "channels-last"])
def test_the_faster_layout_wins(colours, tmp_path, monkeypatch, slow):
    # Each step of the slow layout sleeps 5x its own real step + 50 ms: it takes over 6x its
    # compute, so even if its real step were half the other layout's (and a loaded machine
    # slows both alike), its rate stays well below 1/1.5 of the fast one's.
    real_step = batch_size.forward_backward

    def step(task, work, batch, precision):
        start = time.perf_counter()
        real_step(task, work, batch, precision)
        if _is_channels_last(work) == (slow == "channels-last"):
            time.sleep(5 * (time.perf_counter() - start) + 0.05)

    monkeypatch.setattr(batch_size, "forward_backward", step)
    cfg = _cfg(colours, tmp_path)
    task = build_task(cfg)
    choice = choose_channels_last(cfg, task.build_model(), task.build_data(), task, CPU, 8)
    assert set(choice.measured) == {"NCHW", "channels-last"}
    fast = "channels-last" if slow == "NCHW" else "NCHW"
    assert choice.measured[fast] > 1.5 * choice.measured[slow]
    assert choice.channels_last is (fast == "channels-last")
    assert "model.channels_last=auto: " + ("on" if choice.channels_last else "off") in (
        choice.describe()
    )


def test_a_near_tie_keeps_nchw(colours, tmp_path, monkeypatch):
    # Both layouts take the same fixed time per step (the real step left out: under load its two
    # layouts can differ by more than the margin): a tie, so NCHW stays.
    def step(task, work, batch, precision):
        time.sleep(0.05)

    monkeypatch.setattr(batch_size, "forward_backward", step)
    cfg = _cfg(colours, tmp_path)
    task = build_task(cfg)
    choice = choose_channels_last(cfg, task.build_model(), task.build_data(), task, CPU, 8)
    ratio = choice.measured["channels-last"] / choice.measured["NCHW"]
    assert ratio < layout.MARGIN and choice.channels_last is False


def test_the_trainer_trains_and_records_the_measured_layout(colours, tmp_path, capsys):
    cfg = _cfg(colours, tmp_path, "epochs=1")
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task=task)
    out = capsys.readouterr().out
    assert "model.channels_last=auto: " in out and "NCHW" in out and "channels-last" in out
    assert isinstance(trainer.channels_last, bool)
    assert _is_channels_last(trainer.model) is trainer.channels_last
    trainer.fit()
    saved = yaml.safe_load((trainer.run_dir / "config.yaml").read_text())
    assert saved["model"]["channels_last"] is trainer.channels_last
    # Deterministic runs never time anything: the rule's NCHW, no probe line.
    cfg = _cfg(colours, tmp_path, "epochs=1", "deterministic=true")
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task=task)
    assert "model.channels_last=auto" not in capsys.readouterr().out
    assert trainer.channels_last is False
