"""Video in and out: RGB order, frame count and rate survive a round trip; bad files are named."""

from __future__ import annotations

import numpy as np
import pytest

from visbricks.deploy.video import VideoWriter, is_video_file, read_frames, video_fps
from visbricks.errors import DataError


def _colours(n: int) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., i % 3] = 200  # red, green, blue, red, ...
        frames.append(frame)
    return frames


def test_round_trip_keeps_count_rate_size_and_rgb_order(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=12) as writer:
        for frame in _colours(7):
            writer.write(frame)
    assert writer.frames == 7 and is_video_file(path)
    assert video_fps(path) == pytest.approx(12)
    frames = list(read_frames(path))
    assert len(frames) == 7
    for i, frame in enumerate(frames):
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        means = frame.reshape(-1, 3).mean(0)
        assert means.argmax() == i % 3, means  # lossy codec, but the channel order is exact
        assert means.max() == pytest.approx(200, abs=12)


def test_a_frame_of_another_size_and_unreadable_files_are_named(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=5) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
        with pytest.raises(DataError, match="frame 1 is 32x32, the video is 64x48"):
            writer.write(np.zeros((32, 32, 3), np.uint8))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="broken.mp4"):
        list(read_frames(bad))
    with pytest.raises(DataError, match="absent.mp4"):
        list(read_frames(tmp_path / "absent.mp4"))


def test_predict_on_a_missing_video_names_it(tmp_path):
    from types import SimpleNamespace

    import torch

    from visbricks.deploy.predict import predict

    run = SimpleNamespace(model=torch.nn.Identity())
    with pytest.raises(DataError, match="video not found: .*absent.mp4"):
        predict(run, tmp_path / "absent.mp4", tmp_path / "out")
    assert not (tmp_path / "out" / "absent.mp4").exists()
