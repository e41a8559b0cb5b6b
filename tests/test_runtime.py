"""Exported files run through the same pre-processing and decoding as our weights: ``predict``
and ``eval`` from ``.onnx``/``.pt2`` give what they give from the weights, and the JSON beside an
export is enough to decode its outputs without our code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, box_convert

from conftest import train_tiny_run
from visbricks.cli import main
from visbricks.data.io import read_image
from visbricks.data.synth.shapes import write_detection
from visbricks.deploy.loading import load_run
from visbricks.deploy.runtime import load_any
from visbricks.errors import ConfigError, DataError, WeightsError

pytestmark = pytest.mark.cost(51)  # seconds here: scheduled early (conftest.py)

NO_AUG = "data.aug={hflip: 0.0, photometric: 0.0, zoom_out: 0.0, iou_crop: 0.0, scale_jitter: null}"


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A small SSD trained a few epochs on 64 px shapes, exported to ONNX and pt2."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("rt")
    data = write_detection(tmp / "shapes", n_train=16, n_val=6, width=64, height=64, seed=5)
    args = [
        f"data.root={data}",
        "data.synth=null",
        f"project={tmp / 'runs'}",
        "train.plots=false",
        "train.tensorboard=false",
        NO_AUG,
        "img_size=64",
        "batch_size=8",
        "epochs=6",
        "train.val_every=1000",
        "optim.lr=0.003",
        "model.neck_args={out_channels: 32, levels: [1, 2, 3], extra_levels: 0}",
        "model.anchors={smin: 0.15, smax: 0.5}",
        "eval.conf_thresh=0.05",
    ]
    assert main(["train", "detect-shapes", *args]) == 0
    run_dir = tmp / "runs" / "detect" / "detect-shapes"
    for fmt in ("onnx", "pt2"):
        assert main(["export", str(run_dir), "--format", fmt]) == 0
    return run_dir, data


def _boxes(pred_file) -> list[list[tuple]]:
    entries = json.loads(pred_file.read_text())
    return [
        sorted((d["category_id"], *d["bbox"], d["score"]) for d in e["detections"]) for e in entries
    ]


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_predict_from_an_export_gives_the_weights_boxes(detector, suffix, tmp_path):
    run_dir, data = detector
    images = data / "images" / "val"
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "eager")]) == 0
    exported = run_dir / "weights" / f"best{suffix}"
    assert main(["predict", str(exported), str(images), "--out", str(tmp_path / "exp")]) == 0
    eager = _boxes(tmp_path / "eager" / "predictions.json")
    got = _boxes(tmp_path / "exp" / "predictions.json")
    assert sum(len(e) for e in eager) >= 3  # there are boxes to compare
    assert [len(e) for e in got] == [len(e) for e in eager]
    for a, b in zip(eager, got):
        for da, db in zip(a, b):
            assert da[0] == db[0]  # same class
            # bbox is rounded to 0.01 px in the JSON: equal within 1e-3 px before rounding
            # means within one rounding step after it.
            np.testing.assert_allclose(da[1:5], db[1:5], atol=0.01 + 1e-3)
            assert da[5] == pytest.approx(db[5], abs=1e-4)
    assert len(list((tmp_path / "exp").glob("*.png"))) == len(list(images.glob("*")))


def test_eval_from_onnx_gives_the_weights_metric(detector, tmp_path, capsys):
    run_dir, _ = detector
    weights = main(["eval", str(run_dir), "--out", str(tmp_path / "a")])
    assert weights == 0
    onnx_file = run_dir / "weights" / "best.onnx"
    assert main(["eval", str(onnx_file), "--out", str(tmp_path / "b")]) == 0
    assert "onnxruntime" in capsys.readouterr().out
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert set(a) == set(b) and "val/mAP50" in a
    for k in a:
        assert b[k] == pytest.approx(a[k], abs=1e-4), k


def test_the_json_alone_decodes_the_onnx_outputs(detector):
    """Decode best.onnx with numpy + torchvision NMS from the JSON's description only, and get
    the task's own detections."""
    import onnxruntime

    run_dir, data = detector
    path = run_dir / "weights" / "best.onnx"
    info = json.loads(path.with_suffix(".json").read_text())
    dec, inp = info["decode"], info["input"]
    assert dec["background_column"] == 0 and len(dec["variances"]) == 4
    assert inp["shape"][1:] == [3, 64, 64] and info["preprocess"]["fill"] == 114

    image = read_image(sorted((data / "images" / "val").iterdir())[0])  # already 64 x 64
    x = (image.astype(np.float32) / 255 - inp["mean"]) / inp["std"]
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip(info["outputs"], session.run(None, {inp["name"]: x})))
    logits = torch.from_numpy(out["cls_logits"][0])
    scores = logits.softmax(-1)[:, 1:]  # drop the background column
    anchors = box_convert(torch.from_numpy(out["anchors"]), "xyxy", "cxcywh")
    d = torch.from_numpy(out["box_deltas"][0]) * torch.tensor(dec["variances"])
    centre = anchors[:, :2] + d[:, :2] * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(d[:, 2:].clamp(max=dec["clip"]))
    boxes = box_convert(torch.cat([centre, size], 1), "cxcywh", "xyxy").clamp(0, 64)
    nms = dec["nms"]
    flat = scores.reshape(-1)
    cand = torch.nonzero(flat > nms["score_thresh"]).squeeze(1)
    top = flat[cand].topk(min(nms["topk_candidates"], len(cand)))
    idx = cand[top.indices]
    label, cand_boxes = idx % scores.shape[1], boxes[idx // scores.shape[1]]
    valid = (cand_boxes[:, 2] > cand_boxes[:, 0]) & (cand_boxes[:, 3] > cand_boxes[:, 1])
    cand_boxes, cand_scores, label = cand_boxes[valid], top.values[valid], label[valid]
    keep = batched_nms(cand_boxes, cand_scores, label, nms["per_class_iou"])
    keep = keep[: nms["max_detections"]]
    mine = sorted((int(label[k]), *[round(v, 2) for v in cand_boxes[k].tolist()]) for k in keep)

    run = load_run(run_dir, ["eval.conf_thresh=0.05"])
    t, meta = run.task.preprocess(image)
    with torch.no_grad():
        pred = run.task.postprocess(run.model(t[None]), [meta])[0]["detections"]
    theirs = sorted(
        (d["category_id"] - 1, *[round(v, 2) for v in (d["bbox"][0], d["bbox"][1])],
         round(d["bbox"][0] + d["bbox"][2], 2), round(d["bbox"][1] + d["bbox"][3], 2))
        for d in pred
    )  # fmt: skip
    assert len(mine) == len(theirs) >= 1
    np.testing.assert_allclose(np.array(mine), np.array(theirs), atol=0.02)


def test_a_backend_forced_on_weights_exports_them_and_errors_are_named(tmp_path):
    run_dir = train_tiny_run(tmp_path)
    eager = load_any(run_dir)
    forced = load_any(run_dir, "onnxruntime")  # exported on the fly, verified, then run
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            forced.model(x)["logits"], eager.model(x)["logits"], atol=1e-4, rtol=1e-4
        )
    onnx_file = forced.weights
    assert onnx_file.suffix == ".onnx" and forced.classes == eager.classes
    assert forced.origin == eager.weights  # outputs go beside the weights, not into the export
    with pytest.raises(ConfigError, match=f"{onnx_file.name} is an exported file"):
        load_any(onnx_file, "eager")
    with pytest.raises(DataError, match=r"exported for inputs \(batch, 3, 32, 32\)"):
        forced.model(torch.randn(1, 3, 40, 40))
    with pytest.raises(ConfigError, match="--backend must be one of"):
        load_any(run_dir, "tensorrt")
    onnx_file.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match=f"{onnx_file.name} has no {onnx_file.stem}.json"):
        load_any(onnx_file)


def test_eval_with_a_forced_backend_writes_beside_the_run_and_leaves_no_temporary_files(tmp_path):
    """``eval --backend onnxruntime`` on weights exports them into a temporary folder: its
    results belong in the run folder, and the export is gone when the command ends (one such
    folder per call once filled CI's disk)."""
    run_dir = train_tiny_run(tmp_path)
    # A short TMPDIR: DataLoader workers pass batches over Unix sockets made in it, whose paths
    # may not pass 107 bytes (under tmp_path they did, and the workers' batches never came).
    scratch = Path(tempfile.mkdtemp(prefix="vb-"))
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    visbricks = Path(sys.executable).parent / "visbricks"  # the console script of this venv
    cmd = [str(visbricks), "eval", str(run_dir), "--backend", "onnxruntime"]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        left = [p.name for p in scratch.glob("visbricks-*")]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert "weights/best.safetensors (onnxruntime" in done.stdout
    assert (run_dir / "eval" / "metrics.json").is_file()
    assert left == []  # (ONNX Runtime leaves a .ses file of its own there)
