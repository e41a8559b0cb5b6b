"""Direct image alignment: refine a camera motion by Gauss-Newton on the photometric error.

Given the target frame's depth, the motion that warps a source frame onto the target is the
minimiser of their pixel differences, the objective of direct visual odometry (DSO, LSD-SLAM)
and of Wang et al.'s DDVO ("Learning Depth from Monocular Videos using Direct Methods",
CVPR 2018), which trains the depth net with such a solver in place of a pose net. Here it
starts from the pose net's guess and runs a few Levenberg-Marquardt steps on every pixel at
once: the motion it returns agrees with the depth it was given, so its translation has the
depth's scale for that very frame pair, which a pose net that sees only the images cannot know.

Conventions are ``ops/geometry.py``'s. The motion update is applied on the left,
``T <- [R(w) | v] @ T``, so a target point p moves to ``R(w) (T p) + v``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from visbricks.errors import VisbricksError
from visbricks.ops.geometry import backproject, pixel_to_grid, pose_vec_to_mat

__all__ = ["refine_pose"]

# Huber threshold on a residual in 0..1 intensity: pixels whose depth is wrong (a car the depth
# net has not found yet), occlusions and the image border weigh 1 / |r| beyond it instead of
# pulling the motion with their square.
_HUBER = 0.05
# Levenberg-Marquardt damping relative to the normal matrix's diagonal (Marquardt's scaling:
# the translation and rotation columns differ by the scene depth in size).
_DAMPING = 1e-3


def _gradients(image: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences in pixel units (one-sided at the border): d/du and d/dv."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    return gx, gy


def _linearise(
    points: Tensor, target: Tensor, stacked: Tensor, K: Tensor, T: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Residuals (B, C, N), their Jacobian (B, C, N, 6) in (v, w) and the valid mask (B, 1, N).

    ``stacked`` is the source image with its u and v gradients on channels (B, 3C, H, W).
    """
    batch, channels = target.shape[:2]
    height, width = stacked.shape[-2:]
    P = T[:, :3, :3] @ points + T[:, :3, 3:]
    x, y, z = P.unbind(1)
    valid_z = z > 1e-3
    z = z.clamp(min=1e-3)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    u, v = fx * x / z + cx, fy * y / z + cy
    grid = pixel_to_grid(torch.stack([u, v], -1), height, width).unsqueeze(1)
    grid = torch.nan_to_num(grid, nan=2.0).clamp(-2.0, 2.0)
    sampled = F.grid_sample(
        stacked, grid, mode="bilinear", padding_mode="border", align_corners=False
    ).squeeze(2)
    warped, gx, gy = sampled.split(channels, 1)
    residual = warped - target.reshape(batch, channels, -1)
    valid = (valid_z & (grid.squeeze(1).abs() <= 1).all(-1)).unsqueeze(1)
    # d(u, v)/dP for the pinhole projection, times dP/d(v, w) = [I | -[P]x] (P + v + w x P).
    a, c = fx / z, -fx * x / (z * z)
    b, d = fy / z, -fy * y / (z * z)
    zero = torch.zeros_like(a)
    du = torch.stack([a, zero, c, c * y, a * z - c * x, -a * y], -1)
    dv = torch.stack([zero, b, d, -b * z + d * y, -d * x, b * x], -1)
    jacobian = gx.unsqueeze(-1) * du.unsqueeze(1) + gy.unsqueeze(-1) * dv.unsqueeze(1)
    return residual, jacobian, valid


def _huber_cost(residual: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample mean Huber cost over valid pixels (B,) and the IRLS weights (B, C, N)."""
    r = residual.abs()
    weight = torch.where(r <= _HUBER, torch.ones_like(r), _HUBER / r.clamp(min=1e-12))
    weight = weight * valid
    cost = torch.where(r <= _HUBER, 0.5 * r * r, _HUBER * (r - 0.5 * _HUBER)) * valid
    count = valid.sum((1, 2)).clamp(min=1) * residual.shape[1]
    return cost.sum((1, 2)) / count, weight


def refine_pose(
    target: Tensor,
    source: Tensor,
    depth: Tensor,
    K: Tensor,
    T_target_to_source: Tensor,
    iterations: int = 3,
    inv_K: Tensor | None = None,
) -> Tensor:
    """The motion (B, 4, 4) that best warps ``source`` onto ``target`` given the target's depth.

    ``target``, ``source`` (B, C, H, W) in 0..1, ``depth`` (B, 1, H, W), ``K`` (B, 3|4, 3|4) at
    that size, ``T_target_to_source`` (B, 4, 4) the start (the pose net's motion). Each of
    ``iterations`` Levenberg-Marquardt steps solves the 6x6 normal equations of the Huber
    photometric error over every pixel and keeps the step only for the samples whose cost it
    lowers, so the result is never worse than the start by that cost. No gradient flows: the
    result is a target for the pose net and a fixed motion for the depth net's loss.
    """
    if target.shape != source.shape or target.dim() != 4:
        raise VisbricksError(
            f"refine_pose needs target and source of one (B, C, H, W) shape; got "
            f"{tuple(target.shape)} and {tuple(source.shape)}"
        )
    if depth.shape != (target.shape[0], 1, *target.shape[-2:]):
        raise VisbricksError(
            f"depth must be (B, 1, H, W) like the images; got {tuple(depth.shape)}"
        )
    with torch.no_grad(), torch.autocast(target.device.type, enabled=False):
        # Intensity only, as direct odometry aligns it: a third of the Jacobian's cost.
        target, source = target.float().mean(1, keepdim=True), source.float().mean(1, keepdim=True)
        depth = depth.float()
        K = K[:, :3, :3].float()
        inv_K = torch.linalg.inv(K) if inv_K is None else inv_K[:, :3, :3].float()
        T = T_target_to_source.float().clone()
        points = backproject(depth, inv_K)
        gx, gy = _gradients(source)
        stacked = torch.cat([source, gx, gy], 1)
        eye = torch.eye(6, device=T.device).expand(T.shape[0], 6, 6)
        residual, jacobian, valid = _linearise(points, target, stacked, K, T)
        cost, weight = _huber_cost(residual, valid)
        for _ in range(iterations):
            wj = jacobian * weight.unsqueeze(-1)
            H = torch.einsum("bcni,bcnj->bij", wj, jacobian)
            g = torch.einsum("bcni,bcn->bi", wj, residual)
            H = H + _DAMPING * torch.diag_embed(H.diagonal(dim1=1, dim2=2)) + 1e-9 * eye
            # solve_ex: a sample whose system cannot be solved keeps its motion (no exception
            # in the middle of a training run).
            step, info = torch.linalg.solve_ex(H, -g.unsqueeze(-1))
            step = step.squeeze(-1)
            candidate = pose_vec_to_mat(step[:, None, 3:], step[:, None, :3]) @ T
            new = _linearise(points, target, stacked, K, candidate)
            new_cost, new_weight = _huber_cost(new[0], new[2])
            better = (info == 0) & torch.isfinite(new_cost) & (new_cost < cost)
            T = torch.where(better[:, None, None], candidate, T)
            keep = better[:, None, None]
            residual = torch.where(keep, new[0], residual)
            jacobian = torch.where(keep.unsqueeze(-1), new[1], jacobian)
            weight = torch.where(keep, new_weight, weight)
            cost = torch.where(better, new_cost, cost)
        return T
