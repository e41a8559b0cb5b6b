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


class PerPixel(nn.Module):
    """Per-pixel class logits from a 1x1 convolution: padding never reaches the kept pixels,
    so a padded pass cropped back equals the unpadded pass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 1)
        self.calls: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append(tuple(x.shape[-2:]))
        return {"logits": self.conv(x)}


def test_multiscale_is_the_mean_probability_over_scales_and_mirrors() -> None:
    import torch.nn.functional as F

    from visbricks.ops.tta import multiscale_average_logits

    torch.manual_seed(0)
    x = torch.randn(2, 3, 20, 30)
    net = PerPixel()
    scales = [0.5, 1.0, 1.5]
    with torch.no_grad():
        got = multiscale_average_logits(net, x, scales)["logits"]
        # Each resized input padded to a multiple of 32 (10x15 -> 32x32, 30x45 -> 32x64); at
        # 1.0 the input as given, the plain pass run once.
        assert net.calls == [(20, 30), (32, 32), (32, 32), (20, 30), (32, 64), (32, 64)]
        # Written out without padding (a 1x1 net does not see it): resize, run, mirror back,
        # resize to the input size, softmax; the mean over the six passes.
        probs = []
        for s, size in zip(scales, [(10, 15), (20, 30), (30, 45)], strict=True):
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=s < 1)
            for view, back in ((xs, lambda t: t), (xs.flip(-1), lambda t: t.flip(-1))):
                logits = back(net.conv(view))
                logits = F.interpolate(logits, size=(20, 30), mode="bilinear", align_corners=False)
                probs.append(logits.softmax(1))
        want = torch.stack(probs).mean(0)
    torch.testing.assert_close(got.softmax(1), want)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(2, 20, 30))  # log-probabilities
    # One scale of 1.0 is the flip test.
    torch.testing.assert_close(
        multiscale_average_logits(LeftHeavy(), x, [1.0])["logits"],
        flip_average_logits(LeftHeavy(), x)["logits"],
    )
    with pytest.raises(ValueError, match="positive scales"):
        multiscale_average_logits(net, x, [])


def test_segment_task_multiscale_uses_the_configured_scales() -> None:
    from visbricks.ops.tta import multiscale_average_logits

    task = build_task(load_config("segment", ["eval.tta=multiscale", "eval.tta_scales=[0.5, 1]"]))
    net, x = PerPixel().eval(), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = multiscale_average_logits(net, x, [0.5, 1.0])["logits"]
        torch.testing.assert_close(task.infer(net, x)["logits"], want)
    default = load_config("segment", ["eval.tta=multiscale"]).eval.tta_scales
    assert list(default) == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]  # mmseg's ratios
    # The input is letterboxed at the largest scale and every pass resizes it down: with scales
    # 1 and 2 an image arrives at twice img_size and runs at factors 0.5 and 1 of that.
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8)
    plain = build_task(load_config("segment", ["img_size=64"]))
    double = build_task(
        load_config("segment", ["img_size=64", "eval.tta=multiscale", "eval.tta_scales=[1, 2]"])
    )
    assert plain.eval_size == (64, 64) and double.eval_size == (128, 128)
    small, small_meta = plain.preprocess(image)
    big, big_meta = double.preprocess(image)
    assert big.shape[-2:] == (2 * small.shape[-2], 2 * small.shape[-1])
    assert big_meta["letterbox"][0] == 2 * small_meta["letterbox"][0]  # the resize factor
    with torch.no_grad():
        want = multiscale_average_logits(net, big[None], [0.5, 1.0])["logits"]
        torch.testing.assert_close(double.infer(net, big[None])["logits"], want)
    with pytest.raises(ConfigError, match="eval.tta_scales"):
        build_task(load_config("segment", ["eval.tta=multiscale", "eval.tta_scales=[]"]))
    with pytest.raises(ConfigError, match="eval.tta_scales"):
        load_config("segment", ["eval.tta_scales=[0]"])


def monodepth2_post_process(l_disp, r_disp):
    """Monodepth2's ``batch_post_process_disparity`` (layers of its evaluate_depth.py), in
    numpy: ``l_disp`` (N, H, W) of the images, ``r_disp`` of their mirror images mirrored back."""
    import numpy as np

    _, h, w = l_disp.shape
    m_disp = 0.5 * (l_disp + r_disp)
    grid, _ = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    l_mask = (1.0 - np.clip(20 * (grid - 0.05), 0, 1))[None, ...]
    r_mask = l_mask[:, :, ::-1]
    return r_mask * l_disp + l_mask * r_disp + (1.0 - l_mask - r_mask) * m_disp


class Tilted(nn.Module):
    """A "depth net" whose disparity leans on the column: mirroring changes it."""

    def forward(self, x: torch.Tensor) -> dict:
        ramp = torch.linspace(0.1, 0.9, x.shape[-1])
        disp = torch.sigmoid(x[:, :1] + ramp)
        return {("disp", 0): disp, ("disp", 1): disp[..., ::2, ::2]}


def test_depth_flip_equals_monodepth2_post_processing() -> None:
    from visbricks.ops.tta import flip_blend_disparity

    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 40)
    net = Tilted()
    got = flip_blend_disparity(net, x)
    plain = net(x)[("disp", 0)][:, 0].numpy()
    mirror = net(x.flip(-1))[("disp", 0)][:, 0].numpy()[:, :, ::-1]
    want = monodepth2_post_process(plain, mirror)
    torch.testing.assert_close(got[("disp", 0)][:, 0], torch.from_numpy(want).float())
    # The left border takes the mirror pass, the right border the plain one, the middle both.
    assert torch.equal(got[("disp", 0)][..., 0], torch.from_numpy(mirror[:, :, 0].copy())[:, None])
    assert torch.equal(got[("disp", 1)], net(x)[("disp", 1)])

    task = build_task(load_config("depth", ["eval.tta=flip"]))
    torch.testing.assert_close(task.infer(net, x)[("disp", 0)], got[("disp", 0)])
    plain_task = build_task(load_config("depth"))
    torch.testing.assert_close(plain_task.infer(net, x)[("disp", 0)], net(x)[("disp", 0)])
