"""``bench/detect_vs_ultralytics.py``: its combined table keeps each data set's results apart,
and its raccoon data is real_detect's 160 / 40 split, converted to YOLO format with the same
images and boxes."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from conftest import load_bench, shared_data

BENCH = Path(__file__).resolve().parents[1] / "bench"


dvu = load_bench("detect_vs_ultralytics")


def _record(model: str, map50: float, data: str | None, amp: str = "bf16") -> dict:
    r = {
        "model": model,
        "budget": 600.0,
        "map50": map50,
        "amp": amp if model.startswith("ours") else "fp32",
        "steps": 100,
        "epochs": 10.0,
        "img_per_s": 20.0,
        "torch_threads": 1,
        "batch_size": 16,
        "cpu": "CPU X",
        "when": "2026-01-01T00:00:00+00:00",
    }
    if data is not None:
        r["data"] = data
    return r


def test_table_keeps_data_sets_apart(capsys):
    records = [
        # written before --data existed: shapes
        _record("ours", 0.9, None),
        _record("yolo26n", 0.6, None),
        _record("ours", 0.4, "raccoon"),
        _record("ours-imagenet", 0.8, "raccoon"),
        _record("yolo26n", 0.5, "raccoon"),
    ]
    dvu.print_table(records)
    out = capsys.readouterr().out
    assert "replaced" not in out  # same model, budget, amp and CPU, but other data
    shapes, raccoon = out.split("\nraccoon: CPU X\n")
    assert "shapes: CPU X" in shapes and "ours-imagenet" not in shapes
    assert "1.50 (meets 1.2) vs yolo26n" in shapes  # the goals are for shapes
    assert "ours/best, ours-imagenet/best" in raccoon
    assert "0.80, 1.60 vs yolo26n" in raccoon and "meets" not in raccoon


def test_table_keeps_overridden_runs_apart(capsys):
    atss = {**_record("ours", 0.99, None), "overrides": "loss.assigner=atss"}
    records = [_record("ours", 0.9, None), atss, _record("yolo11n", 0.6, None)]
    dvu.print_table(records)
    out = capsys.readouterr().out
    assert "replaced" not in out  # same model, budget, amp and CPU, other overrides
    assert "bf16 loss.assigner=atss" in out and "1.65 (meets 1.2) vs yolo11n" in out
    assert "1.50 (meets 1.2) vs yolo11n" in out  # the preset as is, its own row
    assert "$VISBRICKS_OVERRIDES loss.assigner=atss" in out
    assert "with loss.assigner=atss" in dvu.describe({**atss, "wall_s": 600.0})


def test_raccoon_split_and_yolo_copy(tmp_path, monkeypatch):
    shared_data("raccoon/annotations")  # skips without the real photos
    monkeypatch.syspath_prepend(str(BENCH))
    from visbricks.data.formats import read_dataset

    args = argparse.Namespace(device="cpu", amp="auto")
    cfg, yolo_yaml, ours_yaml = dvu.raccoon_data(args, tmp_path)
    assert cfg.img_size == 256 and cfg.model.backbone == "mobilenet_v2"
    assert cfg.model.pretrained is None
    for split, n in (("train", 160), ("val", 40)):
        ours = read_dataset(ours_yaml, split=split)
        theirs = read_dataset(yolo_yaml, split=split)
        assert len(ours) == len(theirs) == n
        by_name = {Path(r.file).name: r for r in theirs.records}
        for r in ours.records:
            t = by_name[Path(r.file).name]
            assert (t.width, t.height) == (r.width, r.height)
            np.testing.assert_array_equal(t.labels, r.labels)
            # YOLO stores normalised centres and sizes: equal up to float rounding
            np.testing.assert_allclose(t.boxes, r.boxes, atol=0.01)
    val = sorted(Path(r.file).name for r in read_dataset(ours_yaml, split="val").records)
    train = {Path(r.file).name for r in read_dataset(ours_yaml, split="train").records}
    assert not train & set(val)
