"""The wheel is complete: built, installed elsewhere, it trains a preset and summarizes every one.

The wheel is built from a copy of the package (so the checkout gets no ``build/``), installed
with ``--no-deps`` into a fresh venv that sees the project venv's site-packages through a
``.pth`` file (so torch is not installed twice; the ``.pth`` files *there*, including the
editable install's finder, are not processed, so the checkout cannot be imported), and run
from a folder outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cost(22)  # seconds here: scheduled early (conftest.py)

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (REPO / "visbricks" / "configs").glob("*.yaml"))


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{output}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "visbricks", src / "visbricks", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env |= {"OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "MPLBACKEND": "Agg"}
    dist = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(src)],
        tmp,
        env,
    )
    (wheel,) = dist.glob("visbricks-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    py = venv / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp, env)
    (Path(site.strip()) / "project_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # --ignore-installed: the editable install seen through the .pth is left alone.
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
         tmp, env)
    return venv, env, wheel


def test_wheel_holds_every_yaml_and_the_licence(installed):
    _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {
        f"visbricks/{p.relative_to(REPO / 'visbricks').as_posix()}"
        for p in (REPO / "visbricks").rglob("*.yaml")
    }
    assert source and source <= names, f"YAML missing from the wheel: {sorted(source - names)}"
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)


def test_installed_wheel_trains_and_summarizes_every_preset(installed, tmp_path):
    venv, env, _ = installed
    work = tmp_path / "elsewhere"  # outside the repository: the source tree is not importable
    work.mkdir()
    python = str(venv / "bin" / "python")
    where = _run([python, "-c", "import visbricks; print(visbricks.__file__)"], work, env)
    assert str(venv) in where and str(REPO) not in where, where
    visbricks = str(venv / "bin" / "visbricks")
    _run(
        [visbricks, "train", "detect-shapes", "epochs=1", "img_size=64", "batch_size=4",
         "data.synth.n_train=8", "data.synth.n_val=4", "data.synth.width=64",
         "data.synth.height=64", "train.max_batches=2", "train.plots=false",
         "train.tensorboard=false", "workers=0", "device=cpu"],
        work,
        env,
    )
    assert list(work.rglob("best.safetensors")), "training left no weights"
    assert str(REPO) not in "".join(str(p) for p in work.rglob("*"))
    # Every preset's summary, in one process of the installed package (a process per preset
    # would be mostly interpreter and torch start-up). The own-data presets (detect, classify,
    # ...) have no data: classes are named instead, and they are summarized at 64 px (their
    # real-photo sizes make the receptive-field pass slow on a CPU).
    calls = []
    for preset in PRESETS:
        doc = yaml.safe_load((REPO / "visbricks" / "configs" / f"{preset}.yaml").read_text())
        own_data = not (doc.get("data") or {}).get("root")
        extra = ["data.classes=[a, b]", "img_size=64"] if own_data else []
        # A 96 px receptive-field probe: the full 512 px probe costs ~15 s per preset on one
        # thread; the point here is that every preset builds and summarizes from the wheel.
        calls.append(["summary", preset, *extra, "--depth", "1", "--rf-size", "96"])
    script = (
        "import sys; from visbricks.cli import main\n"
        f"for argv in {calls!r}:\n"
        "    print('== summary', *argv[1:], flush=True)\n"
        "    rc = main(argv)\n"
        "    if rc: sys.exit(f'summary {argv} exited {rc}')\n"
    )
    out = _run([python, "-c", script], work, env, timeout=300)
    assert out.count("== summary") == len(PRESETS) and out.lower().count("param") >= len(PRESETS)
