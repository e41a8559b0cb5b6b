"""Direct image alignment (``ops/direct_alignment.py``) on generated streets whose depth and
motion are known, and ``loss.pose_refine`` in the depth task."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from visbricks.config import load_config
from visbricks.data.sequence import SequenceDataset
from visbricks.data.synth.driving import write_driving
from visbricks.errors import ConfigError, VisbricksError
from visbricks.ops.direct_alignment import refine_pose
from visbricks.ops.geometry import pose_vec_to_mat
from visbricks.tasks import build_task

pytestmark = pytest.mark.cost(10)


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    return write_driving(
        tmp_path_factory.mktemp("align") / "drive",
        sequences=2,
        frames=8,
        width=192,
        height=64,
        val_sequences=1,
        seed=3,
    )


@pytest.fixture(scope="module")
def pairs(drive) -> dict:
    """Four val targets with their true depth, intrinsics and true motion to each neighbour."""
    data = SequenceDataset(drive, "splits/val.txt", (64, 192), with_depth=True, with_pose=True)
    samples = [data[i] for i in range(4)]

    def stack(key):
        return torch.stack([s[key] for s in samples])

    depth = stack(("depth_gt", 0)).reshape(4, 1, 64, 192).float()
    return {
        "target": stack(("color", 0, 0)),
        "depth": depth,
        "K": stack(("K", 0)),
        **{f: (stack(("color", f, 0)), stack(("pose_gt", f)).float()) for f in (-1, 1)},
    }


def _errors(T: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Largest rotation error (degrees) and translation error (share of the true length)."""
    dR = T[:, :3, :3] @ truth[:, :3, :3].transpose(1, 2)
    cos = ((dR.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    rotation = torch.rad2deg(torch.acos(cos)).max().item()
    t, true_t = T[:, :3, 3], truth[:, :3, 3]
    return rotation, ((t - true_t).norm(dim=-1) / true_t.norm(dim=-1)).max().item()


@pytest.mark.parametrize("f", [-1, 1])
def test_alignment_recovers_the_true_motion_from_a_wrong_start(pairs, f):
    source, truth = pairs[f]
    torch.manual_seed(0)
    # Off by ~0.3 degrees of rotation and ~10 % of the ~1.2 m step: the pose net's early error.
    wrong = pose_vec_to_mat(0.005 * torch.randn(4, 1, 3), 0.12 * torch.randn(4, 1, 3)) @ truth
    start = _errors(wrong, truth)
    refined = refine_pose(pairs["target"], source, pairs["depth"], pairs["K"], wrong, 10)
    rotation, translation = _errors(refined, truth)
    assert start[0] > 0.2 and start[1] > 0.05, start
    # The generated depth is the renderer's own, so what is left is its aliasing at 192x64.
    assert rotation < start[0] / 3 and rotation < 0.1, (start, rotation)
    assert translation < start[1] / 3 and translation < 0.05, (start, translation)


def test_the_aligned_translation_takes_the_scale_of_the_depth_it_is_given(pairs):
    # A pose net knows the scale only on average; the alignment takes each frame's depth scale.
    source, truth = pairs[1]
    half = truth.clone()
    half[:, :3, 3] *= 0.55  # a start near half the true step, for a depth at half its scale
    refined = refine_pose(pairs["target"], source, 0.5 * pairs["depth"], pairs["K"], half, 10)
    ratio = refined[:, :3, 3].norm(dim=-1) / truth[:, :3, 3].norm(dim=-1)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.5), atol=0.02, rtol=0)


def test_a_correct_start_stays_near_and_no_gradient_flows(pairs):
    source, truth = pairs[-1]
    depth = pairs["depth"].clone().requires_grad_(True)
    start = truth.clone().requires_grad_(True)
    refined = refine_pose(pairs["target"], source, depth, pairs["K"], start, 5)
    assert not refined.requires_grad
    # Within what the renderer's aliasing at 192x64 leaves (the start is the true motion).
    rotation, translation = _errors(refined, truth)
    assert rotation < 0.1 and translation < 0.05, (rotation, translation)
    # Zero steps: the start itself.
    torch.testing.assert_close(
        refine_pose(pairs["target"], source, pairs["depth"], pairs["K"], truth, 0), truth
    )


def test_bad_shapes_name_what_they_got(pairs):
    source, truth = pairs[1]
    with pytest.raises(VisbricksError, match=r"one \(B, C, H, W\) shape"):
        refine_pose(pairs["target"], source[:, :, :32], pairs["depth"], pairs["K"], truth)
    with pytest.raises(VisbricksError, match=r"depth must be \(B, 1, H, W\)"):
        refine_pose(pairs["target"], source, pairs["depth"][:, 0], pairs["K"], truth)


def _config(drive: Path, *extra: str):
    return load_config(
        "depth-driving",
        [
            f"data.root={drive}",
            "data.synth=null",
            "batch_size=2",
            "train.tensorboard=false",
            "data.cache=false",
            "model.fixed_scale_steps=null",
            *extra,
        ],
    )


def test_pose_refine_warps_with_the_aligned_motion_after_its_start_and_trains_the_pose_net(
    drive,
):
    from torch.utils.data import DataLoader

    task = build_task(_config(drive, "loss.pose_refine=3", "loss.pose_refine_after=1"))
    data = task.build_data()
    batch = next(iter(DataLoader(data.train, batch_size=2)))
    model = task.build_model(load_pretrained=False).train()
    assert int(model.trained_batches) == 0
    first = task.forward(model, batch)
    assert int(model.trained_batches) == 1 and not first["align"]
    assert "pose" not in task.loss(first, batch)  # batch 1 of "after 1": the plain loss
    outputs = task.forward(model, batch)
    assert outputs["align"]
    net = {f: outputs[("cam_T_cam", 0, f)] for f in (-1, 1)}
    terms = task.loss(outputs, batch)
    for f in (-1, 1):  # the loss warped with the aligned motion, not the pose net's
        assert not outputs[("cam_T_cam", 0, f)].requires_grad
        assert not torch.equal(outputs[("cam_T_cam", 0, f)], net[f].detach())
    assert terms["loss"].item() == pytest.approx(
        terms["photo"].item() + terms["smooth"].item() + 0.01 * terms["pose"].item(), rel=1e-5
    )
    terms["loss"].backward()
    # The pose net learns only from its disagreement with the alignment; the depth net from
    # the photometric loss.
    pose_grad = sum(p.grad.abs().sum() for p in model.pose_decoder.parameters())
    depth_grad = sum(p.grad.abs().sum() for p in model.depth_decoder.parameters())
    assert pose_grad > 0 and depth_grad > 0
    # The count is saved with the weights, so a resumed run aligns from its first batch.
    resumed = task.build_model(load_pretrained=False)
    resumed.load_state_dict(model.state_dict())
    assert int(resumed.trained_batches) == 2
    plain = build_task(_config(drive, "loss.pose_refine=0")).build_model(False)
    assert "trained_batches" not in plain.state_dict()
    assert math.isfinite(terms["pose"].item()) and terms["pose"].item() >= 0


def test_depth_task_trains_through_a_ddp_wrapper(drive):
    """Under torchrun the task gets DistributedDataParallel, which has only ``forward``: both
    networks run through it and the batch count is read from the wrapped model."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader

    task = build_task(_config(drive, "loss.pose_refine=2", "loss.pose_refine_after=1"))
    batch = next(iter(DataLoader(task.build_data().train, batch_size=2)))
    model = task.build_model(load_pretrained=False).train()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(model)
        assert not hasattr(wrapped, "predict_pose")
        aligned = [task.forward(wrapped, batch)["align"] for _ in range(2)]
        outputs = task.forward(wrapped, batch)
        task.loss(outputs, batch)["loss"].backward()
    finally:
        dist.destroy_process_group()
    assert aligned == [False, True] and int(model.trained_batches) == 3
    for net in (model.pose_encoder, model.depth_encoder):
        assert sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None) > 0


def test_pose_refine_needs_the_pin_kept(drive):
    with pytest.raises(ConfigError, match=r"loss.pose_refine needs .*fixed_scale_steps=200"):
        build_task(_config(drive, "loss.pose_refine=3", "model.fixed_scale_steps=200"))
    with pytest.raises(ConfigError, match=r"model.fixed_scale=False"):
        build_task(_config(drive, "loss.pose_refine=3", "model.fixed_scale=false"))
    with pytest.raises(ConfigError, match="pose_refine"):
        load_config("depth-driving", ["loss.pose_refine=-1"])
