"""Camera geometry: projection conventions, Rodrigues, intrinsics scaling and view warping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from scipy.spatial.transform import Rotation

from visbricks.errors import VisbricksError
from visbricks.ops.geometry import (
    backproject,
    disp_to_depth,
    pose_vec_to_mat,
    project,
    scale_intrinsics,
    warp,
)
from visbricks.ops.photometric import photometric_error

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_K(batch: int = 1, fx=40.0, fy=36.0, cx=15.3, cy=10.7) -> torch.Tensor:
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return K.expand(batch, 3, 3).clone()


def translation_pose(tx=0.0, ty=0.0, tz=0.0, batch: int = 1) -> torch.Tensor:
    T = torch.eye(4).repeat(batch, 1, 1)
    T[:, :3, 3] = torch.tensor([tx, ty, tz])
    return T


@pytest.mark.parametrize("device", DEVICES)
def test_project_of_backproject_is_the_pixel_grid(device):
    torch.manual_seed(0)
    B, H, W = 2, 12, 20
    K = make_K(B).to(device)
    depth = torch.rand(B, 1, H, W, device=device) * 50 + 0.5
    grid = project(backproject(depth, torch.linalg.inv(K)), K, None, H, W)
    # align_corners=False: pixel centres sit at the middle of W equal cells spanning [-1, 1].
    xs = torch.linspace(-1 + 1 / W, 1 - 1 / W, W, device=device)
    ys = torch.linspace(-1 + 1 / H, 1 - 1 / H, H, device=device)
    assert grid.shape == (B, H, W, 2)
    torch.testing.assert_close(grid[..., 0], xs.expand(B, H, W), atol=1e-4, rtol=0)
    torch.testing.assert_close(grid[..., 1], ys[:, None].expand(B, H, W), atol=1e-4, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_identity_warp_returns_the_image_for_any_depth(device):
    torch.manual_seed(1)
    B, C, H, W = 2, 3, 16, 24
    image = torch.rand(B, C, H, W, device=device)
    depth = torch.rand(B, 1, H, W, device=device) * 80 + 0.1
    warped, valid = warp(image, depth, make_K(B).to(device), translation_pose(batch=B).to(device))
    assert valid[:, :, 1:-1, 1:-1].all()
    torch.testing.assert_close(warped[..., 1:-1, 1:-1], image[..., 1:-1, 1:-1], atol=1e-4, rtol=0)


def test_nan_depth_is_outside_the_image_and_backward_survives():
    # grid_sample's CPU backward segfaults on NaN coordinates; warp must never hand it one.
    image = torch.rand(1, 3, 16, 24, requires_grad=True)
    depth = torch.full((1, 1, 16, 24), 5.0)
    depth[0, 0, 4:8, 4:8] = float("nan")
    pose = translation_pose(tx=0.3)
    pose.requires_grad_(True)
    warped, valid = warp(image, depth, make_K(), pose)
    assert not valid[0, 0, 4:8, 4:8].any() and valid[0, 0, 10:, 10:20].all()
    warped.sum().backward()
    assert torch.isfinite(image.grad).all()


def test_sideways_translation_shifts_a_plane_by_fx_t_over_depth():
    # A fronto-parallel plane at depth D seen by a camera moved by t along x moves by fx*t/D
    # pixels; choose 2 px so the expected warp is an exact integer shift of the source.
    torch.manual_seed(2)
    H, W, D, fx = 10, 16, 5.0, 40.0
    src = torch.rand(1, 3, H, W)
    depth = torch.full((1, 1, H, W), D)
    K = make_K(fx=fx, cx=7.5, cy=4.5)
    warped, valid = warp(src, depth, K, translation_pose(tx=2 * D / fx))
    torch.testing.assert_close(warped[..., : W - 2], src[..., 2:], atol=1e-4, rtol=0)
    assert valid[..., : W - 2].all() and not valid[..., W - 2 :].any()
    # Moving the source camera in front of the plane puts every point behind it.
    _, behind = warp(src, depth, K, translation_pose(tz=-2 * D))
    assert not behind.any()


def test_accepts_4x4_intrinsics_and_given_inverse():
    torch.manual_seed(3)
    K3 = make_K(2)
    K4 = torch.eye(4).repeat(2, 1, 1)
    K4[:, :3, :3] = K3
    image, depth = torch.rand(2, 3, 8, 12), torch.rand(2, 1, 8, 12) + 1
    T = pose_vec_to_mat(torch.randn(2, 1, 3) * 0.05, torch.randn(2, 1, 3) * 0.1)
    a, va = warp(image, depth, K3, T)
    b, vb = warp(image, depth, K4, T, inv_K=torch.linalg.inv(K4))
    torch.testing.assert_close(a, b)
    assert torch.equal(va, vb)


def test_pose_vec_to_mat_matches_scipy_rodrigues():
    rng = np.random.default_rng(0)
    rotvecs = np.concatenate([rng.normal(size=(6, 3)) * 1.2, [[0, 0, 0], [1e-6, -2e-6, 0.0]]])
    trans = rng.normal(size=(len(rotvecs), 3))
    T = pose_vec_to_mat(
        torch.tensor(rotvecs, dtype=torch.float32)[:, None],
        torch.tensor(trans, dtype=torch.float32)[:, None],
    )
    expected = np.tile(np.eye(4), (len(rotvecs), 1, 1))
    expected[:, :3, :3] = Rotation.from_rotvec(rotvecs).as_matrix()
    expected[:, :3, 3] = trans
    np.testing.assert_allclose(T.numpy(), expected, atol=1e-5)

    T_inv = pose_vec_to_mat(
        torch.tensor(rotvecs, dtype=torch.float32)[:, None],
        torch.tensor(trans, dtype=torch.float32)[:, None],
        invert=True,
    )
    np.testing.assert_allclose(T_inv.numpy(), np.linalg.inv(expected), atol=1e-5)


def test_pose_gradient_is_finite_at_zero_rotation():
    axisangle = torch.zeros(1, 1, 3, requires_grad=True)
    translation = torch.zeros(1, 1, 3, requires_grad=True)
    T = pose_vec_to_mat(axisangle, translation)
    (T[:, :3, :3] @ torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.isfinite(axisangle.grad).all() and axisangle.grad.abs().sum() > 0
    # d(R p)/d(omega) at omega = 0 is -[p]_x, so the gradient of sum(R p) is p x (1, 1, 1).
    p = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(axisangle.grad[0, 0].numpy(), np.cross(p, np.ones(3)), atol=1e-6)


def test_scale_intrinsics_matches_interpolate():
    # Render a ramp image whose value is the column (row) coordinate, resize it with
    # F.interpolate, and check that the value found where the scaled K projects a 3D point is
    # the coordinate where the original K projects it.
    H, W, H2, W2 = 12, 16, 30, 24
    K = make_K(fx=20.0, fy=18.0, cx=7.2, cy=5.9)[0].double()
    K2 = scale_intrinsics(K, W2 / W, H2 / H)
    cols = torch.arange(W, dtype=torch.float64).expand(H, W)
    rows = torch.arange(H, dtype=torch.float64)[:, None].expand(H, W)
    ramps = F.interpolate(
        torch.stack([cols, rows])[None], size=(H2, W2), mode="bilinear", align_corners=False
    )
    points = torch.tensor(
        [[0.5, -0.3, 4.0], [-1.0, 0.8, 6.0], [0.1, 0.2, 2.0]], dtype=torch.float64
    )
    for p in points:
        u, v = (K @ p / p[2])[:2]
        u2, v2 = (K2 @ p / p[2])[:2]
        grid = torch.stack([(2 * u2 + 1) / W2 - 1, (2 * v2 + 1) / H2 - 1]).view(1, 1, 1, 2)
        sampled = F.grid_sample(ramps, grid, mode="bilinear", align_corners=False).flatten()
        torch.testing.assert_close(sampled, torch.stack([u, v]), atol=1e-9, rtol=0)
    # 4x4 and batched forms scale the same block and leave the rest alone.
    K4 = torch.eye(4, dtype=torch.float64)
    K4[:3, :3] = K
    scaled4 = scale_intrinsics(K4[None], W2 / W, H2 / H)[0]
    torch.testing.assert_close(scaled4[:3, :3], K2)
    torch.testing.assert_close(scaled4[3], K4[3])


def test_disp_to_depth_spans_the_range():
    scaled, depth = disp_to_depth(torch.tensor([0.0, 0.5, 1.0]), 0.1, 100.0)
    torch.testing.assert_close(depth[[0, 2]], torch.tensor([100.0, 0.1]))
    torch.testing.assert_close(scaled * depth, torch.ones(3))
    assert math.isclose(float(scaled[1]), (0.01 + 10.0) / 2, rel_tol=1e-6)


def test_bad_shapes_are_named():
    with pytest.raises(VisbricksError, match=r"depth must be \(B, 1, H, W\)"):
        backproject(torch.ones(2, 3, 4, 4), torch.eye(3))
    with pytest.raises(VisbricksError, match="inv_K"):
        backproject(torch.ones(1, 1, 4, 4), torch.eye(2))
    with pytest.raises(VisbricksError, match="T must be"):
        warp(torch.ones(1, 3, 4, 4), torch.ones(1, 1, 4, 4), torch.eye(3), torch.eye(4))


# --------------------------------------------------------------------------- synthetic street
@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """Three frames of `data synth driving`, read back from disk as a user's loader would."""
    from visbricks.data.io import read_image
    from visbricks.data.synth.driving import write_driving

    out = write_driving(
        tmp_path_factory.mktemp("driving") / "street",
        sequences=1,
        frames=3,
        width=160,
        height=48,
        val_sequences=0,
        seed=0,
    )
    seq = out / "seq_00"
    K = np.asarray(yaml.safe_load((seq / "calib.yaml").read_text())["K"])
    cam_to_world = np.tile(np.eye(4), (3, 1, 1))
    cam_to_world[:, :3] = np.loadtxt(seq / "poses.txt").reshape(-1, 3, 4)
    images = [
        torch.from_numpy(read_image(seq / "images" / f"{k:06d}.png")).permute(2, 0, 1)[None] / 255
        for k in range(3)
    ]
    depths = [
        torch.from_numpy(np.load(seq / "depth" / f"{k:06d}.npy"))[None, None] for k in range(3)
    ]
    return torch.tensor(K, dtype=torch.float32)[None], cam_to_world, images, depths


def target_to_source(cam_to_world: np.ndarray, target: int, source: int) -> torch.Tensor:
    # p_world = P_t p_t = P_s p_s  =>  p_s = P_s^-1 P_t p_t
    T = np.linalg.inv(cam_to_world[source]) @ cam_to_world[target]
    return torch.tensor(T, dtype=torch.float32)[None]


def test_true_depth_and_pose_reproduce_the_synthetic_target(street):
    K, cam_to_world, images, depths = street
    target, identity = images[1], torch.eye(4)[None]
    errors, identity_errors = [], []
    for source in (0, 2):
        T = target_to_source(cam_to_world, 1, source)
        warped, valid = warp(images[source], depths[1], K, T)
        err = photometric_error(warped, target)
        same, _ = warp(images[source], depths[1], K, identity)
        err_identity = photometric_error(same, target)
        assert valid.float().mean() > 0.6  # driving forward, most points stay in view
        # The residual is the renderer's per-pixel point sampling (aliased edges resample
        # differently in each frame), not misregistration: see the depth check below.
        assert err[valid].mean() < 0.08
        assert err[valid].mean() < 0.5 * err_identity[valid].mean()
        errors.append(torch.where(valid, err, torch.ones_like(err)))
        identity_errors.append(err_identity)
    # Per-pixel minimum over sources, as the loss takes it: the typical pixel matches closely.
    best = torch.cat(errors, 1).min(1).values
    best_identity = torch.cat(identity_errors, 1).min(1).values
    assert best.median() < 0.02
    assert best.median() < 0.3 * best_identity.median()


def test_synthetic_depth_maps_agree_through_the_true_pose(street):
    # Texture-free check of the conventions against the ray caster: the target's points moved
    # into the source camera must have the depth the source's own depth map shows there.
    K, cam_to_world, _, depths = street
    half_pixel = torch.tensor([[[0.0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]])

    def mismatch(K, T):
        sampled, valid = warp(depths[0], depths[1], K, T)
        points = backproject(depths[1], torch.linalg.inv(K))
        z = (T[:, 2:3, :3] @ points + T[:, 2:3, 3:]).reshape_as(depths[1])
        return (sampled - z).abs() / z, valid

    T = target_to_source(cam_to_world, 1, 0)
    exact, valid = mismatch(K, T)
    assert exact[valid].median() < 1e-3
    # Walls along the street and the road keep their depth per pixel under forward motion, so
    # judge the pose on the pixels whose depth does change between the two frames.
    unmoved, unmoved_valid = mismatch(K, torch.eye(4)[None])
    changing = valid & unmoved_valid & (unmoved > 0.01)
    assert changing.float().mean() > 0.05
    assert exact[changing].median() < 1e-4 < 0.01 < unmoved[changing].median()
    # Half a pixel off in the principal point (the align_corners / pixel-corner mix-up) is
    # measurably worse: this pins our pixel-centre convention to the renderer's.
    for wrong_K in (K + half_pixel, K - half_pixel):
        wrong, wrong_valid = mismatch(wrong_K, T)
        assert exact[valid].median() < 0.5 * wrong[wrong_valid].median()
