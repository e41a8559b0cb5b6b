"""Monocular sequence loader: sample keys and scales, intrinsics, augmentation, skipped ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from visbricks.data.io import read_image, write_image
from visbricks.data.sequence import SequenceDataset, read_split
from visbricks.data.synth.driving import write_driving
from visbricks.errors import DataError
from visbricks.ops.geometry import warp
from visbricks.ops.photometric import photometric_error

W, H, FRAMES = 128, 48, 6


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    return write_driving(
        tmp_path_factory.mktemp("seq") / "drive",
        sequences=2,
        frames=FRAMES,
        width=W,
        height=H,
        val_sequences=1,
        seed=3,
    )


def _dataset(root: Path, split: str = "splits/train.txt", **kwargs) -> SequenceDataset:
    kwargs.setdefault("img_size", (H, W))
    return SequenceDataset(root, split, **kwargs)


def _expected_K(K: np.ndarray, w_from: int, h_from: int, w_to: int, h_to: int) -> np.ndarray:
    """Resizing maps the pixel edge -0.5 to -0.5 and W - 0.5 to W' - 0.5."""
    sx, sy = w_to / w_from, h_to / h_from
    return np.array(
        [
            [K[0, 0] * sx, 0, (K[0, 2] + 0.5) * sx - 0.5],
            [0, K[1, 1] * sy, (K[1, 2] + 0.5) * sy - 0.5],
            [0, 0, 1],
        ]
    )


def test_sample_has_every_frame_and_scale_with_rescaled_intrinsics(drive):
    size = (32, 96)  # not the stored 48x128, and a different aspect ratio
    ds = _dataset(
        drive,
        img_size=size,
        with_depth=True,
        with_pose=True,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
    )
    sample = ds[0]
    K = np.array(yaml.safe_load((drive / "seq_00" / "calib.yaml").read_text())["K"])
    for s in range(4):
        h, w = size[0] // 2**s, size[1] // 2**s
        for f in (0, -1, 1):
            image = sample[("color", f, s)]
            assert image.shape == (3, h, w) and image.dtype == torch.float32
            assert 0 <= image.min() and image.max() <= 1
        np.testing.assert_allclose(sample[("K", s)].numpy(), _expected_K(K, W, H, w, h), atol=1e-4)
        np.testing.assert_allclose(
            (sample[("inv_K", s)] @ sample[("K", s)]).numpy(), np.eye(3), atol=1e-5
        )
    # Without augmentation the network input is the loss's frame, normalized.
    mean, std = torch.tensor([0.5, 0.4, 0.3])[:, None, None], torch.tensor([0.2, 0.25, 0.3])
    for f in (0, -1, 1):
        torch.testing.assert_close(
            sample[("color_aug", f, 0)], (sample[("color", f, 0)] - mean) / std[:, None, None]
        )
    assert not any(key[0] == "color_aug" and key[2] > 0 for key in sample if isinstance(key, tuple))
    # Ground truth stays at the stored resolution; evaluation resizes the prediction to it.
    depth = np.load(drive / "seq_00" / "depth" / "000001.npy")
    np.testing.assert_array_equal(sample[("depth_gt", 0)][0].numpy(), depth)
    # The full-size frame at the stored size is exactly the file's pixels.
    same = _dataset(drive)[0]
    stored = read_image(drive / "seq_00" / "images" / "000001.png")
    np.testing.assert_allclose(
        same[("color", 0, 0)].permute(1, 2, 0).numpy(), stored / 255.0, atol=1e-6
    )


def _constant_sequence(root: Path, frames: int = 4) -> Path:
    """One sequence whose frames are all the same image: any per-frame difference after
    augmentation can only come from per-frame augmentation parameters."""
    rng = np.random.default_rng(0)
    image = rng.integers(30, 220, (16, 32, 3), dtype=np.uint8)
    for k in range(frames):
        write_image(root / "cam" / "images" / f"{k:06d}.png", image)
    calib = {"width": 32, "height": 16, "K": [[20.0, 0, 16.0], [0, 20.0, 8.0], [0, 0, 1]]}
    (root / "cam" / "calib.yaml").write_text(yaml.safe_dump(calib))
    (root / "split.txt").write_text("".join(f"cam {k}\n" for k in range(frames)))
    return root


def test_colour_jitter_is_shared_by_all_frames_and_spares_the_loss_frames(tmp_path):
    root = _constant_sequence(tmp_path)
    plain = _dataset(root, "split.txt", img_size=(16, 32))
    jittered = _dataset(
        root, "split.txt", img_size=(16, 32), color_jitter=0.4, hue=0.1, color_p=1.0
    )
    torch.manual_seed(0)
    for index in range(len(jittered)):
        a, b = plain[index], jittered[index]
        for f in (0, -1, 1):
            torch.testing.assert_close(b[("color", f, 0)], a[("color", f, 0)])
            torch.testing.assert_close(b[("color_aug", f, 0)], b[("color_aug", 0, 0)])
        assert (b[("color_aug", 0, 0)] - a[("color_aug", 0, 0)]).abs().mean() > 1e-3


def test_hflip_mirrors_every_frame_depth_pose_and_principal_point(drive):
    plain = _dataset(drive, with_depth=True, with_pose=True)[1]
    flipped = _dataset(drive, with_depth=True, with_pose=True, hflip=1.0)[1]
    for f in (0, -1, 1):
        for s in range(4):
            torch.testing.assert_close(flipped[("color", f, s)], plain[("color", f, s)].flip(-1))
        torch.testing.assert_close(
            flipped[("color_aug", f, 0)], plain[("color_aug", f, 0)].flip(-1)
        )
    torch.testing.assert_close(flipped[("depth_gt", 0)], plain[("depth_gt", 0)].flip(-1))
    for s in range(4):
        w = W // 2**s
        K, K_flip = plain[("K", s)], flipped[("K", s)]
        assert K_flip[0, 2] == pytest.approx(w - 1 - K[0, 2])
        torch.testing.assert_close(K_flip[:, :2], K[:, :2])
        torch.testing.assert_close(K_flip[1:], K[1:])
    # A sideways move and a turn change sign in the mirror image; forward motion does not.
    T, T_flip = plain[("pose_gt", 1)], flipped[("pose_gt", 1)]
    torch.testing.assert_close(T_flip[2, 3], T[2, 3])
    torch.testing.assert_close(T_flip[0, 3], -T[0, 3])
    torch.testing.assert_close(T_flip[0, 2], -T[0, 2])


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("size", [(H, W), (32, 96)])
def test_ground_truth_depth_and_pose_warp_the_neighbours_onto_the_target(drive, flip, size):
    """Loader, intrinsics rescaling, flip and pose conventions agree with the shared geometry:
    the scene's true depth and motion reproduce the target from either neighbour."""
    ds = _dataset(drive, img_size=size, with_depth=True, with_pose=True, hflip=float(flip))
    sample = ds[2]
    target = sample[("color", 0, 0)][None]
    depth = F.interpolate(sample[("depth_gt", 0)][None], size=size, mode="nearest")
    for f in (-1, 1):
        source = sample[("color", f, 0)][None]
        warped, valid = warp(source, depth, sample[("K", 0)][None], sample[("pose_gt", f)][None])
        error = photometric_error(warped, target)[valid].mean()
        identity = photometric_error(source, target)[valid].mean()
        wrong, valid_w = warp(
            source, depth * 0.7, sample[("K", 0)][None], sample[("pose_gt", f)][None]
        )
        assert valid.float().mean() > 0.6
        assert error < 0.06, (f, error)
        assert identity > 3 * error
        assert photometric_error(wrong, target)[valid_w].mean() > 1.5 * error


def test_targets_at_sequence_ends_are_skipped_not_padded(drive, tmp_path):
    split = tmp_path / "all.txt"
    split.write_text("".join(f"seq_00 {k}\n" for k in range(FRAMES)))
    ds = _dataset(drive, split)
    assert [ds.samples[i][1] for i in range(len(ds))] == list(range(1, FRAMES - 1))
    assert ds.num_sequence_ends == 2 and not ds.skipped
    wide = _dataset(drive, split, frame_ids=(0, -2, 2))
    assert [s[1] for s in wide.samples] == list(range(2, FRAMES - 2))
    assert set(wide[0]) >= {("color", -2, 0), ("color", 2, 3)}


def test_bad_entries_are_warned_and_skipped_or_errors_naming_the_file(drive, tmp_path):
    split = tmp_path / "bad.txt"
    split.write_text("seq_00 2\nnowhere 3\nseq_00 99\n")
    with pytest.warns(UserWarning, match="skipped 2 bad"):
        ds = _dataset(drive, split)
    assert ds.samples == [("seq_00", 2)]
    with pytest.raises(DataError, match=r"bad.txt:2 \(nowhere 3\).*sequence folder not found"):
        _dataset(drive, split, strict=True)

    split.write_text("seq_00 two\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected '<sequence> <frame number>'"):
        read_split(split)
    split.write_text("../seq_00 2\n")
    with pytest.raises(DataError, match="escapes the dataset root"):
        _dataset(drive / "seq_01", split, strict=True)


def test_broken_sequences_name_the_file(tmp_path):
    root = _constant_sequence(tmp_path)
    (root / "cam" / "calib.yaml").write_text(yaml.safe_dump({"width": 32, "K": [[1, 0]]}))
    with pytest.raises(DataError, match=r"calib.yaml: needs the keys width, height and K"):
        _dataset(root, "split.txt", img_size=(16, 32), strict=True)

    calib = {"width": 40, "height": 16, "K": [[20.0, 0, 16.0], [0, 20.0, 8.0], [0, 0, 1]]}
    (root / "cam" / "calib.yaml").write_text(yaml.safe_dump(calib))
    ds = _dataset(root, "split.txt", img_size=(16, 32))
    with pytest.raises(DataError, match=r"000001.png is 32x16 but .*calib.yaml describes 40x16"):
        ds[0]

    write_image(root / "cam" / "images" / "last.png", np.zeros((16, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"last.png: frames must be named by their frame number"):
        _dataset(root, "split.txt", img_size=(16, 32), strict=True)
    # Without strict every entry is skipped, and the error still says why.
    with (
        pytest.warns(UserWarning, match="skipped 4 bad"),
        pytest.raises(
            DataError, match=r"no usable target frame .* 4 bad; first: .*last.png: frames must be"
        ),
    ):
        _dataset(root, "split.txt", img_size=(16, 32))


def test_img_size_must_suit_the_scales(drive):
    with pytest.raises(DataError, match="divisible by 8 for 4 scales"):
        _dataset(drive, img_size=(44, 128))
