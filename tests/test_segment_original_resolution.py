"""Segmentation is scored at the labels' own resolution, as mmseg does (``eval.resolution:
original``, the default): ``visbricks eval`` of a run equals a numpy confusion matrix over the
class-index PNGs ``visbricks predict`` writes (``masks/<stem>.png``) against the original label
PNGs — on real CamVid photos and on generated images whose size is neither ``img_size`` nor
square (so the letterbox is undone). ``eval.resolution=network`` still gives the cheaper figure,
labelled as such.

The reference below reads PNGs with PIL and counts with numpy only: no visbricks metrics code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, shared_data

# ../shared/data/README.md, in label order
CAMVID = "Sky Building Pole Road Pavement Tree SignSymbol Fence Car Pedestrian Bicyclist".split()
VOID = 11  # CamVid's unlabelled value

# A few optimizer steps on one thread: the scores are whatever they are, only equality counts.
# On the CPU, where predict runs too: the same logits on both sides, bit for bit.
TINY = [
    "device=cpu",
    "epochs=1",
    "batch_size=3",
    "workers=0",
    "train.max_batches=2",
    "train.plots=false",
    "train.tensorboard=false",
    "model.pretrained=null",
]


def train(preset: str, *overrides: str) -> Path:
    """A tiny run of ``preset``, in process (``visbricks train`` without its run report: the
    commands under test are eval and predict); its run folder."""
    from visbricks.cli import run_training
    from visbricks.config import load_config

    trainer, _ = run_training(load_config(preset, [*overrides, *TINY]))
    return trainer.run_dir


def reference_scores(
    pred_dir: Path, labels: dict[str, Path], num_classes: int, ignore: set[int]
) -> dict[str, float]:
    """mIoU and pixel accuracy of predict's index masks against the label PNGs, from one
    dataset-level confusion matrix: label values in ``ignore`` or outside the classes are not
    counted; a class without truth or prediction is left out of the mean."""
    entries = json.loads((pred_dir / "predictions.json").read_text())
    assert len(entries) == len(labels)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for entry in entries:
        pred_png = Image.open(pred_dir / entry["mask"])
        assert pred_png.mode == "L"  # uint8 class indices
        pred = np.asarray(pred_png).astype(np.int64)
        truth = np.asarray(Image.open(labels[Path(entry["file"]).stem])).astype(np.int64)
        assert pred.shape == truth.shape  # at the original resolution
        keep = (truth < num_classes) & ~np.isin(truth, list(ignore))
        assert pred.max() < num_classes
        matrix += np.bincount(
            truth[keep] * num_classes + pred[keep], minlength=num_classes**2
        ).reshape(num_classes, num_classes)
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    miou = float((tp[present] / union[present]).mean())
    return {"mIoU": miou, "pixel_acc": float(tp.sum() / matrix.sum())}


def eval_and_predict(capsys, run: Path, images: Path, out: Path) -> tuple[dict, Path]:
    """``visbricks eval`` (its metrics.json) and ``visbricks predict`` on ``images``."""
    code, text = run_cli(capsys, "eval", run, "--out", out / "eval")
    assert code == 0 and "report not written" not in text, text  # its worst-IoU view too
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    code, text = run_cli(capsys, "predict", run, images, "--out", out / "pred")
    assert code == 0, text
    return metrics, out / "pred"


def assert_equal_scores(metrics: dict, reference: dict) -> None:
    assert metrics["val/resolution"] == "original"
    assert metrics["val/mIoU"] == pytest.approx(reference["mIoU"], abs=1e-6)
    assert metrics["val/pixel_acc"] == pytest.approx(reference["pixel_acc"], abs=1e-6)


def test_camvid_eval_equals_the_score_of_predict_masks(tmp_path, capsys):
    camvid = shared_data("camvid")
    # 6 train + 4 val frames in the SegNet layout, copied (a symlink out of the dataset root is
    # refused as an escape).
    frames = sorted(p.name for p in (camvid / "train").iterdir())[:10]
    root = tmp_path / "camvid"
    for split, names in (("train", frames[:6]), ("val", frames[6:])):
        for sub in (split, f"{split}annot"):
            (root / sub).mkdir(parents=True)
        for name in names:
            shutil.copy(camvid / "train" / name, root / split / name)
            shutil.copy(camvid / "trainannot" / name, root / f"{split}annot" / name)
    # 480×360 photos into a 96×64 input: letterboxed (5 px bars left and right), not just scaled.
    run = train(
        "segment", f"data={root}", f"data.ignore_index={VOID}",
        f"data.classes=[{', '.join(CAMVID)}]", "img_size={width: 96, height: 64}",
        f"project={tmp_path / 'runs'}", "name=camvid",
    )  # fmt: skip
    metrics, preds = eval_and_predict(capsys, run, root / "val", tmp_path)
    labels = {p.stem: p for p in (root / "valannot").iterdir()}
    assert Image.open(preds / "masks" / f"{Path(frames[6]).stem}.png").size == (480, 360)
    assert_equal_scores(metrics, reference_scores(preds, labels, len(CAMVID), {VOID, 255}))


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny segment-shapes run on generated 80×48 images (img_size 64: scaled by 0.8 and
    padded by 13 px above and below), trained in process; (run folder, dataset folder)."""
    tmp = tmp_path_factory.mktemp("seg-orig")
    data = tmp / "shapes-seg"
    synth = "data.synth={kind: shapes, n_train: 6, n_val: 4, width: 80, height: 48, seed: 3}"
    run = train("segment-shapes", f"data.root={data / 'segment.yaml'}", synth, "img_size=64",
                "data.cache=false", f"project={tmp / 'runs'}", "name=shapes")  # fmt: skip
    return run, data


def test_generated_letterboxed_eval_equals_the_score_of_predict_masks(shapes_run, tmp_path, capsys):
    run, data = shapes_run
    metrics, preds = eval_and_predict(capsys, run, data / "images" / "val", tmp_path)
    labels = {p.stem: p for p in (data / "masks" / "val").iterdir()}
    assert len(labels) == 4
    # background + 6 shapes; 255 marks unlabelled pixels
    assert_equal_scores(metrics, reference_scores(preds, labels, 7, {255}))
    # The drawing keeps its name; its index PNG sits in masks/ at the image's own size.
    entry = json.loads((preds / "predictions.json").read_text())[0]
    assert entry["mask"] == f"masks/{Path(entry['file']).stem}.png"
    assert Image.open(preds / entry["mask"]).size == (80, 48)


def test_network_resolution_is_an_option_and_labelled(shapes_run, tmp_path, capsys):
    run, _ = shapes_run

    def evaluate(name: str, *extra: str) -> tuple[dict, str]:
        code, text = run_cli(capsys, "eval", run, *extra, "--out", tmp_path / name)
        assert code == 0 and "report not written" not in text, text
        return json.loads((tmp_path / name / "metrics.json").read_text()), text

    original, text_o = evaluate("original")
    network, text_n = evaluate("network", "eval.resolution=network")
    assert original["val/resolution"] == "original" and network["val/resolution"] == "network"
    assert "original resolution" in text_o and "network input resolution" in text_n

    def truth_pixels(text: str) -> int:
        # The table's "gt px" column: every labelled pixel the confusion matrix counted.
        rows = [line.split() for line in text.splitlines()]
        return sum(int(r[3]) for r in rows if len(r) == 5 and r[0] in ("background", "circle",
                   "square", "triangle", "star", "ellipse", "cross"))  # fmt: skip

    # 4 images: 80×48 labels as they are vs the 64×38 letterbox window (padding not counted).
    assert truth_pixels(text_o) <= 4 * 80 * 48 and truth_pixels(text_o) > 4 * 64 * 38
    assert truth_pixels(text_n) <= 4 * 64 * 38
    for key in ("val/mIoU", "val/pixel_acc"):
        assert 0.0 <= network[key] <= 1.0
