"""Dataset health (data/health.py): planted exact and near duplicates are found within a split and
across train/val and nothing else is, class counts equal an independent count, box and mask
statistics equal independent computations, and ``data check --html`` writes a page whose every
link and image resolves to a file."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from visbricks.data.classification import read_imagefolder
from visbricks.data.formats.masks import SegmentationSet
from visbricks.data.health import dataset_health, write_health_report
from visbricks.data.records import DetectionSet, ImageRecord


def _texture(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A smooth random colour field: every image different, as photos are, and lossy-codec
    friendly (no pixel noise)."""
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def _resized_jpeg(path: Path, out: Path) -> None:
    """0.7x the size, re-encoded as JPEG quality 60."""
    with Image.open(path) as im:
        small = im.convert("RGB").resize((round(im.width * 0.7), round(im.height * 0.7)))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=60)
    out.write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """ImageFolder train/val, two classes, 6 + 4 distinct images per class and split, plus
    planted: an exact copy across splits (a.png), a resized JPEG across splits (b.png), an exact
    copy within train (c.png)."""
    root = tmp_path_factory.mktemp("health") / "folder"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 4)):
        for cls in ("cat", "dog"):
            for i in range(n):
                path = root / split / cls / f"{split}_{cls}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_texture(rng)).save(path)
    train = root / "train" / "cat"
    shutil.copy(train / "train_cat_0.png", root / "val" / "dog" / "leak_exact.png")
    _resized_jpeg(train / "train_cat_1.png", root / "val" / "cat" / "leak_near.jpg")
    # The same pixels in another file format (lossless): an exact duplicate within train.
    Image.open(train / "train_cat_2.png").save(root / "train" / "dog" / "copy.bmp")
    return root


def _pairs(health: dict) -> tuple[set, set]:
    exact = {
        frozenset((f["split"], f["file"]) for f in g["files"]) for g in health["exact_duplicates"]
    }
    near = {
        frozenset({(p["a"]["split"], p["a"]["file"]), (p["b"]["split"], p["b"]["file"])})
        for p in health["near_duplicates"]
    }
    return exact, near


def test_planted_duplicates_are_found_and_nothing_else(folder):
    train, val = read_imagefolder(folder / "train"), read_imagefolder(folder / "val")
    health = dataset_health(train, val, train.classes)
    exact, near = _pairs(health)
    assert exact == {
        frozenset({("train", "cat/train_cat_0.png"), ("val", "dog/leak_exact.png")}),
        frozenset({("train", "cat/train_cat_2.png"), ("train", "dog/copy.bmp")}),
    }
    assert near == {frozenset({("train", "cat/train_cat_1.png"), ("val", "cat/leak_near.jpg")})}
    leaks = [g for g in health["exact_duplicates"] if g["across_splits"]]
    assert len(leaks) == 1 and health["near_duplicates"][0]["across_splits"]
    assert health["near_duplicates"][0]["distance"] <= health["near_threshold"]
    assert health["counts"] == {
        "exact_groups": 2,
        "exact_groups_across_splits": 1,
        "near_pairs": 1,
        "near_pairs_across_splits": 1,
    }


def test_a_set_without_duplicates_reports_none(folder, tmp_path):
    clean = tmp_path / "clean"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (clean / split / cls).mkdir(parents=True)
            for f in sorted((folder / split / cls).glob(f"{split}_*.png")):
                if f.name not in ("train_cat_2.png",):  # its copy is not taken either
                    shutil.copy(f, clean / split / cls / f.name)
    health = dataset_health(
        read_imagefolder(clean / "train"), read_imagefolder(clean / "val"), ["cat", "dog"]
    )
    assert health["exact_duplicates"] == [] and health["near_duplicates"] == []


def test_class_counts_and_image_sizes_equal_an_independent_count(folder):
    train, val = read_imagefolder(folder / "train"), read_imagefolder(folder / "val")
    health = dataset_health(train, val, None)
    for split in ("train", "val"):
        want = {c.name: len(list(c.iterdir())) for c in (folder / split).iterdir()}
        got = health["splits"][split]["class_counts"]
        assert got == want
        assert health["splits"][split]["imbalance"] == pytest.approx(
            max(want.values()) / min(want.values())
        )
        sizes = Counter(Image.open(f).size for f in (folder / split).rglob("*.*"))
        assert {(s["width"], s["height"]): s["count"] for s in
                health["splits"][split]["image_sizes"]} == dict(sizes)


def test_a_tasks_dataset_reads_like_its_format(folder, tmp_path):
    from conftest import tiny_config
    from visbricks.tasks import build_task

    cfg = tiny_config(folder, tmp_path / "runs")
    data = build_task(cfg).build_data()
    from_task = dataset_health(data.train, data.val, data.classes)
    from_format = dataset_health(
        read_imagefolder(folder / "train"), read_imagefolder(folder / "val"), data.classes
    )
    assert from_task["splits"]["train"]["class_counts"] == (
        from_format["splits"]["train"]["class_counts"]
    )
    assert _pairs(from_task) == _pairs(from_format)


def test_box_and_mask_statistics(tmp_path):
    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    records, masks = [], []
    for i in range(5):
        Image.fromarray(_texture(rng, 64)).save(tmp_path / f"{i}.png")
        n = i + 1
        xy = rng.uniform(0, 30, (n, 2))
        wh = rng.uniform(2, 30, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, 2, n)  # class "c" never occurs
        records.append(ImageRecord(f"{i}.png", 64, 64, boxes, labels))
        mask = rng.integers(0, 3, (64, 64)).astype(np.uint8)
        mask[:4] = 255  # ignored
        mask[4:6] = 7  # no class
        Image.fromarray(mask).save(tmp_path / f"{i}_mask.png")
        masks.append(mask)
    boxes = DetectionSet(tmp_path, classes, records)
    health = dataset_health(boxes, None, None)
    s = health["splits"]["train"]
    labels = np.concatenate([r.labels for r in records])
    assert s["class_counts"] == {"a": int((labels == 0).sum()), "b": int((labels == 1).sum()),
                                 "c": 0}
    assert s["imbalance"] == float("inf") and s["objects"] == len(labels)
    every = np.concatenate([r.boxes for r in records])
    size = np.sqrt((every[:, 2] - every[:, 0]) * (every[:, 3] - every[:, 1]))
    assert s["box_size"]["median"] == pytest.approx(float(np.median(size)), rel=1e-5)
    aspect = (every[:, 2] - every[:, 0]) / (every[:, 3] - every[:, 1])
    assert s["box_aspect"]["max"] == pytest.approx(float(aspect.max()), rel=1e-5)

    seg_records = [
        ImageRecord(f"{i}.png", 64, 64, mask_file=f"{i}_mask.png") for i in range(5)
    ]
    seg = SegmentationSet(tmp_path, classes, seg_records)
    health = dataset_health(seg, None, classes)
    s = health["splits"]["train"]
    every = np.concatenate([m.ravel() for m in masks])
    labelled = np.isin(every, [0, 1, 2])
    for c, name in enumerate(classes):
        assert s["mask_shares"][name] == pytest.approx((every == c).sum() / labelled.sum())
    assert s["unlabelled_pixels"] == int((every == 7).sum())


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.targets += [v for k, v in attrs if k in ("src", "href") and v]


def _check_links(page: Path) -> list[str]:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    for target in parser.targets:
        assert "://" not in target and not target.startswith("//"), target  # nothing remote
        assert (page.parent / unquote(target)).is_file(), target
    return parser.targets


def test_report_page_links_resolve(folder, tmp_path):
    train, val = read_imagefolder(folder / "train"), read_imagefolder(folder / "val")
    page = write_health_report(train, val, train.classes, tmp_path / "report")
    assert page == tmp_path / "report" / "health.html"
    targets = _check_links(page)
    assert any(t.endswith(".png") and t.startswith("health_") for t in targets)
    text = page.read_text(encoding="utf-8")
    assert "dog/leak_exact.png" in text and "cat/leak_near.jpg" in text  # listed by file
    assert sum(t.startswith("health_pair_") for t in targets) == 3  # shown side by side


def test_data_check_html(tmp_path, capsys):
    from visbricks.cli import main
    from visbricks.data.synth.shapes import write_detection

    data = write_detection(tmp_path / "det", fmt="coco", n_train=6, n_val=3, width=64, height=64)
    yaml_file = data if Path(data).is_file() else Path(data) / "data.yaml"
    assert main(["data", "check", str(yaml_file), "--html", str(tmp_path / "health")]) == 0
    printed = capsys.readouterr().out
    assert "health report:" in printed and "0 across train/val" in printed
    page = tmp_path / "health" / "health.html"
    targets = _check_links(page)
    assert "health_boxes.png" in targets and "health_classes.png" in targets
    # Refused inside the dataset (its PNGs would be read as data next time).
    assert main(["data", "check", str(yaml_file), "--html", str(tmp_path / "det" / "h")]) == 2


def test_a_limit_reads_a_seeded_sample_and_the_page_says_so(tmp_path):
    # The report after training bounds the images it decodes; the page names the sample.
    rng = np.random.default_rng(1)
    paths = []
    for i in range(6):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(_texture(rng, 32)).save(path)
        paths.append(path)
    page = write_health_report(paths, None, None, tmp_path / "out", limit=3)
    again = write_health_report(paths, None, None, tmp_path / "again", limit=3)
    assert "3 (a seeded sample of 6)" in page.read_text()
    assert page.read_text().count("<tr>") == again.read_text().count("<tr>")


def test_an_undivided_set_is_judged_on_the_holdout_training_uses(folder, tmp_path, capsys):
    """raccoon ships without a val split; training holds out a seeded 20 %, and an exact copy on
    both sides of that holdout is a leak the health check must show (it once saw one 'all')."""
    from conftest import run_cli
    from visbricks.data.formats import read_task_split

    flat = tmp_path / "flat"
    shutil.copytree(folder / "train", flat)  # <class>/*.png, no split folders
    held_out = read_task_split(flat, None, "classification", "val")
    victim = sorted(set(read_imagefolder(flat).files) - set(held_out.files))[0]
    shutil.copy(flat / held_out.files[0], flat / victim)  # a train image now equals a val one
    code, text = run_cli(capsys, "data", "check", flat, "--html", tmp_path / "h")
    assert code == 0 and "1 across train/val" in text, text
    assert f"[train] {victim}" in text and f"[val] {held_out.files[0]}" in text, text
