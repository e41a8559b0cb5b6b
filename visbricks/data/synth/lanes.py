"""``visbricks data synth lanes``: painted lane markings on the ray-cast street, with exact labels.

Every frame is rendered by :mod:`visbricks.data.synth.driving` (same street, buildings, parked
cars, textures) with its own road paint switched off; this module paints the lane markings,
adds traffic, shadows and lighting changes, and projects the painted lines into the image for
the labels:

* **markings**: 2-4 lines per street at fixed lateral offsets (the ego lane's two boundaries
  always, then the far boundary of the opposite lane and/or the road-edge line), each solid or
  dashed (3 m dashes, 9 m period) and white or yellow, with worn paint;
* **camera**: the street's drive with a pitch that varies slowly (the road ahead seems to rise
  and fall: slopes of the camera path), a lateral drift inside the lane and a little yaw;
* **traffic**: cars driving in both lanes ahead (moving boxes, positioned per frame) and
  the street's parked cars (thinned to 40 %) occlude markings; labels follow the lines
  *through* occluders, as the TuSimple and CULane annotators did;
* **light**: world-fixed shadow patches on the ground (the same in every frame of a street)
  and a per-frame exposure/gamma change.

A label is the projection of the painted line's centre (on the road plane) from 2 m to 50 m ahead,
until it leaves the image or goes behind a building or the backdrop (around a bend), sampled at the
TuSimple-style rows ``h_samples`` (every ``row_step`` px from the top third of the image down);
lanes are listed left to right.

Layout written (both formats, same images)::

    <out>/clips/<street>/<frame>.png
    <out>/train.json, val.json             TuSimple lines: lanes, h_samples, raw_file
    <out>/clips/<street>/<frame>.lines.txt CULane lanes; <out>/list/{train,val}[_gt].txt
    <out>/data.yaml                        format: tusimple
    <out>/.complete                        generation parameters; written last

Deterministic for a seed: each street draws from its own seeded generator.
"""

from __future__ import annotations

import numbers
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ...errors import ConfigError
from ..io import write_image
from ..lanes import LaneRecord, LaneSet
from . import driving as d
from .publish import generate_once

_FORMAT_VERSION = 3
EDGE_LINE = d.ROAD_HALF_WIDTH - 0.25  # road-edge line just inside the kerb
WHITE = np.array([0.9, 0.9, 0.86])
YELLOW = np.array([0.88, 0.72, 0.18])
PAINT_HALF_WIDTH = 0.075  # 15 cm lines
PARKED_KEEP = 0.4  # fraction of the street's parked cars kept
# Labels end this many metres ahead: like TuSimple's and CULane's annotators, who stop well
# before the vanishing point where the lines merge into a few pixels.
LABEL_RANGE = 50.0


def _street_style(rng: np.random.Generator) -> list[dict]:
    """The painted lines of one street: lateral offset, dashed, colour."""
    n = int(rng.integers(2, 5))
    offsets = [0.0, d.LANE_WIDTH]  # ego lane: centre line and right boundary
    extra = [-d.LANE_WIDTH, EDGE_LINE]
    if n == 3:
        offsets.append(extra[int(rng.integers(2))])
    elif n == 4:
        offsets += extra
    lines = []
    for lat in sorted(offsets):
        centre = lat == 0.0
        lines.append(
            dict(
                lat=lat,
                dashed=bool(rng.random() < (0.75 if centre else 0.3)),
                colour=(YELLOW if centre and rng.random() < 0.4 else WHITE)
                * rng.uniform(0.85, 1.05),
                phase=float(rng.uniform(0, 9.0)),
            )
        )
    return lines


def _traffic(rng: np.random.Generator, road: d.Road, s0: float, s1: float) -> list[dict]:
    """Cars driving along the lanes: start arc length, speed (m per frame), lane offset."""
    cars = []
    for _ in range(int(rng.integers(1, 4))):
        lane = d.LANE_WIDTH / 2 * (1 if rng.random() < 0.6 else -1)
        cars.append(
            dict(
                s=float(rng.uniform(s0 + 10, s1)),
                v=float(rng.uniform(0.3, 1.2) * (1 if lane > 0 else -1.5)),
                lat=lane + float(rng.uniform(-0.3, 0.3)),
                size=(
                    float(rng.uniform(1.7, 2.0)),
                    float(rng.uniform(3.8, 4.8)),
                    float(rng.uniform(1.4, 1.8)),
                ),
                material=d._car_material(rng),
                salt=int(rng.integers(0, 2**31)),
            )
        )
    return cars


def _with_cars(scene: d.DrivingScene, cars: list[dict], t: float, s_cam: float) -> d.DrivingScene:
    """The scene with the moving cars placed at frame time ``t`` (those ahead of the camera)."""
    rows = []
    for c in cars:
        s = c["s"] + c["v"] * t
        if s < s_cam + 7.0:  # never drive through the camera: passed cars leave the scene
            continue
        (px, pz), heading, (nx, nz) = (a[0] for a in scene.road.frame_at(np.array([s])))
        across, along, height = c["size"]
        rows.append(
            dict(
                centre=(px + c["lat"] * nx, -height / 2, pz + c["lat"] * nz),
                yaw=heading,
                half=(across / 2, height / 2, along / 2),
                kind=d.CAR,
                salt=c["salt"],
                **c["material"],
            )
        )
    if not rows:
        return scene
    b = scene.boxes

    def col(key, old, dtype=float):
        return np.concatenate([old, np.array([r[key] for r in rows], dtype=dtype)])

    boxes = d.Boxes(
        centre=col("centre", b.centre),
        yaw=col("yaw", b.yaw),
        half=col("half", b.half),
        kind=col("kind", b.kind, np.int64),
        colour=col("colour", b.colour),
        trim=col("trim", b.trim),
        block=col("block", b.block),
        mortar=col("mortar", b.mortar),
        floor=col("floor", b.floor),
        window=col("window", b.window),
        salt=col("salt", b.salt, np.int64),
    )
    return replace(scene, boxes=boxes)


def _thin_parked_cars(scene: d.DrivingScene, rng: np.random.Generator) -> d.DrivingScene:
    """Keep ``PARKED_KEEP`` of the street's parked cars: a full parking lane hides the road-edge
    line for whole frames, which no annotator (and no detector) could place."""
    b = scene.boxes
    keep = (b.kind != d.CAR) | (rng.random(len(b.kind)) < PARKED_KEEP)
    boxes = d.Boxes(**{f.name: getattr(b, f.name)[keep] for f in fields(d.Boxes)})
    return replace(scene, boxes=boxes)


def _coverage(value: np.ndarray, limit: float) -> np.ndarray:
    """Anti-aliased coverage of ``|value| < limit`` on the pixel grid (edge one pixel wide)."""
    gy, gx = np.gradient(value)
    fp = np.maximum(np.abs(gx) + np.abs(gy), 1e-6)
    return np.clip((limit - np.abs(value)) / fp + 0.5, 0.0, 1.0)


def _paint(scene, hits, rgb, lines, salt, gain, gamma) -> np.ndarray:
    """Lane paint on the road, ground shadows, exposure; returns float RGB in [0, 1]."""
    p = hits.points
    road = scene.road
    s = road.arc_length(p[..., 2])
    lat = road.lateral(p[..., 0], p[..., 2])
    ground = np.isin(hits.surface, (d.ROAD, d.KERB, d.SIDEWALK))
    on_road = hits.surface == d.ROAD
    lam = d._lambert(np.array([[0.0, -1.0, 0.0]]))[0]
    wear = 0.7 + 0.3 * d._value_noise(s / 0.7, lat / 0.3, salt + 11)
    for line in lines:
        cover = _coverage(lat - line["lat"], PAINT_HALF_WIDTH)
        if line["dashed"]:
            along = np.mod(s + line["phase"], 9.0) - 4.5
            cover = cover * _coverage(along, 1.5)
        cover = cover * on_road * wear
        rgb = rgb + cover[..., None] * (line["colour"] * lam - rgb)
    # World-fixed shadow patches (trees, poles, buildings): soft-edged, darken the ground.
    n = d._value_noise(s / 7.0, lat / 3.0, salt + 23)
    shadow = np.clip((n - 0.58) / 0.08, 0, 1) * ground
    rgb = rgb * (1 - 0.5 * shadow[..., None])
    return np.clip(gain * rgb, 0, 1) ** gamma


def _labels(scene, hits, pose, K, lines, width, height, rows) -> list[np.ndarray]:
    """Each painted line's image polyline, sampled at ``rows`` (x, row), near to far."""
    road = scene.road
    cam_z = pose[2, 3]
    z = cam_z + np.linspace(0.5, LABEL_RANGE, int(LABEL_RANGE * 20))
    R, t = pose[:3, :3], pose[:3, 3]
    lanes = []
    for line in lines:
        x = road.offset(z) + line["lat"] * np.sqrt(1 + road.slope(z) ** 2)
        world = np.stack([x, np.zeros_like(z), z], -1)
        cam = (world - t) @ R  # R^T (p - t)
        ahead = cam[:, 2] > 2.0
        uvw = cam[ahead] @ K.T
        u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        # From near to far, stop where the line leaves the image or goes behind a building,
        # the sidewalk or the backdrop (cars and the road itself do not hide it from labels).
        keep = np.zeros(len(u), bool)
        started = False
        for k in range(len(u)):
            if not inside[k]:
                if started:
                    break
                continue
            i, j = int(v[k]), int(u[k])
            surf = hits.surface[i, j]
            if surf in (d.BUILDING, d.BACKDROP, d.SIDEWALK) or (
                surf == d.KERB and abs(line["lat"]) < d.LANE_WIDTH + 0.1
            ):
                break
            started = True
            keep[k] = True
        if keep.sum() < 2:
            continue
        uu, vv = u[keep], v[keep]
        # v decreases with distance along the line (flat road, camera above it)
        order = np.argsort(vv)
        vv, uu = vv[order], uu[order]
        sel = (rows >= vv[0]) & (rows <= vv[-1])
        if sel.sum() < 2:
            continue
        xs = np.interp(rows[sel], vv, uu)
        lanes.append(np.stack([np.round(xs, 2), rows[sel]], -1))
    # left to right by where they meet the bottom rows
    lanes.sort(key=lambda ln: ln[np.argmax(ln[:, 1]), 0])
    return lanes


def render_street(seed: int, frames: int, width: int, height: int, row_step: int, stride: int = 4):
    """Yield ``(rgb uint8, lanes)`` for ``frames`` frames of one street, ``stride`` m apart."""
    rng = np.random.default_rng([seed, 0x1A2E])
    scene = _thin_parked_cars(d.make_scene(seed, frames * stride + 2), rng)
    lines = _street_style(rng)
    salt = int(rng.integers(0, 2**31))
    s_cams = scene.road.arc_length(scene.poses[:, 2, 3])
    cars = _traffic(rng, scene.road, float(s_cams[0]), float(s_cams[-1]) + 60)
    K = d.intrinsics(width, height)
    rows = np.arange(height - 1, height // 3, -row_step, dtype=float)[::-1]
    base_pitch = rng.uniform(3.0, 6.0)
    slope_period, slope_phase = rng.uniform(8, 20), rng.uniform(0, 2 * np.pi)
    drift_period, drift_phase = rng.uniform(6, 15), rng.uniform(0, 2 * np.pi)
    for f in range(frames):
        k = f * stride
        pose = scene.poses[k].copy()
        pitch = np.deg2rad(base_pitch + 2.0 * np.sin(2 * np.pi * f / slope_period + slope_phase))
        yaw = np.deg2rad(rng.uniform(-1.5, 1.5))
        pose[:3, :3] = pose[:3, :3] @ d._rot_y(yaw) @ d._rot_x(-pitch)
        heading = np.arctan(scene.road.slope(pose[2, 3]))
        drift = 0.45 * np.sin(2 * np.pi * f / drift_period + drift_phase)
        pose[0, 3] += drift * np.cos(heading)
        pose[2, 3] -= drift * np.sin(heading)
        frame_scene = _with_cars(scene, cars, float(k), float(s_cams[k]))
        hits = d.cast_rays(frame_scene, pose, K, width, height)
        rgb = d.shade(frame_scene, hits, K, road_paint=False)
        gain, gamma = rng.uniform(0.6, 1.35), rng.uniform(0.8, 1.25)
        rgb = _paint(frame_scene, hits, rgb, lines, salt, gain, gamma)
        lanes = _labels(frame_scene, hits, pose, K, lines, width, height, rows)
        yield (rgb * 255 + 0.5).astype(np.uint8), lanes, rows


def _street_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index, 0x1A2E]).generate_state(1)[0])


def _write_street(
    root: Path, name: str, seed: int, frames: int, width: int, height: int, row_step: int
) -> list[dict]:
    out = []
    for f, (rgb, lanes, rows) in enumerate(render_street(seed, frames, width, height, row_step)):
        rel = f"clips/{name}/{f:04d}.png"
        write_image(root / rel, rgb)
        out.append({"file": rel, "lanes": [ln.tolist() for ln in lanes], "rows": rows.tolist()})
    return out


def _check(params: dict) -> None:
    for key in (
        "streets",
        "frames",
        "width",
        "height",
        "val_streets",
        "seed",
        "workers",
        "row_step",
    ):
        v = params[key]
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"data synth lanes: {key}={v!r} is invalid; expected an integer >= 0")
    if params["streets"] < 2 or not 1 <= params["val_streets"] < params["streets"]:
        raise ConfigError(
            f"data synth lanes: val_streets={params['val_streets']!r} is invalid; need "
            f"1 <= val_streets < streets ({params['streets']})"
        )
    if params["width"] < 32 or params["height"] < 16:
        raise ConfigError("data synth lanes: width/height too small (need >= 32x16)")
    if params["frames"] < 1 or params["row_step"] < 1 or params["workers"] < 1:
        raise ConfigError("data synth lanes: frames, row_step and workers must be >= 1")


def write_lanes(
    out: str | Path,
    streets: int = 48,
    frames: int = 24,
    width: int = 320,
    height: int = 128,
    val_streets: int = 6,
    seed: int = 0,
    row_step: int = 4,
    *,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Render ``streets`` x ``frames`` labelled frames into ``out`` (TuSimple + CULane files).

    The last ``val_streets`` streets form the val split. All-or-nothing, reused when ``out``
    already holds the same parameters (see :mod:`visbricks.data.synth.publish`).
    """
    params = dict(
        generator="lanes",
        version=_FORMAT_VERSION,
        streets=streets,
        frames=frames,
        width=width,
        height=height,
        val_streets=val_streets,
        seed=seed,
        row_step=row_step,
    )
    _check({**params, "workers": workers})

    def build(tmp: Path) -> None:
        from ..formats.culane import CULane
        from ..formats.tusimple import TuSimple

        names = [f"street_{i:03d}" for i in range(streets)]
        jobs = [
            (tmp, name, _street_seed(seed, i), frames, width, height, row_step)
            for i, name in enumerate(names)
        ]
        results: list[list[dict]] = []
        with tqdm(
            total=len(jobs), desc="data synth lanes", unit="street", disable=not progress
        ) as bar:
            if workers == 1:
                for job in jobs:
                    results.append(_write_street(*job))
                    bar.update()
            else:
                ctx = get_context("spawn")  # the parent may hold torch threads fork would break
                with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
                    for r in pool.map(_write_street, *zip(*jobs)):
                        results.append(r)
                        bar.update()
        n_train = streets - val_streets
        split_sets = {}
        for split, chunk in (("train", results[:n_train]), ("val", results[n_train:])):
            records = [
                LaneRecord(r["file"], width, height, r["lanes"], h_samples=r["rows"])
                for street in chunk
                for r in street
            ]
            split_sets[split] = LaneSet(tmp, records)
        for split, ds in split_sets.items():
            CULane().write(ds, tmp, split=split)
        (tmp / "data.yaml").unlink()
        for split, ds in split_sets.items():
            TuSimple().write(ds, tmp, split=split)

    return generate_once(
        out, params, build, lambda p: yaml.safe_dump(p, sort_keys=False), "lanes dataset"
    )


__all__ = ["render_street", "write_lanes"]
