"""The ``locate`` task: largest-box targets, the L1 + λ·CE loss, the head, and a model that
learns where the one shape of an image is, trained through the task and the Trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from conftest import preset_config
from visbricks.data.synth.shapes import write_detection
from visbricks.engine.trainer import Trainer
from visbricks.errors import ConfigError
from visbricks.models.heads.locate import LocateHead
from visbricks.tasks import build_task
from visbricks.tasks.locate import LocateTask, largest_boxes

pytestmark = pytest.mark.cost(20)  # seconds here: scheduled early (conftest.py)


def _config(root: Path, project: Path, *extra: str):
    return preset_config("locate-shapes", root, project, *extra)


def test_largest_box_is_the_target() -> None:
    boxes = [
        torch.tensor([[0.0, 0, 10, 10], [5, 5, 30, 20], [0, 0, 2, 2]]),
        torch.zeros(0, 4),
        torch.tensor([[1.0, 1, 3, 3], [4, 4, 6, 6]]),  # a tie: the first one
    ]
    labels = [torch.tensor([0, 2, 1]), torch.zeros(0, dtype=torch.long), torch.tensor([3, 4])]
    target, cls, valid = largest_boxes(boxes, labels)
    assert valid.tolist() == [True, False, True]
    assert target[0].tolist() == [5, 5, 30, 20] and cls[0] == 2
    assert target[2].tolist() == [1, 1, 3, 3] and cls[2] == 3
    assert target[1].tolist() == [0, 0, 0, 0]


def test_head_boxes_lie_in_the_image_and_are_never_inverted() -> None:
    torch.manual_seed(0)
    head = LocateHead([16, 32], num_classes=3, hidden=8, pool=2)
    features = [torch.randn(5, 16, 8, 8), torch.randn(5, 32, 4, 6) * 50]  # large: saturating
    out = head(features, (48, 72))
    boxes = out["boxes"]
    assert boxes.shape == (5, 4) and out["logits"].shape == (5, 3)
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert (centre >= 0).all() and (centre[:, 0] <= 72).all() and (centre[:, 1] <= 48).all()


def test_loss_is_l1_on_normalised_corners_plus_weighted_ce(tmp_path) -> None:
    cfg = _config(
        tmp_path / "unused.yaml", tmp_path, "loss.cls_weight=0.3", "data.classes=[a, b, c]"
    )
    task = LocateTask(cfg)
    batch = {
        "image": torch.zeros(2, 3, 40, 80),
        "boxes": [torch.tensor([[0.0, 0, 8, 4], [10, 10, 60, 30]]), torch.tensor([[4.0, 4, 8, 8]])],
        "labels": [torch.tensor([0, 2]), torch.tensor([1])],
    }
    outputs = {
        "boxes": torch.tensor([[10.0, 12, 50, 30], [0, 0, 8, 8]]),
        "logits": torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 0.0]]),
    }
    loss = task.loss(outputs, batch)
    scale = torch.tensor([80.0, 40, 80, 40])
    target = torch.tensor([[10.0, 10, 60, 30], [4, 4, 8, 8]])
    l1 = ((outputs["boxes"] - target).abs() / scale).mean()
    ce = F.cross_entropy(outputs["logits"], torch.tensor([2, 1]))
    assert loss["loss_box"] == pytest.approx(float(l1))
    assert loss["loss_cls"] == pytest.approx(float(ce))
    assert loss["loss"] == pytest.approx(float(l1 + 0.3 * ce))
    # A batch whose images lost every box still backpropagates (to nothing).
    no_label = torch.zeros(0, dtype=torch.long)
    empty = dict(batch, boxes=[torch.zeros(0, 4)] * 2, labels=[no_label] * 2)
    grad_outputs = {k: v.clone().requires_grad_() for k, v in outputs.items()}
    task.loss(grad_outputs, empty)["loss"].backward()
    assert float(grad_outputs["boxes"].grad.abs().sum()) == 0.0


def test_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="model.head"):
        LocateTask(_config(tmp_path / "x.yaml", tmp_path, "model.head=ssd"))
    with pytest.raises(ConfigError, match="loss.cls_weight"):
        LocateTask(_config(tmp_path / "x.yaml", tmp_path, "loss.cls_weight=-1.0"))


@pytest.fixture(scope="module")
def one_shape(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loc") / "shapes"
    return write_detection(out, n_train=128, n_val=32, width=64, height=64, seed=4, objects=(1, 1))


def _untrained_iou(task: LocateTask, bundle) -> float:
    model = task.build_model().eval()
    loader = DataLoader(bundle.val, batch_size=32, collate_fn=bundle.collate_fn)
    return task.evaluate(model, loader, torch.device("cpu"))["val/iou"]


@pytest.mark.slow
def test_locate_learns_where_the_object_is(one_shape, tmp_path) -> None:
    torch.set_num_threads(1)
    cfg = _config(
        one_shape / "data.yaml",
        tmp_path,
        "img_size=64",
        "batch_size=16",
        "epochs=10",
        "optim.lr=0.0005",
        "data.aug={photometric: 0.0, zoom_out: 0.0, iou_crop: 0.0, scale_jitter: null}",
        "train.val_every=1000",
        "train.plots=true",
    )
    task = build_task(cfg)
    bundle = task.build_data()
    before = _untrained_iou(task, bundle)
    trainer = Trainer(cfg, task.build_model(), bundle, task=task)
    metrics = trainer.fit()
    # Untrained, the box sits mid-image (IoU ~0.15); 80 steps from scratch reach ~0.45.
    assert metrics["val/iou"] >= 0.35 and metrics["val/iou"] >= before + 0.15, (before, metrics)
    history = trainer.history
    assert history[-1]["train/loss_box"] < 0.7 * history[0]["train/loss_box"]
    assert history[-1]["train/loss_cls"] < history[0]["train/loss_cls"]
    assert "mean IoU" in trainer.last_eval.table
    for name in ("samples.png", "predictions.png", "confusion_matrix.png"):
        assert (trainer.plots_dir / name).is_file(), name

    # predict: one COCO-style box per image, the model's box mapped to original-image pixels.
    from visbricks.data.io import read_image
    from visbricks.deploy.loading import load_run
    from visbricks.deploy.predict import predict

    run = load_run(trainer.run_dir)
    record = bundle.val.dataset.records[0]
    file = bundle.val.dataset.root / record.file
    [pred] = json.loads((predict(run, file, tmp_path / "pred") / "predictions.json").read_text())
    assert set(pred) == {"file", "label", "category_id", "bbox", "score"}
    tensor, meta = run.task.preprocess(read_image(file))
    with torch.no_grad():
        box = run.model(tensor[None])["boxes"][0]
    expected = run.task.to_original(box, meta["letterbox"], meta["orig_size"])[0]
    x, y, w, h = pred["bbox"]
    assert [x, y, x + w, y + h] == pytest.approx(expected.tolist(), abs=0.02)
    assert pred["label"] in task.classes and 0 < pred["score"] <= 1
