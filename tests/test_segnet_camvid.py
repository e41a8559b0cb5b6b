"""CamVid as its users have it: the SegNet layout (``train/`` + ``trainannot/``, a pair list of
someone else's absolute paths), ``ignore_index`` from a data YAML or ``--ignore-index``, pixel
shares in ``data check``, ``split:`` rules on mask YAMLs, and the real CamVid folder end to end.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from readme_harness import check_outcome
from readme_harness import run as run_cli

from conftest import shared_data
from visbricks.cli import main
from visbricks.data.check import check_dataset
from visbricks.data.formats import convert, find_format, get_format, read_task_split
from visbricks.data.formats.masks import read_mask, write_mask
from visbricks.data.io import write_image
from visbricks.data.segmentation import SegmentationDataset
from visbricks.errors import ConfigError

pytestmark = pytest.mark.cost(19)  # seconds here: scheduled early (conftest.py)

CLASSES = ["sky", "road", "car"]
VOID = 11
CAMVID = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
          "Pedestrian", "Bicyclist"]  # ../shared/data/README.md, in label order


def _segnet(root: Path, n_train: int = 5, n_val: int = 2, classes: bool = True) -> Path:
    """A SegNet layout in ``root``: train/ + trainannot/, val/ + valannot/ (12×16 PNGs, labels
    0..2 and void 11), a train.txt of foreign absolute paths for all but the last train image,
    one line listing it through a ``../`` path that resolves inside the root by name, and one
    ``../`` line naming a file that exists only outside the root. val/ has no list and
    ``valannot/val1.png`` holds a stray label 7."""
    rng = np.random.default_rng(0)
    lines = []
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            mask = rng.integers(0, 3, (12, 16)).astype(np.uint8)
            mask[0, : 2 + i] = VOID
            if (split, i) == ("val", 1):
                mask[5, 5] = 7
            write_image(root / split / f"{split}{i}.png", rng.integers(0, 255, (12, 16, 3),
                                                                      dtype=np.uint8))
            write_mask(root / f"{split}annot" / f"{split}{i}.png", mask)
            if split == "train" and i < n - 1:
                lines.append(f"/SegNet/CamVid/train/{split}{i}.png "
                             f"/SegNet/CamVid/trainannot/{split}{i}.png")
    last = f"train{n_train - 1}.png"
    lines.append(f"../../elsewhere/train/{last} ../../elsewhere/trainannot/{last}")
    outside = root.parent / "outside"
    write_image(outside / "secret.png", np.zeros((12, 16, 3), np.uint8))
    write_mask(outside / "secretannot.png", np.zeros((12, 16), np.uint8))
    lines.append("../outside/secret.png ../outside/secretannot.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    if classes:
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def _count(root: Path, mask_files: list[str]) -> np.ndarray:
    """Pixels per label value, counted with PIL and numpy alone."""
    counts = np.zeros(256, np.int64)
    for f in mask_files:
        counts += np.bincount(np.asarray(Image.open(root / f)).ravel(), minlength=256)
    return counts


def test_segnet_layout_is_detected_and_listed_paths_stay_inside_the_root(tmp_path):
    root = _segnet(tmp_path / "camvid")
    assert find_format(root, "segmentation").name == "segnet"
    assert find_format(root).name == "segnet"  # what `data check` asks: no kind given
    fmt = get_format("segnet")
    assert fmt.splits(root) == ["train", "val"]
    ds = fmt.read(root, split="train", ignore_index=VOID)
    assert ds.classes == CLASSES and ds.ignore_index == VOID
    # Foreign absolute paths and the ../ path resolve by file name to the root's own files.
    assert [r.file for r in ds.records] == [f"train/train{i}.png" for i in range(5)]
    assert [r.mask_file for r in ds.records] == [f"trainannot/train{i}.png" for i in range(5)]
    assert (ds.records[0].width, ds.records[0].height) == (16, 12)
    # The escape names a file that exists only outside the root: refused, with its line.
    ((where, reason),) = ds.problems
    assert where == "train.txt:6" and "secret.png" in reason and "inside the root" in reason
    val = fmt.read(root, split="val", ignore_index=VOID)
    assert [r.file for r in val.records] == ["val/val0.png", "val/val1.png"]


def test_data_check_pixel_shares_stray_labels_and_ignore_index(tmp_path, capsys):
    root = _segnet(tmp_path / "camvid")
    report = check_dataset(root, ignore_index=VOID)
    assert report.dataset_format == "segnet" and report.classes == CLASSES
    for split in ("train", "val"):
        ds = get_format("segnet").read(root, split=split, ignore_index=VOID)
        counts = _count(root, [r.mask_file for r in ds.records])
        total = counts.sum()
        expected = {c: counts[i] / total for i, c in enumerate(CLASSES)}
        assert report.shares(split) == pytest.approx(expected, abs=1e-12)
        assert report.splits[split]["ignored"] == counts[VOID]
        assert report.splits[split]["other"] == counts[3:].sum() - counts[VOID]
    # The stray 7 is listed with its file; the void 11 is not a problem.
    stray = [(s, f) for s, f, r in report.problems if "values [7]" in r]
    assert stray == [("val", "valannot/val1.png")]
    assert [r for _, _, r in report.problems if r.startswith("values")] == [
        f"values [7] outside the 3 classes (0..2) and not the ignore index {VOID}"
    ]
    # The same through the command line flag; without it every mask's 11 is flagged.
    assert main(["data", "check", str(root), "--ignore-index", "11"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\(ignore 11\)\s+\d+\s+[\d.]+%", out, re.M), out
    assert "valannot/val1.png: values [7]" in out and "values [7, 11]" not in out
    flagged = check_dataset(root)
    assert sum("values [11]" in r for _, _, r in flagged.problems) == 6


def test_ignore_index_and_palette_from_a_data_yaml(tmp_path):
    root = _segnet(tmp_path / "camvid", classes=False)
    cfg = tmp_path / "configs" / "camvid.yaml"
    cfg.parent.mkdir()
    palette = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]
    cfg.write_text(yaml.safe_dump({"format": "segnet", "root": "../camvid", "classes": CLASSES,
                                   "ignore_index": VOID, "palette": palette}))
    report = check_dataset(cfg)
    assert report.classes == CLASSES and report.ignore_index == VOID and not report.numbered
    assert [r for _, _, r in report.problems if "values" in r] == [
        "values [7] outside the 3 classes (0..2) and not the ignore index 11"
    ]
    ds = get_format("segnet").read(cfg, split="train")
    assert ds.palette == [v for c in palette for v in c]
    # Training maps the dataset's ignore value to the loss's ignore (255); classes stay.
    data = SegmentationDataset(ds)
    _, mask = data.load(0)
    source, _ = read_mask(root / ds.records[0].mask_file)
    assert (mask[source == VOID] == 255).all() and VOID not in mask
    np.testing.assert_array_equal(mask[source < 3], source[source < 3])
    # A bad palette is one line naming the file and key.
    cfg.write_text(yaml.safe_dump({"format": "segnet", "root": "../camvid", "palette": [[1, 2]]}))
    with pytest.raises(ConfigError, match=r"camvid.yaml: 'palette' must be"):
        check_dataset(cfg)


def test_unnamed_classes_are_numbered_and_the_report_says_so(tmp_path):
    root = _segnet(tmp_path / "camvid", classes=False)
    with pytest.warns(UserWarning, match="class_0..class_2"):
        report = check_dataset(root, ignore_index=VOID)
    assert report.classes == ["class_0", "class_1", "class_2"] and report.numbered
    assert "classes not named: class_0..class_2" in report.format()
    # Later splits keep the first one's classes, so val's stray 7 is still caught.
    assert any("values [7]" in r for _, _, r in report.problems)


def test_split_rule_on_a_label_masks_yaml_is_seeded_and_disjoint(tmp_path):
    root = tmp_path / "lm"
    for i in range(10):
        write_image(root / "images" / f"{i}.png", np.full((8, 8, 3), i, np.uint8))
        write_mask(root / "masks" / f"{i}.png", np.full((8, 8), i % 2, np.uint8))

    def parts(seed: int) -> tuple[set[str], set[str]]:
        (root / "data.yaml").write_text(yaml.safe_dump({
            "format": "label_masks", "classes": ["a", "b"], "ignore_index": VOID,
            "train": {"images": "images", "masks": "masks"},
            "split": {"val_fraction": 0.3, "seed": seed},
        }))  # fmt: skip
        fmt = find_format(root, "segmentation")
        assert fmt.splits(root) == ["train", "val"]
        # The tasks' one data path reads it (no auto holdout: the YAML says how).
        sets = [read_task_split(root, "auto", "segmentation", s) for s in ("train", "val")]
        assert all(s.ignore_index == VOID and s.classes == ["a", "b"] for s in sets)
        return tuple({r.file for r in s.records} for s in sets)  # type: ignore[return-value]

    train, val = parts(seed=1)
    assert len(train) == 7 and len(val) == 3 and not train & val
    assert train | val == {f"images/{i}.png" for i in range(10)}
    assert parts(seed=1) == (train, val)
    assert parts(seed=2)[1] != val
    report = check_dataset(root)
    assert [report.splits[s]["images"] for s in ("train", "val")] == [7, 3]
    # A rule derives val: with a val key too it is one error naming the file.
    doc = yaml.safe_load((root / "data.yaml").read_text())
    doc["val"] = doc["train"]
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"data.yaml: 'split' derives val from train"):
        find_format(root, "segmentation").read(root, split="val")


def test_segment_task_reads_a_train_only_segnet_folder_with_a_holdout(tmp_path):
    from visbricks.config import load_config
    from visbricks.tasks import build_task

    root = _segnet(tmp_path / "camvid", n_train=10, classes=False)
    for sub in ("val", "valannot"):
        for f in (root / sub).iterdir():
            f.unlink()
        (root / sub).rmdir()
    cfg = load_config("segment", [f"data.root={root}", "data.ignore_index=11",
                                  f"project={tmp_path / 'runs'}", "data.cache=false"])
    task = build_task(cfg)
    with pytest.warns(UserWarning):
        data = task.build_data()
    assert task.classes == ["class_0", "class_1", "class_2"]  # 11 is void, not a class
    train = {r.file for r in data.train.records}
    val = {r.file for r in data.val.records}
    assert len(train) == 8 and len(val) == 2 and not train & val  # 10 listed, 1 refused
    assert data.train.ignore_index == VOID


def test_segnet_round_trips_through_data_convert(tmp_path):
    root = _segnet(tmp_path / "camvid")
    (root / "train.txt").write_text("".join(  # only resolvable lines: a clean source
        f"train/train{i}.png trainannot/train{i}.png\n" for i in range(5)))
    out = convert(root, tmp_path / "lab", to="label_masks")
    back = convert(out, tmp_path / "segnet", to="segnet")
    fmt = get_format("segnet")
    for split in ("train", "val"):
        a = fmt.read(root, split=split)
        b = fmt.read(back, split=split)
        assert b.classes == CLASSES and len(a.records) == len(b.records)
        for ra, rb in zip(a.records, b.records):
            np.testing.assert_array_equal(read_mask(a.root / ra.mask_file)[0],
                                          read_mask(b.root / rb.mask_file)[0])


def test_real_camvid_check_and_two_training_steps(tmp_path):
    camvid = shared_data("camvid")
    ran = run_cli(["visbricks", "data", "check", str(camvid), "--ignore-index", "11"], tmp_path)
    assert "(segnet, 11 classes, masks)" in ran.stdout and "367     367" in ran.stdout
    counts = _count(camvid, [f"trainannot/{p.name}" for p in (camvid / "train").iterdir()])
    total = counts.sum()
    printed = dict(re.findall(r"^(class_\d+|\(ignore 11\))\s+\d+\s+([\d.]+)%", ran.stdout, re.M))
    assert len(printed) == 12, ran.stdout
    for value in range(12):
        key = "(ignore 11)" if value == VOID else f"class_{value}"
        assert float(printed[key]) == pytest.approx(100 * counts[value] / total, abs=0.006)
    assert counts[12:].sum() == 0 and "no problems found" in ran.stdout
    # From an empty folder, as a user would: 2 tiny steps, a seeded 20 % of train as val.
    work = tmp_path / "work"
    work.mkdir()
    # The names from the data's README (data check above showed the numbered ones).
    argv = ["visbricks", "train", "segment", f"data={camvid}", "data.ignore_index=11",
            f"data.classes=[{', '.join(CAMVID)}]"]
    trained = run_cli(argv, work)
    check_outcome(trained, work)
    assert "holding out 73 of its 367 train images" in trained.out
    assert "val/IoU_Bicyclist" in trained.out and "class_11" not in trained.out
