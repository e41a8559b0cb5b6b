from __future__ import annotations

import pytest

from visbricks.config import load_config, parse_img_size
from visbricks.errors import ConfigError


def test_preset_and_overrides_reach_every_level():
    cfg = load_config(
        "classify-shapes",
        ["optim.lr=0.02", "train.freeze={backbone: 2}", "data.aug.hflip=0", "img_size=48"],
    )
    assert cfg.optim.lr == 0.02 and cfg["optim"]["lr"] == 0.02
    assert cfg.train.freeze == {"backbone": 2}
    assert cfg.data.aug.hflip == 0 and cfg.data.aug.scale == [0.7, 1.0]  # siblings kept
    assert cfg.img_size == 48 and cfg.name == "classify-shapes"


@pytest.mark.parametrize(
    ("override", "named", "suggested"),
    [
        ("optim.lrr=1", "optim.lrr", "optim.lr"),
        ("epoch=3", "epoch", "epochs"),
        ("data.agu.hflip=0", "data.agu", "data.aug"),
        ("model.backbon=resnet34", "model.backbon", "model.backbone"),
    ],
)
def test_unknown_key_is_named_with_a_suggestion(override, named, suggested):
    with pytest.raises(ConfigError) as e:
        load_config("classify-shapes", [override])
    assert repr(named) in str(e.value) and repr(suggested) in str(e.value)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="'optim.lr' must be float"):
        load_config("classify-shapes", ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        load_config("classify-shapes", ["epochs=2.5"])


def test_img_size_forms():
    assert parse_img_size(320) == (320, 320)
    assert parse_img_size({"width": 640, "height": 192}) == (192, 640)
    for bad in (0, -3, "64", {"width": 64}, {"w": 1, "h": 2}, True):
        with pytest.raises(ConfigError, match="img_size"):
            parse_img_size(bad)
    cfg = load_config("classify-shapes", ["img_size={width: 96, height: 64}"])
    assert cfg.img_size == {"width": 96, "height": 64}


def test_yaml_file_missing_preset_and_unsafe_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("task: classify\nepochs: 3\nmodel: {backbone: vgg11}\n")
    cfg = load_config(path)
    assert cfg.epochs == 3 and cfg.model.backbone == "vgg11" and cfg.name == "mine"

    with pytest.raises(ConfigError, match="did you mean 'classify-shapes'"):
        load_config("clasify-shapes")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")

    evil = tmp_path / "evil.yaml"
    evil.write_text("task: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)

    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("task: classify\noptim: {learning_rate: 0.1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'optim.learning_rate'"):
        load_config(bad_key)


def test_unknown_task_suggests():
    with pytest.raises(ConfigError, match="did you mean 'classify'"):
        load_config({"task": "clasify"})


def test_null_switches_a_mapping_off():
    cfg = load_config("classify-shapes", ["data.synth=null"])
    assert cfg.data.synth is None
