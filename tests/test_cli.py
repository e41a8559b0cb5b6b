"""The command line: help, errors as one line, train → eval → predict on a tiny run, summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from conftest import write_colour_folder
from visbricks.cli import main
from visbricks.deploy.summary import receptive_fields

pytestmark = pytest.mark.cost(28)  # seconds here: scheduled early (conftest.py)


def test_help_is_fast_and_does_not_import_torch():
    code = (
        "import sys; from visbricks.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    for cmd in ("train", "eval", "predict", "bench", "export", "summary", "demo", "data"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


def test_config_errors_are_one_line_naming_the_key(capsys):
    assert main(["train", "classify-shapes", "optim.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'optim.lrr'" in err and "'optim.lr'" in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    root = write_colour_folder(tmp / "colours")
    code = main(
        [
            "train",
            "classify-shapes",
            f"data.root={root}",
            "data.synth=null",
            f"project={tmp / 'runs'}",
            "img_size=32",
            "batch_size=8",
            "epochs=2",
            "train.tensorboard=false",
        ]
    )
    assert code == 0
    return tmp, root, tmp / "runs" / "classify" / "classify-shapes"


def test_eval_writes_and_prints_metrics(trained_run, capsys):
    tmp, root, run = trained_run
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "val/top1" in out and "precision" in out
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["val/top1"] <= 1.0
    assert (run / "eval" / "confusion_matrix.png").is_file()


def test_eval_split_test_is_labelled_test(trained_run, capsys):
    import shutil

    tmp, root, run = trained_run
    shutil.copytree(root / "val", root / "test", dirs_exist_ok=True)
    out = tmp / "eval-test"
    assert main(["eval", str(run), "--split", "test", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test/top1" in metrics and not any(k.startswith("val/") for k in metrics)
    assert "test images" in printed and "validation" not in printed
    # The same images as val: the same numbers under the other name.
    assert main(["eval", str(run), "--out", str(tmp / "eval-val")]) == 0
    val = json.loads((tmp / "eval-val" / "metrics.json").read_text())
    assert metrics["test/top1"] == val["val/top1"]


def test_predict_folder_and_glob_write_images_and_json(trained_run):
    tmp, root, run = trained_run
    out = tmp / "pred"
    assert (
        main(
            [
                "predict",
                str(run / "weights" / "best.safetensors"),
                str(root / "val"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 16 and {p["label"] for p in preds} <= {"red", "blue"}
    assert len(list(out.glob("*.png"))) == 16  # same names in red/ and blue/ are both kept
    out2 = tmp / "pred2"
    assert main(["predict", str(run), str(root / "val" / "red" / "*.png"), "--out", str(out2)]) == 0
    assert len(json.loads((out2 / "predictions.json").read_text())) == 8


def test_predict_missing_source_is_an_error(trained_run, capsys):
    tmp, _, run = trained_run
    assert main(["predict", str(run), str(tmp / "absent")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_summary_prints_layers_flops_and_receptive_fields(capsys):
    assert main(["summary", "classify-shapes", "img_size=64", "--rf-size", "512"]) == 0
    out = capsys.readouterr().out
    assert "backbone.layer1" in out and "FLOPs at 64x64" in out and "parameters:" in out
    # ResNet-18's receptive fields at strides 4/8/16/32 are 43, 99, 211 and 435 pixels.
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [(int(r[1]), r[3]) for r in rows[-4:]] == [
        (4, "43"),
        (8, "99"),
        (16, "211"),
        (32, "435"),
    ]


PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "visbricks/configs").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_summary_of_every_preset_needs_no_data(preset, tmp_path, monkeypatch, capsys):
    """A summary reads and writes nothing: no data is generated for a synthetic preset, and an
    own-data preset's head is built for placeholder classes that the output names as such."""
    monkeypatch.chdir(tmp_path)
    assert main(["summary", preset, "--rf-size", "64", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and not any(tmp_path.iterdir())
    own_data = "-" not in preset and preset not in ("depth", "lanes")
    assert ("placeholder classes (data.root is not set" in out) == own_data, out[:300]
    if own_data:
        monkeypatch.chdir(tmp_path)
        assert main(["summary", preset, "data.classes=[a,b,c,d,e]", "--rf-size", "64"]) == 0
        assert "placeholder" not in capsys.readouterr().out


def test_receptive_field_probe_matches_hand_computation():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            )  # rf 4, stride 2
            self.b = nn.Sequential(nn.Conv2d(4, 4, 5, stride=2, padding=2), nn.ReLU())  # +4*2

        def forward(self, x):
            x1 = self.a(x)
            return [x1, self.b(x1)]

    levels = receptive_fields(Two(), 3, 64)
    assert [(lv.stride, lv.receptive_field) for lv in levels] == [(2, 4), (4, 12)]
    assert not any(lv.clipped for lv in levels)


def test_data_synth_shapes_cli(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "synth",
                "shapes",
                "--out",
                str(tmp_path / "s"),
                "--seed",
                "3",
                "--n-train",
                "12",
                "--n-val",
                "6",
                "--size",
                "32",
            ]
        )
        == 0
    )
    assert (tmp_path / "s" / "train").is_dir() and (tmp_path / "s" / "multilabel").is_dir()
    assert len(list((tmp_path / "s" / "train").rglob("*.png"))) == 12


def test_demo_time_is_the_whole_commands_budget_unless_epochs_are_asked_for():
    from visbricks.cli import DEMO_TIME_S, _demo_budget
    from visbricks.errors import VisbricksError

    assert _demo_budget([]) == DEMO_TIME_S == 300
    assert _demo_budget(["time=600", "batch_size=8"]) == 600
    assert _demo_budget(["epochs=2"]) is None and _demo_budget(["train.time=50"]) is None
    for bad, named in (("time=soon", "soon"), ("time=0", "0"), ("time=-5", "-5")):
        with pytest.raises(VisbricksError, match=f"time=.*{named}"):
            _demo_budget([bad])
    with pytest.raises(VisbricksError, match="not both"):
        _demo_budget(["time=60", "epochs=2"])
