"""TuSimple and CULane lane files: read → write → read and convert round trips, and checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from visbricks.data.formats import convert, find_format, get_format
from visbricks.data.io import write_image
from visbricks.data.lanes import LaneRecord, lane_problems
from visbricks.errors import DataError

W, H = 64, 48


def _image(path: Path, seed: int) -> None:
    write_image(path, np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8))


def _tusimple(root: Path) -> list[dict]:
    hs = list(range(8, 48, 4))  # 10 rows
    docs = [
        {
            "lanes": [
                [-2, -2, 20, 18, 16.5, 14, 12, 10, 8, 6],
                [-2, 30, 31, 32.25, 33, 34, 35, 36, 37, 38],
                [-2] * 10,  # an all-missing lane, as the benchmark files have
            ],
            "h_samples": hs,
            "raw_file": "clips/a/20.png",
        },
        {
            "lanes": [[40, 42, 44, 46, 48, 50, 52, 54, 56, -2]],
            "h_samples": hs,
            "raw_file": "clips/b/20.png",
        },
    ]
    for k, d in enumerate(docs):
        _image(root / d["raw_file"], k)
    (root / "label_data_0313.json").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return docs


def _culane(root: Path) -> None:
    lines = {
        "driver_1/v/00000.jpg": ("1 1 0 0", "10.5 47 12.25 40 14 33.125 \n20 47 21 40 \n"),
        "driver_1/v/00030.jpg": ("0 1 1 1", "1 47 2 40 \n30 47 31.75 40 \n50 47 55 40 60 33 \n"),
        "driver_1/v/00060.jpg": ("0 0 0 0", ""),
    }
    (root / "list").mkdir(parents=True)
    gt = []
    for k, (file, (flags, text)) in enumerate(lines.items()):
        _image(root / file, 10 + k)
        (root / file).with_suffix(".lines.txt").write_text(text)
        gt.append(f"/{file} /laneseg_label_w16/{file[:-4]}.png {flags}\n")
    (root / "list" / "train_gt.txt").write_text("".join(gt))
    (root / "list" / "train.txt").write_text("".join(g.split()[0] + "\n" for g in gt))


def _same_records(a, b, order_free: bool = False) -> None:
    assert [r.file for r in a.records] == [r.file for r in b.records]
    for ra, rb in zip(a.records, b.records):
        assert (ra.width, ra.height) == (rb.width, rb.height)
        la = [ln for ln in ra.lanes if len(ln)]
        lb = [ln for ln in rb.lanes if len(ln)]
        if order_free:
            la, lb = sorted(la, key=lambda x: x[-1, 0]), sorted(lb, key=lambda x: x[-1, 0])
        assert len(la) == len(lb)
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(x[np.argsort(x[:, 1])], y[np.argsort(y[:, 1])])


def test_tusimple_round_trip_is_exact(tmp_path):
    docs = _tusimple(tmp_path / "src")
    fmt = find_format(tmp_path / "src", kind="lanes")
    assert fmt.name == "tusimple" and fmt.splits(tmp_path / "src") == ["train"]
    ds = fmt.read(tmp_path / "src", split="train")
    assert len(ds) == 2 and not ds.problems
    assert ds.records[0].lanes[0].tolist()[0] == [20.0, 16.0]
    yaml_path = fmt.write(ds, tmp_path / "out", split="train")
    written = [json.loads(s) for s in (tmp_path / "out" / "train.json").read_text().splitlines()]
    assert written == docs  # same numbers, same -2 layout, same paths
    again = get_format("tusimple").read(yaml_path, split="train")
    _same_records(ds, again)


def test_culane_round_trip_is_exact(tmp_path):
    _culane(tmp_path / "src")
    fmt = find_format(tmp_path / "src", kind="lanes")
    assert fmt.name == "culane"
    ds = fmt.read(tmp_path / "src", split="train")
    assert [r.exist for r in ds.records] == [[1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]]
    assert ds.records[0].lanes[0][2].tolist() == [14.0, 33.125]
    fmt.write(ds, tmp_path / "out", split="train")
    for file in ("driver_1/v/00000.jpg", "driver_1/v/00030.jpg"):
        a = (tmp_path / "src" / file).with_suffix(".lines.txt").read_text()
        b = (tmp_path / "out" / file).with_suffix(".lines.txt").read_text()
        assert a == b
    assert (tmp_path / "out/list/train_gt.txt").read_text() == (
        tmp_path / "src/list/train_gt.txt"
    ).read_text()
    assert (tmp_path / "out/laneseg_label_w16/driver_1/v/00030.png").is_file()
    again = fmt.read(tmp_path / "out", split="train")
    _same_records(ds, again)
    assert [r.exist for r in again.records] == [r.exist for r in ds.records]


def test_convert_tusimple_culane_and_back(tmp_path):
    _tusimple(tmp_path / "tu")
    src = get_format("tusimple").read(tmp_path / "tu")
    convert(tmp_path / "tu", tmp_path / "cu", to="culane")
    cu = get_format("culane").read(tmp_path / "cu", split="train")
    _same_records(src, cu, order_free=True)  # lanes now ordered left to right, no -2 lanes
    assert cu.records[0].exist == [0, 1, 1, 0]
    convert(tmp_path / "cu", tmp_path / "tu2", to="tusimple")
    back = get_format("tusimple").read(tmp_path / "tu2", split="train")
    _same_records(src, back, order_free=True)


def test_culane_to_tusimple_to_culane(tmp_path):
    _culane(tmp_path / "cu")
    src = get_format("culane").read(tmp_path / "cu", split="train")
    convert(tmp_path / "cu", tmp_path / "tu", to="tusimple")
    convert(tmp_path / "tu", tmp_path / "cu2", to="culane")
    _same_records(src, get_format("culane").read(tmp_path / "cu2", split="train"), True)


def test_bad_lines_are_named(tmp_path):
    _tusimple(tmp_path)
    with open(tmp_path / "label_data_0313.json", "a") as f:
        f.write('{"lanes": [[1, 2]], "h_samples": [1, 2, 3], "raw_file": "clips/a/20.png"}\n')
        f.write("not json\n")
    ds = get_format("tusimple").read(tmp_path)
    assert len(ds) == 2
    assert [p[0] for p in ds.problems] == ["label_data_0313.json:3", "label_data_0313.json:4"]
    assert "2 values for 3 h_samples" in ds.problems[0][1]
    with pytest.raises(DataError, match=r"label_data_0313.json:3"):
        get_format("tusimple").read(tmp_path, strict=True)


def test_lane_problems():
    rec = LaneRecord(
        "a.png",
        100,
        50,
        [
            np.array([[1.0, 1]]),
            np.array([[10.0, 5], [120, 20]]),
            np.array([[5.0, 10], [6, 4], [7, 30]]),
        ],
        h_samples=[10, 5],
    )
    problems = lane_problems(rec)
    assert any("lane 0 has 1 point" in p for p in problems)
    assert any("lane 1: 1 point(s) outside the 100x50 image" in p for p in problems)
    assert any("lane 2: points are not sorted" in p for p in problems)
    assert any("h_samples" in p for p in problems)
    assert lane_problems(LaneRecord("b.png", 100, 50, [np.array([[1.0, 1], [2, 3]])])) == []


def test_data_check_lists_bad_lanes(tmp_path):
    from visbricks.data.check import check_dataset

    _tusimple(tmp_path)
    with open(tmp_path / "label_data_0313.json", "a") as f:
        lanes = [[-2, -2, 20, 90, -2, -2, -2, -2, -2, -2], [5] + [-2] * 9]
        doc = {"lanes": lanes, "h_samples": list(range(8, 48, 4)), "raw_file": "clips/b/20.png"}
        f.write(json.dumps(doc) + "\n")
    report = check_dataset(tmp_path)
    assert not report.ok
    text = report.format()
    assert "clips/b/20.png: lane 0: 1 point(s) outside the 64x48 image" in text
    assert "clips/b/20.png: lane 1 has 1 point(s), fewer than 2" in text
    assert "lane 2 has 0 point(s)" in text  # the benchmark's all -2 lane, reported
    with pytest.raises(DataError, match="clips/a/20.png"):
        check_dataset(tmp_path, strict=True)
