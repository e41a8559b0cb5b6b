"""Shared fixtures: small datasets the project generates itself, and the real-data location."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` imported as a module, registered in ``sys.modules`` (dataclasses look
    their module up there)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def shared_data(sub: str) -> Path:
    """Path under ../shared/data, or skip the test cleanly when that folder is absent."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files marked ``cost(seconds)`` run first, the costliest first. `make test` hands whole
    files to 2 workers (``--dist loadfile --no-loadscope-reorder``) in collection order; left
    in name order the minute-long README and preset files came last and one worker finished
    them alone (longest-first scheduling; the unmarked, second-long files fill in behind)."""

    def cost(item: pytest.Item) -> float:
        mark = item.get_closest_marker("cost")
        return float(mark.args[0]) if mark else 0.0

    items.sort(key=cost, reverse=True)  # stable: a file's tests keep their order


@pytest.fixture(autouse=True)
def _few_threads():
    # Two tests run side by side (pytest -n 2) on two cores: one thread each avoids thrashing.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _own_cache_home(tmp_path_factory):
    # coco_masks rasterises into $XDG_CACHE_HOME/visbricks: tests (and the console scripts they
    # start, which inherit the environment) never fill the real user's cache.
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory) -> Path:
    """The shapes ImageFolder + multi-label CSVs at 32 px, generated once per test session."""
    from visbricks.data.synth.shapes import write_classification

    return write_classification(
        tmp_path_factory.mktemp("data") / "shapes", n_train=600, n_val=120, size=32, seed=1
    )


def write_colour_folder(root: Path, n_per_class: int = 8, size: int = 24, seed: int = 0) -> Path:
    """A two-class ImageFolder (reddish vs bluish noise) for fast plumbing tests."""
    from visbricks.data.io import write_image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c, name in enumerate(("blue", "red")):
            for i in range(n_per_class):
                img = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
                img[..., 2 if c == 0 else 0] += 120
                write_image(root / split / name / f"{i}.png", img)
    return root


def tiny_config(root: Path, project: Path, *extra: str):
    """A classify config small enough to train in seconds on one CPU thread."""
    from visbricks.config import load_config

    overrides = [
        f"data.root={root}",
        f"project={project}",
        "img_size=32",
        "batch_size=8",
        "epochs=2",
        "model.backbone=resnet18",
        "optim.lr=0.01",
        "sched.name=cosine",
        "train.plots=false",
        "train.tensorboard=false",
        "deterministic=true",
    ]
    return load_config("classify-shapes", [*overrides, "data.synth=null", *extra])


def train_tiny_run(tmp: Path) -> Path:
    """A one-epoch MobileNetV3-small run on the colour folder, through the command line; its
    run folder is what eval / bench / export take."""
    from visbricks.cli import main

    root = write_colour_folder(tmp / "colours")
    args = [
        f"data.root={root}",
        "data.synth=null",
        f"project={tmp / 'runs'}",
        "img_size=32",
        "batch_size=8",
        "epochs=1",
        "train.tensorboard=false",
        "model.backbone=mobilenet_v3_small",
    ]
    assert main(["train", "classify-shapes", *args]) == 0
    return tmp / "runs" / "classify" / "classify-shapes"


def preset_config(preset: str, root: Path, project: Path, *extra: str):
    """A shipped preset on existing data at ``root``, writing runs under ``project``, without
    plots or TensorBoard (the tests that check those turn them back on)."""
    from visbricks.config import load_config

    overrides = [
        f"data.root={root}",
        "data.synth=null",
        f"project={project}",
        "train.plots=false",
        "train.tensorboard=false",
    ]
    return load_config(preset, [*overrides, *extra])


# ---- one-line errors through the command line (tests/test_bad_inputs*.py) ---------------------
def run_cli(capsys, *argv: object) -> tuple[int, str]:
    """Exit code and everything printed by ``visbricks ARGV`` in-process; asserts no traceback
    reached the user."""
    from visbricks.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text, text
    return code, text


def assert_one_line_error(capsys, *argv: object, names: tuple[str, ...]) -> str:
    """Runs the command; asserts exit code 2, no traceback, exactly one ``error:`` line that
    holds every one of ``names``; returns that line."""
    code, text = run_cli(capsys, *argv)
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, text
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


def digest(folder: Path) -> dict[str, str]:
    """Every file (its hash) and folder under ``folder``: equal before and after = nothing
    written, not even an empty output folder."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(folder.rglob("*"))
    }
