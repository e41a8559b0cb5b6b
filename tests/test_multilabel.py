"""Multi-label: metrics against an independent computation, and a tiny run on the shapes CSV."""

from __future__ import annotations

import numpy as np
import torch

from visbricks.cli import run_training
from visbricks.config import load_config
from visbricks.metrics.classification import average_precision, multilabel_metrics


def reference_ap(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP as the step-wise area under the precision-recall curve, one threshold at a time."""
    thresholds = sorted(set(scores.tolist()), reverse=True)
    total = positives.sum()
    ap, last_recall = 0.0, 0.0
    for t in thresholds:
        picked = scores >= t
        tp = (picked & positives).sum()
        recall, precision = tp / total, tp / picked.sum()
        ap += (recall - last_recall) * precision
        last_recall = recall
    return float(ap)


def test_average_precision_matches_reference_on_random_scores():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 60))
        scores = rng.random(n)  # continuous: no ties
        positives = rng.random(n) < 0.3
        if positives.sum() == 0:
            positives[0] = True
        assert abs(average_precision(scores, positives) - reference_ap(scores, positives)) < 1e-12


def test_multilabel_f1_and_map_by_hand():
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.8, 0.4], [0.7, 0.6, 0.3]])
    truth = np.array([[1, 0, 1], [0, 1, 0], [0, 1, 1]], dtype=float)
    m = multilabel_metrics(probs, truth, threshold=0.5)
    # predictions at 0.5: [1,0,1], [0,1,0], [1,1,0] → tp 4, fp 1, fn 1 → micro F1 = 8/10
    assert abs(m["f1_micro"] - 0.8) < 1e-12
    assert abs(m["exact_match"] - 2 / 3) < 1e-12
    # class 0: positives ranked 1st of 3 → AP 1; class 1: 0.8, 0.6 both positive → 1;
    # class 2: scores 0.6 (pos), 0.4 (neg), 0.3 (pos) → (1 + 2/3) / 2
    assert np.allclose(m["per_class_ap"], [1.0, 1.0, 5 / 6])
    assert abs(m["mAP"] - (2 + 5 / 6) / 3) < 1e-12


def write_multilabel(root, n: int = 48, size: int = 24, seed: int = 0):
    """Noise images with independent labels: 'red' tint, 'blue' tint, a bright 'stripe'."""
    from visbricks.data.io import write_image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        rows = ["filename,labels"]
        for i in range(n):
            img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            labels = []
            if rng.random() < 0.5:
                img[..., 0] += 120
                labels.append("red")
            if rng.random() < 0.5:
                img[..., 2] += 120
                labels.append("blue")
            if rng.random() < 0.5:
                row = int(rng.integers(2, size - 4))
                img[row : row + 3] = 250
                labels.append("stripe")
            write_image(root / split / f"{i}.png", img)
            rows.append(f"{split}/{i}.png,{' '.join(labels)}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_multilabel_learns_independent_labels(tmp_path):
    root = write_multilabel(tmp_path / "ml")
    cfg = load_config(
        "multilabel-shapes",
        [
            f"data.root={root}",
            "data.synth=null",
            "data.train=train.csv",
            "data.val=val.csv",
            f"project={tmp_path}",
            "img_size=24",
            "epochs=6",
            "batch_size=8",
            "train.plots=true",
            "train.tensorboard=false",
            "data.aug={vflip: 0.0}",
        ],
    )
    trainer, metrics = run_training(cfg)
    assert set(metrics) >= {"val/mAP", "val/f1_micro", "val/f1_macro", "val/loss"}
    assert trainer.history[-1]["train/loss"] < 0.6 * trainer.history[0]["train/loss"]
    assert metrics["val/mAP"] > 0.9, metrics
    assert (trainer.plots_dir / "samples.png").is_file()


def test_timm_backbone_gives_the_same_pyramid():
    from visbricks.models.backbones import build_backbone

    b = build_backbone("timm:resnet18")
    feats = b(torch.zeros(1, 3, 64, 64))
    assert b.strides == [4, 8, 16, 32] and b.out_channels == [64, 128, 256, 512]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
