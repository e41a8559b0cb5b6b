"""Anchors, box coding and anchor matching (visbricks.ops)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.ops import box_iou

from visbricks.errors import ConfigError, DataError
from visbricks.ops.anchors import AnchorGenerator, default_ssd_sizes
from visbricks.ops.box_coder import BBOX_XFORM_CLIP, BoxCoder
from visbricks.ops.matching import match_anchors

# ---------------------------------------------------------------- anchors

SIZES = [[16.0], [32.0, 45.0], [64.0, 90.0]]
RATIOS = [[1.0, 2.0, 0.5], [1.0], [1.0, 3.0]]
IMAGE = (72, 100)  # (height, width), deliberately not square
FEATS = [(18, 25), (9, 13), (5, 7)]
STRIDES = [4, 8, 16]


def _anchors(**kw) -> torch.Tensor:
    return AnchorGenerator(SIZES, RATIOS, **kw)(IMAGE, FEATS, STRIDES)


def _split_levels(anchors: torch.Tensor) -> list[torch.Tensor]:
    ks = [len(s) * len(r) for s, r in zip(SIZES, RATIOS)]
    counts = [h * w * k for (h, w), k in zip(FEATS, ks)]
    return [level.reshape(h, w, k, 4) for level, (h, w), k in zip(anchors.split(counts), FEATS, ks)]


def test_anchor_counts_per_level() -> None:
    gen = AnchorGenerator(SIZES, RATIOS)
    assert gen.num_anchors_per_location() == [3, 2, 4]
    anchors = gen(IMAGE, FEATS, STRIDES)
    assert anchors.shape == (18 * 25 * 3 + 9 * 13 * 2 + 5 * 7 * 4, 4)
    assert anchors.dtype == torch.float32


def test_anchor_centres_lie_on_the_stride_grid() -> None:
    for level, stride in zip(_split_levels(_anchors()), STRIDES):
        h, w, k, _ = level.shape
        cx = (level[..., 0] + level[..., 2]) / 2
        cy = (level[..., 1] + level[..., 3]) / 2
        expected_x = (torch.arange(w) + 0.5) * stride
        expected_y = (torch.arange(h) + 0.5) * stride
        torch.testing.assert_close(cx, expected_x[None, :, None].expand(h, w, k))
        torch.testing.assert_close(cy, expected_y[:, None, None].expand(h, w, k))


def test_anchor_sizes_and_ratios_are_exact_in_size_major_order() -> None:
    for level, sizes, ratios in zip(_split_levels(_anchors()), SIZES, RATIOS):
        w = level[..., 2] - level[..., 0]
        h = level[..., 3] - level[..., 1]
        expected = [(s, r) for s in sizes for r in ratios]  # the documented order
        for j, (size, ratio) in enumerate(expected):
            torch.testing.assert_close(w[..., j] / h[..., j], torch.full_like(w[..., j], ratio))
            torch.testing.assert_close(
                w[..., j] * h[..., j], torch.full_like(w[..., j], size * size), rtol=1e-5, atol=1e-3
            )


def test_anchor_cache_and_keys() -> None:
    gen = AnchorGenerator(SIZES, RATIOS)
    first = gen(IMAGE, FEATS, STRIDES)
    assert gen(IMAGE, FEATS, STRIDES) is first
    double = gen(IMAGE, FEATS, STRIDES, dtype=torch.float64)
    assert double.dtype == torch.float64 and double is not first
    torch.testing.assert_close(double.float(), first)
    other = gen((36, 50), [(9, 13), (5, 7), (3, 4)], STRIDES)
    assert other.shape[0] == 9 * 13 * 3 + 5 * 7 * 2 + 3 * 4 * 4


def test_anchor_clip_keeps_boxes_inside_the_image() -> None:
    clipped = _anchors(clip=True)
    free = _anchors()
    assert free[:, 0].min() < 0 and free[:, 2].max() > IMAGE[1]
    assert clipped[:, 0::2].min() >= 0 and clipped[:, 0::2].max() <= IMAGE[1]
    assert clipped[:, 1::2].min() >= 0 and clipped[:, 1::2].max() <= IMAGE[0]


def test_anchor_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="3 levels but aspect_ratios have 2"):
        AnchorGenerator(SIZES, RATIOS[:2])
    with pytest.raises(ConfigError, match="level 1 must be positive"):
        AnchorGenerator([[8.0], [-1.0]], [[1.0], [1.0]])
    with pytest.raises(ConfigError, match="3 levels but got 2 feature maps"):
        AnchorGenerator(SIZES, RATIOS)(IMAGE, FEATS[:2], STRIDES[:2])


def test_default_ssd_sizes_match_torchvision_default_boxes() -> None:
    # torchvision's DefaultBoxGenerator implements the same SSD scale rule in relative units;
    # its first two (w, h) pairs per level are s_k and sqrt(s_k s_{k+1}).
    tv = DefaultBoxGenerator([[2]] * 6, min_ratio=0.2, max_ratio=0.9)
    ours = default_ssd_sizes(300, 6, smin=0.2, smax=0.9)
    for level, pairs in enumerate(tv._wh_pairs):
        assert ours[level] == pytest.approx([300 * float(pairs[0, 0]), 300 * float(pairs[1, 0])])
    assert ours[0][0] == pytest.approx(60.0) and ours[-1][0] == pytest.approx(270.0)
    # Non-square images scale by the shorter side so the largest anchor still fits.
    assert default_ssd_sizes((192, 640), 3) == default_ssd_sizes(192, 3)


# ---------------------------------------------------------------- box coding

box_side = st.floats(1.0, 300.0)
anchor_side = st.floats(10.0, 300.0)
coord = st.floats(-50.0, 500.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(coord, coord, box_side, box_side), min_size=1, max_size=8),
    st.lists(st.tuples(coord, coord, anchor_side, anchor_side), min_size=1, max_size=8),
)
def test_decode_inverts_encode(gts: list, anchors: list) -> None:
    n = min(len(gts), len(anchors))
    gt = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in gts[:n]])
    an = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in anchors[:n]])
    coder = BoxCoder()
    torch.testing.assert_close(coder.decode(coder.encode(gt, an), an), gt, atol=1e-4, rtol=1e-5)


def test_encode_matches_torchvision_and_hand_values() -> None:
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=gen) * 200
    gt = torch.cat([xy, xy + 5 + torch.rand(50, 2, generator=gen) * 80], 1)
    xy = torch.rand(50, 2, generator=gen) * 200
    an = torch.cat([xy, xy + 5 + torch.rand(50, 2, generator=gen) * 80], 1)
    # Variances (0.1, 0.1, 0.2, 0.2) are torchvision's weights (10, 10, 5, 5).
    reference = TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(gt, an)
    torch.testing.assert_close(BoxCoder().encode(gt, an), reference, rtol=1e-5, atol=1e-4)

    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    box = torch.tensor([[1.0, 4.0, 11.0 + 10.0, 24.0]])  # centre +6/+4, width x2, height x1
    expected = torch.tensor([[6 / 10 / 0.1, 4 / 20 / 0.1, math.log(2) / 0.2, 0.0]])
    torch.testing.assert_close(BoxCoder().encode(box, anchor), expected)


def test_decode_broadcasts_and_clamps_huge_deltas() -> None:
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 60.0]])
    deltas = torch.zeros(3, 2, 4)  # batch of 3 over the same anchors
    torch.testing.assert_close(coder.decode(deltas, anchors), anchors.expand(3, 2, 4))
    huge = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), anchors[:1])
    side = 10 * math.exp(BBOX_XFORM_CLIP)
    torch.testing.assert_close(
        huge, torch.tensor([[5 - side / 2, 5 - side / 2, 5 + side / 2, 5 + side / 2]])
    )


def test_encode_of_degenerate_box_is_finite() -> None:
    deltas = BoxCoder().encode(torch.tensor([[5.0, 5.0, 5.0, 9.0]]), torch.tensor([[0.0, 0, 8, 8]]))
    assert torch.isfinite(deltas).all()


def test_box_coder_rejects_bad_variances() -> None:
    with pytest.raises(ConfigError, match="4 positive numbers"):
        BoxCoder((0.1, 0.1, 0.2))


# ---------------------------------------------------------------- matching


def test_every_gt_gets_its_best_anchor_even_below_threshold() -> None:
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 80, 80]])
    gt = torch.tensor([[0.0, 0, 30, 30], [60.0, 60, 62, 62]])  # best IoUs 1/9 and 4/1600
    matches = match_anchors(anchors, gt, iou_threshold=0.5)
    assert matches.tolist() == [0, -1, 1] or matches.tolist() == [-1, 0, 1]
    # The tie for gt 0 (anchors 0 and 1 both have IoU 1/9) is resolved to exactly one anchor.
    assert (matches == 0).sum() == 1 and (matches == 1).sum() == 1


def test_anchors_above_threshold_take_their_best_gt() -> None:
    gt = torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 70, 70]])
    anchors = torch.tensor(
        [
            [0.0, 0, 10, 10],  # IoU 1 with gt 0
            [1.0, 0, 10, 10],  # IoU 0.9 with gt 0
            [0.0, 0, 10, 20],  # IoU 0.5 with gt 0: exactly the threshold counts
            [0.0, 0, 10, 21],  # IoU 0.476: background
            [52.0, 50, 70, 70],  # IoU 0.9 with gt 1
            [100.0, 100, 110, 110],  # nothing
        ]
    )
    assert match_anchors(anchors, gt, iou_threshold=0.5).tolist() == [0, 0, 0, -1, 1, -1]


def test_objects_sharing_a_best_anchor_get_distinct_anchors() -> None:
    # Both objects overlap anchor 0 most; greedy matching gives gt 0 (higher IoU) anchor 0 and
    # gt 1 its second-best anchor 2, instead of gt 1 silently losing its only positive.
    anchors = torch.tensor([[0.0, 0, 20, 20], [100, 100, 120, 120], [8, 0, 28, 20]])
    gt = torch.tensor([[0.0, 0, 18, 18], [3.0, 0, 23, 20]])
    iou = box_iou(gt, anchors)
    assert iou[:, 0].argmax() == 0 and iou[1].argmax() == 0  # the conflict is real
    matches = match_anchors(anchors, gt, iou_threshold=0.9)
    assert matches.tolist() == [0, -1, 1]


def _reference_match(anchors: torch.Tensor, gt: torch.Tensor, threshold: float) -> list[int]:
    """The matching rule written out with plain Python loops."""
    iou = box_iou(gt, anchors).tolist()
    num_gt, num_anchors = len(iou), len(iou[0])
    matches = [-1] * num_anchors
    for a in range(num_anchors):
        column = [iou[g][a] for g in range(num_gt)]
        if max(column) >= threshold:
            matches[a] = column.index(max(column))
    served, taken = set(), set()
    for _ in range(min(num_gt, num_anchors)):
        pairs = [
            (iou[g][a], g, a)
            for g in range(num_gt)
            for a in range(num_anchors)
            if g not in served and a not in taken
        ]
        _, g, a = max(pairs, key=lambda p: p[0])  # max() keeps the first of equal pairs
        matches[a] = g
        served.add(g)
        taken.add(a)
    return matches


def test_match_random_scenes_against_reference() -> None:
    gen = torch.Generator().manual_seed(3)

    def boxes(n: int) -> torch.Tensor:
        xy = torch.rand(n, 2, generator=gen) * 60
        return torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=gen) * 40], 1)

    conflicts = 0
    for _ in range(40):
        # Few anchors and many objects make shared best anchors (the greedy path) common.
        anchors = boxes(int(torch.randint(3, 30, (1,), generator=gen)))
        gt = boxes(int(torch.randint(1, 8, (1,), generator=gen)))
        matches = match_anchors(anchors, gt, 0.5)
        assert matches.tolist() == _reference_match(anchors, gt, 0.5)
        best = box_iou(gt, anchors).argmax(1)
        conflicts += int(best.unique().numel() < best.numel())
        if len(gt) <= len(anchors):  # every object has at least one positive anchor
            assert set(matches.tolist()) - {-1} == set(range(len(gt)))
    assert conflicts >= 5  # the scenes did exercise the shared-anchor path


def test_empty_ground_truth_is_all_background() -> None:
    anchors = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]])
    matches = match_anchors(anchors, torch.zeros(0, 4))
    assert matches.dtype == torch.long and matches.tolist() == [-1, -1]


def test_match_rejects_bad_shapes() -> None:
    with pytest.raises(DataError, match=r"ground-truth boxes must have shape \(N, 4\)"):
        match_anchors(torch.zeros(3, 4), torch.zeros(2, 5))
