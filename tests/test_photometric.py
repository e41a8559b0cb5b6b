"""Photometric error, smoothness and the Monodepth2 minimum-reprojection loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visbricks.errors import ConfigError, DataError
from visbricks.ops.geometry import disp_to_depth, pose_vec_to_mat
from visbricks.ops.photometric import (
    SSIM,
    ReprojectionLoss,
    photometric_error,
    smoothness_loss,
)

MIN_DEPTH, MAX_DEPTH = 0.1, 100.0


def ssim_dissimilarity_reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Straight per-pixel loops over reflection-padded 3x3 windows, (C, H, W) -> (C, H, W)."""
    c1, c2 = 0.01**2, 0.03**2
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    yp = np.pad(y, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    out = np.zeros_like(x)
    for c in range(x.shape[0]):
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                wx, wy = xp[c, i : i + 3, j : j + 3], yp[c, i : i + 3, j : j + 3]
                mx, my = wx.mean(), wy.mean()
                vx, vy = wx.var(), wy.var()
                cov = ((wx - mx) * (wy - my)).mean()
                s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
                out[c, i, j] = np.clip((1 - s) / 2, 0, 1)
    return out


def test_ssim_and_photometric_error_match_a_reference():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 7, 9))
    y = np.clip(x + rng.normal(scale=0.2, size=x.shape), 0, 1)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    ssim = SSIM()(xt, yt).double().numpy()
    expected = np.stack([ssim_dissimilarity_reference(a, b) for a, b in zip(x, y)])
    np.testing.assert_allclose(ssim, expected, atol=1e-5)

    err = photometric_error(xt, yt, alpha=0.85).double().numpy()
    l1 = np.abs(x - y).mean(1, keepdims=True)
    np.testing.assert_allclose(err, 0.85 * expected.mean(1, keepdims=True) + 0.15 * l1, atol=1e-5)


def test_ssim_of_an_image_with_itself_is_zero():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 10, 12)
    assert SSIM()(x, x).abs().max() < 1e-6
    assert photometric_error(x, x).abs().max() < 1e-6
    assert photometric_error(x, 1 - x).mean() > 0.1


def test_smoothness_is_edge_aware_and_scale_invariant():
    H, W = 8, 10
    step = torch.zeros(1, 1, H, W)
    step[..., W // 2 :] = 1.0
    disp = 0.5 + step
    flat_image = torch.full((1, 3, H, W), 0.5)
    edge_image = flat_image + 0.5 * step  # an image edge exactly where the disparity jumps

    # Reference: the only non-zero x-gradient is the one column at the step, of height
    # |1.5 - 0.5| / mean(disp) = 1; mean over H*(W-1) entries, weighted by exp(-|image grad|).
    mean = disp.mean().item()
    expected_flat = H * (1.0 / mean) / (H * (W - 1))
    torch.testing.assert_close(
        smoothness_loss(disp, flat_image), torch.tensor(expected_flat, dtype=torch.float32)
    )
    torch.testing.assert_close(
        smoothness_loss(disp, edge_image),
        torch.tensor(expected_flat * np.exp(-0.5), dtype=torch.float32),
    )
    # Normalising by the mean removes any incentive to shrink the disparity.
    torch.testing.assert_close(
        smoothness_loss(3 * disp, flat_image), smoothness_loss(disp, flat_image)
    )
    assert smoothness_loss(torch.full((1, 1, H, W), 0.3), edge_image) == 0


def plane_batch(
    shift_px: int = 2,
    depth: float = 5.0,
    fx: float = 40.0,
    H: int = 24,
    W: int = 32,
    scales: int = 4,
    seed: int = 0,
):
    """A textured fronto-parallel plane at `depth`; frame -1 is seen from a camera moved along
    +x by shift_px * depth / fx (the plane shifts by exactly shift_px pixels), frame +1 along
    -x. Returns (inputs, disparity giving that depth at each scale, true target->source poses).
    """
    g = torch.Generator().manual_seed(seed)
    pad = 8
    # Smooth texture (upsampled noise) so that bilinear sampling is well-behaved.
    noise = torch.rand(1, 3, H // 4 + 2, (W + 2 * pad) // 4 + 2, generator=g)
    tex = torch.nn.functional.interpolate(
        noise, size=(H, W + 2 * pad), mode="bilinear", align_corners=False
    )
    target = tex[..., pad : pad + W]
    frames = {
        0: target,
        -1: tex[..., pad - shift_px : pad - shift_px + W],
        1: tex[..., pad + shift_px : pad + shift_px + W],
    }
    K = torch.tensor([[[fx, 0, (W - 1) / 2], [0, fx, (H - 1) / 2], [0, 0, 1.0]]])
    inputs = {("K", 0): K, ("inv_K", 0): torch.linalg.inv(K)}
    for f, img in frames.items():
        for s in range(scales):
            size = (H // 2**s, W // 2**s)
            inputs[("color", f, s)] = torch.nn.functional.interpolate(img, size=size, mode="area")
            inputs[("color_aug", f, s)] = inputs[("color", f, s)]
    # Inverse of disp_to_depth: the sigmoid output that decodes to `depth`.
    disp_value = (1 / depth - 1 / MAX_DEPTH) / (1 / MIN_DEPTH - 1 / MAX_DEPTH)
    disps = {s: torch.full((1, 1, H // 2**s, W // 2**s), disp_value) for s in range(scales)}
    t = shift_px * depth / fx
    poses = {
        -1: pose_vec_to_mat(torch.zeros(1, 1, 3), torch.tensor([[[t, 0.0, 0.0]]])),
        1: pose_vec_to_mat(torch.zeros(1, 1, 3), torch.tensor([[[-t, 0.0, 0.0]]])),
    }
    return inputs, disps, poses


def model_outputs(disps, poses):
    out = {("disp", s): d for s, d in disps.items()}
    out.update({("cam_T_cam", 0, f): T for f, T in poses.items()})
    return out


def test_plane_fixture_decodes_to_the_intended_depth():
    _, disps, _ = plane_batch(depth=5.0)
    _, depth = disp_to_depth(disps[0], MIN_DEPTH, MAX_DEPTH)
    torch.testing.assert_close(depth, torch.full_like(depth, 5.0))


def test_identical_frames_and_identity_pose_give_zero_photometric_loss():
    inputs, disps, _ = plane_batch()
    for f in (-1, 1):
        for s in range(4):
            inputs[("color", f, s)] = inputs[("color", 0, s)].clone()
    identity = {f: torch.eye(4)[None] for f in (-1, 1)}
    loss_fn = ReprojectionLoss(automask=False)
    result = loss_fn(inputs, model_outputs(disps, identity))
    assert result["photo"] < 1e-6  # float rounding in back-/re-projection only
    torch.testing.assert_close(result["loss"], result["photo"] + result["smooth"])
    # Any motion makes the same frames disagree: the loss measures something.
    moved = {
        f: pose_vec_to_mat(torch.zeros(1, 1, 3), torch.tensor([[[0.3, 0, 0]]])) for f in (-1, 1)
    }
    assert loss_fn(inputs, model_outputs(disps, moved))["photo"] > 0.01


def test_true_depth_and_pose_reconstruct_the_target_and_min_picks_the_good_source():
    inputs, disps, poses = plane_batch(shift_px=2)
    outputs = model_outputs(disps, poses)
    loss_fn = ReprojectionLoss(automask=False)
    result = loss_fn(inputs, outputs)
    wrong = ReprojectionLoss(automask=False)(
        inputs, model_outputs(disps, {f: torch.eye(4)[None] for f in (-1, 1)})
    )
    assert result["photo"] < 0.1 * wrong["photo"]
    # Warped sources are stored for visualisation; away from the borders they equal the target.
    W = inputs[("color", 0, 0)].shape[-1]
    for f in (-1, 1):
        warped = outputs[("color", f, 0)]
        assert not warped.requires_grad
        torch.testing.assert_close(
            warped[..., 3 : W - 3], inputs[("color", 0, 0)][..., 3 : W - 3], atol=1e-4, rtol=0
        )
    assert ("depth", 0, 3) in outputs

    # Replace frame +1 by noise: the per-pixel minimum takes frame -1 wherever frame -1 sees
    # the point, so the loss stays far below the average over sources.
    g = torch.Generator().manual_seed(5)
    for s in range(4):
        inputs[("color", 1, s)] = torch.rand(inputs[("color", 1, s)].shape, generator=g)
    outputs = model_outputs(disps, poses)
    noisy = loss_fn(inputs, outputs)
    target = inputs[("color", 0, 0)]
    errors = torch.cat([photometric_error(outputs[("color", f, 0)], target) for f in (-1, 1)], 1)
    torch.testing.assert_close(noisy["photo"], errors.min(1).values.mean())
    assert noisy["photo"] < 0.2 * errors.mean()


def test_automask_hides_a_static_camera():
    inputs, disps, _ = plane_batch()
    for f in (-1, 1):
        for s in range(4):
            inputs[("color", f, s)] = inputs[("color", 0, s)].clone()
    # The network wrongly predicts motion; auto-masking must ignore every pixel.
    poses = {
        f: pose_vec_to_mat(torch.zeros(1, 1, 3), torch.tensor([[[0.2 * f, 0, 0]]])) for f in (-1, 1)
    }
    outputs = model_outputs(disps, poses)
    torch.manual_seed(0)
    result = ReprojectionLoss(automask=True)(inputs, outputs)
    assert outputs["automask"].dtype == torch.bool
    assert outputs["automask"].shape == (1, 1, 24, 32)
    assert not outputs["automask"].any()
    assert abs(float(result["photo"])) < 1e-4  # only the tie-breaking noise remains

    # With real motion in the frames, the warped branch wins on most pixels.
    inputs, disps, poses = plane_batch()
    outputs = model_outputs(disps, poses)
    ReprojectionLoss(automask=True)(inputs, outputs)
    assert outputs["automask"].float().mean() > 0.7


def test_gradient_flows_to_depth_and_pose():
    inputs, disps, _ = plane_batch()
    disp_leaves = {s: d.clone().requires_grad_() for s, d in disps.items()}
    # Slightly wrong depth and pose, so the loss has somewhere to go.
    axisangle = torch.full((1, 1, 3), 0.01, requires_grad=True)
    translation = torch.tensor([[[0.2, 0.01, 0.0]]], requires_grad=True)
    poses = {
        -1: pose_vec_to_mat(axisangle, translation),
        1: pose_vec_to_mat(axisangle, translation, invert=True),
    }
    result = ReprojectionLoss()(inputs, model_outputs(disp_leaves, poses))
    result["loss"].backward()
    for leaf in [*disp_leaves.values(), axisangle, translation]:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        assert leaf.grad.abs().sum() > 0


def test_loss_keeps_full_precision_under_autocast():
    inputs, disps, poses = plane_batch()
    poses = {
        f: T @ pose_vec_to_mat(torch.full((1, 1, 3), 0.02), torch.zeros(1, 1, 3))
        for f, T in poses.items()
    }
    torch.manual_seed(0)
    plain = ReprojectionLoss()(inputs, model_outputs(disps, poses))
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ReprojectionLoss()(inputs, model_outputs(disps, poses))
    assert mixed["loss"].dtype == torch.float32
    torch.testing.assert_close(mixed["loss"], plain["loss"])


def test_missing_keys_and_bad_settings_are_named():
    inputs, disps, poses = plane_batch()
    outputs = model_outputs(disps, poses)
    del outputs[("disp", 3)]
    with pytest.raises(ConfigError, match=r"outputs lacks key \('disp', 3\)"):
        ReprojectionLoss()(inputs, outputs)
    del inputs[("color", -1, 0)]
    with pytest.raises(DataError, match=r"inputs lacks key \('color', -1, 0\)"):
        ReprojectionLoss(scales=3)(inputs, model_outputs(disps, poses))
    with pytest.raises(ConfigError, match="frame_ids"):
        ReprojectionLoss(frame_ids=(-1, 0, 1))
    with pytest.raises(ConfigError, match="alpha"):
        ReprojectionLoss(alpha=1.5)
