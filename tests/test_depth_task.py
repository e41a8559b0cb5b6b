"""The depth task end to end: pose ordering, pretrained mapping, training, metrics, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from visbricks.config import load_config
from visbricks.data.io import read_image, write_image
from visbricks.data.synth.driving import write_driving
from visbricks.errors import ConfigError
from visbricks.metrics.depth import DEPTH_METRICS
from visbricks.ops.geometry import pose_vec_to_mat
from visbricks.tasks import build_task
from visbricks.tasks.depth import colorize

pytestmark = pytest.mark.cost(22)  # seconds here: scheduled early (conftest.py)


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    return write_driving(
        tmp_path_factory.mktemp("depth") / "drive",
        sequences=2,
        frames=8,
        width=128,
        height=64,
        val_sequences=1,
        seed=4,
    )


def _config(root: Path, project: Path | None = None, *extra: str):
    overrides = [
        f"data.root={root}",
        "data.synth=null",
        "img_size={width: 128, height: 64}",
        "batch_size=2",
        "epochs=2",
        f"project={project or root.parent / 'runs'}",
        "train.tensorboard=false",
        "data.cache=false",
        "deterministic=true",
    ]
    return load_config("depth-driving", [*overrides, *extra])


@pytest.fixture(scope="module")
def trained(drive, tmp_path_factory):
    """A two-epoch run on the tiny sequences (plumbing, not accuracy)."""
    from visbricks.cli import run_training

    cfg = _config(drive, tmp_path_factory.mktemp("runs"))
    trainer, metrics = run_training(cfg)
    return trainer, metrics


def test_loss_decreases_when_training_on_a_batch(drive):
    torch.manual_seed(0)
    task = build_task(_config(drive, None, "data.aug.hflip=0.0", "data.aug.color_p=0.0"))
    data = task.build_data()
    batch = next(iter(DataLoader(data.train, batch_size=4)))
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        terms = task.loss(task.forward(model, batch), batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
        assert terms["loss"].item() == pytest.approx(terms["photo"].item() + terms["smooth"].item())
    assert np.mean(losses[-5:]) < 0.8 * losses[0], losses


def test_depth_starts_mid_range_and_fixed_scale_pins_the_mean_disparity():
    from visbricks.models.blocks import output_conv
    from visbricks.models.depth import DepthModel
    from visbricks.ops.geometry import disp_to_depth

    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 128)
    free = DepthModel("resnet18", "mobilenet_v3_small", min_depth=0.1, max_depth=100.0).eval()
    pinned = DepthModel("resnet18", "mobilenet_v3_small", fixed_scale=True).eval()
    with torch.no_grad():
        out = free(images)
        assert [tuple(out[("disp", s)].shape) for s in range(4)] == [
            (2, 1, 64 // 2**s, 128 // 2**s) for s in range(4)
        ]
        depth = disp_to_depth(out[("disp", 0)], 0.1, 100.0)[1]
        assert 2.0 < depth.median().item() < 5.0  # sqrt(0.1 * 100) = 3.16
        # Push every output nearer: the free model follows, the pinned one keeps its mean.
        for model in (free, pinned):
            for head in model.depth_decoder.decoder.predict.values():
                output_conv(head).bias.add_(2.0)
        init = pinned.depth_decoder.init_disp
        assert free(images)[("disp", 0)].mean().item() > 3 * init
        for s, disp in pinned(images).items():
            torch.testing.assert_close(disp.mean((2, 3)), torch.full((2, 1), init), msg=str(s))


def test_fixed_scale_over_the_batch_pins_the_batch_mean_and_evaluates_with_its_running_mean():
    from visbricks.errors import ConfigError
    from visbricks.models.blocks import output_conv
    from visbricks.models.depth import DepthModel

    torch.manual_seed(0)
    model = DepthModel("resnet18", "mobilenet_v3_small", fixed_scale=True, fixed_scale_over="batch")
    decoder = model.depth_decoder
    init = decoder.init_disp
    # Two images of different content: the far half of the batch dark, the near half bright.
    images = torch.cat([torch.full((1, 3, 64, 128), -1.0), torch.full((1, 3, 64, 128), 1.0)])
    images = images + 0.3 * torch.randn_like(images)
    for head in decoder.decoder.predict.values():  # the raw output: mean disparity ≠ init
        output_conv(head).bias.data.add_(1.0)
    model.train()
    with torch.no_grad():
        out = model(images)
    for s, disp in out.items():
        # The batch's mean is pinned, each image's is free (the per-image pin forces both).
        assert disp.mean().item() == pytest.approx(init, rel=1e-4), s
    means = out[("disp", 0)].mean((1, 2, 3))
    assert abs(means[0] - means[1]).item() > 1e-3 * init
    # Evaluation divides by the running mean, so an image's output does not depend on the rest
    # of the batch, and it equals the raw sigmoid scaled by init / running_mean.
    running = decoder.running_mean.clone()
    assert not torch.allclose(running, torch.full_like(running, init))  # it moved toward the raw
    model.eval()
    with torch.no_grad():
        alone = model(images[:1])[("disp", 0)]
        together = model(images)[("disp", 0)][:1]
        raw = torch.sigmoid(decoder.decoder(model.depth_encoder(images[:1]))[0])
    torch.testing.assert_close(alone, together)
    torch.testing.assert_close(alone, (raw * init / running[0]).clamp(max=1))
    torch.testing.assert_close(decoder.running_mean, running)  # eval leaves it alone
    # It is saved with the weights (a per-image model has no such buffer).
    assert "depth_decoder.running_mean" in model.state_dict()
    per_image = DepthModel("resnet18", "mobilenet_v3_small", fixed_scale=True)
    assert "depth_decoder.running_mean" not in per_image.state_dict()
    with pytest.raises(ConfigError, match="fixed_scale_over"):
        load_config("depth-driving", ["model.fixed_scale_over=pixel"])
    assert load_config("depth-driving").model.fixed_scale_over == "running"


def test_fixed_scale_over_running_trains_at_the_running_mean_with_the_batch_gradient():
    from visbricks.models.blocks import output_conv
    from visbricks.models.depth import DepthModel

    torch.manual_seed(0)
    model = DepthModel(
        "resnet18", "mobilenet_v3_small", fixed_scale=True, fixed_scale_over="running"
    )
    decoder = model.depth_decoder
    init = decoder.init_disp
    images = torch.randn(2, 3, 64, 128)
    model.train()

    def step(bias: float):
        for head in decoder.decoder.predict.values():
            output_conv(head).bias.data.fill_(decoder.init_logit + bias)
        before = decoder.running_mean.clone()
        raw = torch.sigmoid(decoder.decoder(model.depth_encoder(images))[0])
        return before, raw, model(images)[("disp", 0)]

    # The raw batch mean within 1.25x of the running mean: the output is the raw disparity over
    # the running mean as it was before this step — evaluation's scale, not this batch's.
    before, raw, out = step(0.1)
    assert 1.0 < raw.mean().item() / before[0].item() < 1.25
    torch.testing.assert_close(out, (raw * init / before[0]).clamp(max=1))
    assert decoder.running_mean[0] > before[0]  # it still moves toward the batch's, as "batch"
    # Far beyond it: the correction is clipped (as Batch Renormalization clips r), so the
    # output's batch mean is held at 1.25x the pinned value instead of following the raw drift.
    before, raw, out = step(1.5)
    assert raw.mean().item() / before[0].item() > 2
    assert out.mean().item() == pytest.approx(1.25 * init, rel=1e-4)
    # The gradient is the batch pin's: none along a rescaling of the whole batch. d/dα of
    # f(α · raw) at α = 1 is the dot product of the gradient with raw.
    alpha = torch.ones((), requires_grad=True)
    value = alpha * raw * init / decoder._pinned_mean(alpha * raw, 0)
    (grad,) = torch.autograd.grad(value.sum(), alpha)
    assert abs(grad.item()) < 1e-6 * value.sum().item()


def test_fixed_scale_steps_releases_the_pin_after_its_count_and_a_resume_stays_released(drive):
    from visbricks.models.blocks import output_conv
    from visbricks.models.depth import DepthModel

    torch.manual_seed(0)
    pin = {"fixed_scale": True, "fixed_scale_over": "running"}
    model = DepthModel("resnet18", "mobilenet_v3_small", **pin, fixed_scale_steps=2).train()
    decoder = model.depth_decoder
    init = decoder.init_disp
    images = torch.randn(2, 3, 64, 128)
    for _ in range(2):  # pinned: the running mean follows the batch's
        before = decoder.running_mean.clone()
        with torch.no_grad():
            model(images)
        assert not torch.equal(decoder.running_mean, before)
    assert int(decoder.pinned_steps) == 2 and decoder.released
    # Released: the raw disparity times one constant per scale, the running mean kept.
    frozen = decoder.running_mean.clone()
    raw = torch.sigmoid(decoder.decoder(model.depth_encoder(images))[0])
    out = model(images)[("disp", 0)]
    torch.testing.assert_close(out, (raw * init / frozen[0]).clamp(max=1))
    torch.testing.assert_close(decoder.running_mean, frozen)
    assert int(decoder.pinned_steps) == 2
    # A raw drift far beyond the pin's 1.25x clip now reaches the output (pinned, the output's
    # batch mean stayed at 1.25 * init: the test above).
    for head in decoder.decoder.predict.values():
        output_conv(head).bias.data.fill_(decoder.init_logit + 1.5)
    with torch.no_grad():
        raw = torch.sigmoid(decoder.decoder(model.depth_encoder(images))[0])
        out = model(images)[("disp", 0)]
    assert raw.mean().item() / frozen[0].item() > 2
    assert out.mean().item() > 1.5 * init
    torch.testing.assert_close(out, (raw * init / frozen[0]).clamp(max=1))
    # The count is saved with the weights: a run resumed after the release stays released;
    # a model without the option has no such key, so older files load as before.
    resumed = DepthModel("resnet18", "mobilenet_v3_small", **pin, fixed_scale_steps=2)
    assert not resumed.depth_decoder.released
    resumed.load_state_dict(model.state_dict())
    assert resumed.depth_decoder.released
    plain = DepthModel("resnet18", "mobilenet_v3_small", **pin)
    assert "depth_decoder.pinned_steps" not in plain.state_dict()
    unpinned = DepthModel("resnet18", "mobilenet_v3_small", fixed_scale_steps=2)  # nothing to free
    assert unpinned.depth_decoder.fixed_scale_steps is None
    assert "depth_decoder.pinned_steps" not in unpinned.state_dict()
    # The config key reaches the decoder; a per-image pin or a negative count is refused.
    built = build_task(
        _config(drive, None, "model.fixed_scale_steps=7", "loss.pose_refine=0")
    ).build_model(False)
    assert built.depth_decoder.fixed_scale_steps == 7
    with pytest.raises(ConfigError, match="fixed_scale_steps"):
        build_task(
            _config(
                drive,
                None,
                "model.fixed_scale_steps=7",
                "model.fixed_scale_over=image",
                "loss.pose_refine=0",
            )
        ).build_model(False)
    with pytest.raises(ConfigError, match="fixed_scale_steps"):
        load_config("depth-driving", ["model.fixed_scale_steps=-1"])


class _PairProbe(nn.Module):
    """Depth: a constant disparity. Pose: translation = mean(first frame) - mean(second frame),
    so the order in which the task stacks a pair is visible in the output."""

    def forward(self, images, pose_frames=None):
        b, _, h, w = images.shape
        out = {("disp", s): torch.full((b, 1, h // 2**s, w // 2**s), 0.5) for s in range(4)}
        if pose_frames is not None:  # DepthModel's contract: one call for both networks
            out["pose"] = self.predict_pose(pose_frames)
        return out

    def predict_pose(self, pairs):
        first, second = pairs[:, :3].mean((1, 2, 3)), pairs[:, 3:].mean((1, 2, 3))
        translation = torch.stack([first - second, 2 * (first - second), first], 1)[:, None]
        return torch.zeros_like(translation), translation


def test_pose_net_sees_each_pair_in_time_order_and_the_past_is_inverted(drive):
    task = build_task(_config(drive, None, "loss.pose_refine=0"))  # the probe counts no batches
    batch = {
        ("color_aug", f, 0): torch.full((2, 3, 64, 128), float(v))
        for f, v in ((0, 1.0), (-1, 3.0), (1, 7.0))
    }
    out = task.forward(_PairProbe(), batch)
    assert task.batch_size(batch) == 2
    # +1: [target, source]; the motion is used as predicted.
    torch.testing.assert_close(out[("translation", 0, 1)][0, 0], torch.tensor([-6.0, -12.0, 1.0]))
    torch.testing.assert_close(out[("cam_T_cam", 0, 1)][0, :3, 3], torch.tensor([-6.0, -12.0, 1.0]))
    # -1: [source, target]; target -> source is the inverse of what the net saw.
    predicted = pose_vec_to_mat(out[("axisangle", 0, -1)], out[("translation", 0, -1)])
    torch.testing.assert_close(out[("translation", 0, -1)][0, 0], torch.tensor([2.0, 4.0, 3.0]))
    torch.testing.assert_close(out[("cam_T_cam", 0, -1)], torch.linalg.inv(predicted))
    assert {("disp", s) for s in range(4)} <= set(out)


class _AllFramesProbe(_PairProbe):
    """Pose for ``pose_input: all``: the first source's translation is (mean of stacked frame 0,
    2 x that of frame 1, 3 x that of frame 2), the second's ten times it, rotation 0: the
    stacking order and which output feeds which source show."""

    def predict_pose(self, frames):
        means = frames.unflatten(1, (-1, 3)).mean((2, 3, 4))  # (B, frames)
        translation = torch.stack([means[:, 0], 2 * means[:, 1], 3 * means[:, 2]], 1)
        translation = torch.stack([translation, 10 * translation], 1)  # (B, 2 sources, 3)
        return torch.zeros_like(translation), translation


def test_pose_input_all_stacks_every_frame_in_time_order_once(drive):
    task = build_task(_config(drive, None, "model.pose_input=all", "loss.pose_refine=0"))
    model = task.build_model(load_pretrained=False)
    # Three frames in, one motion per source out.
    assert model.predict_pose(torch.zeros(2, 9, 64, 128))[1].shape == (2, 2, 3)
    batch = {
        ("color_aug", f, 0): torch.full((2, 3, 64, 128), float(v))
        for f, v in ((0, 1.0), (-1, 3.0), (1, 7.0))
    }
    out = task.forward(_AllFramesProbe(), batch)
    # Frames stacked -1, 0, +1; output i is source frame_ids[1 + i] = -1, then +1; no inverse.
    torch.testing.assert_close(out[("translation", 0, -1)][0, 0], torch.tensor([3.0, 2.0, 21.0]))
    torch.testing.assert_close(out[("translation", 0, 1)][0, 0], torch.tensor([30.0, 20.0, 210.0]))
    for f, t in ((-1, [3.0, 2.0, 21.0]), (1, [30.0, 20.0, 210.0])):
        torch.testing.assert_close(out[("cam_T_cam", 0, f)][0, :3, 3], torch.tensor(t))
        torch.testing.assert_close(out[("cam_T_cam", 0, f)][0, :3, :3], torch.eye(3))


def test_pose_encoder_takes_3_channel_weights_through_a_mapping_rule(drive, tmp_path, monkeypatch):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    conv1 = reference.conv1.weight.detach()
    path = tmp_path / "resnet18-local.pth"
    torch.save(reference.state_dict(), path)

    def check(model, reports):
        assert torch.equal(model.depth_encoder.conv1.weight, conv1)
        # Two stacked frames: each half holds the weights halved, so two identical frames
        # give the pretrained response.
        torch.testing.assert_close(model.pose_encoder.conv1.weight, torch.cat([conv1] * 2, 1) / 2)
        for encoder in (model.depth_encoder, model.pose_encoder):
            assert torch.equal(encoder.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
            assert torch.equal(encoder.bn1.running_var, reference.bn1.running_var)
        for report in reports:
            assert not report.missing and not report.mismatched
            assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]  # the classifier

    pose = "model.pose_backbone=resnet18"  # the preset's is lighter; the rule is the same
    task = build_task(_config(drive, None, f"model.pretrained={path}", pose))
    model = task.build_model(load_pretrained=False)
    check(model, task.load_pretrained(model))

    # model.pretrained=imagenet finds torchvision's file in the torch hub cache.
    from visbricks.engine.weights import torchvision_weights_files

    hub = tmp_path / ".torch"
    name = torchvision_weights_files("resnet18")[0][1].name
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), hub / "hub" / "checkpoints" / name)
    monkeypatch.setenv("TORCH_HOME", str(hub))
    task = build_task(_config(drive, None, "model.pretrained=imagenet", pose))
    model = task.build_model(load_pretrained=False)
    check(model, task.load_pretrained(model))


def test_a_file_for_the_depth_encoder_leaves_a_different_pose_encoder_alone(drive, tmp_path):
    path = tmp_path / "resnet18-local.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    task = build_task(_config(drive, None, f"model.pretrained={path}"))  # pose: mobilenet
    model = task.build_model(load_pretrained=False)
    before = {k: v.clone() for k, v in model.pose_encoder.state_dict().items()}
    reports = task.load_pretrained(model)
    assert len(reports) == 1 and not reports[0].missing
    for k, v in model.pose_encoder.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_constant_prediction_scores_exactly_the_baseline(drive, tmp_path):
    task = build_task(_config(drive))
    data = task.build_data()
    loader = DataLoader(data.val, batch_size=4)
    metrics = task.evaluate(_PairProbe(), loader, torch.device("cpu"), tmp_path)
    for k in DEPTH_METRICS:
        assert metrics[f"val/{k}"] == pytest.approx(metrics[f"val/baseline_{k}"], rel=1e-6)
    assert metrics["val/baseline_abs_rel"] > 0.05  # the scene is not one depth
    table = metrics.table
    assert "constant gt median" in table and "δ<1.25" in table
    image = read_image(tmp_path / "depth.png")
    assert image.shape[0] > 100 and image.shape[1] > 300


def test_training_run_writes_metrics_plots_and_weights(trained):
    trainer, metrics = trained
    expected = {f"val/{k}" for k in DEPTH_METRICS} | {f"val/baseline_{k}" for k in DEPTH_METRICS}
    assert expected | {"val/scale_ratio_mean", "val/scale_ratio_std"} == set(metrics)
    rows = (trainer.run_dir / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"train/loss", "train/photo", "train/smooth", "val/abs_rel"} <= set(header)
    assert len(rows) == 3
    for name in ("depth.png", "samples.png", "predictions.png", "loss.png", "metrics.png"):
        assert (trainer.plots_dir / name).is_file(), name
    assert (trainer.weights_dir / "best.safetensors").is_file()


def test_eval_prints_the_table_and_predict_writes_depth_images(trained, drive, tmp_path, capsys):
    from visbricks.cli import main
    from visbricks.deploy.loading import load_run
    from visbricks.deploy.predict import predict

    trainer, _ = trained
    assert main(["eval", str(trainer.run_dir), "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "constant gt median" in printed and "abs_rel" in printed
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["val/abs_rel"] > 0

    inputs = tmp_path / "in"
    frame = read_image(drive / "seq_01" / "images" / "000003.png")
    write_image(inputs / "frame.png", frame)
    write_image(inputs / "tall.jpg", np.ascontiguousarray(np.repeat(frame, 2, axis=0)))
    run = load_run(trainer.run_dir)
    out = predict(run, inputs, tmp_path / "out")
    for name, shape in (("frame.png", frame.shape), ("tall.png", (128, 128, 3))):
        depth_image = read_image(out / name)
        assert depth_image.shape == shape
        assert depth_image.std() > 0
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) == 2
    for r in results:
        assert 0 < r["depth_min"] <= r["depth_median"] <= r["depth_max"]
        assert "_depth" not in r

    # A video in gives a colour-mapped depth video out, frame for frame at the same rate.
    from visbricks.deploy.video import VideoWriter, read_frames, video_fps

    clip = tmp_path / "drive.mp4"
    with VideoWriter(clip, fps=10) as writer:
        for i in range(5):
            writer.write(read_image(drive / "seq_01" / "images" / f"{i:06d}.png"))
    out = predict(run, clip, tmp_path / "video", batch_size=2)
    frames = list(read_frames(out / "drive.mp4"))
    assert len(frames) == 5 and frames[0].shape == frame.shape
    assert video_fps(out / "drive.mp4") == pytest.approx(10)
    results = json.loads((out / "predictions.json").read_text())
    assert [r["frame"] for r in results] == list(range(5))


def test_colorize_shows_near_bright_and_missing_black():
    disparity = np.array([[0.0, 0.1, 0.5, 1.0]])
    rgb = colorize(disparity, vmax=1.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert (rgb[0, 0] == 0).all()
    brightness = rgb[0, 1:].astype(int).sum(-1)
    assert (np.diff(brightness) > 0).all()


def test_bad_depth_settings_are_config_errors(drive):
    with pytest.raises(ConfigError, match="multiples of 32 and at least 64, got 96x32"):
        build_task(_config(drive, None, "img_size={width: 96, height: 32}"))
    with pytest.raises(ConfigError, match="frame_ids must be the target 0"):
        build_task(_config(drive, None, "data.frame_ids=[1, 0]"))
    task = build_task(
        load_config(
            "depth-driving", [f"data.root={drive.parent / 'new'}", "data.synth={kind: shapes}"]
        )
    )
    with pytest.raises(ConfigError, match="data.synth.kind for depth must be 'driving'"):
        task.build_data()
    with pytest.raises(ConfigError, match="data.format for depth must be 'sequence'"):
        build_task(_config(drive, None, "data.format=coco")).build_data()
