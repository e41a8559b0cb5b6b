"""Bad inputs of the deploy and config surfaces through the real command line (issue 25 item 5):
each is one ``error: ...`` line naming the file or key and what is wrong — no traceback, no hang,
no file written where it must not be.

In-process (``visbricks.cli.main``) to stay fast; one tiny trained run and its ONNX export are
shared by the whole module.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import assert_one_line_error, digest, write_colour_folder
from visbricks.cli import main

# ---- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def no_hang(seconds: int = 120) -> Iterator[None]:
    """A regression to a hang fails the test instead of stalling the suite (not a timing
    claim: the limit is far above the few milliseconds the refusal takes)."""

    def fail(*_: object) -> None:
        raise AssertionError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch):
    # The cases below are about their own arguments; a shrinking environment must not add keys.
    monkeypatch.delenv("VISBRICKS_OVERRIDES", raising=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny trained classifier run (one epoch, two batches) with ``weights/best.onnx`` +
    ``best.json`` written by ``visbricks export``; returns the run folder."""
    from visbricks.cli import run_training
    from visbricks.config import load_config

    tmp = tmp_path_factory.mktemp("bad_deploy")
    root = write_colour_folder(tmp / "colours", n_per_class=4, size=24)
    cfg = load_config(
        "classify-shapes",
        [
            "data.synth=null",
            f"data.root={root}",
            f"project={tmp / 'runs'}",
            "img_size=32",
            "batch_size=4",
            "workers=0",
            "epochs=1",
            "train.max_batches=2",
            "train.plots=false",
            "train.tensorboard=false",
            "model.backbone=mobilenet_v3_small",
        ],
    )
    trainer, _ = run_training(cfg)
    assert main(["export", str(trainer.run_dir)]) == 0
    assert (trainer.weights_dir / "best.onnx").is_file()
    return trainer.run_dir


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = write_colour_folder(tmp_path / "imgs", n_per_class=1, size=24) / "val" / "red"
    return folder


# ---- exported files --------------------------------------------------------------------------


def test_truncated_onnx_is_one_line_for_eval_predict_bench(capsys, exported, tmp_path, images):
    weights = exported / "weights"
    bad = tmp_path / "bad"
    bad.mkdir()
    onnx = bad / "model.onnx"
    onnx.write_bytes((weights / "best.onnx").read_bytes()[:100_000])  # a copy cut short
    shutil.copy(weights / "best.json", bad / "model.json")
    before = digest(tmp_path)
    for argv in (
        ("eval", onnx),
        ("predict", onnx, images, "--out", tmp_path / "pred"),
        ("bench", onnx, "--batch", "1", "--iters", "1", "--warmup", "0"),
    ):
        assert_one_line_error(capsys, *argv, names=(str(onnx), "not a loadable ONNX model"))
    # No eval folder beside it (model-eval/), no predictions folder.
    assert digest(tmp_path) == before


def _detector_weights(folder: Path) -> Path:
    """``folder/weights/best.json`` exactly as ``export`` writes it for an (untrained) detector,
    in a run folder (``config.yaml`` + ``weights/``); training one would only cost time."""
    from visbricks.config import load_config, save_config
    from visbricks.deploy.export import wrap_outputs, write_sidecar
    from visbricks.deploy.loading import LoadedRun
    from visbricks.tasks import build_task

    cfg = load_config(
        "detect-shapes", ["img_size=64", "model.backbone=mobilenet_v3_small", f"project={folder}"]
    )
    task = build_task(cfg)
    task.use_data_free_classes()  # the class list without generating the data set
    model = task.build_model(load_pretrained=False).eval()
    weights = folder / "weights"
    weights.mkdir(parents=True)
    save_config(cfg, folder / "config.yaml")
    run = LoadedRun(cfg, task, model, list(task.classes), weights / "best.safetensors", {})
    _, keys, names, example = wrap_outputs(run)
    out = weights / "best.onnx"
    write_sidecar(run, out, "onnx", keys, names, tuple(example.shape[2:]), example.shape[1])
    return out


def test_classifier_int8_over_detector_onnx_names_both(capsys, exported, tmp_path, images):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = _detector_weights(tmp_path / "detector")
    # The classifier's int8 graph saved over the detector's model file; its JSON stays.
    quantize_dynamic(
        str(exported / "weights" / "best.onnx"), str(target), weight_type=QuantType.QInt8
    )
    assert json.loads(target.with_suffix(".json").read_text())["task"] == "detect"
    before = digest(tmp_path)
    for argv in (("eval", target), ("predict", target, images)):
        assert_one_line_error(
            capsys,
            *argv,
            names=(str(target), "outputs (logits)", "'detect'", "anchors, box_deltas, cls_logits"),
        )
    assert digest(tmp_path) == before  # no detector/eval, no detector/predict


def test_truncated_sidecar_names_the_json(capsys, exported, tmp_path):
    weights = exported / "weights"
    onnx = tmp_path / "model.onnx"
    shutil.copy(weights / "best.onnx", onnx)
    text = (weights / "best.json").read_text()
    (tmp_path / "model.json").write_text(text[: len(text) // 3])
    before = digest(tmp_path)
    assert_one_line_error(
        capsys, "eval", onnx, names=(str(tmp_path / "model.json"), "not valid JSON")
    )
    # A JSON of the wrong shape (a list, a field of the wrong type) names the file too.
    (tmp_path / "model.json").write_text("[1, 2]")
    assert_one_line_error(capsys, "eval", onnx, names=("model.json", "JSON object"))
    info = json.loads(text)
    info["input"]["shape"] = "big"
    (tmp_path / "model.json").write_text(json.dumps(info))
    assert_one_line_error(capsys, "predict", onnx, tmp_path, names=("model.json", "input.shape"))
    before.pop("model.json")
    after = digest(tmp_path)
    after.pop("model.json")
    assert after == before


def test_random_bytes_named_pt2(capsys, exported, tmp_path, images):
    pt2 = tmp_path / "model.pt2"
    pt2.write_bytes(bytes(range(256)) * 40)
    shutil.copy(exported / "weights" / "best.json", tmp_path / "model.json")
    before = digest(tmp_path)
    for argv in (("eval", pt2), ("predict", pt2, images, "--out", tmp_path / "pred")):
        assert_one_line_error(capsys, *argv, names=(str(pt2), "not a torch.export program", "zip"))
    assert digest(tmp_path) == before
    # A zip archive that holds no program: torch's own logged traceback is not shown either.
    with zipfile.ZipFile(pt2, "w") as archive:
        archive.writestr("notes/a.txt", "hello")
    assert_one_line_error(
        capsys, "bench", pt2, "--iters", "1", names=(str(pt2), "torch.export program")
    )


# ---- config YAML -----------------------------------------------------------------------------

LEVELS = "abcdefghi"


def _laughs() -> str:
    """Nine anchors of nine aliases each (72 aliases, under 2 kB): 9^9 values when expanded."""
    parts = ["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip(LEVELS, LEVELS[1:]):
        parts.append(f"&{name} [{', '.join([f'*{prev}'] * 9)}]")
    return f"[{', '.join(parts)}]"


@pytest.mark.parametrize(
    "text, what",
    [
        (f"task: classify\ndata:\n  classes: {_laughs()}\n", "expand it to more than"),
        ("task: classify\ndata:\n  classes: &a [x, *a]\n", "refers to the anchor"),
        (
            "task: classify\nmodel:\n  head_args: {x: &x 1, y: [" + "*x, " * 101 + "x]}\n",
            "more than 100 aliases",
        ),
    ],
    ids=["billion-laughs", "recursive", "many-aliases"],
)
def test_yaml_alias_bombs_are_refused_quickly(capsys, tmp_path, monkeypatch, text, what):
    monkeypatch.chdir(tmp_path)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(text)
    with no_hang():
        assert_one_line_error(capsys, "train", bomb, names=(str(bomb), what, "alias"))
        assert_one_line_error(
            capsys,
            "train",
            "classify-shapes",
            f"data.classes={text.split('classes: ')[-1].strip()}"
            if "classes" in text
            else f"model.head_args={text.split('head_args: ')[-1].strip()}",
            names=("override", what),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml"]  # no runs/


def test_oversized_config_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_text("task: classify\n" + "# padding\n" * 120_000)
    assert_one_line_error(capsys, "train", big, names=(str(big), "too large for a config"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.yaml"]


# ---- devices= --------------------------------------------------------------------------------


@pytest.fixture()
def launches(monkeypatch, tmp_path) -> list:
    """Records torchrun launches instead of starting processes; a machine with two cores."""
    import visbricks.engine.distributed as distributed

    calls: list = []
    monkeypatch.setattr(distributed, "usable_cores", lambda: 2)
    monkeypatch.setattr(distributed, "launch_standalone", lambda n, argv: calls.append(n) or 0)
    monkeypatch.chdir(tmp_path)
    return calls


def test_devices_beyond_the_cpu_cores_is_refused(capsys, launches, tmp_path):
    assert_one_line_error(
        capsys,
        "train",
        "classify-shapes",
        "device=cpu",
        "devices=999",
        "batch_size=999",
        names=("devices=999", "2 CPU cores", "refused, not capped"),
    )
    assert launches == [] and list(tmp_path.iterdir()) == []


def test_devices_not_dividing_batch_size_names_both_keys(capsys, launches, tmp_path):
    assert_one_line_error(
        capsys,
        "train",
        "classify-shapes",
        "device=cpu",
        "devices=2",
        "batch_size=5",
        names=("batch_size=5", "devices=2", "divide"),
    )
    # Both problems at once are one line too.
    line = assert_one_line_error(
        capsys, "train", "classify-shapes", "device=cpu", "devices=3", "batch_size=4",
        names=("batch_size=4", "devices=3"),
    )  # fmt: skip
    assert "2 CPU cores" in line
    assert launches == [] and list(tmp_path.iterdir()) == []
    # What fits is launched as before.
    assert main(["train", "classify-shapes", "device=cpu", "devices=2", "batch_size=4"]) == 0
    assert launches == [2]


# ---- config fuzz findings --------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, override, key",
    [
        ("classify-shapes", "data.max_pixels=[1, 2]", "data.max_pixels"),
        ("classify-shapes", "tune.lr_steps=[5, 6]", "tune.lr_steps"),
        ("segment-shapes", "loss.ohem_min_kept=[1]", "loss.ohem_min_kept"),
    ],
)
def test_lists_for_scalar_counts_are_refused(capsys, tmp_path, monkeypatch, preset, override, key):
    # Each was accepted and failed later with a TypeError (a loader worker comparing pixels).
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, "train", preset, override, names=(repr(key), "must be int"))
    assert list(tmp_path.iterdir()) == []


def test_a_replaced_export_is_not_reused(capsys, exported, tmp_path):
    """quantize and bench --compare reuse ``best.onnx`` beside the weights: a file copied over it
    (here cut short) is exported afresh, with a warning, instead of failing deep inside."""
    from visbricks.deploy.export import existing_export
    from visbricks.deploy.loading import load_run

    for name in ("best.safetensors", "best.yaml", "best.onnx"):
        shutil.copy(exported / "weights" / name, tmp_path / name)
    run = load_run(tmp_path / "best.safetensors")
    info = json.loads((exported / "weights" / "best.json").read_text())
    info["weights"] = str(run.weights)  # as if export had written it from these weights
    (tmp_path / "best.json").write_text(json.dumps(info))
    assert existing_export(run) == tmp_path / "best.onnx"
    capsys.readouterr()
    (tmp_path / "best.onnx").write_bytes((exported / "weights" / "best.onnx").read_bytes()[:5000])
    assert existing_export(run) is None
    assert "warning: not reusing best.onnx" in capsys.readouterr().err
