"""``visbricks data from-video``: a video of `data synth driving` frames comes back as the same
sequence (frame for frame, same calib, injected duplicates dropped) and trains to the same
abs_rel with the same seed; codec noise counts as static and camera motion does not; bad inputs
are one-line errors naming the file."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from visbricks.cli import main
from visbricks.data.from_video import (
    DEFAULT_FOV,
    STATIC_DIFF,
    frame_difference,
    intrinsics_matrix,
)
from visbricks.data.io import read_image
from visbricks.data.sequence import SequenceDataset, read_calib, read_split
from visbricks.data.synth.driving import write_driving
from visbricks.errors import DataError

FRAMES = 10  # synthetic frames: 8 targets, the fewest that give 6 train and 1 val target


def _write_video(path: Path, frames: list[np.ndarray], fourcc: str, fps: float = 10.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _frames(root: Path, sequence: str = "seq_00") -> list[np.ndarray]:
    return [read_image(p) for p in sorted((root / sequence / "images").glob("*.png"))]


def _near_duplicate(frame: np.ndarray, seed: int = 0) -> np.ndarray:
    """The frame with +-1 grey level of noise: a static camera's sensor noise, not motion."""
    noise = np.random.default_rng(seed).integers(-1, 2, frame.shape)
    return np.clip(frame.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def direct(tmp_path_factory) -> Path:
    """One synthetic street sequence (images, depth, calib.yaml with Monodepth2's normalised
    KITTI K): the direct sequence path."""
    return write_driving(
        tmp_path_factory.mktemp("direct") / "drive",
        sequences=1,
        frames=FRAMES,
        width=96,
        height=64,
        val_sequences=0,
        seed=2,
        workers=1,
    )


@pytest.fixture(scope="module")
def from_video(direct, tmp_path_factory) -> tuple[Path, Path, list[int], int, str]:
    """``visbricks data from-video`` on an FFV1 video of the direct frames with 4 frames
    injected: frame 0 repeated twice and frame 4 once bit for bit, frame 7 once with sensor
    noise. FFV1 is lossless (the decoded frames are the encoded ones bit for bit), so the frames
    must come back exactly: the comparison tolerance is 0. Returns the video, the output folder,
    the video index of each original frame, the video's frame count and what the command
    printed."""
    tmp = tmp_path_factory.mktemp("from-video")
    frames = _frames(direct)
    stream, source_index = [], []
    for k, frame in enumerate(frames):
        source_index.append(len(stream))
        stream.append(frame)
        if k == 0:
            stream += [frame, frame]
        elif k == 4:
            stream.append(frame)
        elif k == 7:
            stream.append(_near_duplicate(frame))
    # Named like the direct sequence, so the split files name the same sequence.
    video = _write_video(tmp / "seq_00.mkv", stream, "FFV1")
    out = tmp / "seq"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(
            [
                "data",
                "from-video",
                str(video),
                "--out",
                str(out),
                "--intrinsics",
                "0.58,1.92,0.5,0.5",
            ]
        )
    assert rc == 0, printed.getvalue()
    return video, out, source_index, len(stream), printed.getvalue()


def test_the_video_gives_the_same_frames_calib_and_splits(direct, from_video):
    video, out, source_index, n_stream, printed = from_video
    assert f"read {n_stream} frames of {video}" in printed
    assert "dropped 4 static or duplicate frames (3 exact duplicates)" in printed, printed
    assert f"sequence written to {out}" in printed

    # Frame for frame, the same count, bit for bit (lossless codec: tolerance 0).
    mine, theirs = _frames(out), _frames(direct)
    assert len(mine) == len(theirs) == FRAMES
    for k, (a, b) in enumerate(zip(mine, theirs)):
        assert a.shape == b.shape and np.array_equal(a, b), f"frame {k} differs"
    names = sorted(p.name for p in (out / "seq_00" / "images").iterdir())
    assert names == sorted(p.name for p in (direct / "seq_00" / "images").iterdir())
    # Which video frame each one came from: the injected copies are the gaps.
    lines = (out / "seq_00" / "frames.txt").read_text().splitlines()[1:]
    assert [tuple(map(int, line.split())) for line in lines] == list(enumerate(source_index))

    # The same calibration: `data synth driving` renders with these fractions of W and H.
    K, size = read_calib(out / "seq_00" / "calib.yaml")
    K_direct, size_direct = read_calib(direct / "seq_00" / "calib.yaml")
    assert size == size_direct == (64, 96)
    assert np.array_equal(K, K_direct), (K, K_direct)

    # Splits: targets 1..8, the last for val, the one before it in neither split.
    train = read_split(out / "splits" / "train.txt")
    val = read_split(out / "splits" / "val.txt")
    assert train == [("seq_00", t) for t in range(1, 7)] and val == [("seq_00", 8)]
    # And the sequence loader reads it as written (every target has its neighbours).
    ds = SequenceDataset(out, "splits/train.txt", img_size=(64, 96))
    assert len(ds) == 6 and not ds.skipped and ds.num_sequence_ends == 0


def _train(root: Path, project: Path, metric: str = "val/abs_rel") -> float:
    from visbricks.cli import run_training
    from visbricks.config import load_config

    cfg = load_config(
        "depth-driving",
        [
            f"data.root={root}",
            "data.synth=null",
            f"project={project}",
            "img_size={width: 96, height: 64}",
            "batch_size=2",
            "epochs=1",
            "train.max_batches=2",
            "train.time=null",
            "train.plots=false",
            "train.tensorboard=false",
            "workers=0",
            "deterministic=true",
            "seed=3",
        ],
    )
    # Whatever ran before in this process (here: a stray global seed) must not change the
    # weights: the depth model seeds its own initialisation from cfg.seed.
    torch.manual_seed(12345)
    _, metrics = run_training(cfg)
    return metrics[metric]


def test_training_on_the_video_sequence_matches_the_direct_sequence(direct, from_video, tmp_path):
    """Same seed, same steps: the from-video sequence and the direct one give the same abs_rel.
    The frames are bit-identical (lossless FFV1) and K is equal, so the two runs compute the same
    numbers in the same order: the tolerance is 0."""
    _, out, _, _, _ = from_video
    # Both read the splits from-video chose; val needs ground truth, which a video has not:
    # the rendered depth of those very frames stands in for a user's measured depth.
    direct_copy = tmp_path / "direct"
    shutil.copytree(direct, direct_copy)
    shutil.rmtree(direct_copy / "splits")
    shutil.copytree(out / "splits", direct_copy / "splits")
    video_copy = tmp_path / "video"
    shutil.copytree(out, video_copy)
    shutil.copytree(direct / "seq_00" / "depth", video_copy / "seq_00" / "depth")

    from_direct = _train(direct_copy, tmp_path / "runs-direct")
    from_clip = _train(video_copy, tmp_path / "runs-video")
    assert 0 < from_direct < 10
    assert from_clip == from_direct


def test_a_video_without_depth_trains_and_validates_on_the_photometric_loss(from_video, tmp_path):
    """A user's video has no ground-truth depth: validation reports the photometric loss and the
    best weights follow it, instead of refusing the val split."""
    _, out, _, _, _ = from_video
    loss = _train(out, tmp_path / "runs", metric="val/loss")
    assert 0 < loss < 1
    best = (tmp_path / "runs").rglob("best.yaml")
    assert "val/loss" in next(best).read_text()


def test_codec_noise_is_static_and_motion_is_not(direct, tmp_path, capsys):
    """Through the lossy mp4v codec (what predict writes, what phones give) duplicates are no
    longer bit-identical; their difference must still fall under the threshold, and every real
    step of the camera above it. --every and the default field of view on the way."""
    frames = _frames(direct)
    stream = [f for frame in frames for f in (frame, frame)]  # every frame twice
    video = _write_video(tmp_path / "clip.mp4", stream, "mp4v")
    decoded = []
    capture = cv2.VideoCapture(str(video))
    while (ok_frame := capture.read())[0]:
        decoded.append(cv2.cvtColor(ok_frame[1], cv2.COLOR_BGR2RGB))
    capture.release()
    copies = [frame_difference(decoded[2 * k], decoded[2 * k + 1]) for k in range(FRAMES)]
    steps = [frame_difference(decoded[2 * k + 1], decoded[2 * k + 2]) for k in range(FRAMES - 1)]
    assert 0 < max(copies) < STATIC_DIFF / 2 and min(steps) > 4 * STATIC_DIFF, (copies, steps)

    assert main(["data", "from-video", str(video), "--out", str(tmp_path / "all")]) == 0
    printed = capsys.readouterr().out
    assert f"dropped {FRAMES} static or duplicate frames" in printed
    assert f"default horizontal field of view {DEFAULT_FOV:g} deg" in printed
    K, _ = read_calib(tmp_path / "all" / "clip" / "calib.yaml")
    # KITTI's field of view: fx is Monodepth2's 0.58 W (to the rounding of the printed 81.5).
    assert K[0, 0] == pytest.approx(0.58 * 96, rel=2e-3) and K[0, 0] == K[1, 1]
    assert len(list((tmp_path / "all" / "clip" / "images").iterdir())) == FRAMES

    # --every 2 takes the first copy of each frame: nothing static is left.
    assert (
        main(
            [
                "data",
                "from-video",
                str(video),
                "--out",
                str(tmp_path / "every"),
                "--every",
                "2",
                "--fov",
                "90",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"{FRAMES} taken (--every 2)" in printed and "dropped 0 static" in printed
    K, _ = read_calib(tmp_path / "every" / "clip" / "calib.yaml")
    np.testing.assert_allclose(K, [[48, 0, 48], [0, 48, 32], [0, 0, 1]], atol=1e-9)


def test_intrinsics_from_a_field_of_view_and_from_fractions():
    K, source = intrinsics_matrix(640, 360, fov=60.0)
    assert K[0, 0] == K[1, 1] == pytest.approx(320 / np.tan(np.radians(30)))
    assert (K[0, 2], K[1, 2]) == (320, 180) and "60 deg" in source
    K, source = intrinsics_matrix(640, 192, intrinsics=(0.58, 1.92, 0.5, 0.5))
    assert K[0, 0] == pytest.approx(371.2) and K[1, 1] == pytest.approx(368.64)
    assert "fractions" in source
    with pytest.raises(DataError, match="not both"):
        intrinsics_matrix(640, 192, fov=60.0, intrinsics=(0.58, 1.92, 0.5, 0.5))


def _error(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_inputs_are_one_line_errors_naming_the_file(direct, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    assert str(missing) in _error(["data", "from-video", str(missing), "--out", "x"], capsys)

    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    err = _error(["data", "from-video", str(not_video), "--out", str(tmp_path / "a")], capsys)
    assert f"cannot read video {not_video}" in err

    still = tmp_path / "still.mp4"  # a parked camera: nothing moves
    _write_video(still, [_frames(direct)[0]] * 8, "mp4v")
    err = _error(["data", "from-video", str(still), "--out", str(tmp_path / "b")], capsys)
    assert str(still) in err and "1 frames left after dropping 7 static" in err
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.tmp-*"))

    clip = _write_video(tmp_path / "clip.mp4", _frames(direct), "mp4v")
    full = tmp_path / "full"
    (full / "old").mkdir(parents=True)
    err = _error(["data", "from-video", str(clip), "--out", str(full)], capsys)
    assert str(full) in err and "not empty" in err
    err = _error(["data", "from-video", str(clip), "--out", str(clip)], capsys)
    assert str(clip) in err
    err = _error(
        [
            "data",
            "from-video",
            str(clip),
            "--out",
            str(tmp_path / "c"),
            "--intrinsics",
            "55.7,122.9,48,32",
        ],
        capsys,
    )
    assert "fractions of the width and height" in err
    err = _error(
        ["data", "from-video", str(clip), "--out", str(tmp_path / "c"), "--fov", "180"], capsys
    )
    assert "--fov 180" in err
    # An empty folder is taken (a new folder the user made for it).
    (tmp_path / "empty").mkdir()
    assert main(["data", "from-video", str(clip), "--out", str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / "splits" / "train.txt").is_file()
