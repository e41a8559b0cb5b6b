"""Flip test-time augmentation of segmentation (eval.tta: flip)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visbricks.config import load_config
from visbricks.errors import ConfigError
from visbricks.ops.tta import flip_average_logits
from visbricks.tasks import build_task


class LeftHeavy(nn.Module):
    """Per-pixel logits that depend on the column: a mirror image gives other logits, so the
    flip test changes the result."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        ramp = torch.linspace(-2, 2, x.shape[-1])
        logits = torch.stack([x[:, 0] * ramp, x[:, 1] - ramp, x[:, 2] * 0.5], 1)
        return {"logits": logits, "other": x.mean()}


def test_flip_average_is_the_mean_probability_of_image_and_mirror() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7)
    net = LeftHeavy()
    out = flip_average_logits(net, x)
    plain = net(x)["logits"].softmax(1)
    mirror = net(x.flip(-1))["logits"].softmax(1).flip(-1)
    torch.testing.assert_close(out["logits"].softmax(1), (plain + mirror) / 2)
    torch.testing.assert_close(out["logits"].exp().sum(1), torch.ones(2, 5, 7))  # log-probs
    assert not torch.equal(out["logits"].argmax(1), net(x)["logits"].argmax(1))
    assert out["other"] == net(x)["other"]  # other outputs: the plain pass's


def test_segment_task_flips_at_evaluation_only() -> None:
    task = build_task(load_config("segment", ["eval.tta=flip"]))
    net, x = LeftHeavy(), torch.randn(1, 3, 4, 6)
    batch = {"image": x}
    net.train()
    torch.testing.assert_close(task.forward(net, batch)["logits"], net(x)["logits"])
    net.eval()
    want = flip_average_logits(net, x)["logits"]
    torch.testing.assert_close(task.forward(net, batch)["logits"], want)
    torch.testing.assert_close(task.infer(net, x)["logits"], want)
    plain = build_task(load_config("segment"))
    torch.testing.assert_close(plain.infer(net, x)["logits"], net(x)["logits"])
    with pytest.raises(ConfigError, match="eval.tta"):
        load_config("segment", ["eval.tta=rotate"])
