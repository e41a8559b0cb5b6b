"""Pinhole camera geometry shared by the depth loss, depth evaluation and visualisation.

Conventions (one place, so every caller agrees):

* Camera frame: x right, y down, z forward. Depth is the z coordinate, not the ray length.
* Pixel coordinates: the centre of pixel (row v, column u) is at the continuous point (u, v);
  the image covers [-0.5, W - 0.5] x [-0.5, H - 0.5]. This is OpenCV's convention and the one
  `F.interpolate(..., align_corners=False)` and `F.grid_sample(..., align_corners=False)` use.
* Intrinsics K (3x3, or 4x4 with K in the top-left block as Monodepth2 stores them) map
  camera points to those pixel coordinates: u = fx * x / z + cx.
* Poses are 4x4 rigid transforms acting on column vectors; `T_a_to_b @ p_a = p_b`.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from visbricks.errors import VisbricksError

__all__ = [
    "backproject",
    "disp_to_depth",
    "pixel_to_grid",
    "pose_vec_to_mat",
    "project",
    "scale_intrinsics",
    "warp",
]

# Points closer than this to the camera plane are treated as behind it: dividing by a tiny z
# would send them to meaningless, huge pixel coordinates.
_MIN_Z = 1e-7


def _check_intrinsics(K: Tensor, name: str, batch: int | None = None) -> Tensor:
    """Return K as (B, 3, 3); accepts (3, 3), (B, 3, 3) and Monodepth2's (B, 4, 4)."""
    if K.dim() == 2:
        K = K.unsqueeze(0)
    if K.dim() != 3 or K.shape[-2:] not in ((3, 3), (4, 4)):
        raise VisbricksError(f"{name} must be (3, 3), (B, 3, 3) or (B, 4, 4); got {tuple(K.shape)}")
    K = K[:, :3, :3]
    if batch is not None and K.shape[0] not in (1, batch):
        raise VisbricksError(f"{name} has batch size {K.shape[0]} but the images have {batch}")
    return K


def _check_pose(T: Tensor, name: str) -> Tensor:
    """Return T as (B, 4, 4); accepts (B, 3, 4) and (B, 4, 4)."""
    if T.dim() != 3 or T.shape[-2:] not in ((3, 4), (4, 4)):
        raise VisbricksError(f"{name} must be (B, 3, 4) or (B, 4, 4); got {tuple(T.shape)}")
    return T


def scale_intrinsics(K: Tensor, sx: float, sy: float) -> Tensor:
    """Intrinsics for the image resized by (sx, sy) = (W'/W, H'/H).

    A resize maps the image extent [-0.5, W - 0.5] onto [-0.5, W' - 0.5], so a point at pixel
    coordinate u moves to (u + 0.5) * sx - 0.5: fx' = fx * sx and cx' = (cx + 0.5) * sx - 0.5
    (likewise for y). This is exactly what `F.interpolate(..., align_corners=False)` and
    `cv2.resize` do to pixel positions. Works on (3, 3), (4, 4) and batched K; returns a copy.
    """
    if K.shape[-2:] not in ((3, 3), (4, 4)):
        raise VisbricksError(f"K must end in (3, 3) or (4, 4); got {tuple(K.shape)}")
    if sx <= 0 or sy <= 0:
        raise VisbricksError(f"scale factors must be positive; got sx={sx}, sy={sy}")
    K = K.clone()
    K[..., 0, :3] *= sx
    K[..., 1, :3] *= sy
    # (cx + 0.5) * s - 0.5 == cx * s + 0.5 * (s - 1); cx was already multiplied above.
    K[..., 0, 2] += 0.5 * (sx - 1.0)
    K[..., 1, 2] += 0.5 * (sy - 1.0)
    return K


@lru_cache(maxsize=32)
def _pixel_coords(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Homogeneous pixel centres (3, H*W), row-major like `Tensor.view(B, C, H*W)`.

    Cached because every warp at a given size needs the same grid; callers must not modify it.
    """
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)])


def pixel_to_grid(pix: Tensor, height: int, width: int) -> Tensor:
    """Pixel coordinates (..., 2) as (u, v) to grid_sample's [-1, 1] with align_corners=False.

    -1 and +1 are the outer edges of the first and last pixel, so a pixel centre u maps to
    (2u + 1) / W - 1.
    """
    size = torch.tensor([width, height], device=pix.device, dtype=pix.dtype)
    return (2.0 * pix + 1.0) / size - 1.0


def backproject(depth: Tensor, inv_K: Tensor) -> Tensor:
    """Lift every pixel to a camera-frame 3D point: depth (B,1,H,W) -> points (B, 3, H*W)."""
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise VisbricksError(f"depth must be (B, 1, H, W); got {tuple(depth.shape)}")
    batch, _, height, width = depth.shape
    inv_K = _check_intrinsics(inv_K, "inv_K", batch).to(depth.dtype)
    rays = inv_K @ _pixel_coords(height, width, depth.device, depth.dtype)
    return rays * depth.reshape(batch, 1, height * width)


def _project_pixels(points: Tensor, K: Tensor, T: Tensor | None) -> tuple[Tensor, Tensor]:
    """Pixel coordinates (B, N, 2) and camera depth z (B, 1, N) of points seen by camera (K, T)."""
    if points.dim() != 3 or points.shape[1] not in (3, 4):
        raise VisbricksError(f"points must be (B, 3, N) or (B, 4, N); got {tuple(points.shape)}")
    points = points[:, :3]
    if T is not None:
        T = _check_pose(T, "T").to(points.dtype)
        points = T[:, :3, :3] @ points + T[:, :3, 3:]
    K = _check_intrinsics(K, "K", points.shape[0]).to(points.dtype)
    cam = K @ points
    z = cam[:, 2:3]
    # Clamping (not adding eps, as Monodepth2 does) keeps points behind the camera from
    # flipping sign and landing inside the image; they end up far outside instead.
    pix = cam[:, :2] / z.clamp(min=_MIN_Z)
    return pix.transpose(1, 2), z


def project(points: Tensor, K: Tensor, T: Tensor | None, height: int, width: int) -> Tensor:
    """Project points (B, 3|4, H*W) through pose T (B,4,4; None = identity) and intrinsics K.

    Returns sampling coordinates (B, H, W, 2) in [-1, 1] for
    `F.grid_sample(..., align_corners=False)`: entry [b, i, j] is where the point that came from
    target pixel (i, j) lands in the other image.
    """
    if points.shape[-1] != height * width:
        raise VisbricksError(
            f"points hold {points.shape[-1]} pixels but height*width is {height * width}"
        )
    pix, _ = _project_pixels(points, K, T)
    return pixel_to_grid(pix, height, width).reshape(points.shape[0], height, width, 2)


def _axis_angle_to_matrix(vec: Tensor) -> Tensor:
    """Rodrigues' formula for rotation vectors (B, 3) -> (B, 3, 3), smooth at zero angle."""
    theta2 = (vec * vec).sum(-1, keepdim=True)
    small = theta2 < 1e-8
    # Taylor series near zero: sin(t)/t and (1-cos t)/t^2 are finite there, but their direct
    # formulas give 0/0 (and NaN gradients), so evaluate those on a harmless dummy angle.
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    x, y, z = vec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).view(-1, 3, 3)
    eye = torch.eye(3, device=vec.device, dtype=vec.dtype).expand_as(skew)
    return eye + a.unsqueeze(-1) * skew + b.unsqueeze(-1) * (skew @ skew)


def pose_vec_to_mat(axisangle: Tensor, translation: Tensor, invert: bool = False) -> Tensor:
    """4x4 transforms from axis-angle (B,1,3) and translation (B,1,3), as Monodepth2's
    `transformation_from_parameters`: T = [R | t]; with invert=True, the inverse [R^T | -R^T t].

    The pose network predicts the motion between a frame pair in one temporal order; invert
    gives the transform for the opposite order without a second network output.
    """
    if axisangle.shape[-1] != 3 or translation.shape[-1] != 3:
        raise VisbricksError(
            "axisangle and translation must end in 3; got "
            f"{tuple(axisangle.shape)} and {tuple(translation.shape)}"
        )
    rot = _axis_angle_to_matrix(axisangle.reshape(-1, 3))
    t = translation.reshape(-1, 3, 1)
    if rot.shape[0] != t.shape[0]:
        raise VisbricksError(f"axisangle batch {rot.shape[0]} != translation batch {t.shape[0]}")
    if invert:
        rot = rot.transpose(1, 2)
        t = -rot @ t
    bottom = rot.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(rot.shape[0], 1, 4)
    return torch.cat([torch.cat([rot, t], dim=2), bottom], dim=1)


def disp_to_depth(disp: Tensor, min_depth: float, max_depth: float) -> tuple[Tensor, Tensor]:
    """Map a sigmoid output in [0, 1] to (disparity in [1/max, 1/min], depth in [min, max])."""
    if not 0 < min_depth < max_depth:
        raise VisbricksError(f"need 0 < min_depth < max_depth; got {min_depth}, {max_depth}")
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled


def warp(
    src_image: Tensor,
    depth: Tensor,
    K: Tensor,
    T_target_to_source: Tensor,
    inv_K: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Synthesise the target view from a source image: (warped (B,C,H,W), valid (B,1,H,W) bool).

    `depth` is the target camera's depth; each target pixel is lifted to 3D, moved into the
    source camera by `T_target_to_source` and sampled there (bilinear, border padding).
    `valid` is False where that point falls behind the source camera or outside its image,
    i.e. where the warped value is border padding rather than an observation.
    """
    if src_image.dim() != 4:
        raise VisbricksError(f"src_image must be (B, C, H, W); got {tuple(src_image.shape)}")
    if depth.dim() != 4 or depth.shape[1] != 1 or depth.shape[-2:] != src_image.shape[-2:]:
        raise VisbricksError(
            f"depth must be (B, 1, H, W) matching src_image {tuple(src_image.shape)}; "
            f"got {tuple(depth.shape)}"
        )
    batch, _, height, width = depth.shape
    if inv_K is None:
        inv_K = torch.linalg.inv(_check_intrinsics(K, "K", batch).to(depth.dtype))
    points = backproject(depth, inv_K)
    pix, z = _project_pixels(points, K, T_target_to_source)
    grid = pixel_to_grid(pix, height, width).reshape(batch, height, width, 2)
    # grid_sample's CPU backward reads out of bounds (a segfault, not an error) on NaN
    # coordinates, which a diverging depth or pose net produces. NaN becomes "outside the image"
    # (valid is False there, and the loss is NaN anyway from the depth itself, so the trainer's
    # NaN guard still reports it); with border padding nothing beyond +-1 is sampled, so the
    # clamp changes no value and no gradient.
    grid = torch.nan_to_num(grid, nan=2.0).clamp(-2.0, 2.0)
    warped = F.grid_sample(
        src_image.to(grid.dtype), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    inside = (grid.abs() <= 1.0).all(dim=-1).unsqueeze(1)
    valid = inside & (z > _MIN_Z).reshape(batch, 1, height, width)
    return warped, valid
