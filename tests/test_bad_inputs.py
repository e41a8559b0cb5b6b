"""Broken inputs through the real command line (issue 13): each one is a one-line error naming the
file or key, or a warned, counted skip — never a traceback, never silently wrong, never a user
file destroyed.

Everything runs in-process (``visbricks.cli.main``) so the whole file stays fast.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, digest, run_cli, train_tiny_run, write_colour_folder
from visbricks.config import load_config
from visbricks.errors import ConfigError, DataError, VisbricksError

# ---- helpers ---------------------------------------------------------------------------------


# A config that gets past validation fails at once on the missing data instead of training.
TRAIN = (
    "train",
    "classify-shapes",
    "data.synth=null",
    "data.root=/nonexistent/visbricks-test",
    "train.tensorboard=false",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One tiny trained run that eval / predict / export / resume take."""
    return train_tiny_run(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    from visbricks.data.synth import shapes

    out = tmp_path_factory.mktemp("voc") / "voc"
    shapes.write_detection(out, fmt="voc", n_train=4, n_val=2, width=64, height=64, seed=0)
    return out


# ---- config: ranges, types, null, tags, names ------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("epochs=-3", "epochs", "[1, inf)"),
        ("epochs=0", "epochs", "[1, inf)"),
        ("batch_size=0", "batch_size", "[1, inf)"),
        ("train.ema_decay=-0.5", "train.ema_decay", "[0, 1)"),
        ("train.ema_decay=1.0", "train.ema_decay", "[0, 1)"),
        ("train.ema_tau=0", "train.ema_tau", "(0, inf)"),
        ("train.accumulate=-2", "train.accumulate", "[1, inf)"),
        ("loss.label_smoothing=-0.1", "loss.label_smoothing", "[0, 1)"),
        ("loss.label_smoothing=1.5", "loss.label_smoothing", "[0, 1)"),
        ("data.aug.hflip=1.5", "data.aug.hflip", "[0, 1]"),
        ("optim.lr=0", "optim.lr", "(0, inf)"),
        ("optim.betas=[0.9, 1.5]", "optim.betas", "[0, 1)"),
        ("data.aug.scale=[0.5]", "data.aug.scale", "len 2"),
        ("optim.betas=[a, b]", "optim.betas", "[0, 1)"),
        ("workers=-1", "workers", "[0, inf)"),
        ("train.max_batches=2.5", "train.max_batches", "int"),
        ("optim.lr=.nan", "optim.lr", "NaN"),
    ],
)
def test_out_of_range_values_name_key_and_range(capsys, override, key, allowed):
    assert_one_line_error(capsys, *TRAIN, override, names=(repr(key), allowed))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("epochs=null", "epochs"),
        ("optim.lr=null", "optim.lr"),
        ("data.aug=null", "data.aug"),
        ("train.ema_decay=~", "train.ema_decay"),
    ],
)
def test_null_only_where_documented(capsys, override, key):
    assert_one_line_error(capsys, *TRAIN, override, names=(repr(key), "null"))


def test_null_is_accepted_where_documented():
    cfg = load_config(
        "classify-shapes", ["train.grad_clip=null", "data.synth=null", "model.pretrained=null"]
    )
    assert cfg.train.grad_clip is None and cfg.data.synth is None


@pytest.mark.parametrize(
    "override",
    [
        "optim.lr=!!python/object/apply:os.system ['echo pwned']",
        "optim.lr=!!float 0.1",
        "name=!!binary aGVsbG8=",
        "data.classes=!!set {a, b}",
        "model.backbone=!custom resnet18",
    ],
)
def test_yaml_tags_in_overrides_are_refused_naming_the_key(capsys, override):
    key = override.split("=", 1)[0]
    assert_one_line_error(capsys, *TRAIN, override, names=(repr(key), "tag"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("seed=2020-01-01", "seed"),  # YAML reads this as a date
        ("model.backbone={a: 1}", "model.backbone"),
        ("optim={lr: {deep: [1, 2]}}", "optim.lr"),
        ("optim=5", "optim"),
        ("data.normalize=[1, 2]", "data.normalize"),
        ("train.freeze={1: 2}", "train.freeze"),
    ],
)
def test_wrong_types_and_nested_garbage_name_the_key(capsys, override, key):
    assert_one_line_error(capsys, *TRAIN, override, names=(repr(key),))


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "x\\y"])
def test_run_name_is_one_path_component(capsys, tmp_path, name):
    assert_one_line_error(capsys, *TRAIN, f"project={tmp_path}", f"name={name}", names=("'name'",))
    assert not any(tmp_path.parent.glob("x"))


def test_numeric_run_name_is_a_folder_name(tmp_path):
    from visbricks.engine.rundir import new_run_dir

    cfg = load_config("classify-shapes", ["name=123"])
    assert cfg.name == "123"
    assert new_run_dir(tmp_path, cfg.task, cfg.name) == tmp_path / "classify" / "123"


def test_unknown_task_and_the_base_schema_are_not_tasks(capsys):
    assert_one_line_error(capsys, *TRAIN, "task=base", names=("'base'",))
    assert_one_line_error(capsys, *TRAIN, "task=[1]", names=("unknown task",))


def test_override_without_value_or_key(capsys):
    assert_one_line_error(capsys, *TRAIN, "epochs", names=("'epochs'", "key=value"))
    assert_one_line_error(capsys, *TRAIN, "=3", names=("empty key",))


@pytest.mark.parametrize(
    ("content", "names"),
    [
        (b"task: classify\nepochs: [\n", ("mine.yaml", "not valid YAML")),
        (b"- a\n- b\n", ("mine.yaml", "mapping")),
        (b"task: classify\nname: caf\xe9\n", ("mine.yaml", "UTF-8")),
        (b"task: classify\nepochs: 0\n", ("'epochs'", "[1, inf)")),
        (b"task: classify\noptim: {lr: -1}\n", ("'optim.lr'", "(0, inf)")),
    ],
)
def test_bad_config_files_are_named(capsys, tmp_path, content, names):
    path = tmp_path / "mine.yaml"
    path.write_bytes(content)
    assert_one_line_error(capsys, "train", path, names=names)


# ---- images: EXIF, 16-bit, float, bombs ----------------------------------------------------


def _exif_jpeg(path: Path, array: np.ndarray, orientation: int) -> None:
    im = Image.fromarray(array)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes(), quality=100)


def test_exif_rotated_jpeg_is_decoded_as_shown(tmp_path):
    from visbricks.data.io import image_size, read_image

    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :10] = 255  # a white band on the stored image's left edge
    _exif_jpeg(tmp_path / "r.jpg", stored, 6)  # "rotate 90 degrees clockwise to display"
    shown = read_image(tmp_path / "r.jpg")
    assert shown.shape == (60, 40, 3) and image_size(tmp_path / "r.jpg") == (40, 60)
    # Rotated clockwise, the left band becomes the top band.
    assert shown[:8].mean() > 200 and shown[12:].mean() < 30


def _voc_with_exif(root: Path, size_written: tuple[int, int], orientation: int) -> Path:
    """One VOC image stored 60x40 with a white object at stored x 10..30, y 5..15."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[5:15, 10:30] = 255
    _exif_jpeg(root / "JPEGImages" / "a.jpg", stored, orientation)
    w, h = size_written
    # The box as drawn on the stored pixels (1-based VOC corners).
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename><size><width>{w}</width><height>{h}</height>"
        "</size><object><name>thing</name><bndbox><xmin>11</xmin><ymin>6</ymin><xmax>30</xmax>"
        "<ymax>15</ymax></bndbox></object></annotation>"
    )
    return root


def test_exif_voc_boxes_stay_with_the_pixels(tmp_path):
    from visbricks.data.formats import read_voc
    from visbricks.data.io import read_image

    root = _voc_with_exif(tmp_path / "voc", (60, 40), 6)  # a tool that ignored EXIF
    ds = read_voc(root, strict=True)
    rec = ds.records[0]
    assert (rec.width, rec.height) == (40, 60)
    pixels = read_image(root / rec.file)
    x1, y1, x2, y2 = (int(round(v)) for v in rec.boxes[0])
    inside = pixels[y1:y2, x1:x2]
    assert inside.size and inside.mean() > 200  # the box covers the white object


def test_voc_size_that_disagrees_with_the_image_is_repaired_and_counted(tmp_path, capsys):
    from visbricks.data.formats import read_voc

    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / "JPEGImages" / "a.png")
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>600</width><height>400</height>"
        "</size><object><name>thing</name><bndbox><xmin>11</xmin><ymin>6</ymin><xmax>80"
        "</xmax><ymax>30</ymax></bndbox></object></annotation>"
    )
    ds = read_voc(root)
    rec = ds.records[0]
    assert (rec.width, rec.height) == (60, 40)  # the image's, not <size>'s
    assert rec.boxes.tolist() == [[10, 5, 60, 30]]  # clipped to the real image
    assert any("600x400" in why and "60x40" in why for _, why in ds.problems)
    with pytest.raises(DataError, match=r"a\.xml.*600x400"):
        read_voc(root, strict=True)
    code, text = run_cli(capsys, "data", "check", root, "--strict")
    assert code == 2 and "a.xml" in text and "600x400" in text


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    from visbricks.data.io import read_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    got = read_image(tmp_path / "deep.png")[..., 0].astype(float)
    assert got.dtype == np.float64 and got.shape == (8, 64)
    assert got[0, 0] == 0 and got[0, -1] == 255
    assert abs(got[0, 32] - 32 / 63 * 255) <= 1  # mid-grey stays mid-grey (not white)


def test_float_image_is_scaled(tmp_path):
    from visbricks.data.io import read_image

    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (4, 1))
    Image.fromarray(ramp).save(tmp_path / "f.tif")
    got = read_image(tmp_path / "f.tif")[..., 0]
    assert got[0, 0] == 0 and got[0, -1] == 255 and 120 <= got[0, 16] <= 135


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\0" * 64)
    idat_chunk = b"IDAT" + idat
    data += struct.pack(">I", len(idat)) + idat_chunk + struct.pack(">I", zlib.crc32(idat_chunk))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


def test_decompression_bomb_is_refused(tmp_path):
    from visbricks.data.io import check_image, read_image

    bomb = tmp_path / "bomb.png"
    _png_claiming(bomb, 60000, 60000)
    with pytest.raises(DataError, match=r"bomb\.png.*decompression bomb"):
        read_image(bomb)
    assert "decompression bomb" in check_image(bomb)


def test_pixel_limit_is_configurable(capsys, tmp_path):
    root = write_colour_folder(tmp_path / "colours", n_per_class=2, size=24)
    # 24 x 24 = 576 pixels > 100: every image refused, counted, and the run stops in one line.
    with pytest.warns(UserWarning, match="skipped 4 unreadable"):
        code, text = run_cli(
            capsys, *TRAIN, f"data.root={root}", f"project={tmp_path}", "data.max_pixels=100"
        )
    assert code == 2 and "error: " in text
    from visbricks.data.io import set_max_pixels

    set_max_pixels(178_956_970)


# ---- datasets: CSV encoding, empty classes, VOC via a relative YAML path ---------------------


def test_latin1_csv_is_one_error_naming_the_file(capsys, tmp_path):
    root = write_colour_folder(tmp_path / "colours", n_per_class=2)
    csv = tmp_path / "labels.csv"
    csv.write_bytes("filename,labels\ntrain/red/0.png,café\n".encode("latin-1"))
    assert_one_line_error(
        capsys,
        "train",
        "multilabel-shapes",
        "data.synth=null",
        "data.format=csv",
        f"data.root={root}",
        f"data.train={csv}",
        f"data.val={csv}",
        names=("labels.csv", "UTF-8"),
    )


def test_empty_class_folder_is_not_a_class(tmp_path):
    from visbricks.tasks import build_task

    root = write_colour_folder(tmp_path / "colours", n_per_class=2)
    (root / "train" / "green").mkdir()
    (root / "train" / "green" / "notes.txt").write_text("no images here")
    cfg = load_config("classify-shapes", [f"data.root={root}", "data.synth=null"])
    with pytest.warns(UserWarning, match="green.*no images"):
        assert build_task(cfg).classes == ["blue", "red"]
    strict = load_config(
        "classify-shapes", [f"data.root={root}", "data.synth=null", "data.strict=true"]
    )
    with pytest.raises(DataError, match="green.*no images"):
        _ = build_task(strict).classes


def test_voc_through_a_relative_data_yaml(capsys, voc_root, monkeypatch, tmp_path):
    monkeypatch.chdir(voc_root.parent)
    code, text = run_cli(capsys, "data", "check", f"{voc_root.name}/data.yaml")
    assert code == 0, text
    code, text = run_cli(
        capsys,
        "data",
        "convert",
        f"{voc_root.name}/data.yaml",
        "--to",
        "coco",
        "--out",
        tmp_path / "as_coco",
    )
    assert code == 0 and (tmp_path / "as_coco" / "data.yaml").is_file(), text


def test_not_utf8_data_yaml_is_named(capsys, tmp_path):
    bad = tmp_path / "data.yaml"
    bad.write_bytes(b"format: voc\nclasses: [caf\xe9]\n")
    assert_one_line_error(capsys, "data", "check", bad, names=("data.yaml",))


# ---- outputs never destroy inputs --------------------------------------------------------------


def test_convert_into_its_own_source_is_refused(capsys, voc_root):
    before = digest(voc_root)
    assert_one_line_error(
        capsys,
        "data",
        "convert",
        voc_root,
        "--to",
        "voc",
        "--out",
        voc_root,
        names=("--out", str(voc_root)),
    )
    assert_one_line_error(
        capsys,
        "data",
        "convert",
        voc_root / "data.yaml",
        "--to",
        "coco",
        "--out",
        voc_root,
        names=("--out",),
    )
    assert_one_line_error(
        capsys,
        "data",
        "convert",
        voc_root,
        "--to",
        "yolo",
        "--out",
        voc_root.parent,
        names=("contains the input",),
    )
    assert digest(voc_root) == before


def test_convert_out_is_an_existing_file(capsys, voc_root, tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    assert_one_line_error(
        capsys, "data", "convert", voc_root, "--to", "coco", "--out", target, names=("taken.txt",)
    )
    assert target.read_text() == "mine"


def test_predict_into_the_input_folder_is_refused(capsys, run_dir, tmp_path):
    images = write_colour_folder(tmp_path / "imgs", n_per_class=1) / "val" / "red"
    before = digest(images)
    assert_one_line_error(capsys, "predict", run_dir, images, "--out", images, names=("--out",))
    assert_one_line_error(
        capsys, "predict", run_dir, images / "0.png", "--out", images, names=("--out",)
    )
    assert_one_line_error(
        capsys, "predict", run_dir, images, "--out", images / "sub", names=("inside",)
    )
    assert digest(images) == before


def test_predict_out_is_an_existing_file(capsys, run_dir, tmp_path):
    images = write_colour_folder(tmp_path / "imgs", n_per_class=1) / "val"
    target = tmp_path / "out.png"
    target.write_bytes(b"mine")
    assert_one_line_error(capsys, "predict", run_dir, images, "--out", target, names=("out.png",))
    assert target.read_bytes() == b"mine"


def test_predict_same_stem_inputs_keep_both_outputs(capsys, run_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(src / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(src / "a.png")
    code, text = run_cli(capsys, "predict", run_dir, src, "--out", tmp_path / "out")
    assert code == 0, text
    outputs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert len(outputs) == 2, outputs


def test_export_over_the_weights_is_refused(capsys, run_dir):
    weights = run_dir / "weights" / "best.safetensors"
    before = weights.read_bytes()
    assert_one_line_error(capsys, "export", run_dir, "--out", weights, names=("best.safetensors",))
    assert_one_line_error(
        capsys, "export", run_dir, "--out", run_dir / "weights" / "best.yaml", names=("best.yaml",)
    )
    assert weights.read_bytes() == before


def test_eval_out_is_an_existing_file(capsys, run_dir, tmp_path):
    target = tmp_path / "metrics.txt"
    target.write_text("mine")
    assert_one_line_error(capsys, "eval", run_dir, "--out", target, names=("metrics.txt",))
    assert target.read_text() == "mine"


def test_eval_of_weights_outside_a_run_writes_beside_them(capsys, run_dir, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for name in ("best.safetensors", "best.yaml"):
        (loose / name).write_bytes((run_dir / "weights" / name).read_bytes())
    code, text = run_cli(capsys, "eval", loose / "best.safetensors")
    assert code == 0, text
    assert (loose / "best-eval" / "metrics.json").is_file()
    assert not (tmp_path / "eval").exists()  # not the grandparent


# ---- checkpoints and weights a user hands us --------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture()
def bad_checkpoints(tmp_path, run_dir) -> dict[str, Path]:
    good = (run_dir / "weights" / "last.ckpt").read_bytes()
    files = {
        "pickled": tmp_path / "pickled.ckpt",
        "truncated": tmp_path / "truncated.ckpt",
        "statedict": tmp_path / "statedict.ckpt",
        "text": tmp_path / "text.ckpt",
    }
    torch.save({"model": {}, "config": _Evil()}, files["pickled"])
    files["truncated"].write_bytes(good[: len(good) // 2])
    torch.save({"weight": torch.zeros(2)}, files["statedict"])
    files["text"].write_text("not a checkpoint")
    return files


@pytest.mark.parametrize("kind", ["pickled", "truncated", "statedict", "text"])
def test_bad_checkpoint_to_resume(capsys, bad_checkpoints, kind, tmp_path):
    path = bad_checkpoints[kind]
    line = assert_one_line_error(
        capsys, "train", "classify-shapes", f"resume={path}", names=(path.name,)
    )
    assert "pwned" not in line


@pytest.mark.parametrize("kind", ["pickled", "truncated", "statedict"])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_bad_checkpoint_to_eval_and_predict(capsys, bad_checkpoints, kind, command, tmp_path):
    path = bad_checkpoints[kind]
    extra = [tmp_path] if command == "predict" else []
    assert_one_line_error(capsys, command, path, *extra, names=(path.name,))


def test_missing_checkpoint_and_garbage_best_yaml(capsys, run_dir, tmp_path):
    assert_one_line_error(
        capsys, "train", "classify-shapes", f"resume={tmp_path / 'nope.ckpt'}", names=("nope.ckpt",)
    )
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "best.safetensors").write_bytes(
        (run_dir / "weights" / "best.safetensors").read_bytes()
    )
    (loose / "best.yaml").write_text("config: [unclosed\n")
    assert_one_line_error(capsys, "eval", loose / "best.safetensors", names=("best.yaml",))
    (loose / "best.yaml").write_text("- just a list\n")
    assert_one_line_error(capsys, "predict", loose, tmp_path, names=("best.yaml",))


def test_resume_from_a_copied_checkpoint_writes_a_new_run(capsys, run_dir, tmp_path):
    backup = tmp_path / "backup" / "deep"
    backup.mkdir(parents=True)
    ckpt = backup / "last.ckpt"
    ckpt.write_bytes((run_dir / "weights" / "last.ckpt").read_bytes())
    project = tmp_path / "proj"
    code, text = run_cli(
        capsys, "train", "classify-shapes", f"resume={ckpt}", "epochs=2", f"project={project}"
    )
    assert code == 0, text
    assert sorted(p.name for p in backup.iterdir()) == ["last.ckpt"]  # nothing written there
    assert not (tmp_path / "backup" / "plots").exists()  # nor in its grandparent
    new_runs = list((project / "classify").iterdir())
    assert len(new_runs) == 1 and (new_runs[0] / "weights" / "last.ckpt").is_file()


# ---- leftovers ---------------------------------------------------------------------------------


def test_atomic_write_leaves_no_temp_on_error_and_stale_temps_are_removed(tmp_path):
    from visbricks.files import atomic_write, remove_stale_temps

    def fail(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "last.ckpt", fail)
    assert list(tmp_path.iterdir()) == []
    # A temp left by a process killed mid-write (its pid no longer runs) is removed; a live
    # writer's temp is kept.
    dead = tmp_path / ".last.ckpt.tmp999999999.abc123"
    live = tmp_path / f".last.ckpt.tmp{os.getppid()}.abc123"
    mine = tmp_path / "notes.txt"
    for p in (dead, live, mine):
        p.write_text("x")
    assert remove_stale_temps(tmp_path) == [dead]
    assert live.exists() and mine.exists()


def test_resume_removes_stale_temps(capsys, run_dir):
    stale = run_dir / "weights" / ".last.ckpt.tmp999999999.zzzz"
    stale.write_bytes(b"half a checkpoint")
    code, text = run_cli(
        capsys,
        "train",
        "classify-shapes",
        f"resume={run_dir / 'weights' / 'last.ckpt'}",
        "epochs=1",
    )
    assert code == 0, text
    assert not stale.exists()


def test_all_errors_are_visbricks_errors():
    # The CLI prints these as one line; keep the hierarchy that makes that work.
    assert issubclass(ConfigError, VisbricksError) and issubclass(DataError, VisbricksError)


def test_a_killed_data_synth_leaves_nothing_behind_the_next_one(capsys, tmp_path):
    stale = tmp_path / "shapes.tmp-999999999"  # a generator killed with kill -9
    (stale / "train").mkdir(parents=True)
    out = tmp_path / "shapes"
    code, text = run_cli(
        capsys,
        "data",
        "synth",
        "shapes",
        "--out",
        out,
        "--n-train",
        "6",
        "--n-val",
        "6",
        "--size",
        "32",
    )
    assert code == 0, text
    assert not stale.exists() and (out / ".complete").is_file()


def test_garbage_video_and_pretrained_weights_are_named(capsys, run_dir, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    assert_one_line_error(
        capsys, "predict", run_dir, video, "--out", tmp_path / "o", names=("clip.mp4",)
    )
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(b"PK\x03\x04 truncated zip")
    root = write_colour_folder(tmp_path / "colours", n_per_class=2)
    assert_one_line_error(
        capsys,
        *TRAIN[:3],
        f"data.root={root}",
        f"project={tmp_path}",
        f"model.pretrained={weights}",
        names=("backbone.pth",),
    )


def test_coco_size_that_disagrees_with_the_image_is_repaired_and_counted(tmp_path):
    import json

    from visbricks.data.formats import read_coco

    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "a.png")
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 600, "height": 400}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [10, 5, 70, 25],
                "area": 1750,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    ds = read_coco(tmp_path / "ann.json")
    rec = ds.records[0]
    assert (rec.width, rec.height) == (60, 40)
    assert rec.boxes.tolist() == [[10, 5, 60, 30]]
    assert any("600x400" in why for _, why in ds.problems)
    with pytest.raises(DataError, match=r"a\.png.*600x400"):
        read_coco(tmp_path / "ann.json", strict=True)


def test_predict_default_output_is_next_to_its_run(capsys, run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not in the current folder's runs/ either
    images = write_colour_folder(tmp_path / "imgs", n_per_class=1) / "val" / "red"
    for _ in range(2):
        code, text = run_cli(capsys, "predict", run_dir / "weights" / "best.safetensors", images)
        assert code == 0, text
    assert (run_dir / "predict" / "predictions.json").is_file()
    assert (run_dir / "predict-2" / "predictions.json").is_file()  # a second one never overwrites
    assert not (tmp_path / "runs").exists()


def test_eval_reads_the_split_once_and_keeps_working_when_its_report_is_refused(
    capsys, run_dir, tmp_path, monkeypatch
):
    """metrics.json and the report come from one pass over the split (it was two); a report
    folder that is not a report is refused with a warning, and eval still evaluates."""
    from visbricks.metrics.classification import ClassificationEvaluator

    computed = []
    original = ClassificationEvaluator.compute
    monkeypatch.setattr(
        ClassificationEvaluator, "compute", lambda self: computed.append(1) or original(self)
    )
    out = tmp_path / "ev"
    code, text = run_cli(capsys, "eval", run_dir, "--out", out)
    assert code == 0 and len(computed) == 1, text
    first = json.loads((out / "metrics.json").read_text())
    assert (out / "report" / "index.html").is_file() and "report:" in text
    (out / "report" / "index.html").unlink()
    (out / "report" / "mine.txt").write_text("not a report")
    code, text = run_cli(capsys, "eval", run_dir, "--out", out)
    assert code == 0 and len(computed) == 2, text
    assert "report not written" in text and (out / "report" / "mine.txt").read_text()
    assert json.loads((out / "metrics.json").read_text()) == first
