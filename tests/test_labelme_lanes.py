"""labelme lanes (line/linestrip shapes): read, convert to TuSimple and back exactly, to CULane,
``data check`` naming each JSON, and ``model.row_anchors: auto`` chosen from the labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from visbricks.data.check import check_dataset
from visbricks.data.formats import convert, find_format, get_format
from visbricks.data.io import write_image
from visbricks.errors import DataError

W, H = 64, 48
ROWS = list(range(8, 48, 4))  # TuSimple-style sample rows: every 4 px, 8..44


def _shape(label: str, points: list, shape_type: str = "linestrip") -> dict:
    # The keys and order of a real labelme file (../shared/data/labelme/*/data_annotated).
    return {"label": label, "points": points, "group_id": None, "shape_type": shape_type,
            "flags": {}}


def _labelme(folder: Path, name: str, shapes: list[dict], seed: int = 0,
             image_path: str | None = None, size: tuple[int, int] = (W, H)) -> Path:
    """An image and its labelme JSON, as labelme saves them side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    write_image(folder / f"{name}.png", rgb)
    doc = {"version": "4.0.0", "flags": {}, "shapes": shapes,
           "imagePath": image_path or f"{name}.png", "imageData": None,
           "imageHeight": size[1], "imageWidth": size[0]}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def _lane(x_bottom: int, slope: int, top: int) -> list[list[int]]:
    """Integer pixel points on the ROWS from ``top`` down, listed top to bottom."""
    return [[x_bottom + slope * (44 - y) // 4, y] for y in ROWS if y >= top]


def _dataset(root: Path) -> Path:
    """train/ and val/ of labelme lanes: plain ``lane`` labels, a two-point ``line``, and one
    image labelled by slot (``l0``, ``r0``)."""
    _labelme(root / "train", "a", [_shape("lane", _lane(10, 2, 16)),
                                   _shape("lane", _lane(50, -2, 8))], 1)
    _labelme(root / "train", "b", [_shape("lane", [[30, 20], [14, 44]], "line")], 2)
    _labelme(root / "train", "c", [_shape("lane", _lane(4, 1, 20)),
                                   _shape("lane", _lane(26, 1, 12)),
                                   _shape("lane", _lane(58, -1, 16))], 3)
    _labelme(root / "val", "d", [_shape("l0", _lane(16, 1, 12)),
                                 _shape("r0", _lane(44, -1, 12))], 4)
    return root


def _docs(root: Path) -> dict[str, dict]:
    return {p.relative_to(root).as_posix(): json.loads(p.read_text())
            for p in sorted(root.rglob("*.json"))}


def test_labelme_read_slots_and_splits(tmp_path):
    root = _dataset(tmp_path / "lm")
    fmt = find_format(root, "lanes")
    assert fmt.name == "labelme_lanes" and fmt.splits(root) == ["train", "val"]
    assert find_format(root).name == "labelme_lanes"  # also when no kind is asked (convert)
    train = fmt.read(root, split="train")
    assert [r.file for r in train.records] == ["train/a.png", "train/b.png", "train/c.png"]
    assert not train.problems and train.records[0].label_file == "train/a.json"
    assert train.records[0].lanes[0].tolist()[0] == [24.0, 16.0]
    assert all(r.exist is None for r in train.records)  # plain labels: slots from positions
    (val,) = fmt.read(root, split="val").records
    assert val.exist == [0, 1, 1, 0] and val.lanes[0][0, 0] == 16 + 8  # l0 first
    with pytest.raises(DataError, match="no test/ folder"):
        fmt.read(root, split="test")


def test_labelme_to_tusimple_and_back_is_exact(tmp_path):
    root = _dataset(tmp_path / "lm")
    convert(root, tmp_path / "tu", to="tusimple")
    lines = (tmp_path / "tu" / "train.json").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["raw_file"] == "train/a.png" and first["h_samples"] == ROWS
    assert first["lanes"][0][:3] == [-2, -2, 24]  # -2: no point on rows 8 and 12
    assert find_format(tmp_path / "tu").name == "tusimple"
    convert(tmp_path / "tu", tmp_path / "back", to="labelme_lanes")
    back = _docs(tmp_path / "back")
    original = _docs(root)
    # Slot labels are what TuSimple cannot hold: they come back as "lane", all else is equal.
    for shape in original["val/d.json"]["shapes"]:
        shape["label"] = "lane"
    assert back == original
    assert (tmp_path / "back" / "train" / "a.png").read_bytes() == (
        root / "train" / "a.png").read_bytes()


def test_labelme_to_culane_reads_back_equal(tmp_path):
    root = _dataset(tmp_path / "lm")
    convert(root, tmp_path / "cu", to="culane")
    assert find_format(tmp_path / "cu").name == "culane"
    src, cu = get_format("labelme_lanes"), get_format("culane")
    for split in ("train", "val"):
        a, b = src.read(root, split=split), cu.read(tmp_path / "cu", split=split)
        assert [r.file for r in a.records] == [r.file for r in b.records]
        for ra, rb in zip(a.records, b.records):
            assert (ra.width, ra.height) == (rb.width, rb.height)
            # CULane orders lanes by slot, left to right: compare by where they end
            la = sorted((ln.tolist() for ln in ra.lanes), key=lambda ln: ln[-1][0])
            lb = sorted((ln.tolist() for ln in rb.lanes), key=lambda ln: ln[-1][0])
            assert la == lb
    assert cu.read(tmp_path / "cu", split="val").records[0].exist == [0, 1, 1, 0]
    # Slot labels survive CULane (its existence flags) back into labelme.
    convert(tmp_path / "cu", tmp_path / "back", to="labelme_lanes")
    assert _docs(tmp_path / "back")["val/d.json"] == _docs(root)["val/d.json"]


def test_data_check_names_each_json(tmp_path):
    root = tmp_path / "flat"
    _labelme(root, "good", [_shape("lane", _lane(20, 1, 8)),
                            _shape("car", [[1, 1], [9, 1], [9, 9]], "polygon")])  # not a lane
    _labelme(root, "short", [_shape("lane", _lane(20, 1, 8)), _shape("lane", [[30, 40]])])
    _labelme(root, "outside", [_shape("lane", [[60, 20], [70, 44]], "line")])
    _labelme(root, "gone", [_shape("lane", _lane(20, 1, 8))], image_path="missing.png")
    _labelme(root, "sized", [_shape("lane", _lane(20, 1, 8))], size=(640, 480))
    _labelme(root, "mixed", [_shape("l0", _lane(20, 1, 8)), _shape("lane", _lane(40, -1, 8))])
    assert find_format(root, "lanes").splits(root) == [None]
    report = check_dataset(root)
    text = report.format()
    assert "(labelme_lanes lanes)" in text and "all: 5 images" in text
    assert "short.json: lane 1 (shape 1, 'lane') has 1 point(s), fewer than 2" in text
    assert "outside.json: lane 0 (shape 0, 'lane'): 1 point(s) outside the 64x48 image" in text
    assert "gone.json: missing image 'missing.png'" in text
    assert "sized.json: imageWidth/imageHeight say 640x480 but sized.png is 64x48" in text
    assert "mixed.json: mixes slot labels with 'lane'" in text
    assert "good.json" not in text  # the polygon is not a lane, and not a problem
    with pytest.raises(DataError, match=r"\.json: "):
        check_dataset(root, strict=True)
    # A folder of labelme polygons is not a lane dataset.
    poly = tmp_path / "poly"
    _labelme(poly, "p", [_shape("car", [[1, 1], [9, 1], [9, 9]], "polygon")])
    assert not get_format("labelme_lanes").sniff(poly)


def test_row_anchors_auto_from_the_labels_saved_as_numbers(tmp_path):
    from visbricks import Trainer, build_task, load_config, load_run

    torch.set_num_threads(1)
    root = tmp_path / "lm"
    tops = [12, 16, 20, 24, 16, 20]  # the labelled lanes start between rows 12 and 24 of 48
    for k, top in enumerate(tops):
        _labelme(root / "train", f"t{k}", [_shape("lane", _lane(12 + k, 2, top)),
                                           _shape("lane", _lane(52 - k, -2, top + 4))], k)
    _labelme(root / "val", "v", [_shape("lane", _lane(14, 2, 16))], 9)
    cfg = load_config("lanes", [
        f"data.root={root}", "data.val=val", f"project={tmp_path / 'runs'}", "name=auto",
        "model.row_anchors=auto", "model.pretrained=null", "img_size={width: 64, height: 32}",
        "epochs=1", "batch_size=4", "workers=0", "model.row_cells=16", "model.col_cells=8",
        "model.col_anchors=6", "model.head_args={hidden: 32}", "model.aux_seg=false",
        "train.plots=false", "train.tensorboard=false", "deterministic=true",
    ])
    task = build_task(cfg)
    data = task.build_data()  # reads the train split's labels to choose the rows
    rows = np.asarray(task.anchors.rows)
    lane_tops = [t / H for top in tops for t in (top, top + 4)]
    assert len(rows) == 18 and rows[-1] == 1.0  # to the bottom: data.extend_lanes
    assert min(lane_tops) - 1e-3 <= rows[0] <= np.percentile(lane_tops, 2)  # covers them
    trainer = Trainer(cfg, task.build_model(), data, task)
    trainer.fit()
    saved = yaml.safe_load((trainer.run_dir / "config.yaml").read_text())["model"]
    assert saved["row_anchors"] == 18 and saved["row_range"] == [rows[0], 1.0]
    assert all(isinstance(v, float) for v in saved["row_range"])
    # eval/predict/export read the run's config: the same anchors, no data read.
    assert load_run(trainer.run_dir).task.anchors == task.anchors
    # row_range=auto keeps a count of one's own.
    own = build_task(load_config("lanes", [f"data.root={root}", "model.row_range=auto",
                                           "model.row_anchors=7"]))
    assert own.anchors.rows[0] == rows[0] and len(own.anchors.rows) == 7


def test_a_flat_folder_holds_out_a_seeded_val_split(tmp_path):
    # Lanes read through the data layer's one path: a folder without splits is divided as box
    # and mask folders are (20 %, seed 0), never used as both train and val.
    from visbricks import build_task, load_config

    root = tmp_path / "flat"
    for k in range(10):
        _labelme(root, f"f{k}", [_shape("lane", _lane(12 + k, 2, 12))], k)
    task = build_task(load_config("lanes", [f"data.root={root}", "model.pretrained=null"]))
    train, val = task.read_split("train"), task.read_split("val")
    files = lambda ds: {r.file for r in ds.records}  # noqa: E731
    assert len(val) == 2 and len(train) == 8 and not files(train) & files(val)
    assert files(task.read_split("val")) == files(val)  # seeded: the same every time
