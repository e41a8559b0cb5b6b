"""ops/boxes.elementwise_iou against torchvision's all-pairs box_iou."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from visbricks.ops.boxes import elementwise_iou


def test_elementwise_iou_is_the_diagonal_of_box_iou_and_degenerate_pairs_score_zero():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    a = torch.cat([xy, xy + torch.rand(50, 2, generator=g) * 50 + 1], 1)
    b = a + torch.randn(50, 4, generator=g) * 10
    b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2] + 1)
    torch.testing.assert_close(elementwise_iou(a, b), box_iou(a, b).diagonal())
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    assert elementwise_iou(point, point).tolist() == [0.0]  # box_iou: 0/0 = nan
    assert elementwise_iou(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)
