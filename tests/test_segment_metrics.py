"""Segmentation metrics and losses against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from visbricks.errors import ConfigError
from visbricks.metrics.segmentation import SegmentationEvaluator, confusion_matrix
from visbricks.models.seg_losses import SegmentationLoss


def _random_maps(seed: int, n: int = 5, c: int = 6, hw: tuple[int, int] = (17, 23)):
    """Label maps with ignore pixels; class 4 never appears (absent), class 5 is only
    predicted (a false-positive-only class)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 4, (n, *hw), generator=g)
    target[torch.rand(n, *hw, generator=g) < 0.15] = 255
    pred = torch.randint(0, 4, (n, *hw), generator=g)
    pred[torch.rand(n, *hw, generator=g) < 0.05] = 5
    # Make predictions agree with the truth most of the time so IoUs are not all alike.
    agree = (torch.rand(n, *hw, generator=g) < 0.6) & (target != 255)
    pred[agree] = target[agree]
    return pred, target, c


def _numpy_reference(pred: np.ndarray, target: np.ndarray, c: int):
    """Straight from the definitions, one pixel at a time (no bincount)."""
    m = np.zeros((c, c), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t == 255:
            continue
        m[t, p] += 1
    iou, acc = [], []
    for k in range(c):
        tp = m[k, k]
        fn = m[k].sum() - tp
        fp = m[:, k].sum() - tp
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
        acc.append(tp / m[k].sum() if m[k].sum() else np.nan)
    iou, acc = np.array(iou), np.array(acc)
    freq = m.sum(1) / m.sum()
    fw = sum(freq[k] * iou[k] for k in range(c) if not np.isnan(iou[k]))
    return m, iou, acc, np.trace(m) / m.sum(), fw


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_definitions_and_torchmetrics(seed):
    pred, target, c = _random_maps(seed)
    ev = SegmentationEvaluator([f"c{i}" for i in range(c)])
    # Accumulated over batches of different sizes: dataset-level, not a per-image mean.
    ev.update(pred[:2], target[:2])
    ev.update(pred[2:], target[2:])
    result = ev.compute()
    m, iou, acc, pixel_acc, fw = _numpy_reference(pred.numpy(), target.numpy(), c)
    np.testing.assert_array_equal(result.details["matrix"], m)
    np.testing.assert_allclose(result.details["iou"], iou, equal_nan=True)
    np.testing.assert_allclose(result.details["class_acc"], acc, equal_nan=True)
    assert np.isnan(result.details["iou"][4])  # absent class: NaN ...
    assert result.details["iou"][5] == 0.0  # ... predicted-only class: 0, and it counts
    assert result["val/mIoU"] == pytest.approx(np.nanmean(iou))
    assert result["val/mIoU"] == pytest.approx(iou[[0, 1, 2, 3, 5]].mean())
    assert result["val/mean_acc"] == pytest.approx(np.nanmean(acc))
    assert result["val/pixel_acc"] == pytest.approx(pixel_acc)
    assert result["val/fwIoU"] == pytest.approx(fw)

    from torchmetrics.classification import MulticlassJaccardIndex

    tm = MulticlassJaccardIndex(num_classes=c, average=None, ignore_index=255)
    tm.update(pred[:2], target[:2])
    tm.update(pred[2:], target[2:])
    theirs = tm.compute().numpy()
    # torchmetrics scores an absent class 0 (zero_division); ours is NaN and left out.
    present = ~np.isnan(result.details["iou"])
    np.testing.assert_allclose(result.details["iou"][present], theirs[present], rtol=1e-6)
    assert theirs[4] == 0.0


def test_confusion_matrix_rejects_out_of_range_predictions():
    with pytest.raises(Exception, match="outside 0..2"):
        confusion_matrix(torch.tensor([3]), torch.tensor([1]), 3)


def test_table_names_classes_and_marks_absent():
    pred, target, c = _random_maps(0)
    ev = SegmentationEvaluator(["bg", "a", "b", "c", "absent", "ghost"])
    ev.update(pred, target)
    r = ev.compute()
    assert "absent" in r.table and "n/a" in r.table
    assert f"{r['val/mIoU']:.4f}" in r.table


def test_ce_matches_torch_with_ignore_and_weights():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 9, 11, generator=g)
    target = torch.randint(0, 4, (2, 9, 11), generator=g)
    target[:, :3] = 255
    weights = [1.0, 2.0, 0.5, 1.5]
    ours = SegmentationLoss(4, class_weights=weights)(logits, target)["loss"]
    ref = F.cross_entropy(logits, target, weight=torch.tensor(weights), ignore_index=255)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_ohem_keeps_only_hard_pixels():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 8, 8, generator=g) * 3
    target = torch.randint(0, 3, (1, 8, 8), generator=g)
    prob = logits.softmax(1).gather(1, target[:, None])[:, 0]
    hard = prob <= 0.5
    per_pixel = F.cross_entropy(logits, target, reduction="none")
    loss = SegmentationLoss(3, ohem_thresh=0.5, ohem_min_kept=1)(logits, target)["loss"]
    assert loss.item() == pytest.approx(per_pixel[hard].mean().item(), rel=1e-5)
    # min_kept larger than the hard set: the min_kept hardest pixels are used instead.
    k = int(hard.sum()) + 10
    loss_k = SegmentationLoss(3, ohem_thresh=0.5, ohem_min_kept=k)(logits, target)["loss"]
    hardest = per_pixel.flatten()[prob.flatten().argsort()[:k]]
    assert loss_k.item() == pytest.approx(hardest.mean().item(), rel=1e-5)


def test_dice_is_zero_for_perfect_prediction_and_float32_under_bf16():
    target = torch.randint(0, 3, (2, 16, 16))
    target[0, 0] = 255
    perfect = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    terms = SegmentationLoss(3, dice_weight=1.0)(perfect, target)
    assert terms["dice"].item() < 1e-3 and terms["ce"].item() < 1e-3
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.nn.functional.conv2d(logits, torch.eye(3)[:, :, None, None])
        terms = SegmentationLoss(3, dice_weight=0.5, ohem_thresh=0.7)(out, target)
    assert terms["loss"].dtype == torch.float32
    terms["loss"].backward()
    assert torch.isfinite(logits.grad).all()


def _dice_by_one_hot(logits, target, num_classes, ignore=255):
    """The textbook soft Dice: a one-hot map of the labels, products and sums per class."""
    valid = (target != ignore)[:, None].float()
    prob = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    inter, denom = (prob * onehot).sum((0, 2, 3)), (prob + onehot).sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1)).mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])  # nll_loss, or cross_entropy to smooth
@pytest.mark.parametrize("channels_last", [False, True])
def test_dice_and_weighted_ce_equal_their_textbook_forms_with_gradients(channels_last, smoothing):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, 12, 10, generator=g) * 2
    target = torch.randint(0, 5, (3, 12, 10), generator=g)
    target[1, :4] = 255
    target[target == 4] = 2  # class 4 absent from the labels: scores by the smoothing alone
    weights = [0.5, 2.0, 1.0, 3.0, 1.5]
    layout = torch.channels_last if channels_last else torch.contiguous_format
    ours_in = logits.clone().contiguous(memory_format=layout).requires_grad_()
    ref_in = logits.clone().requires_grad_()
    loss = SegmentationLoss(5, class_weights=weights, dice_weight=0.7, label_smoothing=smoothing)
    terms = loss(ours_in, target)
    ref_ce = F.cross_entropy(
        ref_in, target, weight=torch.tensor(weights), ignore_index=255, label_smoothing=smoothing
    )
    ref_dice = _dice_by_one_hot(ref_in, target, 5)
    assert terms["ce"].item() == pytest.approx(ref_ce.item(), rel=1e-5)
    assert terms["dice"].item() == pytest.approx(ref_dice.item(), rel=1e-5)
    terms["loss"].backward()
    (ref_ce + 0.7 * ref_dice).backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-7)


def _jaccard_loss_of_set(wrong: list[int], fg: list[bool]) -> float:
    """Δ_J of the paper: |M| / |{y = c} ∪ M| for the mispredicted pixel set M (0 for empty)."""
    union = {i for i, f in enumerate(fg) if f} | set(wrong)
    return len(wrong) / len(union) if union else 0.0


def test_lovasz_equals_a_loop_over_the_extension_and_1_minus_iou_for_hard_predictions():
    from visbricks.models.seg_losses import lovasz_softmax

    g = torch.Generator().manual_seed(3)
    prob = torch.randn(40, 4, generator=g).softmax(1).double()
    labels = torch.randint(0, 3, (40,), generator=g)  # class 3 absent: not averaged
    # The Lovász extension written as its definition: errors sorted in decreasing order, each
    # weighted by the set function's increment when its pixel joins the mispredicted set.
    expected = []
    for c in range(3):
        fg = (labels == c).tolist()
        errors = [abs(float(f) - p) for f, p in zip(fg, prob[:, c].tolist(), strict=True)]
        order = sorted(range(40), key=lambda i: -errors[i])
        value, previous = 0.0, 0.0
        for k in range(1, 41):
            current = _jaccard_loss_of_set(order[:k], fg)
            value += errors[order[k - 1]] * (current - previous)
            previous = current
        expected.append(value)
    assert lovasz_softmax(prob, labels, 4).item() == pytest.approx(np.mean(expected), rel=1e-9)
    # At a hard prediction the extension is the set function itself: mean over classes of 1 - IoU.
    pred = torch.randint(0, 4, (40,), generator=g)
    hard = torch.nn.functional.one_hot(pred, 4).double()
    ious = [
        ((pred == c) & (labels == c)).sum().item() / ((pred == c) | (labels == c)).sum().item()
        for c in range(3)
    ]
    assert lovasz_softmax(hard, labels, 4).item() == pytest.approx(1 - np.mean(ious), rel=1e-9)


def test_lovasz_alone_trains_logits_to_the_labels_and_ignores_void():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 12, 12), generator=g)
    target[:, :2] = 255
    logits = torch.zeros(2, 3, 12, 12, requires_grad=True)
    loss_fn = SegmentationLoss(3, ce_weight=0.0, lovasz_weight=1.0)
    opt = torch.optim.Adam([logits], lr=0.1)
    first = None
    for _ in range(60):
        terms = loss_fn(logits, target)
        first = terms["lovasz"].item() if first is None else first
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    assert set(terms) == {"lovasz", "loss"} and terms["lovasz"].item() < 0.2 * first
    valid = target != 255
    assert (logits.argmax(1)[valid] == target[valid]).all()
    # Void pixels get no gradient at all.
    assert logits.grad[:, :, :2].abs().max().item() == 0.0
    with pytest.raises(ConfigError, match="loss.lovasz_weight must be ≥ 0"):
        SegmentationLoss(3, lovasz_weight=-1.0)
