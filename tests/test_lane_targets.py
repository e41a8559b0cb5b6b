"""Row/column anchor targets: encoding ground-truth lanes and decoding them back."""

from __future__ import annotations

import numpy as np
import torch

from visbricks.ops.lanes import (
    LaneAnchors,
    assign_slots,
    cell_labels,
    decode_lanes,
    encode_lanes,
    extend_to_bottom,
    lane_mask_target,
    local_expectation,
    smooth_lane,
    x_at_rows,
    y_at_cols,
)

H, W = 96, 256


def _scene_lanes():
    """Four lanes of a road seen in perspective, vanishing near (128, 30); two curve."""
    ys = np.linspace(34, 95, 12)
    t = (ys - 30) / 66
    lanes = []
    for bottom in (-120.0, 40.0, 210.0, 370.0):
        x = 128 + (bottom - 128) * t + 6 * np.sin(3 * t)
        keep = (x > -40) & (x < W + 40)
        lanes.append(np.stack([x[keep], ys[keep]], -1))
    return lanes


def _logits_from(pos: torch.Tensor, cells: int) -> torch.Tensor:
    """Logits peaked at each target position (−distance², so the expectation is informative)."""
    k = torch.arange(cells, dtype=torch.float32).view(1, -1, 1, 1)
    return -4.0 * (k - pos.unsqueeze(1)) ** 2


def test_slots_left_to_right_around_centre():
    lanes = _scene_lanes()
    order = [lanes[i] for i in (2, 0, 3, 1)]  # shuffled
    slots = assign_slots(order, W, H, 4)
    for got, want in zip(slots, lanes):
        assert got is not None and np.array_equal(got, want)
    two = assign_slots(lanes[1:3], W, H, 4)
    assert two[0] is None and two[3] is None and np.array_equal(two[1], lanes[1])


def test_crossings_interpolate_and_absent_is_nan():
    lane = np.array([[10.0, 20], [30, 60]])
    assert x_at_rows(lane, np.array([20, 40, 60, 70]))[:3].tolist() == [10, 20, 30]
    assert np.isnan(x_at_rows(lane, np.array([70.0])))[0]
    assert y_at_cols(lane, np.array([20.0]))[0] == 40
    # a lane meeting column 20 twice: the crossing lower in the image (larger y) wins
    hook = np.array([[10.0, 10], [30, 20], [10, 50]])
    assert y_at_cols(hook, np.array([20.0]))[0] == 35


def test_encode_then_decode_reproduces_lanes_within_one_cell():
    anchors = LaneAnchors.make(18, 24, 64, 40, 4, row_range=(0.35, 1.0))
    lanes = _scene_lanes()
    slots = assign_slots(lanes, W, H, 4)
    t = encode_lanes(slots, (H, W), anchors)
    row, col = t["row_pos"][None], t["col_pos"][None]
    outputs = {
        "loc_row": _logits_from(row.clamp(min=0), anchors.row_cells),
        "loc_col": _logits_from(col.clamp(min=0), anchors.col_cells),
        "exist_row": torch.stack([(row < 0).float(), (row >= 0).float()], 1) * 10,
        "exist_col": torch.stack([(col < 0).float(), (col >= 0).float()], 1) * 10,
    }
    decoded = decode_lanes(outputs, anchors, (H, W), min_rows=0.2, min_cols=0.1)[0]
    assert sorted(d["slot"] for d in decoded) == [0, 1, 2, 3]
    row_cell, col_cell = W / anchors.row_cells, H / anchors.col_cells
    for d in decoded:
        gt = slots[d["slot"]]
        pts = d["points"]
        if d["slot"] in anchors.col_lanes:  # side lanes: y along columns
            err = np.abs(pts[:, 1] - y_at_cols(gt, pts[:, 0]))
            assert np.nanmax(err) <= col_cell
        else:
            err = np.abs(pts[:, 0] - x_at_rows(gt, pts[:, 1]))
            assert np.nanmax(err) <= row_cell
        assert np.isfinite(err).all()
    # hard one-hot logits (no sub-cell information): still within one cell
    hard = dict(outputs)
    hard["loc_row"] = (
        torch.nn.functional.one_hot(cell_labels(row).clamp(min=0), anchors.row_cells)
        .permute(0, 3, 1, 2)
        .float()
        * 10
    )
    for d in decode_lanes(hard, anchors, (H, W), min_rows=0.2, min_cols=0.1)[0]:
        if d["slot"] not in anchors.col_lanes:
            err = np.abs(d["points"][:, 0] - x_at_rows(slots[d["slot"]], d["points"][:, 1]))
            assert err.max() <= row_cell


def test_absent_lanes_and_out_of_image_points_are_minus_one():
    anchors = LaneAnchors.make(8, 8, 32, 16, 4)
    lane = np.array([[-30.0, 60], [100, 95]])  # starts left of the image
    t = encode_lanes([None, lane, None, None], (H, W), anchors)
    assert (t["row_pos"][:, [0, 2, 3]] == -1).all()
    ys = np.asarray(anchors.rows) * H
    x = x_at_rows(lane, ys)
    inside = np.isfinite(x) & (x >= 0) & (x < W)
    assert ((t["row_pos"][:, 1] >= 0).numpy() == inside).all()
    assert (cell_labels(t["row_pos"])[~torch.from_numpy(inside), 1] == -1).all()
    # too few visible anchors: nothing decoded
    pos = t["row_pos"][None]
    out = {
        "loc_row": _logits_from(pos.clamp(min=0), 32),
        "loc_col": torch.zeros(1, 16, 8, 4),
        "exist_row": torch.stack([(pos < 0).float(), (pos >= 0).float()], 1) * 10,
        "exist_col": torch.zeros(1, 2, 8, 4),
    }
    assert decode_lanes(out, anchors, (H, W), min_rows=0.9)[0] == []


def test_short_lane_is_extended_to_the_bottom_along_its_lower_half():
    """UFLD's label rule: the straight line through the lower half of the crossings, worked out
    here by hand for a lane that bends (upper half steeper than the lower one)."""
    ys = np.arange(10.0, 96.0, 5.0)  # 18 anchor rows, the last at 95
    x = np.full(len(ys), np.nan)
    # rows 10..60 (11 points): x = 100 - (y - 10) on the upper part, then slope +2 from y = 40
    seen = ys <= 60
    x[seen] = np.where(ys[seen] < 40, 100 - (ys[seen] - 10), 70 + 2 * (ys[seen] - 40))
    out = extend_to_bottom(x, ys, 256.0)
    # lower half = last 6 points, rows 35..60: 35 lies on the first piece (x = 75), so the fit
    # is not exactly slope 2; compare with an independent least-squares line
    lower = np.flatnonzero(seen)[len(np.flatnonzero(seen)) // 2 :]
    a = np.vstack([ys[lower], np.ones(len(lower))]).T
    slope, icpt = np.linalg.lstsq(a, x[lower], rcond=None)[0]
    below = ys > 60
    np.testing.assert_allclose(out[below], slope * ys[below] + icpt, rtol=1e-9)
    np.testing.assert_array_equal(out[seen], x[seen])  # labelled points untouched
    assert abs(slope - 11 / 7) < 1e-9 and np.isfinite(out).all()  # (75,70,80,...,110): 11/7
    # leaving the image: positions beyond the right edge stay absent
    steep = np.where(seen, 150 + 4 * (ys - 10), np.nan)
    out = extend_to_bottom(steep, ys, 256.0)
    # (fitted on its 6 in-image points, rows 10..35; below row 60 it is past x = 350)
    assert np.isnan(out[ys > 60]).all()
    np.testing.assert_array_equal(out[seen], steep[seen])
    # too few points (5 < 6) or already at the bottom: unchanged
    few = np.where(ys <= 30, 100.0, np.nan)
    np.testing.assert_array_equal(extend_to_bottom(few, ys, 256.0), few)
    full = np.linspace(10, 50, len(ys))
    np.testing.assert_array_equal(extend_to_bottom(full, ys, 256.0), full)


def test_encode_extends_row_labels_only_when_asked():
    anchors = LaneAnchors.make(18, 8, 64, 32, 2, row_range=(0.3, 1.0))
    lane = np.array([[100.0, 30.0], [120.0, 70.0]])  # stops at row 70 of 96
    plain = encode_lanes([lane, None], (H, W), anchors)["row_pos"][:, 0]
    extended = encode_lanes([lane, None], (H, W), anchors, extend=True)["row_pos"][:, 0]
    ys = np.asarray(anchors.rows) * H
    assert (plain[ys > 70] == -1).all() and (extended[ys > 70] >= 0).all()
    assert torch.equal(plain[ys <= 70], extended[ys <= 70])
    # the straight lane continues on its own line: x = 100 + (y - 30) / 2
    x = (extended[ys > 70].numpy() + 0.5) * W / 64
    np.testing.assert_allclose(x, 100 + (ys[ys > 70] - 30) / 2, atol=1e-3)


def test_local_expectation_uses_window_only():
    logits = torch.full((1, 10, 1, 1), -20.0)
    logits[0, 3] = 5.0
    logits[0, 4] = 5.0  # ties: argmax 3, window 2..4 → expectation 3.5
    logits[0, 9] = 4.9  # far second mode is ignored by the local window
    assert local_expectation(logits).item() == torch.tensor(3.5).item()


def test_mask_target_and_smoothing():
    lane = np.array([[8.0, 0], [8, 95]])
    m = lane_mask_target([None, lane], (H, W), stride=8)
    assert m.shape == (12, 32)
    assert set(m.unique().tolist()) == {0, 2} and (m[:, 1] == 2).all()
    noisy = np.stack([50 + np.random.default_rng(0).normal(0, 1, 20), np.arange(20) * 4.0], -1)
    smooth = smooth_lane(noisy, num=40, smoothing=1.0)
    assert smooth.shape == (40, 2)
    assert np.abs(smooth[:, 0] - 50).max() < np.abs(noisy[:, 0] - 50).max()
