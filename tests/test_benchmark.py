"""``bench``: latencies are what the clock saw, images/s follows from them, FLOPs and params are
the model's, and the command line prints one row per batch size."""

from __future__ import annotations

import time

import pytest
from torch import nn

from conftest import train_tiny_run
from visbricks.cli import main
from visbricks.deploy.benchmark import benchmark
from visbricks.errors import VisbricksError


class _Sleeper(nn.Module):
    """A 1x1 conv that also sleeps a fixed time per call: its latency is known in advance."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        time.sleep(self.seconds)
        return self.conv(x)


def test_latency_images_per_second_params_and_flops():
    model = _Sleeper(0.02)
    report = benchmark(model, (16, 24), batches=(1, 4), warmup=1, iters=5)
    assert [r.batch for r in report.rows] == [1, 4]
    for row in report.rows:
        assert 20.0 <= row.p50_ms <= row.p90_ms < 200.0
        assert row.images_per_s == pytest.approx(row.batch * 1000 / row.p50_ms)
        assert row.peak_mem_mb is None  # CPU
    assert report.params == 3 * 4 + 4
    # A 1x1 conv: 2 FLOPs per multiply-add, 3 inputs x 4 outputs per pixel.
    assert report.flops_per_image == 2 * 3 * 4 * 16 * 24
    text = str(report)
    assert "input 24x16" in text and text.count("\n") == 4


def test_bad_settings_are_errors():
    with pytest.raises(VisbricksError, match="iters >= 1"):
        benchmark(_Sleeper(0), (8, 8), iters=0)


def test_command_line_prints_a_row_per_batch(tmp_path, capsys):
    run = train_tiny_run(tmp_path)
    capsys.readouterr()
    assert main(["bench", str(run), "--batch", "1,2", "--iters", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2"]
    assert "input 32x32" in out and "GFLOPs/image" in out
    assert main(["bench", str(run), "--batch", "one"]) == 2
    assert "--batch takes sizes like 1,8" in capsys.readouterr().err
    assert main(["bench", str(run), "--batch", "0"]) == 2
    assert "batch sizes >= 1" in capsys.readouterr().err
