"""A new task from the roles, in a few dozen lines: regress how red an image is.

It declares its data (an ImageFolder read by the classification data layer), its head (the
registered linear head with one output), its loss, its evaluator and its decoding; the Trainer,
the run folder, checkpoints and the CLI-free Python API need nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import write_colour_folder
from visbricks.config import load_config
from visbricks.data.bundle import DataBundle
from visbricks.data.classification import classification_transforms, imagefolder_dataset
from visbricks.data.normalize import denormalize
from visbricks.engine.trainer import Trainer
from visbricks.metrics.base import EvalResult, Evaluator
from visbricks.registry import TASKS
from visbricks.tasks import Task, build_task


class RednessError(Evaluator):
    """Mean absolute error of the predicted red share."""

    def reset(self) -> None:
        super().reset()
        self.errors: list[torch.Tensor] = []

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        self.errors.append((predictions - targets).abs().cpu())

    def compute(self) -> EvalResult:
        mae = float(torch.cat(self.errors).mean())
        return EvalResult({**self.loss_metrics(), self.key("mae"): mae}, f"MAE {mae:.4f}")


class RednessTask(Task):
    name = "test_redness"
    metric, metric_mode = "val/mae", "min"
    default_head = "linear"
    config_defaults = "classify"  # its config keys and checks: the classification task's
    classes_from_data = False

    def find_classes(self) -> list[str]:  # data role: the one regressed quantity
        return ["redness"]

    def datasets(self) -> DataBundle:  # data role: any ImageFolder, labels unused
        root, d = self.data_root, self.cfg.data

        def split(name: str, train: bool):
            tf = classification_transforms(self.img_size, self.mean, self.std, train, dict(d.aug))
            return imagefolder_dataset(root / name, transform=tf)

        return DataBundle(split("train", True), split("val", False), self.classes)

    def build_head(self, in_channels, strides):  # model role: one output
        return self.make_head(in_channels, strides, num_classes=1)

    def target(self, batch: dict) -> torch.Tensor:  # the red share of the pixels
        rgb = denormalize(batch["image"], self.mean, self.std).clamp(0, 1).mean((2, 3))
        return rgb[:, 0] / rgb.sum(1).clamp_min(1e-6)

    def predict_share(self, outputs: dict) -> torch.Tensor:  # decoding: a share lies in (0, 1)
        return torch.sigmoid(outputs["logits"][:, 0].float())

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.l1_loss(self.predict_share(outputs), self.target(batch))}

    def evaluator(self, dataset, split: str = "val") -> Evaluator:
        return RednessError(prefix=split)

    def eval_pairs(self, outputs: dict, batch: dict):
        return self.predict_share(outputs), self.target(batch)


def test_a_task_built_from_the_roles_trains_and_evaluates(tmp_path):
    TASKS.register("test_redness")(RednessTask)
    try:
        root = write_colour_folder(tmp_path / "colours", n_per_class=16)
        cfg = load_config(
            "classify",
            [
                "task=test_redness", f"data.root={root}", f"project={tmp_path / 'runs'}",
                "img_size=32", "batch_size=8", "epochs=12", "model.backbone=resnet18",
                "model.pretrained=null", "optim.lr=0.001", "train.plots=false",
                "train.tensorboard=false", "deterministic=true",
            ],
        )  # fmt: skip
        task = build_task(cfg)
        assert isinstance(task, RednessTask)
        data, model = task.build_data(), task.build_model()
        trainer = Trainer(cfg, model, data, task)
        before = trainer.evaluate().metrics["val/mae"]
        metrics = trainer.fit()
    finally:
        TASKS._items.pop("test_redness")
    # Untrained (sigmoid ~0.5) it errs ~0.2 on the red share; trained, well under half that.
    assert metrics["val/mae"] < min(0.12, before / 2), (before, metrics)
    assert (trainer.weights_dir / "best.safetensors").is_file()
    assert [row["epoch"] for row in trainer.history] == list(range(1, 13))
