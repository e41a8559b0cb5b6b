"""Monocular image sequences with intrinsics (KITTI-like layout) for self-supervised depth.

Layout under a dataset root::

    <sequence>/images/000000.png ...   frames, named by their frame number
    <sequence>/calib.yaml              width, height, K (3x3) for the stored resolution
    <sequence>/depth/000000.npy        optional ground truth: metres, 0 = no value
    <sequence>/poses.txt               optional camera-to-world 3x4 per frame (12 numbers a line)
    splits/train.txt, val.txt          one "<sequence> <frame number>" per line

A sample is a target frame with its neighbours (``frame_ids``, 0 first) as a dict keyed like
Monodepth2's: ``("color", f, s)`` the frame at scale ``s`` (size / 2**s) in 0..1 for the loss,
``("color_aug", f, 0)`` the network input (colour-jittered in training, normalized),
``("K", s)`` / ``("inv_K", s)`` the intrinsics rescaled with the image, and optionally
``("depth_gt", 0)`` (1, H, W) at the stored resolution and ``("pose_gt", f)``, the 4x4 transform
from the target camera to frame f's camera. A target whose neighbours lie outside its sequence is
skipped, never padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..errors import DataError
from ..ops.geometry import scale_intrinsics
from .io import DecodeCache, is_image_file, read_image, safe_join, warn_skipped
from .normalize import normalize

# Mirrors the x axis: a horizontally flipped sequence is the mirror image of the scene, so its
# camera motion is the original conjugated by this reflection.
_MIRROR_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def read_split(path: str | Path) -> list[tuple[str, int]]:
    """``(sequence, frame number)`` pairs from a split file; blank lines and ``#`` comments skip."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    entries = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read split file {path}: {e}") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{line_no}: expected '<sequence> <frame number>', got {line!r}")
        entries.append((fields[0], int(fields[1])))
    if not entries:
        raise DataError(f"split file {path} lists no frames")
    return entries


def read_calib(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """``(K 3x3 float64, (height, width))`` from a sequence's ``calib.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"intrinsics file not found: {path}")
    try:
        calib = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(calib, dict) or not {"width", "height", "K"} <= set(calib):
        raise DataError(f"{path}: needs the keys width, height and K (3x3 for that resolution)")
    try:
        K = np.asarray(calib["K"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: K must be a 3x3 matrix of numbers, got {calib['K']!r}") from None
    width, height = calib["width"], calib["height"]
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(f"{path}: K must be a 3x3 matrix with positive focal lengths, got {K}")
    if not all(isinstance(v, int) and v > 0 for v in (width, height)):
        raise DataError(f"{path}: width and height must be positive integers")
    return K, (height, width)


def read_poses(path: str | Path) -> np.ndarray:
    """Camera-to-world poses (N, 4, 4) from ``poses.txt`` (a row-major 3x4 per line)."""
    path = Path(path)
    try:
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read poses {path}: {e}") from None
    if rows.shape[1] != 12 or not np.isfinite(rows).all():
        raise DataError(f"{path}: each line must hold 12 finite numbers (a 3x4 camera-to-world)")
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3] = rows.reshape(-1, 3, 4)
    return poses


@dataclass(frozen=True)
class ImageSequence:
    name: str
    folder: Path
    frames: dict[int, Path]  # frame number -> image file
    K: np.ndarray  # for the stored resolution
    size: tuple[int, int]  # stored (height, width)
    poses: np.ndarray | None  # (N, 4, 4) camera-to-world, indexed by frame number


def load_sequence(folder: Path, name: str, with_pose: bool = False) -> ImageSequence:
    images = folder / "images"
    if not images.is_dir():
        raise DataError(f"sequence {name!r}: no images folder at {images}")
    frames = {}
    for file in images.iterdir():
        if not is_image_file(file):
            continue
        if not file.stem.isdigit():
            raise DataError(f"{file}: frames must be named by their frame number (000123.png)")
        frames[int(file.stem)] = file
    K, size = read_calib(folder / "calib.yaml")
    poses = None
    if with_pose:
        poses = read_poses(folder / "poses.txt")
        if len(poses) <= max(frames, default=-1):
            raise DataError(
                f"{folder / 'poses.txt'}: {len(poses)} poses but frames up to {max(frames)}"
            )
    return ImageSequence(name, folder, frames, K, size, poses)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    # Antialiased bilinear with pixel-centre alignment: the resize scale_intrinsics assumes.
    return F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]


class SequenceDataset(Dataset):
    """Target frames of a split with their neighbours, at every scale the loss needs.

    Augmentation (give nonzero values for training only): with probability ``hflip`` every frame
    is mirrored (and K's principal point with it); with probability ``color_p`` one colour
    jitter (brightness/contrast/saturation ``color_jitter``, hue ``hue``) is drawn and applied to
    all frames alike, and only to ``color_aug``: the photometric loss compares the
    un-jittered ``color`` frames, so the jitter never shows up as reprojection error.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Path,
        img_size: tuple[int, int],
        frame_ids: Sequence[int] = (0, -1, 1),
        scales: int = 4,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        hflip: float = 0.0,
        color_jitter: float = 0.0,
        hue: float = 0.0,
        color_p: float = 0.0,
        with_depth: bool = False,
        with_pose: bool = False,
        strict: bool = False,
        cache: bool | int = False,
    ) -> None:
        self.root = Path(root)
        self.frame_ids = tuple(int(f) for f in frame_ids)
        if (
            not self.frame_ids
            or self.frame_ids[0] != 0
            or len(set(self.frame_ids)) != len(self.frame_ids)
        ):
            raise DataError(f"frame_ids must start with 0 and be distinct, got {list(frame_ids)}")
        height, width = img_size
        if height % 2 ** (scales - 1) or width % 2 ** (scales - 1):
            raise DataError(
                f"img_size {width}x{height} must be divisible by {2 ** (scales - 1)} "
                f"for {scales} scales"
            )
        self.img_size = (height, width)
        self.scales = scales
        self._sizes = [(height // 2**s, width // 2**s) for s in range(scales)]
        self._intrinsics_cache: dict[tuple[str, bool], dict] = {}
        self.mean, self.std = tuple(mean), tuple(std)
        self.hflip = hflip
        self.color_p = color_p
        self.jitter = (
            v2.ColorJitter(color_jitter, color_jitter, color_jitter, hue)
            if color_p > 0 and (color_jitter > 0 or hue > 0)
            else None
        )
        self.with_depth = with_depth
        self.with_pose = with_pose
        self._cache = DecodeCache(cache)  # (sequence, frame) → pyramid, up to a byte budget

        self.split_path = Path(split) if Path(split).is_absolute() else self.root / split
        self.sequences: dict[str, ImageSequence] = {}
        self._broken: dict[str, str] = {}
        self.samples: list[tuple[str, int]] = []
        self.skipped: list[tuple[str, str]] = []  # (split entry, reason) for bad entries
        self.num_sequence_ends = 0  # targets without all neighbours: skipped by design
        self._index(strict)

    def _index(self, strict: bool) -> None:
        """Keep the split's targets that have every neighbour; warn about (or, strict, refuse)
        entries whose sequence, frame or ground truth is missing."""
        for line, (name, index) in enumerate(read_split(self.split_path), start=1):
            entry = f"{self.split_path}:{line} ({name} {index})"
            try:
                seq = self._sequence(name)
                if index not in seq.frames:
                    raise DataError(f"no image for frame {index} in {seq.folder / 'images'}")
                if any(index + f not in seq.frames for f in self.frame_ids):
                    self.num_sequence_ends += 1
                    continue
                if self.with_depth and not self._depth_path(seq, index).is_file():
                    raise DataError(f"ground-truth depth {self._depth_path(seq, index)} is missing")
            except DataError as e:
                if strict:
                    raise DataError(f"{entry}: {e}") from None
                self.skipped.append((entry, str(e)))
                continue
            self.samples.append((name, index))
        warn_skipped(self.skipped, f"bad entr(ies) of {self.split_path}", stacklevel=3)
        if not self.samples:
            first = f"; first: {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""
            raise DataError(
                f"{self.split_path}: no usable target frame ({self.num_sequence_ends} at sequence "
                f"ends without all neighbours {list(self.frame_ids)}, {len(self.skipped)} bad"
                f"{first})"
            )

    def _sequence(self, name: str) -> ImageSequence:
        if name in self._broken:  # read once: every entry of a broken sequence gets its reason
            raise DataError(self._broken[name])
        if name not in self.sequences:
            try:
                folder = safe_join(self.root, name)
                if not folder.is_dir():
                    raise DataError(f"sequence folder not found: {folder}")
                self.sequences[name] = load_sequence(folder, name, self.with_pose)
            except DataError as e:
                self._broken[name] = str(e)
                raise
        return self.sequences[name]

    @staticmethod
    def _depth_path(seq: ImageSequence, index: int) -> Path:
        return seq.folder / "depth" / f"{seq.frames[index].stem}.npy"

    def __len__(self) -> int:
        return len(self.samples)

    def _pyramid(self, seq: ImageSequence, index: int) -> list[torch.Tensor]:
        """The frame at img_size / 2**s for every scale s, uint8 (3, h, w); cached if asked,
        so training re-reads nothing and resizes nothing after the first epoch."""
        key = (seq.name, index)
        return self._cache.get(key, lambda: self._load_pyramid(seq, index))

    def _load_pyramid(self, seq: ImageSequence, index: int) -> list[torch.Tensor]:
        file = seq.frames[index]
        pixels = read_image(file)
        if pixels.shape[:2] != seq.size:
            raise DataError(
                f"{file} is {pixels.shape[1]}x{pixels.shape[0]} but "
                f"{seq.folder / 'calib.yaml'} describes {seq.size[1]}x{seq.size[0]} images"
            )
        image = torch.from_numpy(pixels).permute(2, 0, 1).float()
        pyramid = []
        for size in self._sizes:
            image = _resize(image, size)  # each scale from the one above it
            pyramid.append(image.round().clamp(0, 255).to(torch.uint8))
        return pyramid

    def _intrinsics(self, seq: ImageSequence, flip: bool) -> dict:
        key = (seq.name, flip)
        if key not in self._intrinsics_cache:
            out = {}
            K = torch.from_numpy(seq.K).float()
            for s, (h, w) in enumerate(self._sizes):
                K_s = scale_intrinsics(K, w / seq.size[1], h / seq.size[0])
                if flip:
                    # Column u moves to w - 1 - u, so the principal point does too.
                    K_s[0, 2] = w - 1 - K_s[0, 2]
                out[("K", s)] = K_s
                out[("inv_K", s)] = torch.linalg.inv(K_s)
            self._intrinsics_cache[key] = out
        return {k: v.clone() for k, v in self._intrinsics_cache[key].items()}

    def __getitem__(self, index: int) -> dict:
        name, target = self.samples[index]
        seq = self.sequences[name]
        flip = self.hflip > 0 and torch.rand(()).item() < self.hflip
        sample: dict = {"index": index}
        full = []
        for f in self.frame_ids:
            for s, image in enumerate(self._pyramid(seq, target + f)):
                image = image.float() / 255
                sample[("color", f, s)] = image.flip(-1) if flip else image
            full.append(sample[("color", f, 0)])
        augmented = torch.stack(full)
        if self.jitter is not None and torch.rand(()).item() < self.color_p:
            # One call on the stacked frames draws one set of jitter parameters for all of them.
            augmented = self.jitter(augmented).clamp(0, 1)
        for f, image in zip(self.frame_ids, augmented):
            sample[("color_aug", f, 0)] = normalize(image, self.mean, self.std)
        sample.update(self._intrinsics(seq, flip))
        if self.with_depth:
            sample[("depth_gt", 0)] = self._depth(seq, target, flip)
        if self.with_pose:
            world_from_target = torch.from_numpy(seq.poses[target]).float()
            for f in self.frame_ids[1:]:
                world_from_source = torch.from_numpy(seq.poses[target + f]).float()
                T = torch.linalg.inv(world_from_source) @ world_from_target
                sample[("pose_gt", f)] = _MIRROR_X @ T @ _MIRROR_X if flip else T
        return sample

    def _depth(self, seq: ImageSequence, index: int, flip: bool) -> torch.Tensor:
        path = self._depth_path(seq, index)
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read ground-truth depth {path}: {e}") from None
        if depth.shape != seq.size:
            raise DataError(
                f"{path}: depth map is {depth.shape} but the images are {seq.size} (height, width)"
            )
        depth = torch.from_numpy(depth.astype(np.float32))[None]
        return depth.flip(-1) if flip else depth
