"""``bench/depth_pose.py``: pose errors against a hand computation, and the ground-truth motion
patch end to end on tiny generated streets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import load_bench
from visbricks.data.synth.driving import write_driving

pytestmark = pytest.mark.cost(12)


dp = load_bench("depth_pose")


def _transform(yaw_deg: float, t: tuple[float, float, float]) -> np.ndarray:
    a = math.radians(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    T[:3, 3] = t
    return T


def test_motion_errors_match_a_hand_computation():
    gt = _transform(2.0, (0.0, 0.0, 1.0))
    # Half the length in depth units (the depth map's scale is 2), 3 degrees off in direction,
    # 1.5 degrees of yaw against 2: errors 1.0, 3 and 0.5 degrees.
    d = math.radians(3.0)
    pred = _transform(1.5, (0.5 * math.sin(d), 0.0, 0.5 * math.cos(d)))
    # A second pair 10 % too long.
    errors = dp.motion_errors(np.stack([pred, 1.1 * gt]), np.stack([gt, gt]), np.array([2.0, 1.0]))
    assert errors["length_ratio"][0] == pytest.approx(1.0)
    assert errors["direction_deg"][0] == pytest.approx(3.0)
    assert errors["rotation_deg"][0] == pytest.approx(0.5, abs=1e-6)
    assert errors["gt_rotation_deg"] == pytest.approx([2.0, 2.0])
    assert errors["length_ratio"][1] == pytest.approx(1.1)
    assert "2 pairs" in dp.summary(errors)


def _tiny_streets(tmp_path, name: str) -> list[str]:
    """Overrides that train depth-driving for one epoch on two 6-frame streets (one for val)."""
    root = write_driving(
        tmp_path / "drive", sequences=2, frames=6, width=128, height=64, val_sequences=1, seed=2
    )
    return [
        f"data.root={root}",
        "data.synth=null",
        "img_size={width: 128, height: 64}",
        "batch_size=2",
        "epochs=1",
        f"project={tmp_path / 'runs'}",
        f"name={name}",
        "train.tensorboard=false",
        "data.cache=false",
    ]


def test_training_with_the_ground_truth_motion_then_reading_the_pose_errors(tmp_path, capsys):
    from visbricks.tasks.depth import DepthTask

    overrides = _tiny_streets(tmp_path, "gt-motion")
    original = DepthTask.forward
    with pytest.raises(SystemExit) as done:
        dp.main(["train-with-gt-motion", "depth-driving", *overrides])
    assert done.value.code in (0, None)
    assert DepthTask.forward is original  # the patch is undone
    run = tmp_path / "runs" / "depth" / "gt-motion"
    assert (run / "weights" / "best.safetensors").is_file()
    capsys.readouterr()
    errors = dp.run_errors(str(run), [])
    # One val sequence of 6 frames: 4 targets with a frame on each side, 2 sources each.
    assert len(errors["length_ratio"]) == 8
    assert np.isfinite(errors["length_ratio"]).all() and (errors["gt_length"] > 0).all()
    dp.main(["errors", "--run", str(run)])
    assert "8 pairs" in capsys.readouterr().out


def test_lengths_from_distances_keep_directions_and_the_batch_level():
    import torch

    t = [torch.tensor([[0.0, 0.0, 0.2], [0.3, 0.0, 0.4]]), torch.tensor([[0.0, -0.1, 0.0]] * 2)]
    d = [torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0], [1.0]])]
    scaled, c = dp.lengths_from_distances(t, d, None)
    # Lengths 0.2 + 0.5 + 0.1 + 0.1 = 0.9 over distances 5: c = 0.18; each length = d * c.
    assert c.item() == pytest.approx(0.18)
    lengths = torch.cat([s.norm(dim=-1) for s in scaled])
    assert lengths.tolist() == pytest.approx([0.18, 0.36, 0.18, 0.18])
    for new, old in zip(scaled, t):  # directions unchanged
        cos = (new * old).sum(-1) / (new.norm(dim=-1) * old.norm(dim=-1))
        assert cos.tolist() == pytest.approx([1.0, 1.0])
    # A running level sets the value; the gradient is still the batch's.
    leaves = [x.clone().requires_grad_() for x in t]
    scaled, c = dp.lengths_from_distances(leaves, d, torch.tensor(0.5))
    assert scaled[0].norm(dim=-1).tolist() == pytest.approx([0.5, 1.0])
    sum(s.norm(dim=-1).sum() for s in scaled).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in leaves)


@pytest.mark.parametrize("flags", [["--running"], ["--exact-direction"], ["--release-after", "1"]])
def test_training_with_known_distances_restores_the_task(tmp_path, capsys, flags):
    from visbricks.models.heads.depth import DepthDecoder
    from visbricks.tasks.depth import DepthTask

    overrides = _tiny_streets(tmp_path, "known")
    original, original_pin = DepthTask.forward, DepthDecoder._pinned_mean
    with pytest.raises(SystemExit) as done:
        dp.main(["train-with-known-distance", *flags, "depth-driving", *overrides])
    assert done.value.code in (0, None)
    assert DepthTask.forward is original and DepthDecoder._pinned_mean is original_pin
    if "--release-after" in flags:  # 4 training samples, batch 2: step 2 trains released
        assert "pin released at step 1," in capsys.readouterr().out
    assert (tmp_path / "runs" / "depth" / "known" / "weights" / "best.safetensors").is_file()


def test_known_distance_modes_are_alternatives(capsys):
    with pytest.raises(SystemExit) as done:
        dp.main(["train-with-known-distance", "--running", "--release-after", "5", "depth-driving"])
    assert done.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
