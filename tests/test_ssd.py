"""SSD detection bricks: FPN / SSD-extras necks, SSD head, SSD loss, post-processing, and a tiny
SSD that must overfit a few synthetic images to VOC mAP@0.5 >= 0.9."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from visbricks.errors import ConfigError, DataError
from visbricks.models.blocks import output_conv
from visbricks.models.heads.ssd import SSDHead
from visbricks.models.losses import SSDLoss, hard_negative_mask
from visbricks.models.necks import FPN, SSDExtras
from visbricks.models.postprocess import ssd_postprocess
from visbricks.ops.anchors import AnchorGenerator, default_ssd_sizes
from visbricks.ops.box_coder import BoxCoder
from visbricks.ops.matching import match_anchors
from visbricks.registry import HEADS, NECKS


class TinyBackbone(nn.Module):
    """The backbone contract in miniature: features at strides 4, 8, 16, 32."""

    def __init__(self, channels: tuple[int, ...] = (16, 24, 32, 48, 64)) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.stem = block(3, channels[0])
        self.stages = nn.ModuleList(block(a, b) for a, b in zip(channels, channels[1:]))
        self.out_channels = list(channels[1:])
        self.strides = [4, 8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


# ---------------------------------------------------------------- necks


def test_necks_are_registered() -> None:
    assert NECKS.get("fpn") is FPN
    assert NECKS.get("ssd_extras") is SSDExtras
    assert HEADS.get("ssd") is SSDHead


def test_fpn_shapes_on_odd_input_size() -> None:
    backbone = TinyBackbone()
    feats = backbone(torch.randn(2, 3, 75, 99))
    neck = FPN(backbone.out_channels, backbone.strides, out_channels=32, extra_levels=2)
    outs = neck(feats)
    assert neck.strides == [8, 16, 32, 64, 128]
    assert neck.out_channels == [32] * 5
    assert [o.shape[1] for o in outs] == neck.out_channels
    # Pyramid levels keep their backbone map's size (odd sizes included); extras halve, rounding up.
    expected = [tuple(f.shape[-2:]) for f in feats[1:]]
    h, w = expected[-1]
    for _ in range(2):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        expected.append((h, w))
    assert [tuple(o.shape[-2:]) for o in outs] == expected


def test_fpn_top_down_path_reaches_the_finest_level_only_downwards() -> None:
    torch.manual_seed(0)
    neck = FPN([8, 16, 32], [8, 16, 32], out_channels=16, levels=(0, 1, 2), extra_levels=1)
    feats = [torch.randn(1, c, s, s) for c, s in zip([8, 16, 32], [16, 8, 4])]
    base = neck(feats)
    coarse_changed = [feats[0], feats[1], feats[2] + 1.0]
    fine_changed = [feats[0] + 1.0, feats[1], feats[2]]
    # Semantics flow from the coarsest map down to the finest output...
    assert not torch.allclose(neck(coarse_changed)[0], base[0])
    # ...but nothing flows upwards: FPN has no bottom-up path after the backbone.
    for changed, original in zip(neck(fine_changed)[1:], base[1:]):
        torch.testing.assert_close(changed, original)


def test_ssd_extras_pass_levels_through_and_append_stride_2_blocks() -> None:
    backbone = TinyBackbone()
    feats = backbone(torch.randn(2, 3, 64, 96))
    neck = SSDExtras(backbone.out_channels, backbone.strides, levels=(2, 3), extra_levels=2)
    outs = neck(feats)
    assert outs[0] is feats[2] and outs[1] is feats[3]
    assert neck.strides == [16, 32, 64, 128]
    assert neck.out_channels == [48, 64, 128, 128]
    assert [o.shape[1] for o in outs] == neck.out_channels
    assert [tuple(o.shape[-2:]) for o in outs] == [(4, 6), (2, 3), (1, 2), (1, 1)]


def test_neck_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"neck levels \[1, 4\] must be non-empty indices"):
        FPN([8, 16, 32, 64], [4, 8, 16, 32], levels=(1, 4))
    with pytest.raises(ConfigError, match="2 in_channels but 3 strides"):
        SSDExtras([8, 16], [4, 8, 16])
    neck = FPN([8, 16, 32, 64], [4, 8, 16, 32])
    with pytest.raises(ConfigError, match=r"channels \[8, 16, 32, 64\] but received \[8, 16, 32\]"):
        neck([torch.zeros(1, c, 4, 4) for c in (8, 16, 32)])


# ---------------------------------------------------------------- head

LEVEL_SIZES = [(5, 7), (3, 4)]
LEVEL_STRIDES = [8, 16]


def _probe_head() -> tuple[SSDHead, list[torch.Tensor]]:
    """A head whose convs copy (y, x) of the centre pixel and add (level, slot) as biases, so
    each flattened prediction says which cell and which of the k slots it came from."""
    gen = AnchorGenerator([[8.0], [16.0, 24.0]], [[1.0, 2.0], [1.0, 0.5]])  # k = 2 and 4
    head = SSDHead([2, 2], num_classes=1, anchor_generator=gen, strides=LEVEL_STRIDES)
    with torch.no_grad():
        for level, (cls_conv, box_conv) in enumerate(zip(head.cls_convs, head.box_convs)):
            for block, per_slot in ((cls_conv, 2), (box_conv, 4)):
                conv = output_conv(block)  # the predictor block's conv
                conv.weight.zero_()
                conv.bias.zero_()
                for slot in range(conv.out_channels // per_slot):
                    conv.weight[slot * per_slot + 0, 0, 1, 1] = 1.0  # y
                    conv.weight[slot * per_slot + 1, 1, 1, 1] = 1.0  # x
                    conv.bias[slot * per_slot + 0] = 1000.0 * slot + 100000.0 * level
    feats = []
    for h, w in LEVEL_SIZES:
        y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        feats.append(torch.stack([y, x]).float()[None].repeat(2, 1, 1, 1))
    return head, feats


def test_head_flattens_predictions_in_anchor_order() -> None:
    head, feats = _probe_head()
    out = head(feats, (40, 56))
    anchors = out["anchors"]
    expected = [
        (level, y, x, slot)
        for level, ((h, w), k) in enumerate(zip(LEVEL_SIZES, [2, 4]))
        for y in range(h)
        for x in range(w)
        for slot in range(k)
    ]
    assert out["cls_logits"].shape == (2, len(expected), 2)
    assert out["box_deltas"].shape == (2, len(expected), 4)
    assert anchors.shape == (len(expected), 4)
    for key in ("cls_logits", "box_deltas"):
        code = out[key][1, :, 0].long()
        got = list(zip((code // 100000).tolist(), (code % 1000).tolist()))
        got_x = out[key][1, :, 1].long().tolist()
        got_slot = ((code % 100000) // 1000).tolist()
        assert [(lv, y, x, s) for (lv, y), x, s in zip(got, got_x, got_slot)] == expected
    # And the anchor at each flat index is the documented anchor of that (level, y, x, slot).
    gen = head.anchor_generator
    for i, (level, y, x, slot) in enumerate(expected):
        stride = LEVEL_STRIDES[level]
        centre = torch.tensor([(x + 0.5) * stride, (y + 0.5) * stride] * 2)
        torch.testing.assert_close(anchors[i], centre + gen.cell_anchors(level)[slot].float())


def test_head_infers_strides_when_not_given() -> None:
    head, feats = _probe_head()
    explicit = head(feats, (40, 56))["anchors"]
    head.strides = None
    torch.testing.assert_close(head(feats, (40, 56))["anchors"], explicit)


def test_head_prior_initialisation() -> None:
    gen = AnchorGenerator([[8.0]], [[1.0, 2.0]])
    zero = [torch.zeros(1, 4, 3, 3)]
    softmax_head = SSDHead([4], num_classes=5, anchor_generator=gen, prior_prob=0.02)
    probs = softmax_head(zero, (24, 24))["cls_logits"].softmax(-1)
    torch.testing.assert_close(probs[..., 0], torch.full_like(probs[..., 0], 0.98))
    torch.testing.assert_close(probs[..., 1:], torch.full_like(probs[..., 1:], 0.02 / 5))
    focal_head = SSDHead([4], num_classes=5, anchor_generator=gen, prior_prob=0.02, focal=True)
    sig = focal_head(zero, (24, 24))["cls_logits"][..., 1:].sigmoid()
    torch.testing.assert_close(sig, torch.full_like(sig, 0.02))


def test_head_rejects_mismatched_levels() -> None:
    gen = AnchorGenerator([[8.0], [16.0]], [[1.0], [1.0]])
    with pytest.raises(ConfigError, match="gets 3 feature maps but the anchor generator has 2"):
        SSDHead([4, 4, 4], num_classes=2, anchor_generator=gen)


# ---------------------------------------------------------------- loss


def _grid_anchors() -> torch.Tensor:
    gen = AnchorGenerator([[12.0, 20.0]], [[1.0, 2.0]])
    return gen((48, 48), [(6, 6)], [8])  # 144 anchors


def _outputs(batch: int, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    anchors = _grid_anchors()
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, len(anchors), num_classes + 1, generator=gen, requires_grad=True)
    deltas = torch.randn(batch, len(anchors), 4, generator=gen, requires_grad=True)
    return {"cls_logits": logits, "box_deltas": deltas, "anchors": anchors}


TARGETS = [
    {
        "boxes": torch.tensor([[4.0, 4.0, 20.0, 18.0], [26.0, 20.0, 44.0, 40.0]]),
        "labels": torch.tensor([2, 0]),
    },
    {"boxes": torch.tensor([[10.0, 24.0, 22.0, 46.0]]), "labels": torch.tensor([1])},
]


def test_hard_negative_mask_keeps_the_hardest_three_per_positive() -> None:
    gen = torch.Generator().manual_seed(1)
    loss = torch.rand(4, 50, generator=gen)
    positive = torch.zeros(4, 50, dtype=torch.bool)
    positive[0, [1, 7]] = True
    positive[1, [3]] = True
    positive[3, :45] = True  # only 5 negatives exist: all of them, no more
    mask = hard_negative_mask(loss, positive, neg_pos_ratio=3, min_negatives=2)
    assert mask.sum(1).tolist() == [6, 3, 2, 5]
    assert not (mask & positive).any()
    for b in range(4):
        negatives = [(float(loss[b, a]), a) for a in range(50) if not positive[b, a]]
        hardest = {a for _, a in sorted(negatives, reverse=True)[: int(mask[b].sum())]}
        assert set(torch.nonzero(mask[b]).flatten().tolist()) == hardest


def test_ce_hnm_loss_matches_hand_computation() -> None:
    num_classes = 3
    out = _outputs(2, num_classes)
    result = SSDLoss(num_classes)(out, TARGETS)
    anchors, logits, deltas = out["anchors"], out["cls_logits"].detach(), out["box_deltas"].detach()

    cls_total, box_total, num_pos = 0.0, 0.0, 0
    tv_coder = TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0))
    for b, target in enumerate(TARGETS):
        matches = match_anchors(anchors, target["boxes"])
        pos = torch.nonzero(matches >= 0).flatten().tolist()
        num_pos += len(pos)
        labels = [int(target["labels"][matches[a]]) + 1 for a in pos]
        log_p = logits[b].log_softmax(-1)
        cls_total += sum(-float(log_p[a, c]) for a, c in zip(pos, labels))
        negatives = sorted(
            (-float(log_p[a, 0]) for a in range(len(anchors)) if a not in pos), reverse=True
        )
        cls_total += sum(negatives[: 3 * len(pos)])
        targets = tv_coder.encode_single(target["boxes"][matches[pos]], anchors[pos])
        box_total += float(F.smooth_l1_loss(deltas[b, pos], targets, reduction="sum"))
    assert num_pos > 3
    assert result["num_pos"].item() == num_pos
    assert result["cls"].item() == pytest.approx(cls_total / num_pos, rel=1e-5)
    assert result["box"].item() == pytest.approx(box_total / num_pos, rel=1e-5)
    assert result["loss"].item() == pytest.approx((cls_total + box_total) / num_pos, rel=1e-5)


def test_ce_hnm_trains_exactly_positives_plus_three_times_negatives() -> None:
    out = _outputs(2, 3)
    result = SSDLoss(3)(out, TARGETS)
    result["loss"].backward()
    touched = (out["cls_logits"].grad.abs().sum(-1) > 0).sum(1)
    pos_per_image = [int((match_anchors(out["anchors"], t["boxes"]) >= 0).sum()) for t in TARGETS]
    assert touched.tolist() == [4 * n for n in pos_per_image]


def test_image_without_objects_still_trains_a_few_negatives() -> None:
    out = _outputs(2, 3)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    result = SSDLoss(3)(out, [empty, empty])
    assert result["num_pos"].item() == 0 and result["box"].item() == 0
    assert math.isfinite(result["loss"].item()) and result["cls"].item() > 0
    result["loss"].backward()
    touched = (out["cls_logits"].grad.abs().sum(-1) > 0).sum(1)
    assert touched.tolist() == [3, 3]  # min_negatives defaults to neg_pos_ratio
    assert torch.isfinite(out["box_deltas"].grad).all()


def test_focal_loss_matches_formula_over_foreground_columns() -> None:
    out = _outputs(2, 3)
    alpha, gamma = 0.25, 2.0
    result = SSDLoss(3, cls_loss="focal", focal_alpha=alpha, focal_gamma=gamma)(out, TARGETS)
    logits = out["cls_logits"].detach()
    target = torch.zeros_like(logits)
    for b, t in enumerate(TARGETS):
        matches = match_anchors(out["anchors"], t["boxes"])
        pos = matches >= 0
        target[b, pos, t["labels"][matches[pos]] + 1] = 1.0
    p = logits[..., 1:].sigmoid()
    y = target[..., 1:]  # the background column takes no part: background = all-zero target
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    manual = (-alpha_t * (1 - p_t) ** gamma * torch.log(p_t)).sum() / y.sum()
    assert result["cls"].item() == pytest.approx(float(manual), rel=1e-4)


def test_quality_focal_loss_matches_the_gfl_formula() -> None:
    """QFL (Li et al. 2020, eq. 4): -|y - p|^beta ((1 - y) log(1 - p) + y log p), y the IoU of
    the decoded box with its object on the object's class column; computed here box by box."""
    from torchvision.ops import box_iou

    coder = BoxCoder()
    out = _outputs(2, 3)
    beta = 2.0
    result = SSDLoss(3, coder, cls_loss="qfl", qfl_beta=beta)(out, TARGETS)
    logits, deltas = out["cls_logits"].detach(), out["box_deltas"].detach()
    y = torch.zeros_like(logits[..., 1:])
    for b, t in enumerate(TARGETS):
        matches = match_anchors(out["anchors"], t["boxes"])
        for a in (matches >= 0).nonzero().flatten().tolist():
            box = coder.decode(deltas[b, a][None], out["anchors"][a][None])
            iou = box_iou(box, t["boxes"][matches[a]][None])[0, 0]
            y[b, a, t["labels"][matches[a]]] = iou
    p = logits[..., 1:].sigmoid()
    manual = -((y - p).abs() ** beta * ((1 - y) * torch.log(1 - p) + y * torch.log(p))).sum()
    num_pos = sum(int((match_anchors(out["anchors"], t["boxes"]) >= 0).sum()) for t in TARGETS)
    assert result["cls"].item() == pytest.approx(float(manual) / num_pos, rel=1e-4)
    assert 0 < y.max() < 1  # soft targets: the random deltas fit their objects only partly
    result["loss"].backward()  # the IoU target is detached: no gradient reaches deltas through it
    assert torch.isfinite(out["box_deltas"].grad).all()


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_box_loss_is_zero_for_perfect_deltas(box_loss: str) -> None:
    coder = BoxCoder()
    out = _outputs(2, 3)
    perfect = torch.zeros_like(out["box_deltas"])
    for b, t in enumerate(TARGETS):
        matches = match_anchors(out["anchors"], t["boxes"])
        pos = matches >= 0
        perfect[b, pos] = coder.encode(t["boxes"][matches[pos]], out["anchors"][pos])
    loss = SSDLoss(3, coder, box_loss=box_loss)
    assert loss({**out, "box_deltas": perfect}, TARGETS)["box"].item() == pytest.approx(0, abs=1e-5)
    assert loss(out, TARGETS)["box"].item() > 0.1


def test_loss_errors_name_the_bad_target() -> None:
    out = _outputs(2, 3)
    bad = [TARGETS[0], {"boxes": TARGETS[1]["boxes"], "labels": torch.tensor([3])}]
    with pytest.raises(
        DataError, match=r"targets\[1\]\['labels'\] has class ids \[3\] outside 0..2"
    ):
        SSDLoss(3)(out, bad)
    with pytest.raises(DataError, match=r"targets\[0\]\['boxes'\] must have shape \(N, 4\)"):
        SSDLoss(3)(out, [{"boxes": torch.zeros(2, 5), "labels": torch.zeros(2)}, TARGETS[1]])
    with pytest.raises(ConfigError, match="built for 5 classes but the head outputs 3"):
        SSDLoss(5)(out, TARGETS)
    with pytest.raises(ConfigError, match="box_loss must be one of"):
        SSDLoss(3, box_loss="l2")


# ---------------------------------------------------------------- post-processing


def _fixed_outputs(anchors: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs whose softmax gives ``scores`` (A, C+1) and whose boxes are the anchors."""
    return {
        "cls_logits": scores.log()[None],
        "box_deltas": torch.zeros(1, len(anchors), 4),
        "anchors": anchors,
    }


def test_nms_is_per_class_and_labels_are_user_ids() -> None:
    anchors = torch.tensor(
        [[10.0, 10, 30, 30], [11, 10, 31, 30], [10, 11, 30, 31], [50, 5, 70, 25]]
    )
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.0, 0.0],  # class 0, best
            [0.2, 0.8, 0.0, 0.0],  # class 0 duplicate: suppressed
            [0.3, 0.0, 0.7, 0.0],  # same place, class 1: kept
            [0.4, 0.0, 0.0, 0.6],  # class 2 elsewhere
        ]
    )
    (det,) = ssd_postprocess(_fixed_outputs(anchors, scores), BoxCoder(), [(40, 80)])
    assert det["labels"].tolist() == [0, 1, 2]
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.7, 0.6]))
    torch.testing.assert_close(det["boxes"], anchors[[0, 2, 3]])


def test_max_detections_score_threshold_and_clipping() -> None:
    # 40 disjoint anchors in a row; one extends past the image and must be clipped.
    x = torch.arange(40, dtype=torch.float32) * 10
    anchors = torch.stack([x, torch.zeros(40), x + 8, torch.full((40,), 8.0)], 1)
    anchors[5] = torch.tensor([50.0, -4, 58, 30])
    fg = torch.linspace(0.9, 0.2, 40)
    scores = torch.stack([1 - fg, fg], 1)
    outputs = _fixed_outputs(anchors, scores)
    (det,) = ssd_postprocess(outputs, BoxCoder(), [(20, 1000)], max_detections=10)
    assert len(det["boxes"]) == 10
    torch.testing.assert_close(det["scores"], fg[:10])
    torch.testing.assert_close(det["boxes"][5], torch.tensor([50.0, 0, 58, 20]))
    (det,) = ssd_postprocess(outputs, BoxCoder(), [(20, 1000)], score_thresh=0.5)
    assert len(det["boxes"]) == int((fg > 0.5).sum())
    (det,) = ssd_postprocess(outputs, BoxCoder(), [(20, 1000)], topk_candidates=7)
    assert len(det["boxes"]) == 7


def test_focal_postprocess_uses_sigmoid_scores() -> None:
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    logits = torch.tensor([[[5.0, 0.0, -1.0], [0.0, -9.0, 2.0]]])
    outputs = {"cls_logits": logits, "box_deltas": torch.zeros(1, 2, 4), "anchors": anchors}
    (det,) = ssd_postprocess(outputs, BoxCoder(), [(32, 32)], focal=True, score_thresh=0.2)
    # Column 0 is ignored under focal loss: a sigmoid per foreground class instead of a softmax.
    assert det["labels"].tolist() == [1, 0, 1]
    torch.testing.assert_close(det["scores"], torch.tensor([2.0, 0.0, -1.0]).sigmoid())


# ---------------------------------------------------------------- overfit a tiny SSD

IMG_H, IMG_W = 72, 96
CLASSES = ("rectangle", "ellipse", "triangle")
PALETTE = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 230], [240, 220, 40]], dtype=np.uint8)


def _draw_scene(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """One RGB image with 1-3 non-overlapping shapes; the class is the shape, colour is noise."""
    img = np.empty((IMG_H, IMG_W, 3), np.uint8)
    img[:] = rng.integers(0, 70, 3)
    img = np.clip(img + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:IMG_H, 0:IMG_W] + 0.5
    boxes: list[list[float]] = []
    labels: list[int] = []
    while len(boxes) < rng.integers(1, 4):
        w, h = (int(v) for v in rng.integers(14, 40, 2))
        x0, y0 = int(rng.integers(0, IMG_W - w)), int(rng.integers(0, IMG_H - h))
        if any(
            x0 < b[2] + 2 and b[0] < x0 + w + 2 and y0 < b[3] + 2 and b[1] < y0 + h + 2
            for b in boxes
        ):
            continue
        cls = int(rng.integers(0, len(CLASSES)))
        inside_x, inside_y = (xx >= x0) & (xx <= x0 + w), (yy >= y0) & (yy <= y0 + h)
        if cls == 0:
            mask = inside_x & inside_y
        elif cls == 1:
            mask = ((xx - x0 - w / 2) / (w / 2)) ** 2 + ((yy - y0 - h / 2) / (h / 2)) ** 2 <= 1
        else:  # apex at the top centre, base at the bottom
            half = (yy - y0) / h * (w / 2)
            mask = inside_y & (np.abs(xx - x0 - w / 2) <= half)
        img[mask] = PALETTE[rng.integers(0, len(PALETTE))]
        boxes.append([x0, y0, x0 + w, y0 + h])
        labels.append(cls)
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
    return img, target


def _dataset(n: int, seed: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    rng = np.random.default_rng(seed)
    images, targets = zip(*(_draw_scene(rng) for _ in range(n)))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.45) / 0.25, list(targets)


@pytest.fixture
def one_thread() -> Iterator[None]:
    # The convs are tiny: extra threads only spin-wait on this shared 2-core machine, which
    # multiplied the test's CPU time by ~20 under load.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("neck_name", "cls_loss", "box_loss"),
    [("fpn", "ce_hnm", "smooth_l1"), ("ssd_extras", "focal", "giou"), ("fpn", "qfl", "atss")],
)
def test_tiny_ssd_overfits_synthetic_shapes(neck_name: str, cls_loss: str, box_loss: str) -> None:
    """``box_loss`` "atss": smooth-L1 boxes with ATSS assignment."""
    from visbricks.metrics.voc import evaluate_voc

    torch.manual_seed(0)
    images, targets = _dataset(8, seed=0)
    backbone = TinyBackbone()
    if neck_name == "fpn":
        neck = FPN(backbone.out_channels, backbone.strides, out_channels=48, extra_levels=0)
    else:
        neck = SSDExtras(
            backbone.out_channels, backbone.strides, levels=(1, 2, 3), extra_levels=1, channels=48
        )
    levels = len(neck.strides)
    anchors = AnchorGenerator(
        default_ssd_sizes((IMG_H, IMG_W), levels, 0.2, 0.6), [[1.0, 2.0, 0.5]] * levels
    )
    focal = cls_loss in ("focal", "qfl")
    head = SSDHead(
        neck.out_channels, neck.strides, len(CLASSES), anchors, focal=focal
    )
    model = nn.ModuleList([backbone, neck, head])
    coder = BoxCoder()
    assign = {"assigner": "atss", "level_counts": anchors.level_counts}
    if box_loss == "atss":
        box_loss, extra = "smooth_l1", assign
    else:
        extra = {}
    criterion = SSDLoss(len(CLASSES), coder, cls_loss=cls_loss, box_loss=box_loss, **extra)

    def predict(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return head(neck(backbone(x)), (x.shape[-2], x.shape[-1]))

    steps = 100
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=1e-2, total_steps=steps, pct_start=0.15
    )
    losses = []
    for _ in range(steps):
        loss = criterion(predict(images), targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.1 * np.mean(losses[:10])

    model.eval()
    with torch.no_grad():
        detections = ssd_postprocess(
            predict(images), coder, [(IMG_H, IMG_W)] * len(images), focal=focal
        )
    result = evaluate_voc(detections, targets, num_classes=len(CLASSES))
    assert result.map >= 0.9, f"mAP@0.5 {result.map:.3f}, per class {result.ap}"
    # mAP@0.5 forgives boxes that are off by a third; a decoder that disagrees with the loss's
    # encoder (e.g. other variances) still passes it, but not a tight IoU.
    strict = evaluate_voc(detections, targets, num_classes=len(CLASSES), iou_threshold=0.75)
    assert strict.map >= 0.9, f"mAP@0.75 {strict.map:.3f}, per class {strict.ap}"
