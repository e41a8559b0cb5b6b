"""``visbricks data synth driving``: a ray-cast textured street with exact depth and poses.

The scene feeds self-supervised monocular depth (Monodepth2-style), which learns only by warping
neighbouring frames into the target frame, so three properties matter more than realism:

* every surface is textured, and the texture is a function of the *world* point (not the pixel),
  so a point looks the same from every frame; lighting is Lambertian with a fixed sun, so nothing
  depends on the viewpoint;
* depth and poses are exact: each pixel is one analytic ray intersection, ``depth`` is the
  camera-frame z of that hit (not the ray length) and the stored pose is the one rendered from;
* every pixel has a finite depth: a static backdrop cylinder (skyline and clouds, at least
  ``BACKDROP_MARGIN`` metres from every camera position) replaces the sky.

Frames: camera x right, y down, z forward (OpenCV/KITTI). The world frame has the same axes with
y pointing down (gravity); the road is the plane y = 0 and the camera rides at y = -1.5 m. Pixel
(row i, column j) is the ray through image point (u, v) = (j, i), the OpenCV/KITTI convention that
Monodepth2's back-projection uses.

The street follows x = f(z) with f' a sum of slow sinusoids: smooth turns, 5-40 deg of heading
change over 200 m, radius >= 35 m by construction (typically > 70 m). Its cross-section, by the
lateral offset ``lat`` from the centre line: two 3.2 m driving lanes, a 2.2 m parking lane each
side (road half width 5.4 m), a 0.15 m kerb, then raised sidewalk. The camera drives in the right
lane. Buildings and parked cars are yaw-oriented boxes aligned with the road where they stand; a
second row of taller buildings shows through gaps and above roofs.

Written layout (KITTI-like, read by the monocular-sequence loader)::

    <out>/<sequence>/images/000000.png    RGB frames
    <out>/<sequence>/depth/000000.npy     float32 metres, camera-frame z (0 would mean no value)
    <out>/<sequence>/calib.yaml           width, height, K (3x3, for the stored resolution)
    <out>/<sequence>/poses.txt            camera-to-world 3x4 per frame, row-major, 12 numbers
    <out>/splits/train.txt, val.txt       "<sequence> <frame index>", indices 1..N-2 only
    <out>/.complete                       generation parameters; written last

Intrinsics follow Monodepth2's normalised KITTI K: fx = 0.58 W, fy = 1.92 H, cx = 0.5 W,
cy = 0.5 H. At 320x96 (Monodepth2's 640x192 aspect) pixels are square and the field of view is
about 81 x 29 deg; other aspect ratios get non-square pixels with the same field of view.

Depth spans ~2 m (parked cars beside the camera) to a few hundred metres (the backdrop, which
must enclose the whole street); evaluate with the usual cap (e.g. 80 m). Speed: ~40 ms of one
CPU core per 320x96 frame (numpy), ~75 s for the default 8 x 200 frames, which take ~250 MB on
disk (~150 kB a frame, mostly the float32 depth).
"""

from __future__ import annotations

import numbers
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ...errors import ConfigError
from ..io import write_image
from .publish import generate_once

CAMERA_HEIGHT = 1.5  # metres above the road
LANE_WIDTH = 3.2
ROAD_HALF_WIDTH = 5.4  # driving lane + 2.2 m parking lane
KERB_HEIGHT = 0.15
SIDEWALK_WIDTH = 3.0
CAMERA_LATERAL = LANE_WIDTH / 2  # centre of the right driving lane
BACKDROP_MARGIN = 90.0  # the backdrop is at least this far from every camera position
NEAR = 0.05  # hits closer than this (in camera z) are ignored

# Monodepth2's normalised KITTI intrinsics (fractions of width / height).
FX_NORM, FY_NORM, CX_NORM, CY_NORM = 0.58, 1.92, 0.5, 0.5

# Surface codes returned by cast_rays (usable as semantic labels).
BACKDROP, ROAD, KERB, SIDEWALK, BUILDING, CAR = range(6)
SURFACE_NAMES = ("backdrop", "road", "kerb", "sidewalk", "building", "car")

_SUN = np.array([-0.45, -0.75, 0.48]) / np.linalg.norm([-0.45, -0.75, 0.48])  # towards the sun
_AMBIENT, _DIFFUSE = 0.5, 0.5
_FORMAT_VERSION = 1

_BOX_EDGES = np.array(
    [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
)
_CORNER_SIGNS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)


# --------------------------------------------------------------------------- procedural texture
def _hash01(ix: np.ndarray, iy: np.ndarray, salt: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) per integer lattice point: an integer hash, so no state and no tables."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint32) * np.uint32(0x8DA6B343)
        h ^= iy.astype(np.uint32) * np.uint32(0xD8163841)
        h ^= np.asarray(salt, dtype=np.int64).astype(np.uint32) * np.uint32(0x9E3779B1)
        h ^= h >> np.uint32(15)
        h *= np.uint32(0x2C1B3C6D)
        h ^= h >> np.uint32(12)
        h *= np.uint32(0x297A2D39)
        h ^= h >> np.uint32(15)
    return h * (1.0 / 2**32)


def _value_noise(x: np.ndarray, y: np.ndarray, salt: np.ndarray | int) -> np.ndarray:
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = x0.astype(np.int64), y0.astype(np.int64)
    a, b = _hash01(ix, iy, salt), _hash01(ix + 1, iy, salt)
    c, d = _hash01(ix, iy + 1, salt), _hash01(ix + 1, iy + 1, salt)
    return a + (b - a) * sx + (c - a) * sy + (a - b - c + d) * sx * sy


def _detail(wavelength: float | np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Weight of a feature of ``wavelength`` metres seen with pixel ``footprint`` metres.

    1 when the feature spans >= 4 pixels, 0 at <= 2 (Nyquist). Fading detail out instead of
    sampling it keeps far texture from aliasing, and aliasing differs between frames, which would
    break the photometric consistency the depth loss relies on. Like a mip-map, this depends
    mildly on distance; it changes little between neighbouring frames.
    """
    return np.clip(wavelength / footprint * 0.5 - 1.0, 0.0, 1.0)


def _fbm(x, y, footprint, wavelength: float, octaves: int, salt) -> np.ndarray:
    """Fractal value noise in [0, 1] with mean 0.5; octaves finer than the pixel fade to 0.5."""
    total = np.zeros_like(x)
    salt = np.broadcast_to(np.asarray(salt, dtype=np.int64), x.shape)
    norm = sum(0.6**k for k in range(octaves))
    for k in range(octaves):
        lam = wavelength / 2**k
        w = _detail(lam, footprint)
        # Only pixels close enough to resolve this octave pay for it; far ones keep its mean.
        on = np.flatnonzero(w)
        if len(on) == 0:
            break  # finer octaves are even more sub-pixel
        if len(on) == len(w):
            total += 0.6**k * w * (_value_noise(x / lam, y / lam, salt + 7919 * k) - 0.5)
        else:
            n = _value_noise(x[on] / lam, y[on] / lam, salt[on] + 7919 * k)
            total[on] += 0.6**k * w[on] * (n - 0.5)
    return 0.5 + total / norm


def _line(dist: np.ndarray, half_width, footprint: np.ndarray) -> np.ndarray:
    """Pixel coverage of the band |dist| < ``half_width`` (a line, a window), box-filtered."""
    return _below(np.abs(dist), half_width, footprint)


def _below(value: np.ndarray, limit, footprint: np.ndarray) -> np.ndarray:
    """Pixel coverage of the region ``value < limit`` with an edge one ``footprint`` wide."""
    return np.clip((limit - value) / footprint + 0.5, 0.0, 1.0)


def _grid_lines(x: np.ndarray, period, half_width: float, footprint: np.ndarray) -> np.ndarray:
    """Coverage of lines every ``period`` metres; too-fine grids fade to their average cover."""
    dist = (np.mod(x / period + 0.5, 1.0) - 0.5) * period
    mean = 2 * half_width / period
    return mean + _detail(period, footprint) * (_line(dist, half_width, footprint) - mean)


def _cells(u: np.ndarray, v: np.ndarray, cw, ch, stagger: bool = False):
    """Cell indices and in-cell offsets (metres from the cell centre) of a (staggered) grid."""
    row = np.floor(v / ch)
    u = u + (0.5 * cw * np.mod(row, 2) if stagger else 0.0)
    col = np.floor(u / cw)
    return col, row, u - (col + 0.5) * cw, v - (row + 0.5) * ch


# --------------------------------------------------------------------------- road and scene
@dataclass(frozen=True)
class Road:
    """Centre line x = f(z); f' = sum_i a_i sin(2 pi z / L_i + p_i), f(0) = 0."""

    amplitude: np.ndarray
    wavelength: np.ndarray
    phase: np.ndarray
    z_table: np.ndarray  # arc-length table: s(z_table), for along-road texture coordinates
    s_table: np.ndarray

    def _args(self, z: np.ndarray) -> np.ndarray:
        return 2 * np.pi * np.multiply.outer(z, 1 / self.wavelength) + self.phase

    def slope(self, z: np.ndarray) -> np.ndarray:
        return (self.amplitude * np.sin(self._args(z))).sum(-1)

    def offset(self, z: np.ndarray) -> np.ndarray:
        k = self.amplitude * self.wavelength / (2 * np.pi)
        return (k * (np.cos(self.phase) - np.cos(self._args(z)))).sum(-1)

    def lateral(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Signed offset from the centre line, positive to the right when driving towards +z.

        Measured across the road at the point's own z ((x - f) cos(heading)); not the exact
        distance to the curve, but a fixed function of the world point, which is what the
        kerb geometry and the road texture need.
        """
        arg = self._args(z)
        k = self.amplitude * self.wavelength / (2 * np.pi)
        offset = (k * (np.cos(self.phase) - np.cos(arg))).sum(-1)
        slope = (self.amplitude * np.sin(arg)).sum(-1)
        return (x - offset) / np.sqrt(1 + slope**2)

    def arc_length(self, z: np.ndarray) -> np.ndarray:
        return np.interp(z, self.z_table, self.s_table)

    def z_at(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s, self.s_table, self.z_table)

    def frame_at(self, s: np.ndarray):
        """Centre-line points (x, z), headings and right-pointing normals at arc lengths ``s``."""
        z = self.z_at(np.asarray(s, float))
        heading = np.arctan(self.slope(z))
        normal = np.stack([np.cos(heading), -np.sin(heading)], -1)
        return np.stack([self.offset(z), z], -1), heading, normal


@dataclass(frozen=True)
class Boxes:
    """Yaw-oriented boxes (rotation about the vertical y axis) with their material parameters."""

    centre: np.ndarray  # (M, 3) world
    yaw: np.ndarray  # (M,) rotation about y; local z is along the road, local x across it
    half: np.ndarray  # (M, 3) half sizes along local x, y, z
    kind: np.ndarray  # (M,) BUILDING or CAR
    colour: np.ndarray  # (M, 3) wall / body colour
    trim: np.ndarray  # (M, 3) ground-floor / window-frame colour
    block: np.ndarray  # (M, 2) wall block width, height (bricks, stones, panels)
    mortar: np.ndarray  # (M,) mortar line contrast (0 = plaster)
    floor: np.ndarray  # (M, 2) ground-floor height, upper floor height
    window: np.ndarray  # (M, 4) spacing, width fraction, height fraction, phase
    salt: np.ndarray  # (M,) per-box noise salt so no two facades share a texture

    def corners(self) -> np.ndarray:
        """(M, 8, 3) world corners."""
        local = _CORNER_SIGNS[None] * self.half[:, None, :]
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = c * local[..., 0] + s * local[..., 2]
        z = -s * local[..., 0] + c * local[..., 2]
        return np.stack([x, local[..., 1], z], -1) + self.centre[:, None, :]


@dataclass(frozen=True)
class DrivingScene:
    """One street: geometry, materials and the camera trajectory (``poses``, camera-to-world)."""

    seed: int
    road: Road
    boxes: Boxes
    backdrop_centre: np.ndarray  # (x, z) of the vertical backdrop cylinder
    backdrop_radius: float
    poses: np.ndarray  # (N, 4, 4) camera-to-world
    salt: int  # world-texture salt


def intrinsics(width: int, height: int) -> np.ndarray:
    """K (3x3 float64) for a ``width`` x ``height`` image: Monodepth2's normalised KITTI K."""
    return np.array(
        [[FX_NORM * width, 0, CX_NORM * width], [0, FY_NORM * height, CY_NORM * height], [0, 0, 1]],
        dtype=np.float64,
    )


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def camera_pose(
    x: float, z: float, yaw: float, pitch: float = 0.0, roll: float = 0.0
) -> np.ndarray:
    """4x4 camera-to-world pose at ground position (x, z), CAMERA_HEIGHT up, heading ``yaw``.

    ``yaw`` turns the optical axis from +z towards +x; ``pitch`` > 0 tilts it down.
    """
    pose = np.eye(4)
    pose[:3, :3] = _rot_y(yaw) @ _rot_x(-pitch) @ _rot_z(roll)
    pose[:3, 3] = (x, -CAMERA_HEIGHT, z)
    return pose


def _make_road(rng: np.random.Generator, s_max: float) -> Road:
    n = 3
    wavelength = rng.uniform(100.0, 300.0, n)
    amplitude = rng.uniform(0.05, 0.15, n) * rng.choice([-1.0, 1.0], n)
    phase = rng.uniform(0, 2 * np.pi, n)
    empty = np.zeros(1)
    road = Road(amplitude, wavelength, phase, empty, empty)
    # s(z) >= z, so a table up to z = s_max reaches arc length s_max; the margins let texture
    # lookups on far ground (up to the backdrop) stay inside the table.
    z = np.arange(-s_max - 300.0, 2 * s_max + 300.0, 0.25)
    ds = np.sqrt(1 + road.slope(z) ** 2)
    s = np.concatenate([[0.0], np.cumsum(0.5 * (ds[1:] + ds[:-1]) * np.diff(z))])
    s -= np.interp(0.0, z, s)
    return Road(amplitude, wavelength, phase, z, s)


def _trajectory(rng: np.random.Generator, road: Road, frames: int) -> np.ndarray:
    k = np.arange(frames)
    base = rng.uniform(0.7, 1.3)
    speed = base * (1 + 0.15 * np.sin(2 * np.pi * k / rng.uniform(40, 120) + rng.uniform(0, 7)))
    s = np.concatenate([[0.0], np.cumsum(speed[:-1])])
    z = road.z_at(s)

    def lane_x(zz):  # x of the point CAMERA_LATERAL right of the centre line (lateral() inverse)
        return road.offset(zz) + CAMERA_LATERAL * np.sqrt(1 + road.slope(zz) ** 2)

    eps = 1e-3
    yaw = np.arctan((lane_x(z + eps) - lane_x(z - eps)) / (2 * eps))  # along the lane
    jitter = []
    for amp in (np.deg2rad(0.3), np.deg2rad(0.2)):  # pitch, roll: slow sums of two sinusoids
        periods, phases = rng.uniform(15, 60, 2), rng.uniform(0, 2 * np.pi, 2)
        jitter.append(amp * (np.sin(2 * np.pi * k[:, None] / periods + phases) * (0.6, 0.4)).sum(1))
    return np.stack(
        [camera_pose(x, zz, a, p, r) for x, zz, a, p, r in zip(lane_x(z), z, yaw, *jitter)]
    )


_WALL_COLOURS = np.array(
    [
        [0.62, 0.30, 0.22],  # red brick
        [0.52, 0.34, 0.26],  # brown brick
        [0.80, 0.74, 0.60],  # sandstone
        [0.86, 0.84, 0.80],  # white plaster
        [0.55, 0.56, 0.58],  # concrete
        [0.70, 0.58, 0.42],  # ochre
        [0.48, 0.55, 0.62],  # blue-grey panels
        [0.78, 0.66, 0.62],  # pink plaster
    ]
)
_CAR_COLOURS = np.array(
    [
        [0.80, 0.10, 0.10],
        [0.10, 0.25, 0.65],
        [0.90, 0.90, 0.88],
        [0.15, 0.15, 0.16],
        [0.55, 0.57, 0.60],
        [0.85, 0.70, 0.10],
        [0.15, 0.45, 0.25],
        [0.35, 0.20, 0.45],
    ]
)


def _building_material(rng: np.random.Generator) -> dict:
    colour = _WALL_COLOURS[rng.integers(len(_WALL_COLOURS))] * rng.uniform(0.85, 1.1, 3)
    if rng.random() < 0.5:  # bricks: mostly below the pixel size, they show as fine grain
        block = (rng.uniform(0.22, 0.3), rng.uniform(0.08, 0.12))
    else:  # stone blocks or large concrete panels
        block = (rng.uniform(0.6, 2.0), rng.uniform(0.4, 1.2))
    return dict(
        colour=np.clip(colour, 0, 1),
        trim=_WALL_COLOURS[rng.integers(len(_WALL_COLOURS))] * 0.6,
        block=block,
        mortar=rng.uniform(0.15, 0.35) if rng.random() < 0.8 else 0.0,
        floor=(rng.uniform(3.6, 4.6), rng.uniform(2.9, 3.6)),
        window=(
            rng.uniform(2.2, 3.8),
            rng.uniform(0.35, 0.6),
            rng.uniform(0.4, 0.62),
            rng.random(),
        ),
    )


def _car_material(rng: np.random.Generator) -> dict:
    colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] * rng.uniform(0.85, 1.1)
    unused = dict(trim=np.zeros(3), block=(1.0, 1.0), mortar=0.0, floor=(0.0, 0.0), window=(0,) * 4)
    return dict(colour=np.clip(colour, 0, 1), **unused)


def _place_boxes(rng: np.random.Generator, road: Road, s_lo: float, s_hi: float) -> Boxes:
    """Buildings (two rows) and parked cars on both sides of the road between arc lengths."""
    rows: list[dict] = []

    def add(s, side, lat, size, kind, material):
        """A box of ``size`` (across, along, height) whose near face is ``lat`` m from the centre
        line and whose middle is at arc length ``s``."""
        across, along, height = size
        (px, pz), heading, (nx, nz) = (a[0] for a in road.frame_at(np.array([s])))
        lat = side * (lat + across / 2)
        centre = (px + lat * nx, -height / 2, pz + lat * nz)
        half = (across / 2, height / 2, along / 2)
        salt = rng.integers(0, 2**31)
        rows.append(dict(centre=centre, yaw=heading, half=half, kind=kind, salt=salt, **material))

    kerb = ROAD_HALF_WIDTH
    for side in (-1.0, 1.0):
        # Front row: facades a sidewalk's width behind the kerb, mostly touching, some alleys.
        s = s_lo
        while s < s_hi:
            along = rng.uniform(6.0, 15.0)
            height = rng.uniform(5.0, 12.0) if rng.random() < 0.5 else rng.uniform(12.0, 24.0)
            front = kerb + SIDEWALK_WIDTH + rng.uniform(0.0, 2.5)
            size = (rng.uniform(8.0, 14.0), along, height)
            add(s + along / 2, side, front, size, BUILDING, _building_material(rng))
            s += along + (rng.uniform(3.0, 8.0) if rng.random() < 0.2 else rng.uniform(0, 0.5))
        # Back row: taller blocks, seen through the alleys and above the front row.
        s = s_lo + rng.uniform(0, 10)
        while s < s_hi:
            along = rng.uniform(14.0, 30.0)
            front = kerb + SIDEWALK_WIDTH + rng.uniform(20.0, 35.0)
            size = (rng.uniform(10.0, 20.0), along, rng.uniform(18.0, 45.0))
            add(s + along / 2, side, front, size, BUILDING, _building_material(rng))
            s += along + rng.uniform(2.0, 15.0)
        # Parked cars in the parking lane, in runs with empty stretches between them.
        s = s_lo + rng.uniform(0, 5)
        while s < s_hi:
            along, across = rng.uniform(3.8, 4.8), rng.uniform(1.7, 1.9)
            inner = kerb - 0.25 - across - rng.uniform(0, 0.2)
            size = (across, along, rng.uniform(1.4, 1.6))
            add(s + along / 2, side, inner, size, CAR, _car_material(rng))
            s += along + (rng.uniform(0.8, 2.5) if rng.random() < 0.75 else rng.uniform(8, 30))

    def column(key, dtype=float):
        return np.array([r[key] for r in rows], dtype=dtype)

    return Boxes(
        centre=column("centre"),
        yaw=column("yaw"),
        half=column("half"),
        kind=column("kind", np.int64),
        colour=column("colour"),
        trim=column("trim"),
        block=column("block"),
        mortar=column("mortar"),
        floor=column("floor"),
        window=column("window"),
        salt=column("salt", np.int64),
    )


def make_scene(seed: int, frames: int = 200) -> DrivingScene:
    """A street and a ``frames``-long camera drive along it; deterministic for ``seed``."""
    # Separate streams, so a longer drive down the same seed's street only adds to it.
    streams = np.random.SeedSequence([seed, 0xD21E]).spawn(4)
    road_rng, drive_rng, box_rng, texture_rng = (np.random.default_rng(s) for s in streams)
    road = _make_road(road_rng, s_max=1.5 * frames + 200.0)
    poses = _trajectory(drive_rng, road, frames)
    s_last = float(road.arc_length(poses[-1, 2, 3]))
    boxes = _place_boxes(box_rng, road, s_lo=-30.0, s_hi=s_last + 130.0)
    cams = poses[:, [0, 2], 3]
    centre = 0.5 * (cams.min(0) + cams.max(0))
    corners = boxes.corners()[..., [0, 2]].reshape(-1, 2)
    radius = max(
        np.linalg.norm(cams - centre, axis=1).max() + BACKDROP_MARGIN,
        np.linalg.norm(corners - centre, axis=1).max() + 5.0,
    )
    return DrivingScene(
        seed=seed,
        road=road,
        boxes=boxes,
        backdrop_centre=centre,
        backdrop_radius=float(radius),
        poses=poses,
        salt=int(texture_rng.integers(0, 2**31)),
    )


# --------------------------------------------------------------------------- ray casting
@dataclass
class RayHits:
    """Nearest hit per pixel. ``depth`` is camera-frame z in metres."""

    depth: np.ndarray  # (H, W) float64
    surface: np.ndarray  # (H, W) uint8 surface code (BACKDROP, ROAD, ...)
    box: np.ndarray  # (H, W) int64 index into scene.boxes, -1 elsewhere
    points: np.ndarray  # (H, W, 3) world hit points
    directions: np.ndarray  # (H, W, 3) world ray directions with camera-z component 1


def _as_pose(pose) -> np.ndarray:
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape not in ((3, 4), (4, 4)) or not np.isfinite(pose).all():
        raise ValueError(
            f"pose must be a finite 3x4 or 4x4 camera-to-world matrix, got {pose.shape}"
        )
    return pose[:3]


def _cast_ground(scene: DrivingScene, origin, dirs, best, surface) -> None:
    """Road (y = 0), raised sidewalk (y = -KERB_HEIGHT beyond |lat| = ROAD_HALF_WIDTH), kerb face.

    The ground is a two-level height field, so a ray first crossing the sidewalk level over the
    sidewalk hits its top; otherwise, reaching the road level over the road, it hits the road;
    otherwise it crossed |lat| = ROAD_HALF_WIDTH in between: the kerb face, found by bisection
    on that short segment (to ~1e-6 m).
    """
    road = scene.road
    down = dirs[..., 1] > 1e-12
    d = dirs[down]
    t_top = (-KERB_HEIGHT - origin[1]) / d[:, 1]
    t_road = -origin[1] / d[:, 1]

    def beyond_kerb(t):
        p = origin + t[:, None] * d
        return np.abs(road.lateral(p[:, 0], p[:, 2])) >= ROAD_HALF_WIDTH

    on_top = beyond_kerb(t_top)
    t = np.where(on_top, t_top, t_road)
    kind = np.where(on_top, SIDEWALK, ROAD)
    kerb = ~on_top & beyond_kerb(t_road)
    if kerb.any():
        lo, hi = t_top[kerb], t_road[kerb]
        dk = d[kerb]
        for _ in range(24):  # the interval is <= 0.15 m tall; 24 halvings reach ~1e-6 m
            mid = 0.5 * (lo + hi)
            p = origin + mid[:, None] * dk
            out = np.abs(road.lateral(p[:, 0], p[:, 2])) >= ROAD_HALF_WIDTH
            hi, lo = np.where(out, mid, hi), np.where(out, lo, mid)
        t[kerb] = hi
        kind[kerb] = KERB
    closer = t < best[down]
    idx = np.flatnonzero(down)[closer]
    best.flat[idx] = t[closer]
    surface.flat[idx] = kind[closer]


def _box_rects(scene: DrivingScene, pose: np.ndarray, K: np.ndarray, width: int, height: int):
    """(box index, i0, i1, j0, j1) for every box on screen: rows i0:i1 and columns j0:j1 hold
    all pixels whose rays can hit it.

    The box is clipped to the near plane first (corners in front plus edge/plane crossings), so
    boxes beside and behind the camera get a correct conservative rectangle.
    """
    rot, origin = pose[:, :3], pose[:, 3]
    cam = (scene.boxes.corners() - origin) @ rot  # world -> camera: R^T (p - o)
    a, b = cam[:, _BOX_EDGES[:, 0]], cam[:, _BOX_EDGES[:, 1]]
    za, zb = a[..., 2:], b[..., 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = a + (NEAR - za) / (zb - za) * (b - a)
    crosses = ((za - NEAR) * (zb - NEAR) < 0)[..., 0]
    valid = np.concatenate([cam[..., 2] >= NEAR, crosses], 1)
    pts = np.where(valid[..., None], np.concatenate([cam, crossing], 1), (0.0, 0.0, 1.0))
    z = pts[..., 2]
    u = K[0, 0] * pts[..., 0] / z + K[0, 1] * pts[..., 1] / z + K[0, 2]
    v = K[1, 1] * pts[..., 1] / z + K[1, 2]
    u0 = np.floor(np.where(valid, u, np.inf).min(1))
    u1 = np.ceil(np.where(valid, u, -np.inf).max(1))
    v0 = np.floor(np.where(valid, v, np.inf).min(1))
    v1 = np.ceil(np.where(valid, v, -np.inf).max(1))
    seen = valid.any(1) & (u1 >= 0) & (u0 <= width - 1) & (v1 >= 0) & (v0 <= height - 1)
    i0, i1 = np.maximum(v0, 0), np.minimum(v1, height - 1) + 1
    j0, j1 = np.maximum(u0, 0), np.minimum(u1, width - 1) + 1
    return [(m, int(i0[m]), int(i1[m]), int(j0[m]), int(j1[m])) for m in np.flatnonzero(seen)]


def _cast_boxes(scene, pose, K, dirs, best, surface, box_id) -> None:
    """Slab test of each visible box against the pixels of its screen rectangle only."""
    boxes = scene.boxes
    origin = pose[:, 3]
    height, width = best.shape
    for m, i0, i1, j0, j1 in _box_rects(scene, pose, K, width, height):
        c, s = np.cos(boxes.yaw[m]), np.sin(boxes.yaw[m])
        rel = origin - boxes.centre[m]
        o = (c * rel[0] - s * rel[2], rel[1], s * rel[0] + c * rel[2])
        d = dirs[i0:i1, j0:j1]
        dl = (c * d[..., 0] - s * d[..., 2], d[..., 1], s * d[..., 0] + c * d[..., 2])
        t_near = np.full(d.shape[:2], -np.inf)
        t_far = np.full(d.shape[:2], np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis in range(3):
                inv = 1.0 / dl[axis]
                t1 = (-boxes.half[m, axis] - o[axis]) * inv
                t2 = (boxes.half[m, axis] - o[axis]) * inv
                t_near = np.maximum(t_near, np.minimum(t1, t2))
                t_far = np.minimum(t_far, np.maximum(t1, t2))
        view = best[i0:i1, j0:j1]
        hit = (t_near <= t_far) & (t_near > NEAR) & (t_near < view)
        view[hit] = t_near[hit]
        surface[i0:i1, j0:j1][hit] = boxes.kind[m]
        box_id[i0:i1, j0:j1][hit] = m


def cast_rays(scene: DrivingScene, pose, K, width: int, height: int) -> RayHits:
    """Nearest intersection of every pixel's ray with the scene, seen from ``pose``."""
    pose = _as_pose(pose)
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3x3, got {K.shape}")
    origin = pose[:, 3]
    if origin[1] > -KERB_HEIGHT - 0.05:
        raise ValueError(
            f"camera must be above the sidewalk (y < -0.2 m, y down), got y={origin[1]}"
        )
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    y_cam = (v - K[1, 2]) / K[1, 1]
    x_cam = (u - K[0, 2] - K[0, 1] * y_cam) / K[0, 0]
    dirs = np.stack([x_cam, y_cam, np.ones_like(x_cam)], -1) @ pose[:, :3].T

    # Backdrop: the ray starts inside the vertical cylinder, so the positive root always exists.
    rel = origin[[0, 2]] - scene.backdrop_centre
    dxz = dirs[..., [0, 2]]
    a = (dxz**2).sum(-1)
    b = 2 * dxz @ rel
    c = rel @ rel - scene.backdrop_radius**2
    best = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
    surface = np.full((height, width), BACKDROP, dtype=np.uint8)
    box_id = np.full((height, width), -1, dtype=np.int64)

    _cast_ground(scene, origin, dirs, best, surface)
    _cast_boxes(scene, pose, K, dirs, best, surface, box_id)
    points = origin + best[..., None] * dirs
    return RayHits(best, surface, box_id, points, dirs)


# --------------------------------------------------------------------------- shading
def _lambert(normals: np.ndarray) -> np.ndarray:
    return _AMBIENT + _DIFFUSE * np.clip(normals @ _SUN, 0.0, None)


def _shade_ground(scene, p, kind, fp, road_paint: bool = True) -> np.ndarray:
    road = scene.road
    x, z = p[:, 0], p[:, 2]
    s, lat = road.arc_length(z), road.lateral(x, z)
    salt = scene.salt
    out = np.empty((len(p), 3))

    r = kind == ROAD
    if r.any():
        fr, sr, lr = fp[r], s[r], lat[r]
        grain = _fbm(x[r], z[r], fr, 1.0, 6, salt + 1)
        patches = _fbm(x[r], z[r], fr, 12.0, 3, salt + 2)
        grey = 0.30 + 0.5 * (grain - 0.5) + 0.2 * (patches - 0.5)
        dash = _line(np.mod(sr, 9.0) - 4.5, 1.5, fr)  # 3 m dashes every 9 m
        paint = _line(lr, 0.07, fr) * dash
        paint = np.maximum(paint, _line(np.abs(lr) - LANE_WIDTH, 0.06, fr))
        bay = _line(np.mod(sr + 3.0, 6.0) - 3.0, 0.06, fr) * (np.abs(lr) > LANE_WIDTH)
        paint = np.maximum(paint, bay * 0.8) * (0.75 + 0.25 * grain) * road_paint
        asphalt = grey[:, None] * np.array([1.0, 0.98, 0.95])
        out[r] = asphalt + paint[:, None] * (np.array([0.88, 0.87, 0.80]) - asphalt)

    w = kind == SIDEWALK
    if w.any():
        fw, sw, lw = fp[w], s[w], lat[w]
        col, row, du, dv = _cells(sw, lw, 0.6, 0.6)
        tile = 1 + 0.2 * (_hash01(col.astype(np.int64), row.astype(np.int64), salt + 3) - 0.5)
        tile = 1 + _detail(0.6, fw) * (tile - 1)
        grout = np.maximum(_line(np.abs(du) - 0.3, 0.02, fw), _line(np.abs(dv) - 0.3, 0.02, fw))
        grout = 0.04 / 0.6 * 2 + _detail(0.6, fw) * (grout - 0.04 / 0.6 * 2)
        stain = _fbm(x[w], z[w], fw, 3.0, 5, salt + 4)
        grey = 0.62 * tile * (1 - 0.4 * grout) * (0.8 + 0.4 * stain)
        out[w] = grey[:, None] * np.array([1.0, 0.97, 0.9])

    k = kind == KERB
    if k.any():
        grey = 0.72 * (0.8 + 0.4 * _fbm(s[k], p[k, 1], fp[k], 0.8, 4, salt + 5))
        out[k] = grey[:, None]
    return out


def _car_colour(b: Boxes, m, u, h, fp) -> np.ndarray:
    top = 2 * b.half[m, 1]
    # Dirt as both a gain and an offset, so black and white cars carry texture too.
    dirt = _fbm(u, h, fp, 0.5, 4, b.salt[m])
    body = b.colour[m] * (0.75 + 0.5 * dirt)[:, None] + 0.12 * (dirt - 0.5)[:, None]
    reflection = _fbm(u, h * 3, fp, 0.8, 4, b.salt[m] + 1)
    glass = np.array([0.10, 0.12, 0.16]) + 0.45 * reflection[:, None] * np.array([0.7, 0.8, 1.0])
    colour = body + _line(h - 0.8 * top, 0.14 * top, fp)[:, None] * (glass - body)
    tyre = _below(h, 0.3, fp)  # dark band: wheels and the shadow under the car
    colour = colour + tyre[:, None] * (np.array([0.06, 0.06, 0.07]) - colour)
    trim = _line(h - 0.55 * top, 0.03, fp)  # chrome line along the body
    return colour + 0.4 * trim[:, None] * (0.9 - colour)


def _building_colour(b: Boxes, m, u, h, roof, fp) -> np.ndarray:
    """Facade colour at face coordinates ``u`` (along) and ``h`` (height; across on roofs)."""
    salt = b.salt[m]
    # Wall: staggered blocks (bricks, stones or panels) with mortar and per-block tint.
    bw, bh = b.block[m, 0], b.block[m, 1]
    col, row, du, dv = _cells(u, h, bw, bh, stagger=True)
    resolved = _detail(bh, fp)
    tint = 1 + 0.25 * resolved * (_hash01(col.astype(np.int64), row.astype(np.int64), salt) - 0.5)
    mortar = np.maximum(
        _line(np.abs(du) - bw / 2, 0.012, fp), _line(np.abs(dv) - bh / 2, 0.012, fp)
    )
    mortar_mean = 2 * 0.012 / bh
    mortar = mortar_mean + resolved * (mortar - mortar_mean)
    grime = _fbm(u, h, fp, 4.0, 3, salt + 1) * 0.6 + _fbm(u, h, fp, 0.5, 3, salt + 4) * 0.4
    gain = tint * (1 - b.mortar[m] * mortar) * (0.6 + 0.8 * grime)
    wall = b.colour[m] * gain[:, None]
    # Windows: a grid of floors above a taller ground floor (shop windows), a parapet on top.
    ground_h, floor_h = b.floor[m, 0], b.floor[m, 1]
    spacing, wfrac, hfrac, phase = b.window[m].T
    upper = h > ground_h
    cell_h = np.where(upper, floor_h, ground_h)
    dv = (np.where(upper, np.mod(h - ground_h, floor_h) / floor_h, h / ground_h) - 0.55) * cell_h
    du = (np.mod(u / spacing + phase, 1.0) - 0.5) * spacing
    half_u, half_v = wfrac * spacing / 2, np.where(upper, hfrac, 0.6) * cell_h / 2
    facade = (h < 2 * b.half[m, 1] - 1.0) & ~roof
    window = _line(du, half_u, fp) * _line(dv, half_v, fp) * facade
    frame = _line(du, half_u + 0.12, fp) * _line(dv, half_v + 0.12, fp) * facade
    cell = np.floor(u / spacing + phase) * 131 + np.floor((h - ground_h) / floor_h)
    lit = _hash01(cell.astype(np.int64), np.zeros(len(m), np.int64), salt + 2)
    reflection = _fbm(u, h * 2, fp, 1.0, 4, salt + 3)
    glass = np.array([0.10, 0.13, 0.18]) + (0.3 * lit + 0.35 * reflection)[:, None] * np.array(
        [0.75, 0.85, 1.0]
    )
    shopfront = 0.35 * _below(h, ground_h, fp) * ~roof
    wall = wall + shopfront[:, None] * (b.trim[m] - wall)
    wall = wall + frame[:, None] * (np.clip(b.trim[m] * 1.3, 0, 1) - wall)
    wall = wall + window[:, None] * (glass - wall)
    # Darker near the ground: a crude ambient occlusion (view-independent).
    return wall * (0.8 + 0.2 * np.clip(h / 1.5, 0, 1))[:, None]


def _shade_box_faces(scene: DrivingScene, hits: RayHits, sel: np.ndarray, pixel, unit):
    """Colour and world normal of the box faces hit at pixels ``sel`` (flat indices)."""
    b = scene.boxes
    m = hits.box.flat[sel]
    points = hits.points.reshape(-1, 3)[sel]
    p = points - b.centre[m]
    c, s = np.cos(b.yaw[m]), np.sin(b.yaw[m])
    local = np.stack([c * p[:, 0] - s * p[:, 2], p[:, 1], s * p[:, 0] + c * p[:, 2]], -1)
    # The face hit is the one the point lies on: the axis where |local| / half is largest (1).
    axis = np.argmax(np.abs(local) / b.half[m], axis=1)
    rows = np.arange(len(m))
    nl = np.zeros_like(local)
    nl[rows, axis] = np.sign(local[rows, axis])
    normals = np.stack([c * nl[:, 0] + s * nl[:, 2], nl[:, 1], -s * nl[:, 0] + c * nl[:, 2]], -1)
    # Face coordinates: u runs horizontally along the face (offset per face so the four walls
    # differ), h is height above the ground; roofs use the two horizontal local axes.
    roof = axis == 1
    u = np.where(axis == 0, local[:, 2], local[:, 0]) + 500.0 * (axis == 2) * nl[rows, 2]
    h = np.where(roof, local[:, 2], -points[:, 1])
    fp = _footprint(pixel, unit, normals)
    colour = np.empty((len(m), 3))
    car = b.kind[m] == CAR
    if car.any():
        colour[car] = _car_colour(b, m[car], u[car], h[car], fp[car])
    if (~car).any():
        bld = ~car
        colour[bld] = _building_colour(b, m[bld], u[bld], h[bld], roof[bld], fp[bld])
    return colour, normals


def _shade_backdrop(scene: DrivingScene, p: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Distant skyline under a cloudy sky, painted on the backdrop cylinder (unlit)."""
    rel = p[:, [0, 2]] - scene.backdrop_centre
    arc = np.arctan2(rel[:, 0], rel[:, 1]) * scene.backdrop_radius  # metres along the cylinder
    h = -p[:, 1]
    salt, zero = scene.salt, np.zeros(len(p), np.int64)
    # Skyline: blocks of towers in two overlapping rhythms, so it never looks periodic.
    tower = 15 + 55 * _hash01(np.floor(arc / 23).astype(np.int64), zero, salt)
    tower2 = 10 + 35 * _hash01(np.floor(arc / 37 + 0.4).astype(np.int64), zero + 1, salt)
    in_city = _below(h, np.maximum(tower, tower2), fp)
    windows = _grid_lines(arc, 4.0, 1.0, fp) * _grid_lines(h, 3.5, 0.8, fp)
    haze = 0.8 + 0.25 * windows + 0.3 * (_fbm(arc, h, fp, 20.0, 4, salt + 6) - 0.5)
    city = haze[:, None] * np.array([0.42, 0.47, 0.56])
    horizon, zenith = np.array([0.80, 0.86, 0.92]), np.array([0.38, 0.58, 0.88])
    sky = horizon + np.clip(h / 120.0, 0, 1)[:, None] * (zenith - horizon)
    clouds = _fbm(arc, h * 2.0, fp, 80.0, 6, salt + 7)  # flattened: wider than tall
    cover = 0.9 * np.clip((clouds - 0.45) / 0.25, 0, 1)[:, None]
    sky = sky + cover * (0.97 - sky)
    return sky + in_city[:, None] * (city - sky)


def _footprint(pixel: np.ndarray, unit_dirs: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Texture filter width on a surface: the pixel's width, stretched by the viewing slant.

    A slanted surface stretches the pixel along one axis by 1/cos; an isotropic filter of that
    full width would blur the other axis, none would alias (which breaks photometric
    consistency between frames), so the filter uses 1/cos**0.75 between the two.
    """
    cos = np.abs((unit_dirs * normals).sum(1))
    return pixel / np.maximum(cos, 0.02) ** 0.75


def shade(scene: DrivingScene, hits: RayHits, K, road_paint: bool = True) -> np.ndarray:
    """RGB float image in [0, 1] for ``hits``: procedural world-space texture, Lambertian light.

    ``road_paint=False`` leaves the asphalt bare (the lanes generator paints its own markings).
    """
    K = np.asarray(K, dtype=np.float64)
    focal = 0.5 * (K[0, 0] + K[1, 1])
    dirs = hits.directions.reshape(-1, 3)
    surface = hits.surface.ravel()
    depth = hits.depth.ravel()
    points = hits.points.reshape(-1, 3)
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    pixel = depth * np.linalg.norm(dirs, axis=1) / focal  # pixel width at the hit, facing the ray
    rgb = np.zeros((len(depth), 3))

    ground = np.flatnonzero(np.isin(surface, (ROAD, SIDEWALK, KERB)))
    if len(ground):
        kind = surface[ground]
        normals = np.zeros((len(ground), 3))
        normals[:, 1] = -1.0
        kerb = kind == KERB
        if kerb.any():  # kerb faces look across the road, towards its centre line
            pk = points[ground[kerb]]
            zk = pk[:, 2]
            heading = np.arctan(scene.road.slope(zk))
            side = np.sign(scene.road.lateral(pk[:, 0], zk))
            normals[kerb] = np.stack(
                [-side * np.cos(heading), np.zeros_like(zk), side * np.sin(heading)], -1
            )
        fp = _footprint(pixel[ground], unit[ground], normals)
        colour = _shade_ground(scene, points[ground], kind, fp, road_paint)
        rgb[ground] = colour * _lambert(normals)[:, None]

    faces = np.flatnonzero(hits.box.ravel() >= 0)
    if len(faces):
        colour, normals = _shade_box_faces(scene, hits, faces, pixel[faces], unit[faces])
        rgb[faces] = colour * _lambert(normals)[:, None]

    sky = np.flatnonzero(surface == BACKDROP)
    if len(sky):  # unlit: it stands for sky and far haze
        rgb[sky] = _shade_backdrop(scene, points[sky], pixel[sky])
    return np.clip(rgb, 0, 1).reshape(*hits.depth.shape, 3)


def render_frame(
    scene: DrivingScene, pose, K, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` from camera-to-world ``pose`` (3x4/4x4) with intrinsics ``K``.

    Returns ``(rgb uint8 (H, W, 3), depth float32 (H, W))``; depth is camera-frame z in metres.
    """
    hits = cast_rays(scene, pose, K, width, height)
    rgb = shade(scene, hits, K)
    return (rgb * 255 + 0.5).astype(np.uint8), hits.depth.astype(np.float32)


# --------------------------------------------------------------------------- dataset writer
def _sequence_seed(seed: int, index: int) -> int:
    """Independent per-sequence seed: streets differ between sequences and between seeds."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _write_sequence(folder: Path, seed: int, frames: int, width: int, height: int) -> None:
    scene = make_scene(seed, frames)
    K = intrinsics(width, height)
    (folder / "depth").mkdir(parents=True)
    for k, pose in enumerate(scene.poses):
        rgb, depth = render_frame(scene, pose, K, width, height)
        write_image(folder / "images" / f"{k:06d}.png", rgb)
        np.save(folder / "depth" / f"{k:06d}.npy", depth)
    np.savetxt(folder / "poses.txt", scene.poses[:, :3].reshape(frames, 12), fmt="%.9e")
    calib = {
        "width": width,
        "height": height,
        "K": K.tolist(),
        "camera_height": CAMERA_HEIGHT,
        "depth": "camera-frame z in metres, float32 .npy per frame (0 = no value)",
        "poses": "camera-to-world 3x4 per line, row-major; x right, y down, z forward",
        "scene_seed": seed,
    }
    text = yaml.safe_dump(calib, sort_keys=False, default_flow_style=None)  # K on three rows
    (folder / "calib.yaml").write_text(text)


def _check_params(sequences, frames, width, height, val_sequences, seed, workers) -> None:
    def need(ok: bool, key: str, value, what: str) -> None:
        if not ok:
            raise ConfigError(f"data synth driving: {key}={value!r} is invalid; {what}")

    for key, value in (
        ("sequences", sequences),
        ("frames", frames),
        ("width", width),
        ("height", height),
        ("val_sequences", val_sequences),
        ("seed", seed),
        ("workers", workers),
    ):
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        need(integral, key, value, "expected an integer")
    need(sequences >= 1, "sequences", sequences, "need at least 1")
    need(
        frames >= 3, "frames", frames, "need at least 3 (frames 0 and N-1 only serve as neighbours)"
    )
    need(width >= 4, "width", width, "need at least 4 pixels")
    need(height >= 4, "height", height, "need at least 4 pixels")
    need(
        0 <= val_sequences < sequences,
        "val_sequences",
        val_sequences,
        f"need 0 <= val_sequences < sequences ({sequences}) so training keeps a sequence",
    )
    need(seed >= 0, "seed", seed, "need a non-negative seed")
    need(workers >= 1, "workers", workers, "need at least 1 process")


def _render_all(jobs: list[tuple], workers: int, bar) -> None:
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            _write_sequence(*job)
            bar.update()
        return
    # spawn, not fork: the parent may hold torch/OpenMP threads that fork would break.
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_write_sequence, *job) for job in jobs]
        try:
            for future in futures:
                future.result()
                bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # do not render the rest of a failed dataset
            raise


def write_driving(
    out: str | Path,
    sequences: int = 8,
    frames: int = 200,
    width: int = 320,
    height: int = 96,
    val_sequences: int = 2,
    seed: int = 0,
    *,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Render ``sequences`` streets of ``frames`` frames each into ``out`` (KITTI-like layout).

    The last ``val_sequences`` sequences form the val split. All-or-nothing: the dataset is
    built in ``<out>.tmp-<pid>`` and renamed into place, with a ``.complete`` marker holding the
    parameters; an existing complete ``out`` with the same parameters is returned untouched.
    ``workers`` > 1 renders sequences in parallel processes (same bytes as ``workers=1``).
    """
    _check_params(sequences, frames, width, height, val_sequences, seed, workers)
    params = {
        "generator": "driving",
        "version": _FORMAT_VERSION,
        "sequences": int(sequences),
        "frames": int(frames),
        "width": int(width),
        "height": int(height),
        "val_sequences": int(val_sequences),
        "seed": int(seed),
    }

    def build(tmp: Path) -> None:
        names = [f"seq_{i:02d}" for i in range(params["sequences"])]
        size = (params["frames"], params["width"], params["height"])
        jobs = [
            (tmp / name, _sequence_seed(params["seed"], i), *size) for i, name in enumerate(names)
        ]
        with tqdm(
            total=len(jobs), desc="data synth driving", unit="seq", disable=not progress
        ) as bar:
            _render_all(jobs, int(workers), bar)
        (tmp / "splits").mkdir()
        n_train = params["sequences"] - params["val_sequences"]
        for split, chosen in (("train", names[:n_train]), ("val", names[n_train:])):
            lines = [f"{name} {k}\n" for name in chosen for k in range(1, params["frames"] - 1)]
            (tmp / "splits" / f"{split}.txt").write_text("".join(lines))

    return generate_once(
        out, params, build, lambda p: yaml.safe_dump(p, sort_keys=False), "driving dataset"
    )
