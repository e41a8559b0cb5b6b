"""The segment task: every decoder from config, a UNet that learns, and the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from visbricks.config import load_config
from visbricks.data.formats.masks import write_mask
from visbricks.data.io import write_image
from visbricks.errors import ConfigError
from visbricks.tasks import build_task

pytestmark = pytest.mark.cost(17)  # seconds here: scheduled early (conftest.py)


def _blocks_dataset(root: Path, n: int = 4, size: int = 32, seed: int = 0) -> Path:
    """images/{train,val}/ + masks/{train,val}/ (identical splits): a disc and a bar on a
    background, colours noisy but class-specific; classes in classes.txt."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(4, 7))]
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        y0 = int(rng.integers(0, size - 6))
        mask[y0 : y0 + 4, 2 : size - 2][mask[y0 : y0 + 4, 2 : size - 2] == 0] = 2
        palette = np.array([[90, 90, 90], [220, 60, 40], [40, 80, 220]], np.float32)
        image = palette[mask] + rng.normal(0, 20, (size, size, 3))
        for split in ("train", "val"):  # the same images: the overfit test scores on them
            pixels = np.clip(image, 0, 255).astype(np.uint8)
            write_image(root / "images" / split / f"{i}.png", pixels)
            write_mask(root / "masks" / split / f"{i}.png", mask)
    (root / "classes.txt").write_text("background\ndisc\nbar\n")
    return root


def _config(root: Path, tmp: Path, *extra: str):
    return load_config(
        "segment-shapes",
        [
            f"data.root={root}",
            "data.synth=null",
            "data.cache=false",
            f"project={tmp / 'runs'}",
            "img_size=32",
            "batch_size=4",
            "model.backbone=resnet18",
            "model.head_args={}",
            "train.tensorboard=false",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def blocks(tmp_path_factory) -> Path:
    return _blocks_dataset(tmp_path_factory.mktemp("seg") / "blocks")


@pytest.mark.parametrize("head", ["unet", "fpn", "deeplabv3plus", "fcn"])
@pytest.mark.parametrize("upsample", ["up_bilinear", "up_transposed"])
def test_every_decoder_builds_and_trains_a_step_from_config(blocks, tmp_path, head, upsample):
    args = f"model.head_args={{upsample: {upsample}}}"
    cfg = _config(blocks, tmp_path, f"model.head={head}", args)
    task = build_task(cfg)
    data = task.build_data()
    model = task.build_model()
    batch = next(iter(DataLoader(data.train, batch_size=4, collate_fn=data.collate_fn)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.head.parameters()]
    out = task.forward(model, batch)
    assert out["logits"].shape == (4, 3, 32, 32)  # logits at the input size
    losses = task.loss(out, batch)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    opt.step()
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.head.parameters()))
    assert changed > 0


def test_block_library_options_reach_the_decoder(blocks, tmp_path):
    args = "model.head_args={block: dwsep, attention: se}"
    cfg = _config(blocks, tmp_path, "model.head=fpn", args)
    model = build_task(cfg).build_model()
    names = {type(m).__name__ for m in model.head.modules()}
    assert "DepthwiseSeparable" in names and "SE" in names
    with pytest.raises(ConfigError, match="chanels"):
        build_task(_config(blocks, tmp_path, "model.head_args={chanels: 8}")).build_model()
    with pytest.raises(ConfigError, match="not a segmentation decoder"):
        build_task(_config(blocks, tmp_path, "model.head=ssd")).build_model()


def test_tiny_unet_overfits_four_images(blocks, tmp_path):
    cfg = _config(
        blocks,
        tmp_path,
        "model.head_args={channels: 16, out_stride: 1}",
        "data.aug={scale_jitter: null, hflip: 0, photometric: 0, crop: false}",
        # Scored on the training split's dataset, which carries no original-size labels.
        "eval.resolution=network",
    )
    task = build_task(cfg)
    data = task.build_data()
    model = task.build_model()
    loader = DataLoader(data.train, batch_size=4, collate_fn=data.collate_fn)
    batch = next(iter(loader))
    steps = 50
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    # Decaying to zero lets BatchNorm's running statistics catch up with the final weights.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=steps, pct_start=0.2)
    model.train()
    for _ in range(steps):
        loss = task.loss(task.forward(model, batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    result = task.evaluate(model, loader, torch.device("cpu"))
    assert result["val/mIoU"] >= 0.95, result.table


def test_command_line_train_eval_predict(blocks, tmp_path, capsys, monkeypatch):
    from visbricks.cli import main
    from visbricks.ops.tta import flip_average_logits

    args = [
        "train", "segment", f"data.root={blocks}", f"project={tmp_path / 'runs'}", "img_size=32",
        "epochs=1", "batch_size=4", "model.pretrained=null", "model.head=fpn",
        "model.head_args={channels: 16, seg_channels: 16}", "train.tensorboard=false",
    ]  # fmt: skip
    main(args)
    run = tmp_path / "runs" / "segment" / "segment"
    plots = {p.name for p in (run / "plots").iterdir()}
    assert {"samples.png", "predictions.png", "confusion_matrix.png"} <= plots
    capsys.readouterr()
    main(["eval", str(run)])
    out = capsys.readouterr().out
    assert "mIoU" in out and "disc" in out and "bar" in out  # the per-class table
    main(["predict", str(run), str(blocks / "images" / "val"), "--out", str(tmp_path / "pred")])
    written = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert written == ["0.png", "1.png", "2.png", "3.png", "masks", "predictions.json"]
    # Beside each drawing, its class-index PNG (tests/test_segment_original_resolution.py
    # checks its values against eval).
    assert sorted(p.name for p in (tmp_path / "pred" / "masks").iterdir()) == written[:4]
    from visbricks.data.io import read_image

    # overlay | colour-mapped mask | legend, at the original image height
    assert read_image(tmp_path / "pred" / "0.png").shape[0] == 32
    # Exported and verified against eager, then used by predict like the weights.
    main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "exp" / "m.onnx")])
    assert "max |difference|" in capsys.readouterr().out
    main(["predict", str(tmp_path / "exp" / "m.onnx"), str(blocks / "images" / "val" / "0.png"),
          "--out", str(tmp_path / "pred_onnx")])  # fmt: skip
    assert (tmp_path / "pred_onnx" / "0.png").is_file()

    # eval.tta=flip on the command line reaches predict and eval, through a runtime too.
    import visbricks.tasks.segment as segment_module

    flips = []

    def spy(net, images):
        flips.append(len(images))
        return flip_average_logits(net, images)

    monkeypatch.setattr(segment_module, "flip_average_logits", spy)
    main(["predict", str(tmp_path / "exp" / "m.onnx"), str(blocks / "images" / "val" / "0.png"),
          "eval.tta=flip", "--out", str(tmp_path / "pred_tta")])  # fmt: skip
    assert flips == [1] and (tmp_path / "pred_tta" / "masks" / "0.png").is_file()
    main(["eval", str(run), "eval.tta=flip", "--out", str(tmp_path / "eval_tta")])
    assert sum(flips) == 1 + 4  # the 4 val images
    # The multi-scale test resizes the input: an export's fixed size cannot take it, said in
    # one line naming the file, and nothing is written.
    capsys.readouterr()
    code = main(["predict", str(tmp_path / "exp" / "m.onnx"),
                 str(blocks / "images" / "val" / "0.png"), "eval.tta=multiscale",
                 "--out", str(tmp_path / "pred_ms")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "eval.tta=multiscale" in err and "m.onnx" in err and "eval.tta=flip" in err
    assert not (tmp_path / "pred_ms" / "masks").exists()


def test_folder_without_splits_holds_out_val(tmp_path):
    root = _blocks_dataset(tmp_path / "b", n=10)
    for split in ("train", "val"):  # flatten to one undivided images/ + masks/ set
        for kind in ("images", "masks"):
            for f in (root / kind / split).iterdir():
                if split == "train":
                    f.rename(root / kind / f.name)
                else:
                    f.unlink()
            (root / kind / split).rmdir()
    task = build_task(_config(root, tmp_path))
    data = task.build_data()
    train = {r.file for r in data.train.records}
    val = {r.file for r in data.val.records}
    assert len(train) == 8 and len(val) == 2 and not train & val
    assert task.classes == ["background", "disc", "bar"]


def test_multiscale_eval_letterboxes_larger_but_leaves_the_training_loss_alone(blocks, tmp_path):
    """eval.tta=multiscale letterboxes val images at img_size x the largest scale; the
    median-frequency class weights (counted on the training masks) stay those of img_size."""
    plain = build_task(_config(blocks, tmp_path, "loss.class_weights=median_freq"))
    multi = build_task(
        _config(blocks, tmp_path, "loss.class_weights=median_freq", "eval.tta=multiscale")
    )
    torch.testing.assert_close(
        multi.criterion.class_weights, plain.criterion.class_weights, rtol=0, atol=0
    )
    assert multi.eval_size == (56, 56)  # 32 x 1.75
    data = multi.build_data()
    assert data.val[0]["image"].shape[-2:] == (56, 56)
    assert data.train[0]["image"].shape[-2:] == (32, 32)
