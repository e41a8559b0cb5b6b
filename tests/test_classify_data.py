"""Classification data: formats, bad input (corrupt, missing, empty), normalization round trip."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import write_colour_folder
from visbricks.config import load_config
from visbricks.data.classification import csv_dataset, imagefolder_dataset
from visbricks.data.normalize import denormalize, normalize, resolve_normalization, to_image
from visbricks.errors import ConfigError, DataError
from visbricks.tasks import build_task


def test_corrupt_image_is_warned_skipped_counted_or_an_error_when_strict(tmp_path):
    root = write_colour_folder(tmp_path / "d")
    bad = root / "train" / "red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    truncated = root / "train" / "blue" / "truncated.png"
    truncated.write_bytes((root / "train" / "blue" / "0.png").read_bytes()[:60])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = imagefolder_dataset(root / "train")
    assert len(ds) == 16 and len(ds.skipped) == 2
    assert {p for p, _ in ds.skipped} == {str(bad), str(truncated)}
    message = " ".join(str(w.message) for w in caught)
    assert "skipped 2 unreadable image(s)" in message and "broken.png" in message
    with pytest.raises(DataError, match=r"truncated\.png"):  # blue comes first
        imagefolder_dataset(root / "train", strict=True)


def test_corrupt_image_through_config_strict(tmp_path):
    root = write_colour_folder(tmp_path / "d")
    (root / "val" / "red" / "bad.jpg").write_bytes(b"garbage")
    cfg = load_config(
        "classify-shapes", [f"data.root={root}", "data.synth=null", "data.strict=true"]
    )
    with pytest.raises(DataError, match="bad.jpg"):
        build_task(cfg).build_data()


def test_missing_and_empty_datasets_name_the_path(tmp_path):
    cfg = load_config("classify-shapes", [f"data.root={tmp_path / 'nowhere'}", "data.synth=null"])
    with pytest.raises(ConfigError, match="nowhere"):
        build_task(cfg).build_data()
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "cat").mkdir(parents=True)
    cfg = load_config("classify-shapes", [f"data.root={tmp_path / 'empty'}", "data.synth=null"])
    with pytest.raises(DataError, match="empty"):
        build_task(cfg).build_data()
    (tmp_path / "noclass" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class sub-folders"):
        imagefolder_dataset(tmp_path / "noclass" / "train")


def test_csv_multilabel_format(tmp_path):
    root = write_colour_folder(tmp_path / "d")
    csv = tmp_path / "d" / "labels.csv"
    csv.write_text("filename,labels\ntrain/red/0.png,red warm\ntrain/blue/0.png,blue\n")
    ds = csv_dataset(csv)
    assert ds.classes == ["blue", "red", "warm"]
    assert ds[0]["labels"].tolist() == [0.0, 1.0, 1.0] and ds[1]["labels"].tolist() == [1, 0, 0]
    (tmp_path / "bad.csv").write_text("file,tags\nx.png,a\n")
    with pytest.raises(DataError, match="bad.csv.*header"):
        csv_dataset(tmp_path / "bad.csv")
    (tmp_path / "escape.csv").write_text("filename,labels\n../../etc/passwd,a\n")
    with pytest.raises(DataError, match="escapes the dataset root"):
        csv_dataset(tmp_path / "escape.csv")
    assert root.exists()


@pytest.mark.parametrize(
    "preset", ["imagenet", "caffe", "none", {"mean": [120, 110, 100], "std": [60, 60, 60]}]
)
def test_normalize_denormalize_to_image_round_trip(preset):
    mean, std = resolve_normalization(preset)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    x = normalize(torch.from_numpy(image).permute(2, 0, 1), mean, std)
    assert np.array_equal(to_image(denormalize(x, mean, std)), image)
    if preset == "caffe":  # caffe: pixel - mean on 0..255, std 1
        assert torch.allclose(x[0], torch.from_numpy(image[..., 0]).float() - 123.675, atol=1e-3)


def test_bad_normalization_is_a_config_error():
    with pytest.raises(ConfigError, match="data.normalize"):
        resolve_normalization("imagenett")


def test_a_flat_class_folder_gets_the_seeded_holdout_like_box_and_mask_sets(tmp_path):
    # <class>/*.png with no train/val folders: before the one data path this was "not found".
    root = write_colour_folder(tmp_path / "d", n_per_class=5) / "train"
    cfg = load_config("classify", [f"data.root={root}", "img_size=16"])
    task = build_task(cfg)
    assert task.classes == ["blue", "red"]
    bundle = task.datasets()
    train = {f.name + f.parent.name for f in bundle.train.files}
    val = {f.name + f.parent.name for f in bundle.val.files}
    assert len(train) == 8 and len(val) == 2 and not train & val
    again = build_task(load_config("classify", [f"data.root={root}", "img_size=16"])).datasets()
    assert [f.name for f in again.val.files] == [f.name for f in bundle.val.files]  # seeded


def test_a_classification_data_yaml_names_its_splits(tmp_path):
    root = write_colour_folder(tmp_path / "d", n_per_class=3)
    (root / "train").rename(root / "fit")
    (root / "data.yaml").write_text("format: imagefolder\ntrain: fit\nval: val\n")
    task = build_task(load_config("classify", [f"data.root={root}", "img_size=16"]))
    assert len(task.datasets().train) == 6
    (root / "data.yaml").write_text("format: imagefolder\ntrain: fit\n")
    with pytest.raises(ConfigError, match=r"data.yaml: no 'val' split"):
        build_task(load_config("classify", [f"data.root={root}", "img_size=16"])).datasets()


def test_data_check_reads_an_image_folder_and_lists_every_problem(tmp_path, capsys):
    from conftest import digest, run_cli

    root = write_colour_folder(tmp_path / "d", n_per_class=3)
    (root / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    leak = root / "val" / "blue" / "copy_of_train_0.png"
    leak.write_bytes((root / "train" / "blue" / "0.png").read_bytes())
    (root / "train" / "red" / "notes.txt").write_text("not an image")
    for f in (root / "val" / "red").iterdir():
        f.unlink()  # red is missing from val
    before = digest(root)
    code, text = run_cli(capsys, "data", "check", root)
    assert "(imagefolder, 2 classes, one label per image)" in text, text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["blue"] == ["3", "4"] and rows["red"] == ["4", "0"], text
    assert "broken.png: cannot decode" in text
    same = root / "train" / "blue" / "0.png"
    assert f"copy_of_train_0.png: the same image is in train: {same}" in text
    assert "class 'red' has no images in val" in text
    assert "notes.txt: not read as an image" in text
    assert digest(root) == before  # a check writes nothing into the dataset
