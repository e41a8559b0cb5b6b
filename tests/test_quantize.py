"""``quantize``: int8 files from both backends load through our runtime, predict like the fp32
model on the validation split, carry their description, and the command prints one table."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_colour_folder
from visbricks.cli import main
from visbricks.deploy.loading import load_run
from visbricks.deploy.quantize import QuantizeError, quantize, split_loader
from visbricks.deploy.runtime import load_any
from visbricks.errors import ConfigError

pytestmark = pytest.mark.cost(14)  # seconds here: scheduled early (conftest.py)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ResNet-18 (BatchNorm everywhere, what int8 folds) trained on red vs blue until it
    separates them."""
    tmp = tmp_path_factory.mktemp("quant")
    torch.set_num_threads(1)
    root = write_colour_folder(tmp / "colours", n_per_class=24, size=32)
    args = [
        f"data.root={root}",
        f"project={tmp / 'runs'}",
        "img_size=32",
        "batch_size=8",
        "epochs=2",
        "optim.lr=0.002",
        "model.backbone=resnet18",
        "train.plots=false",
        "train.tensorboard=false",
        "data.aug={hflip: 0.0, vflip: 0.0, color_jitter: 0.0}",
    ]
    assert main(["train", "classify-shapes", "data.synth=null", *args]) == 0
    run_dir = tmp / "runs" / "classify" / "classify-shapes"
    assert main(["export", str(run_dir)]) == 0  # quantize starts from this verified export
    return run_dir


def _top1(run) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, true class) over the validation split."""
    preds, labels = [], []
    with torch.no_grad():
        for batch in split_loader(run, "val"):
            preds.append(run.model(batch["image"])["logits"].argmax(1))
            labels.append(batch["label"])
    return torch.cat(preds), torch.cat(labels)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_int8_agrees_with_fp32_on_the_validation_split(trained, backend, tmp_path):
    run = load_run(trained)
    fp32_pred, labels = _top1(run)
    assert (fp32_pred == labels).float().mean() >= 0.9  # the model learned: agreement means much
    suffix = ".onnx" if backend == "onnxruntime" else ".pt2"
    out = tmp_path / f"model.int8{suffix}"
    # Latency of the torch int8 program needs torch.compile: too slow for a unit test.
    bench = (1,) if backend == "onnxruntime" else ()
    report = quantize(run, out, backend, calib=16, bench_batches=bench, bench_iters=2)
    assert out.is_file() and report.calib == 16

    int8 = load_any(out)  # picked by the file type, decoded by the task as always
    int8_pred, _ = _top1(int8)
    assert (int8_pred == fp32_pred).float().mean() >= 0.9
    # The report's metrics are the task's own, recomputed here independently.
    assert report.fp32 == pytest.approx((fp32_pred == labels).float().mean().item(), abs=1e-6)
    assert report.int8 == pytest.approx((int8_pred == labels).float().mean().item(), abs=1e-6)
    assert set(report.latency_ms) == ({"fp32", "int8"} if bench else set())

    info = json.loads(out.with_suffix(".json").read_text())
    assert info["quantized"]["backend"] == backend and info["quantized"]["dtype"] == "int8"
    assert info["quantized"]["calibration_images"] == 16 and info["classes"] == ["blue", "red"]
    if backend == "onnxruntime":  # really int8: quantize/dequantize pairs around the convs
        import onnx

        ops = {n.op_type for n in onnx.load(str(out)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def test_float_layers_stay_float_and_unknown_ones_are_named(trained, tmp_path):
    import onnx

    run = load_run(trained)
    out = tmp_path / "head-float.int8.onnx"
    report = quantize(run, out, calib=8, float_layers=["head"], evaluate=False, bench_batches=())
    assert report.float_layers == ["head"] and "layers kept in float: head" in str(report)
    graph = onnx.load(str(out)).graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")  # the classifier's Linear
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert producers.get(gemm.input[1]) != "DequantizeLinear"  # float weights, not int8
    with pytest.raises(QuantizeError, match="--float nonsense: no layer"):
        quantize(run, tmp_path / "x.int8.onnx", calib=4, float_layers=["nonsense"])
    with pytest.raises(ConfigError, match="must end in .pt2"):
        quantize(run, tmp_path / "x.onnx", "torch", calib=4)


def test_command_prints_one_table(trained, capsys):
    assert main(["quantize", str(trained), "--calib", "8", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "val/top1" in out and "p50 ms @1" in out and "p50 ms @8" in out
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line[:4] in ("fp32", "int8")
    }
    assert set(rows) == {"fp32", "int8"} and len(rows["fp32"]) == 5  # metric, size, 2 latencies
    assert (trained / "weights" / "best.int8.onnx").is_file()
    assert main(["quantize", str(trained), "--calib", "0"]) == 2
    assert "--calib must be at least 1" in capsys.readouterr().err
