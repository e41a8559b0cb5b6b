"""Bad lane data through the real command line (issue 25 item 5): a broken CULane list line,
TuSimple label lines of the wrong JSON types, a truncated image, and labelled images training
cannot use are each a one-line error (``--strict``) or a warned, counted skip naming file and
line — never a traceback, never a silent loss; ``eval --out`` inside the dataset is refused.

In-process (``visbricks.cli.main``); one tiny lane run (one batch, through ``run_training``) is
shared by the module.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, digest, run_cli
from visbricks.data.formats.culane import CULane
from visbricks.data.formats.tusimple import TuSimple
from visbricks.data.io import write_image
from visbricks.data.lanes import LaneRecord, LaneSet
from visbricks.data.synth.lanes import render_street

W, H = 160, 64
BAD_LIST_LINE = b"/img/\xff\xfe.png /laneseg_label_w16/img/0.png 0 1 1 0\n"


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch):
    # The cases below are about their own arguments; a shrinking environment must not add keys.
    monkeypatch.delenv("VISBRICKS_OVERRIDES", raising=False)


def _street(root: Path, fmt: type) -> Path:
    """Eight labelled 160x64 street frames written in ``fmt`` (TuSimple or CULane) at ``root``."""
    records = []
    for f, (rgb, lanes, rows) in enumerate(render_street(3, 8, W, H, 2, stride=5)):
        write_image(root / f"img/{f}.png", rgb)
        records.append(LaneRecord(f"img/{f}.png", W, H, lanes, h_samples=rows.tolist()))
    fmt().write(LaneSet(root, records), root, "train")
    return root


def _lines(root: Path, k: int, change) -> None:
    """Rewrites the coordinates of frame ``k``'s ``.lines.txt`` through ``change``."""
    path = root / f"img/{k}.lines.txt"
    rows = [np.array(line.split(), float) for line in path.read_text().splitlines()]
    path.write_text("".join(" ".join(map(str, change(r))) + "\n" for r in rows))


def _broken_culane(root: Path) -> Path:
    """Nine listed CULane images, of which training can use four: one list line that is not
    UTF-8, one listed image missing, one with a NaN point, one labelled at twice the image size;
    and one of the four left is a PNG cut in half (its header still reads)."""
    _street(root, CULane)
    with open(root / "list/train_gt.txt", "ab") as f:
        f.write(BAD_LIST_LINE)
    (root / "img/1.png").unlink()
    _lines(root, 2, lambda r: np.where(np.arange(len(r)) == 2, np.nan, r))
    _lines(root, 3, lambda r: 2 * r)
    png = root / "img/4.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    return root


@pytest.fixture(scope="module")
def lane_run(tmp_path_factory) -> dict:
    """One epoch of one batch on the broken CULane set: the run folder, the dataset, what was
    printed and the warnings raised (recorded here: a module fixture has no capsys). Trained
    through ``run_training``, what ``visbricks train`` calls, without the run report after it."""
    from visbricks.cli import run_training
    from visbricks.config import load_config

    tmp = tmp_path_factory.mktemp("bad_lanes")
    root = _broken_culane(tmp / "culane")
    before = digest(root)
    cfg = load_config(
        "lanes-driving",
        [
            f"data.root={root}",
            "data.synth=null",
            "data.val=train",
            f"project={tmp / 'runs'}",
            "img_size={width: 160, height: 64}",
            "batch_size=8",
            "workers=0",
            "epochs=1",
            "train.max_batches=1",
            "model.backbone=mobilenet_v3_small",
            "model.head_args={hidden: 32}",
            "train.plots=false",
            "train.tensorboard=false",
        ],
    )
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
        warnings.simplefilter("always")
        with contextlib.redirect_stderr(out):
            trainer, _ = run_training(cfg)
    return {
        "run": trainer.run_dir,
        "root": root,
        "before": before,
        "text": out.getvalue(),
        "warnings": [str(w.message) for w in caught],
    }


# ---- CULane: a list line that is not UTF-8 ---------------------------------------------------
def test_culane_list_line_not_utf8_is_named(tmp_path, capsys):
    root = _street(tmp_path / "culane", CULane)
    with open(root / "list/train_gt.txt", "ab") as f:
        f.write(BAD_LIST_LINE)
    before = digest(root)
    code, text = run_cli(capsys, "data", "check", root)
    assert code == 0 and "list/train_gt.txt:9: not UTF-8 text" in text, text
    assert "train: 8 images" in text  # the other lines are read
    assert_one_line_error(capsys, "data", "check", root, "--strict", names=("train_gt.txt:9",))
    assert digest(root) == before


# ---- TuSimple: label lines of the wrong JSON types -------------------------------------------
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("42", "a JSON int (42), not an object"),
        ('{"lanes": [[1, 2]], "h_samples": ["a", 30], "raw_file": "img/0.png"}',
         'h_samples holds "a", not a number'),
        ('{"lanes": [[1, 2]], "h_samples": null, "raw_file": "img/0.png"}',
         "h_samples is null, not a list of numbers"),
        ('{"lanes": [[1, null]], "h_samples": [20, 30], "raw_file": "img/0.png"}',
         "lane 0 holds null, not a number"),
        ('{"lanes": [["x", 2]], "h_samples": [20, 30], "raw_file": "img/0.png"}',
         'lane 0 holds "x", not a number'),
    ],
)  # fmt: skip
def test_tusimple_line_of_wrong_types_is_skipped_and_named(tmp_path, capsys, line, reason):
    root = _street(tmp_path / "tusimple", TuSimple)
    labels = root / "label_data_0313.json"  # the benchmark's name for its train labels
    (root / "train.json").rename(labels)
    (root / "data.yaml").unlink()
    with open(labels, "a") as f:
        f.write(line + "\n")
    before = digest(root)
    code, text = run_cli(capsys, "data", "check", root)
    assert code == 0 and f"label_data_0313.json:9: {reason}" in text, text
    assert "train: 8 images" in text
    assert_one_line_error(
        capsys, "data", "check", root, "--strict", names=("label_data_0313.json:9", reason)
    )
    # The reader counts it among the entries it skipped, as training reports them.
    ds = TuSimple().read(root)
    assert len(ds) == 8 and [s[1] for s in ds.skipped] == ["label_data_0313.json:9"]
    assert digest(root) == before


def test_tusimple_label_data_with_bad_first_line_is_reported_not_omitted(tmp_path, capsys):
    # The file was recognised by its first line: a broken first line hid the whole file.
    root = _street(tmp_path / "tusimple", TuSimple)
    labels = root / "label_data_0313.json"
    labels.write_text("42\n" + (root / "train.json").read_text())
    (root / "train.json").unlink()
    (root / "data.yaml").unlink()
    code, text = run_cli(capsys, "data", "check", root)
    assert code == 0 and "(tusimple lanes)" in text, text
    assert "label_data_0313.json:1: a JSON int (42), not an object" in text
    assert "train: 8 images" in text


# ---- a truncated PNG -------------------------------------------------------------------------
def test_truncated_png_is_reported_by_data_check(tmp_path, capsys):
    root = _street(tmp_path / "tusimple", TuSimple)
    png = root / "img/4.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    code, text = run_cli(capsys, "data", "check", root)
    assert code == 0 and "img/4.png: unreadable image (cannot decode" in text, text
    assert_one_line_error(capsys, "data", "check", root, "--strict", names=("img/4.png",))


def test_training_skips_a_truncated_png_warned_and_named(lane_run):
    assert (lane_run["run"] / "weights" / "best.safetensors").is_file(), lane_run["text"]
    skipped = [w for w in lane_run["warnings"] if w.startswith("skipping sample img/4.png")]
    assert skipped and "cannot decode image" in skipped[0], lane_run["warnings"]


# ---- labelled images training cannot use: warned and counted, by cause -----------------------
def test_training_counts_every_unusable_labelled_image(lane_run):
    counted = [w for w in lane_run["warnings"] if w.startswith("skipped 4 of 9 labelled images")]
    assert counted, lane_run["warnings"]
    message = counted[0]
    for part in (
        "1 non-UTF-8 line(s)",
        "1 missing image(s)",
        "1 label(s) with non-finite points",
        "1 label(s) far outside the image",
        "list/train_gt.txt:9",
        "list/train_gt.txt:2: listed image not found: img/1.png",
        "img/2.png: lane 0 has non-finite coordinates",
        "img/3.png: lane 0:",
        "data.strict=true",
    ):
        assert part in message, (part, message)
    assert digest(lane_run["root"]) == lane_run["before"]  # nothing written into the data


def test_strict_training_stops_at_the_first_unusable_image(lane_run, tmp_path, capsys):
    assert_one_line_error(
        capsys,
        "train",
        "lanes-driving",
        f"data={lane_run['root']}",
        "data.strict=true",
        f"project={tmp_path}",
        names=("list/train_gt.txt:9", "not UTF-8"),
    )
    assert not any(tmp_path.iterdir())  # no run folder for a run that never started


# ---- eval --out inside the evaluated data ----------------------------------------------------
@pytest.mark.parametrize("inside", ["img", "list/eval"])
def test_eval_out_inside_the_dataset_is_refused(lane_run, capsys, inside):
    root, run = lane_run["root"], lane_run["run"]
    before_data, before_run = digest(root), digest(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data's own skips, asserted above
        assert_one_line_error(
            capsys, "eval", run, "--out", root / inside, names=(str(root / inside), "inside")
        )
    assert digest(root) == before_data and digest(run) == before_run
    assert not (root / inside / "metrics.json").exists()

