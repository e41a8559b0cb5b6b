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


def test_env_overrides_follow_the_command_line_and_are_announced(monkeypatch, capsys):
    monkeypatch.setenv("VISBRICKS_OVERRIDES", "epochs=1 'model.head_args={dropout: 0.5}'")
    cfg = load_config("classify-shapes", ["epochs=7", "optim.lr=0.5"])
    assert cfg.epochs == 1 and cfg.optim.lr == 0.5  # the variable wins over the command line
    assert cfg.model.head_args == {"dropout": 0.5}  # shell quoting keeps a value with spaces
    assert "VISBRICKS_OVERRIDES adds: epochs=1" in capsys.readouterr().err
    # A saved run's config (a dict) is what it was: the variable shrinks commands, not runs.
    assert load_config({"task": "classify", "epochs": 4}).epochs == 4
    monkeypatch.setenv("VISBRICKS_OVERRIDES", "optim.lrr=1")
    with pytest.raises(ConfigError, match="'optim.lrr'"):
        load_config("classify-shapes")
    monkeypatch.setenv("VISBRICKS_OVERRIDES", "epochs='1")
    with pytest.raises(ConfigError, match="VISBRICKS_OVERRIDES"):
        load_config("classify-shapes")


def test_presets_state_a_time_budget_that_epochs_switches_off():
    from visbricks.config import CONFIG_DIR

    synthetic = [p.stem for p in CONFIG_DIR.glob("*.yaml") if load_config(p.stem).data.synth]
    assert len(synthetic) == 7
    for preset in synthetic:
        assert load_config(preset).train.time > 0, preset
        cfg = load_config(preset, ["epochs=2"])
        assert cfg.train.time is None and cfg.epochs == 2
        both = load_config(preset, ["epochs=2", "train.time=30"])
        assert both.train.time == 30 and both.epochs == 2


def test_classification_presets_generate_their_data_from_an_empty_folder(tmp_path, monkeypatch):
    from visbricks.tasks import build_task

    monkeypatch.chdir(tmp_path)
    synth = ["data.synth.n_train=12", "data.synth.n_val=6", "data.synth.size=32"]
    for preset in ("classify-shapes", "multilabel-shapes"):
        task = build_task(load_config(preset, synth))
        data = task.build_data()  # the one place data is prepared
        assert len(data.train) > 0 and len(data.val) > 0, preset
    assert (tmp_path / "data" / "shapes" / ".complete").is_file()


def test_a_loss_section_feeds_its_constructor_by_name_and_a_stray_key_is_named():
    from visbricks.config import section_kwargs
    from visbricks.models.seg_losses import SegmentationLoss

    cfg = load_config("segment-shapes")
    kwargs = section_kwargs(SegmentationLoss, cfg.loss, "loss", class_weights=[1.0, 2.0])
    assert kwargs["class_weights"] == [1.0, 2.0]
    assert kwargs["dice_weight"] == cfg.loss.dice_weight
    with pytest.raises(ConfigError, match=r"loss\.typo_weight is not a parameter"):
        section_kwargs(SegmentationLoss, {**cfg.loss, "typo_weight": 1.0}, "loss")


def test_exponent_floats_without_a_dot_are_numbers():
    # YAML 1.1 reads 1e-3 as a string; a user typing optim.lr=1e-3 means a number.
    cfg = load_config("classify-shapes", ["optim.lr=1e-3", "optim.weight_decay=5E-4"])
    assert cfg.optim.lr == 0.001 and cfg.optim.weight_decay == 0.0005

