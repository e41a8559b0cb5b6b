"""``bench``: latencies are what the clock saw, images/s follows from them, FLOPs agree with
torch's flop counter, the roofline share is achieved FLOP/s over the measured GEMM peak,
conv-BN fusion changes nothing but speed, and ``--compare`` runs three backends side by side."""

from __future__ import annotations

import tempfile
import time

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet18

from conftest import train_tiny_run
from visbricks.cli import main
from visbricks.deploy.benchmark import benchmark, fuse_conv_bn, gemm_peak_gflops
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


def test_latency_images_per_second_params_flops_and_peak_share():
    model = _Sleeper(0.02)
    report = benchmark(model, (16, 24), batches=(1, 4), warmup=1, iters=5, gemm_peak=10.0)
    assert [r.batch for r in report.rows] == [1, 4]
    # A 1x1 conv: 2 FLOPs per multiply-add, 3 inputs x 4 outputs per pixel.
    flops = 2 * 3 * 4 * 16 * 24
    assert report.flops_per_image == flops
    for row in report.rows:
        assert 20.0 <= row.p50_ms <= row.p90_ms < 200.0
        assert row.images_per_s == pytest.approx(row.batch * 1000 / row.p50_ms)
        assert row.gflops_per_s == pytest.approx(flops * row.images_per_s / 1e9)
        assert row.peak_share == pytest.approx(row.gflops_per_s / 10.0)
        assert row.peak_mem_mb is None  # CPU
    assert report.params == 3 * 4 + 4
    text = str(report)
    assert "input 24x16" in text and "% peak" in text and text.count("\n") == 4


def _randomise_bn(model: nn.Module) -> nn.Module:
    # Fresh BatchNorm is the identity; random statistics make folding mistakes visible.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
    return model.eval()


def test_fusion_folds_every_conv_bn_pair_and_changes_no_output():
    model = _randomise_bn(resnet18(num_classes=5))
    x = torch.randn(2, 3, 64, 64)
    fused, n = fuse_conv_bn(model, x)
    assert n == 20  # stem + 16 block convs + 3 downsample convs, each with its BatchNorm
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)


def test_a_conv_whose_output_is_also_used_elsewhere_is_not_fused():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding BN into conv would change the second term

    model = _randomise_bn(Branch())
    fused, n = fuse_conv_bn(model, torch.randn(1, 3, 8, 8))
    assert n == 0 and fused is model


def test_flops_agree_with_torch_flop_counter():
    model = resnet18(num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    expected = counter.get_total_flops()
    # Independent check of the dominant term: 2 x MACs of every conv and linear layer.
    macs = []

    def hook(m, i, o):
        k = m.weight[0].numel()  # in/groups x kh x kw (linear: in)
        macs.append(o.numel() * k)

    hooks = [
        m.register_forward_hook(hook) for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert expected == 2 * sum(macs)
    report = benchmark(model, (64, 64), batches=(2,), warmup=0, iters=1)  # fused: same FLOPs
    assert report.fused == 20 and report.flops_per_image == expected


def test_gemm_peak_is_measured():
    peak = gemm_peak_gflops("cpu", size=256, min_seconds=0.05)
    assert 0.01 < peak < 1e6


def test_bad_settings_are_errors():
    with pytest.raises(VisbricksError, match="iters >= 1"):
        benchmark(_Sleeper(0), (8, 8), iters=0)


def test_command_line_rows_roofline_and_compare(tmp_path, capsys, monkeypatch):
    run = train_tiny_run(tmp_path)
    capsys.readouterr()
    assert main(["bench", str(run), "--batch", "1,2", "--iters", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2"]
    assert "input 32x32" in out and "GFLOPs/image" in out and "fp32 GEMM peak measured" in out
    assert all(r[5].endswith("%") for r in rows)  # share of the peak on every row
    assert "conv+BN fused" in out
    assert main(["bench", str(run), "--batch", "1", "--iters", "2", "--no-fuse"]) == 0
    assert "fused" not in capsys.readouterr().out

    args = ["--batch", "1,2", "--iters", "2", "--warmup", "1", "--calib", "4"]
    scratch = tmp_path / "system-tmp"  # where the compare's fp32 and int8 files are made
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["bench", str(run), "--compare", *args]) == 0
    assert [p.name for p in scratch.glob("visbricks-*")] == []  # removed once timed
    out = capsys.readouterr().out
    table = out[out.index("side by side") :].splitlines()[2:]
    labels = [line.rsplit(maxsplit=4)[0] for line in table]
    assert len(table) == 6 and labels[0].startswith("eager")
    assert any("onnxruntime" in x and "fp32" in x for x in labels)
    assert any("int8" in x for x in labels)
    assert table[0].endswith("1.00x")

    assert main(["bench", str(run), "--batch", "one"]) == 2
    assert "--batch takes sizes like 1,8" in capsys.readouterr().err
    assert main(["bench", str(run), "--batch", "0"]) == 2
    assert "batch sizes >= 1" in capsys.readouterr().err
