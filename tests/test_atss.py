"""ATSS assignment (loss.assigner: atss) against a plain per-object transcription of the paper's
Algorithm 1, and the anchor-level bookkeeping it needs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from visbricks.errors import ConfigError
from visbricks.models.losses import SSDLoss
from visbricks.ops.anchors import AnchorGenerator, default_ssd_sizes
from visbricks.ops.matching import atss_match


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def reference_atss(anchors: list, gts: list, counts: list[int], topk: int) -> list[int]:
    """Algorithm 1 of Zhang et al. (2020), one object and one anchor at a time, in Python floats.
    Ties in distance are broken by anchor index, as a stable sort does."""
    best = [(-1.0, -1)] * len(anchors)  # (IoU, object) per anchor
    for g, gt in enumerate(gts):
        gx, gy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
        candidates, start = [], 0
        distance = [
            math.hypot((a[0] + a[2]) / 2 - gx, (a[1] + a[3]) / 2 - gy) for a in anchors
        ]
        for count in counts:
            level = range(start, start + count)
            candidates += sorted(level, key=lambda i: (distance[i], i))[:topk]
            start += count
        ious = [_iou(anchors[i], gt) for i in candidates]
        mean = sum(ious) / len(ious)
        std = math.sqrt(sum((v - mean) ** 2 for v in ious) / (len(ious) - 1))
        for i, v in zip(candidates, ious):
            a = anchors[i]
            cx, cy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > 0.01
            if v >= mean + std and inside and v > best[i][0]:
                best[i] = (v, g)
    return [g for _, g in best]


def _generator(levels: int = 3, size: tuple[int, int] = (96, 128)) -> AnchorGenerator:
    return AnchorGenerator(default_ssd_sizes(size, levels, 0.15, 0.7), [[1.0, 2.0, 0.5]] * levels)


def _anchors(gen: AnchorGenerator, size: tuple[int, int] = (96, 128)) -> tuple[torch.Tensor, list]:
    strides = [8 * 2**level for level in range(gen.num_levels)]
    feats = [(math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in strides]
    anchors = gen(size, feats, strides, dtype=torch.float64)
    return anchors, [h * w * k for (h, w), k in zip(feats, gen.num_anchors_per_location())]


@pytest.mark.parametrize("seed", range(4))
def test_atss_equals_the_papers_algorithm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gen = _generator()
    anchors, counts = _anchors(gen)
    n = int(rng.integers(1, 6))
    xy = rng.uniform(0, [100, 70], (n, 2))
    wh = rng.uniform(6, 60, (n, 2))
    gts = torch.tensor(np.concatenate([xy, np.minimum(xy + wh, [128, 96])], 1))
    got = atss_match(anchors, gts, counts, topk=9)
    want = reference_atss(anchors.tolist(), gts.tolist(), counts, 9)
    assert got.tolist() == want
    # Every object got positives here, and on more than one anchor for the larger ones.
    assert (got >= 0).sum() >= n


def test_atss_threshold_adapts_where_a_fixed_one_does_not() -> None:
    """A small object never reaches IoU 0.5 with any anchor, yet ATSS gives it positives."""
    gen = _generator()
    anchors, counts = _anchors(gen)
    small = torch.tensor([[50.0, 30.0, 59.0, 37.0]], dtype=torch.float64)
    from torchvision.ops import box_iou

    assert box_iou(small, anchors).max() < 0.5
    assert (atss_match(anchors, small, counts) == 0).sum() >= 1


def test_atss_edge_cases() -> None:
    gen = _generator()
    anchors, counts = _anchors(gen)
    assert (atss_match(anchors, torch.zeros(0, 4, dtype=torch.float64), counts) == -1).all()
    with pytest.raises(Exception, match="add up to"):
        atss_match(anchors, anchors[:1], counts[:-1])
    # topk larger than a level: the whole level is candidates, no error.
    got = atss_match(anchors, torch.tensor([[10.0, 10.0, 90.0, 80.0]]).double(), counts, 10_000)
    assert (got == 0).any()


def test_level_counts_are_recovered_from_the_anchors() -> None:
    gen = _generator(levels=4)
    anchors, counts = _anchors(gen)
    assert gen.level_counts(anchors) == counts
    assert gen.level_counts(anchors) is gen.level_counts(anchors)  # cached for the same tensor
    odd, odd_counts = _anchors(gen, (75, 101))
    assert gen.level_counts(odd.float()) == odd_counts


def test_atss_refuses_anchors_it_cannot_split_by_level() -> None:
    clipped = AnchorGenerator([[16.0], [32.0]], [[1.0], [1.0]], clip=True)
    with pytest.raises(ConfigError, match="clip: false"):
        clipped.level_shapes()
    shared = AnchorGenerator([[16.0, 32.0], [32.0]], [[1.0], [1.0]])
    with pytest.raises(ConfigError, match="levels 0 and 1 both have a 32x32 anchor"):
        shared.level_shapes()
    with pytest.raises(ConfigError, match="not laid out"):
        _generator().level_counts(torch.tensor([[0.0, 0.0, 5.0, 5.0]]))
    with pytest.raises(ConfigError, match="needs level_counts"):
        SSDLoss(2, assigner="atss")


def test_detect_config_builds_atss_and_names_a_clipped_config(tmp_path) -> None:
    from conftest import preset_config
    from visbricks.data.synth.shapes import write_detection
    from visbricks.tasks import build_task

    root = tmp_path / "shapes"
    write_detection(root, n_train=2, n_val=1, width=64, height=64, seed=0, objects=(1, 2))

    def task(*extra: str):
        cfg = preset_config("detect-shapes", root / "data.yaml", tmp_path, "img_size=64", *extra)
        return build_task(cfg)

    atss = task("loss.assigner=atss", "loss.box_loss=giou")
    model = atss.build_model(load_pretrained=False)
    images = torch.randn(2, 3, 64, 64)
    outputs = model(images)
    boxes = [torch.tensor([[10.0, 15.0, 30.0, 45.0]]), torch.tensor([[2.0, 2.0, 15.0, 10.0]])]
    batch = {"image": images, "boxes": boxes, "labels": [torch.tensor([0]), torch.tensor([1])]}
    out = atss.loss(outputs, batch)
    assert out["num_pos"] >= 2 and torch.isfinite(out["loss"])

    with pytest.raises(ConfigError, match="model.anchors.clip: false"):
        task("loss.assigner=atss", "model.anchors.clip=true").build_model(load_pretrained=False)
    with pytest.raises(ConfigError, match="loss.assigner"):
        task("loss.assigner=nearest")
