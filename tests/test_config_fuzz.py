"""Random overrides through ``load_config`` and model/data building: only ``VisbricksError``
subclasses, each one line, may escape (issues 13 and 25). Existing keys get random values and
types, and unknown keys and nested garbage are mixed in.

In the suite it is cheap: 1,000 classify-shapes configs are loaded; the task, its classes and
its datasets are built on a tiny ImageFolder for every valid one, and the model for a sample of
those. Offline, environment variables make it deeper (not for the suite: minutes to hours)::

    VISBRICKS_FUZZ_EXAMPLES=1000    examples (default 1000)
    VISBRICKS_FUZZ_PRESETS=all      every task's synthetic preset, or a comma-separated list
                                    (default classify-shapes)
    VISBRICKS_FUZZ_DEEP=1           every valid config also builds its model, trains a tiny fit
                                    and loads the published run back (load_run)
    VISBRICKS_FUZZ_REPORT=FILE      collect instead of failing: one JSON line per escaped
                                    exception (preset, overrides, stage, type, message)
    VISBRICKS_FUZZ_SEED=N           a seed instead of the derandomized default

e.g. ``ulimit -v 6000000; OMP_NUM_THREADS=1 VISBRICKS_FUZZ_PRESETS=all VISBRICKS_FUZZ_DEEP=1
VISBRICKS_FUZZ_REPORT=/tmp/fuzz.jsonl pytest tests/test_config_fuzz.py -k "random or reached"``
(the memory limit turns a size the checks miss into an allocation error instead of swapping the
shared machine; a deep example is also stopped after 120 s).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import traceback
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from conftest import write_colour_folder
from visbricks.config import DEFAULTS_DIR, _flat_keys, _merge, _read_yaml, load_config
from visbricks.errors import ConfigError, VisbricksError

EXAMPLES = int(os.environ.get("VISBRICKS_FUZZ_EXAMPLES", "1000"))
DEEP = os.environ.get("VISBRICKS_FUZZ_DEEP", "") not in ("", "0")
REPORT = os.environ.get("VISBRICKS_FUZZ_REPORT") or None
SEED = os.environ.get("VISBRICKS_FUZZ_SEED") or None
# One synthetic preset per task, and the tiny data its fuzzed configs read (generated once, by
# the preset's own data.synth, shrunk) plus the keys that say how to read it.
ALL_PRESETS = {
    "classify-shapes": ("classify", []),
    "multilabel-shapes": (
        "multilabel",
        ["data.format=csv", "data.train=multilabel/train.csv", "data.val=multilabel/val.csv"],
    ),
    "locate-shapes": ("locate", []),
    "detect-shapes": ("detect", []),
    "segment-shapes": ("segment", []),
    "depth-driving": ("depth", []),
    "lanes-driving": ("lanes", []),
}
_presets = os.environ.get("VISBRICKS_FUZZ_PRESETS", "classify-shapes")
PRESETS = list(ALL_PRESETS) if _presets == "all" else _presets.split(",")


def task_schema(task: str) -> dict:
    """base.yaml with the task's file merged in, as ``load_config`` builds the schema."""
    schema = _read_yaml(DEFAULTS_DIR / "base.yaml")
    _merge(schema, _read_yaml(DEFAULTS_DIR / f"{task}.yaml"), None, schema)
    return schema


# Paths that would make the fuzzer read real files, download or generate data sets are pinned.
PINNED = {"data.root", "data.synth", "project", "resume", "model.pretrained", "task"}
SCHEMAS = {task: task_schema(task) for task, _ in ALL_PRESETS.values()}
KEYS = {
    task: sorted(k for k in _flat_keys(s) if k not in PINNED and k.split(".")[0] not in PINNED)
    for task, s in SCHEMAS.items()
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["auto", "resnet18", "sgd", "cosine", "csv", "imagenet", "fpn", "linear"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _yaml_text(value) -> str:
    # JSON is YAML flow syntax; NaN/inf are written the YAML way.
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return json.dumps(value, allow_nan=False) if _finite(value) else "garbage"


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _keys(task: str) -> st.SearchStrategy[str]:
    known = KEYS[task]
    return (
        st.sampled_from(known)
        | st.sampled_from(known).map(lambda k: k + "x")  # misspelt
        | st.sampled_from(known).map(lambda k: k + ".deeper")  # nested under a leaf
        | st.text(min_size=1, max_size=10).filter(lambda k: "=" not in k)
    )


def _default(task: str, key: str):
    node = SCHEMAS[task]
    for part in key.split("."):
        node = node[part]
    return node


def _near(default):
    """Values of the default's own type, around it: valid often, out of range sometimes."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-2, 2 * default + 4)
    if isinstance(default, float):
        return st.floats(-0.5, 2.0) | st.just(default)
    if isinstance(default, str):
        return st.sampled_from([default, "auto", "", "none", "x"])
    if isinstance(default, list):
        return st.just(default) | st.lists(st.floats(-0.5, 2.0), max_size=4)
    if isinstance(default, dict):
        return st.just(default) | st.just({})
    return scalars


def overrides(task: str) -> st.SearchStrategy[list[str]]:
    key_names = _keys(task)

    @st.composite
    def one_override(draw) -> str:
        if draw(st.booleans()):  # an existing key with a value of about the right kind
            key = draw(st.sampled_from(KEYS[task]))
            return f"{key}={_yaml_text(draw(_near(_default(task, key))))}"
        key = draw(key_names)
        return f"{key}={draw(values.map(_yaml_text) | st.text(max_size=12))}"

    return st.lists(one_override(), min_size=1, max_size=3)


def _cases() -> st.SearchStrategy[tuple[str, list[str]]]:
    """(preset, overrides); with one preset, exactly the override lists (no draw for it)."""
    if len(PRESETS) == 1:
        preset = PRESETS[0]
        return overrides(ALL_PRESETS[preset][0]).map(lambda extra: (preset, extra))
    return st.sampled_from(PRESETS).flatmap(
        lambda p: overrides(ALL_PRESETS[p][0]).map(lambda extra, p=p: (p, extra))
    )


# Shrunk data.synth per generated preset (the sizes tests/readme_harness.py uses).
_TINY_SYNTH = {
    "multilabel-shapes": "n_train=12 n_val=6 size=32",
    "locate-shapes": "n_train=8 n_val=4 width=64 height=64",
    "detect-shapes": "n_train=8 n_val=4 width=64 height=64",
    "segment-shapes": "n_train=8 n_val=4 width=64 height=64",
    "depth-driving": "sequences=2 frames=5 width=96 height=64 val_sequences=1 workers=1",
    "lanes-driving": "streets=3 frames=2 width=160 height=64 val_streets=1 workers=1",
}
# A tiny model input per preset (depth and lanes need sizes divisible by 32).
_TINY_SIZE = {
    "depth-driving": "img_size={width: 96, height: 64}",
    "lanes-driving": "img_size={width: 128, height: 64}",
    "locate-shapes": "img_size=64",
    "detect-shapes": "img_size=64",
    "segment-shapes": "img_size=64",
}


@pytest.fixture(scope="module")
def fuzz_data(tmp_path_factory):
    """``{preset: data root}``, generated on first use."""
    folder = tmp_path_factory.mktemp("fuzz")
    roots: dict[str, Path] = {}

    def root_of(preset: str) -> Path:
        if preset not in roots:
            if preset == "classify-shapes":
                roots[preset] = write_colour_folder(folder / "colours", n_per_class=2, size=8)
            else:
                from visbricks.tasks import build_task

                preset_root = Path(load_config(preset).data.root)
                root = folder / preset / preset_root.relative_to("data")
                synth = [f"data.synth.{kv}" for kv in _TINY_SYNTH[preset].split()]
                cfg = load_config(preset, [f"data.root={root}", *synth])
                build_task(cfg).prepare_data()
                roots[preset] = root
        return roots[preset]

    return root_of


def _base(preset: str, root: Path) -> list[str]:
    """What every example of ``preset`` starts from (the fuzzed overrides come after it)."""
    base = [
        "data.synth=null",
        "model.backbone=mobilenet_v3_small",
        "train.tensorboard=false",
        f"data.root={root}",
        f"project={root.parent / 'runs'}",
        *ALL_PRESETS[preset][1],
    ]
    if DEEP:  # a fit in seconds, unless the fuzzer says otherwise (then _cheap bounds it)
        size = _TINY_SIZE.get(preset, "img_size=32")
        base += ["epochs=1", "batch_size=4", "workers=0", "train.max_batches=2"]
        base += ["train.plots=false", "train.time=null", size]
    return base


def _cheap(cfg) -> None:
    """Deep mode: bound what only makes a fit slow, with values the schema allows (the fuzzed
    values were checked as given; these keep one example to seconds)."""
    cfg["epochs"] = min(cfg["epochs"], 2)
    train = cfg["train"]
    train["max_batches"] = min(train["max_batches"] or 2, 2)
    if train["time"] is not None:
        train["time"] = min(train["time"], 1.0)
    train["compile"] = False  # compiling costs a minute; tested on its own (test_trainer)
    if cfg["workers"] != "auto":
        cfg["workers"] = min(cfg["workers"], 1)
    if isinstance(cfg["batch_size"], int):
        cfg["batch_size"] = min(cfg["batch_size"], 8)
    size = cfg["img_size"]
    if isinstance(size, int) and size > 128:
        cfg["img_size"] = 64
    elif isinstance(size, dict) and size["width"] * size["height"] > 256 * 128:
        cfg["img_size"] = {"width": 128, "height": 64}


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout("one example took over 120 s")


_counter = {"loaded": 0, "built": 0, "models": 0, "fitted": 0, "reloaded": 0}


def _run(cfg, build_model: bool, stage: list[str]) -> None:
    from visbricks.tasks import build_task

    stage[0] = "build"
    task = build_task(cfg)
    _ = task.classes
    data = task.build_data()
    _counter["built"] += 1
    if not (build_model or DEEP):
        return
    stage[0] = "model"
    model = task.build_model(load_pretrained=False)
    _counter["models"] += 1
    if not DEEP:
        return
    from visbricks.deploy.loading import load_run
    from visbricks.engine.distributed import check_devices
    from visbricks.engine.trainer import Trainer

    stage[0] = "fit"
    if cfg.devices > 1:  # as `visbricks train` checks before it would launch torchrun
        check_devices(cfg.devices, cfg.batch_size, str(cfg.device))
        cfg["devices"] = 1
    trainer = Trainer(cfg, model, data, task=task)
    try:
        trainer.fit()
        _counter["fitted"] += 1
        stage[0] = "load"
        if (trainer.weights_dir / "best.safetensors").is_file():
            load_run(trainer.run_dir)
            _counter["reloaded"] += 1
    finally:
        trainer.dist.close()
        shutil.rmtree(trainer.run_dir, ignore_errors=True)


def _escaped(preset: str, extra: list[str], stage: str, e: BaseException) -> None:
    """Record an escaped exception (VISBRICKS_FUZZ_REPORT) or fail on it."""
    if REPORT is None:
        raise AssertionError(f"{preset} {extra}: {stage}: {type(e).__name__}: {e}") from e
    frames = traceback.extract_tb(e.__traceback__)
    where = next(
        (f"{f.filename.split('visbricks/', 1)[-1]}:{f.lineno}" for f in reversed(frames)
         if "/visbricks/" in f.filename and "/tests/" not in f.filename),
        "?",
    )  # fmt: skip
    row = {"preset": preset, "overrides": extra, "stage": stage, "type": type(e).__name__,
           "message": str(e)[:500], "where": where}  # fmt: skip
    with open(REPORT, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _fuzz_settings(test):
    test = settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=SEED is None,
        database=None,
    )(test)
    return test if SEED is None else seed(int(SEED))(test)


@_fuzz_settings
@given(case=_cases())
def test_random_overrides_raise_only_visbricks_errors(fuzz_data, case):
    torch.set_num_threads(1)
    preset, extra = case
    stage = ["load"]
    if DEEP:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(120)
    try:
        cfg = load_config(preset, [*_base(preset, fuzz_data(preset)), *extra])
        _counter["loaded"] += 1
        if DEEP:  # before anything is built from the sizes it bounds
            _cheap(cfg)
        # Every 8th valid config also builds its model (the slow part); deep: every one.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _run(cfg, _counter["loaded"] % 8 == 1, stage)
    except VisbricksError as e:
        if "\n" in str(e).strip():  # the CLI prints one line: a traceback inside is a finding
            _escaped(preset, extra, stage[0], e)
    except Exception as e:
        _escaped(preset, extra, stage[0], e)
    finally:
        if DEEP:
            signal.alarm(0)


def test_the_fuzzer_reached_building():
    # Not vacuous: a good share of the random configs was valid and went through building.
    if _counter["loaded"] == 0 or EXAMPLES < 1000:
        pytest.skip("run together with the fuzz test, at its 1,000 examples")
    print(_counter)
    assert _counter["built"] >= 20 and _counter["models"] >= 3, _counter


def test_every_spec_in_the_defaults_parses():
    """A mistyped spec would silently read as plain text: anything that looks like one parses."""
    from visbricks.config import parse_spec, read_specs

    for path in sorted(DEFAULTS_DIR.glob("*.yaml")):
        specs = read_specs(path)
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(
                r"^\s*([A-Za-z_]\w*):.*?\s#\s*([\[({]|(?:int|float|str|bool|list)\b)", line
            )
            if m and ";" in line.split("#", 1)[1]:
                comment = line.split(" #", 1)[1]
                assert parse_spec(comment) is not None, f"{path.name}:{n}: {line.strip()}"
        assert specs, path.name
    assert read_specs(DEFAULTS_DIR / "base.yaml")["epochs"].text == "[1, inf)"


def test_the_fuzz_knows_every_task_and_its_whole_schema():
    # One preset per task; each task's keys are base.yaml's with its own merged in (a shallow
    # update once replaced base's model/data sections, so model.backbone was never fuzzed).
    tasks = {p.stem for p in DEFAULTS_DIR.glob("*.yaml")} - {"base"}
    assert {task for task, _ in ALL_PRESETS.values()} == tasks
    for preset in ALL_PRESETS:
        assert load_config(preset).task == ALL_PRESETS[preset][0]
    for key in ("model.backbone", "data.max_pixels", "data.aug.scale", "train.callbacks"):
        assert key in KEYS["classify"], key


# ---- findings of the deep fuzz (issue 25): each was an exception other than VisbricksError --


@pytest.mark.parametrize(
    "override, key, named",
    [
        # TypeError in the callback registry (difflib on a float)
        ("train.callbacks=[0.0]", "train.callbacks", "must be a list of str"),
        ("train.callbacks=early_stopping", "train.callbacks", "must be a list of str"),
        # UnicodeEncodeError making the run folder: YAML's \u escape gave a lone surrogate
        ('name="\\ud999x"', "name", "lone UTF-16 surrogate"),
        ('model.head_args={"\\udbee": 1}', "model.head_args", "lone UTF-16 surrogate"),
        # RuntimeError in torch.device, when the Trainer started
        ('device=""', "device", "must be auto, cpu, cuda or cuda:N"),
        ("device=x", "device", "must be auto, cpu, cuda or cuda:N"),
        ("device=cuda:x", "device", "must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_fuzz_findings_are_refused_when_the_config_loads(override, key, named):
    with pytest.raises(ConfigError) as e:
        load_config("classify-shapes", [override])
    message = str(e.value)
    assert message.startswith(f"config key {key!r}") and named in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "preset, extra, named",
    [
        # RuntimeError (a torch internal assert) resizing a uint8 image to 1x1 in the letterbox
        ("locate-shapes", ["img_size=1"], "img_size must be an int >= 2"),
        ("classify-shapes", ["img_size={width: 1, height: 5}"], "img_size must be an int >= 2"),
        # ... and the same 1x1 resize reached by a scale jitter that shrinks the image to nothing
        ("detect-shapes", ["data.aug.scale_jitter=[0.001, 0.5]"], "at least 2/128 = 0.0156"),
        ("segment-shapes", ["data.aug.scale_jitter=[0.5, 2.0]", "img_size=3"], "2/3"),
    ],
)
def test_sizes_that_resize_an_image_to_one_pixel_are_refused(preset, extra, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(preset, extra)
    assert load_config("segment-shapes", ["data.aug.scale_jitter=null", "img_size=2"])


@pytest.mark.parametrize(
    "preset, override, key",
    [
        # MemoryError-like RuntimeErrors (the allocator refusing ~10^15 bytes) once built or fed
        ("classify-shapes", "data.aug.crop_ratio=0.01", "data.aug.crop_ratio"),
        ("detect-shapes", "data.aug.max_zoom=100", "data.aug.max_zoom"),
        ("segment-shapes", "data.aug.scale_jitter=[1, 1000000]", "data.aug.scale_jitter"),
        ("locate-shapes", "model.box_pool=1000", "model.box_pool"),
        ("locate-shapes", "model.box_hidden=1000000", "model.box_hidden"),
        ("lanes-driving", "model.row_cells=100000", "model.row_cells"),
        # OpenCV's thickness assert drawing a CULane lane; ValueError formatting 2**(10^6 - 1)
        ("lanes-driving", "eval.culane_width=1000000", "eval.culane_width"),
        ("depth-driving", "loss.scales=6", "loss.scales"),
        # TypeError iterating a number (its null default said nothing of a list; `list` does)
        ("detect-shapes", "model.anchors.sizes=0.5", "model.anchors.sizes"),
        # accepted, then refused only when the Trainer started
        ("classify-shapes", "workers=1.5", "workers"),
    ],
)
def test_sizes_past_their_range_are_refused_when_the_config_loads(preset, override, key):
    with pytest.raises(ConfigError, match=rf"^config key '{re.escape(key)}' must be"):
        load_config(preset, [override])


def test_an_aspect_ratio_range_an_image_cannot_meet_still_crops_a_pixel():
    # RuntimeError reshaping an empty crop: torchvision's fallback rounded its height to 0.
    from torchvision import tv_tensors

    from visbricks.data.classification import classification_transforms

    aug = {"scale": [0.6, 1.0], "hflip": 0, "vflip": 0, "rotate": 0, "color_jitter": 0}
    image = tv_tensors.Image(torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8))
    for ratio in ([1e-6, 1e-6], [1e6, 1e6]):
        t = classification_transforms(
            (16, 16), (0.5,) * 3, (0.2,) * 3, True, {**aug, "ratio": ratio}
        )
        assert t(image).shape == (3, 16, 16)


def test_a_lane_window_past_the_cells_decodes_as_the_widest_one():
    # eval.window=10^6 allocated 2*10^6 + 1 offsets per row anchor.
    from visbricks.ops.lanes import local_expectation

    logits = torch.randn(2, 7, 3, 4)
    assert torch.equal(local_expectation(logits, 10**6), local_expectation(logits, 6))


def test_a_model_past_the_memory_is_one_line():
    # A lanes head of model.lanes x row_anchors x row_cells outputs: each size is in range, the
    # product failed in torch's allocator.
    from visbricks.tasks.roles.model import model_memory

    refused = (
        "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4644864000000 bytes"
    )
    with pytest.raises(ConfigError, match=r"does not fit in memory \(4,325.9 GiB") as e:
        with model_memory():
            raise RuntimeError(f"[enforce fail at alloc_cpu.cpp:127] err == 0. {refused}")
    assert "\n" not in str(e.value)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        with model_memory():
            raise RuntimeError("shapes cannot be multiplied")


def test_what_those_checks_still_let_through():
    cfg = load_config(
        "classify-shapes",
        ["train.callbacks=[early_stopping]", "device=cuda:1", 'name="run-\\udcff"'],
    )
    # \udc80-\udcff stand for a command line's undecodable bytes (a path Python passes on).
    assert cfg.train.callbacks == ["early_stopping"] and cfg.name == "run-\udcff"
    assert cfg.device == "cuda:1"


def test_a_model_for_other_than_rgb_images_is_refused_before_data_is_read(tmp_path):
    # RuntimeError at the first convolution, inside training; the data layer decodes RGB only.
    from visbricks.tasks import build_task

    cfg = load_config("classify", [f"data.root={tmp_path / 'absent'}", "model.in_channels=4"])
    with pytest.raises(ConfigError, match=r"model.in_channels=4, but images are read as RGB"):
        build_task(cfg).build_data()


def test_a_one_image_batch_at_a_1x1_batchnorm_is_one_line():
    # ValueError from F.batch_norm (batch_size=1 at img_size=32 on MobileNetV3), also in the lr
    # range test and the batch-size probe, which share training_forward.
    from torch import nn

    from visbricks.engine.contract import training_forward

    class Task:
        def forward(self, model, batch):
            return {"out": model(batch["image"])}

        def batch_size(self, batch):
            return len(batch["image"])

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    with pytest.raises(ConfigError, match=r"batch_size >= 2") as e:
        training_forward(Task(), model, {"image": torch.zeros(1, 3, 1, 1)})
    assert "\n" not in str(e.value)
    assert training_forward(Task(), model, {"image": torch.zeros(2, 3, 1, 1)})["out"].shape[0] == 2


def test_a_registry_refuses_a_name_that_is_no_string():
    # A number or list in an open mapping ({block: 1}) was a TypeError inside difflib.
    from visbricks.registry import BLOCKS

    with pytest.raises(ConfigError, match=r"a block is named by a string, got list \[1\]"):
        BLOCKS.get([1])
