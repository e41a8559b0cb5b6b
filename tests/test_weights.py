from __future__ import annotations

import collections
import shutil

import pytest
import torch
import torchvision
from torch import nn

from conftest import shared_data
from visbricks.engine.weights import Rule, load_weights, read_state_dict, tile_input_channels
from visbricks.errors import WeightsError


def test_key_strategy_reports_changed_head_as_shape_mismatched(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    model = torchvision.models.resnet18(num_classes=10)
    report = load_weights(model, path, strategy="key", verbose=False)
    assert {m[0] for m in report.mismatched} == {"fc.weight", "fc.bias"}
    assert ("fc.weight", (1000, 512), (10, 512)) in report.mismatched
    assert not report.missing and not report.unexpected
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert not torch.equal(model.fc.bias[:10], source.fc.bias[:10])
    assert "2 shape-mismatched" in str(report) and "fc.weight" in str(report)


class Named(nn.Module):
    def __init__(self, names: tuple[str, str, str]) -> None:
        super().__init__()
        a, b, c = names
        self.add_module(a, nn.Conv2d(3, 8, 3))
        self.add_module(b, nn.BatchNorm2d(8))
        self.add_module(c, nn.Conv2d(8, 4, 1))


def test_shape_strategy_loads_renamed_architecture_in_order():
    torch.manual_seed(0)
    src = Named(("conv", "bn", "proj"))
    src.bn.running_mean.uniform_()
    dst = Named(("stem", "norm", "out"))
    report = load_weights(dst, src.state_dict(), strategy="shape", verbose=False)
    assert len(report.loaded) == len(src.state_dict()) and not report.mismatched
    assert torch.equal(dst.stem.weight, src.conv.weight)
    assert torch.equal(dst.norm.running_mean, src.bn.running_mean)
    assert torch.equal(dst.out.weight, src.proj.weight)


def test_shape_strategy_stops_at_first_mismatch():
    src = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1), nn.Conv2d(4, 2, 1))
    dst = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 5, 1), nn.Conv2d(4, 2, 1))
    report = load_weights(dst, src.state_dict(), strategy="shape", verbose=False)
    assert report.loaded == ["0.weight", "0.bias"]
    assert report.mismatched == [("1.weight", (4, 8, 1, 1), (5, 8, 1, 1))]
    # Everything after the mismatch is left alone, even where shapes would happen to agree.
    assert "2.weight" in report.missing and not torch.equal(dst[2].weight, src[2].weight)


def test_mapping_strategy_with_regex_rules_and_exact_renames():
    src = collections.OrderedDict(
        {"features.0.weight": torch.randn(8, 3, 3, 3), "classifier.weight": torch.randn(2, 8)}
    )
    dst = nn.Module()
    dst.body = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False))
    dst.fc = nn.Linear(8, 2, bias=False)
    report = load_weights(
        dst,
        src,
        strategy="mapping",
        mapping=[(r"^features\.", "body."), (r"^classifier", "fc")],
        verbose=False,
    )
    assert sorted(report.loaded) == ["body.0.weight", "fc.weight"]
    assert torch.equal(dst.body[0].weight, src["features.0.weight"])

    dst2 = nn.Linear(8, 2, bias=False)
    report = load_weights(
        dst2, src, "mapping", mapping={"classifier.weight": "weight"}, verbose=False
    )
    assert report.loaded == ["weight"] and report.unexpected == ["features.0.weight"]


def test_mapping_rule_can_widen_a_first_conv_for_stacked_frames():
    conv3 = nn.Conv2d(3, 4, 3)
    conv6 = nn.Conv2d(6, 4, 3)
    rule = Rule(r"^(weight)$", r"\1", tile_input_channels)
    load_weights(conv6, conv3.state_dict(), "mapping", mapping=[rule], verbose=False)
    assert torch.allclose(conv6.weight, torch.cat([conv3.weight, conv3.weight], 1) / 2)
    x = torch.randn(1, 3, 8, 8)
    # Two identical frames give the pretrained response (up to the bias, which is copied).
    assert torch.allclose(conv6(torch.cat([x, x], 1)), conv3(x), atol=1e-6)


class NotATensor:
    pass


def test_pickled_object_in_pt_file_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": nn.Linear(2, 2).state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(WeightsError, match="pickled") as e:
        read_state_dict(path)
    assert str(path) in str(e.value)
    whole_module = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), whole_module)
    with pytest.raises(WeightsError, match="refused"):
        load_weights(nn.Linear(2, 2), whole_module)


def test_sources_safetensors_checkpoint_hidden_folder_and_missing(tmp_path):
    from safetensors.torch import save_file

    model = nn.Linear(3, 2)
    hidden = tmp_path / ".cache" / "torch" / "hub" / "checkpoints"
    hidden.mkdir(parents=True)
    save_file(model.state_dict(), str(hidden / "w.safetensors"))
    torch.save({"model": model.state_dict(), "epoch": 3}, hidden / "last.ckpt")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, hidden / "ddp.pth")
    for name in ("w.safetensors", "last.ckpt", "ddp.pth"):
        other = nn.Linear(3, 2)
        report = load_weights(other, hidden / name, verbose=False)
        assert len(report.loaded) == 2 and torch.equal(other.weight, model.weight)
    with pytest.raises(WeightsError, match="not found: .*absent.pth"):
        load_weights(model, tmp_path / "absent.pth")
    with pytest.raises(WeightsError, match="unknown strategy"):
        load_weights(model, hidden / "w.safetensors", strategy="fuzzy")


def test_imagenet_offline_error_names_file_and_folder(tmp_path, monkeypatch):
    from visbricks.engine import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / ".torch"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as e:
        weights.resolve_imagenet("mobilenet_v2")
    msg = str(e.value)
    assert "mobilenet_v2-b0353104.pth" in msg
    assert str(tmp_path / ".torch" / "hub" / "checkpoints") in msg


def test_pretrained_imagenet_found_in_hidden_hub_cache(tmp_path, monkeypatch):
    """torchvision's real ImageNet file, placed in a hidden torch hub cache, is what
    ``model.pretrained: imagenet`` loads; the 1000-class head is reported as mismatched."""
    source = shared_data("weights/mobilenet_v2-b0353104.pth")
    cache = tmp_path / ".cache" / "torch"
    (cache / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(source, cache / "hub" / "checkpoints" / source.name)
    monkeypatch.setenv("TORCH_HOME", str(cache))

    from visbricks.config import load_config
    from visbricks.tasks import build_task

    cfg = load_config(
        {
            "task": "classify",
            "data": {"classes": ["ants", "bees"]},
            "model": {"backbone": "mobilenet_v2", "pretrained": "imagenet"},
        }
    )
    task = build_task(cfg)
    model = task.build_model(load_pretrained=False)
    report = task.load_pretrained(model)
    assert {m[0] for m in report.mismatched} == {"head.fc.weight", "head.fc.bias"}
    assert not report.missing and not report.unexpected
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(source, weights_only=True))
    assert torch.equal(
        model.backbone.features[5].conv[1][0].weight, reference.features[5].conv[1][0].weight
    )
    model.eval()
    reference.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model.backbone(x)[-1], reference.features(x), atol=1e-5)
