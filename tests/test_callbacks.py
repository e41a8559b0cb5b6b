"""The Trainer's extension point: callbacks chosen by config alone, their events in order, early
stopping (``train.patience``) as one callback class, and the typed task contract."""

from __future__ import annotations

import inspect

import pytest

from conftest import tiny_config, write_colour_folder
from visbricks.engine.callbacks import Callback, EarlyStopping, EpochEnd
from visbricks.engine.contract import TrainableTask
from visbricks.engine.trainer import Trainer
from visbricks.errors import ConfigError
from visbricks.registry import CALLBACKS, TASKS
from visbricks.tasks import build_task


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("data") / "colours", n_per_class=4)


def _trainer(cfg, **kwargs) -> Trainer:
    task = build_task(cfg)
    return Trainer(cfg, task.build_model(), task.build_data(), task, **kwargs)


class EventLog(Callback):
    """Records every event it sees (a user's callback: one class, one registration)."""

    seen: list[str] = []

    def on_fit_start(self, trainer):
        self.seen.append("fit_start")

    def on_train_epoch_start(self, trainer, epoch, n_batches):
        self.seen.append(f"epoch_start {epoch} {n_batches}")

    def on_train_batch_end(self, trainer, index, stats):
        assert {"loss", "lr", "img_s", "wait"} <= set(stats)
        self.seen.append("batch")

    def on_validation_end(self, trainer, end: EpochEnd):
        assert end.validated and "val/loss" in end.row
        self.seen.append(f"validation {end.epoch} improved={end.improved}")

    def on_epoch_end(self, trainer, end: EpochEnd):
        # results.csv (order 10) and last.ckpt (order 20) are written before order 50 runs.
        assert (trainer.run_dir / "results.csv").is_file()
        assert (trainer.weights_dir / "last.ckpt").is_file()
        self.seen.append(f"epoch_end {end.epoch}")

    def on_fit_end(self, trainer):
        self.seen.append("fit_end")


def test_a_registered_callback_is_chosen_by_config_alone(colours, tmp_path):
    CALLBACKS.register("test_event_log")(EventLog)
    EventLog.seen = []
    try:
        cfg = tiny_config(
            colours,
            tmp_path / "runs",
            "train.max_batches=2",
            "batch_size=2",
            "train.callbacks=[test_event_log]",
        )
        trainer = _trainer(cfg)
        trainer.fit()
    finally:
        CALLBACKS._items.pop("test_event_log")
    validation_1 = EventLog.seen.pop(9)  # improved or not: the metric decides
    assert validation_1.startswith("validation 1 improved=")
    assert EventLog.seen == [
        "fit_start",
        *("epoch_start 0 2", "batch", "batch", "validation 0 improved=True", "epoch_end 0"),
        *("epoch_start 1 2", "batch", "batch", "epoch_end 1"),
        "fit_end",
    ]
    # Written into the run's config.yaml like every other key.
    assert "test_event_log" in (trainer.run_dir / "config.yaml").read_text()


def test_a_callback_object_can_be_passed_and_bad_ones_are_named(colours, tmp_path):
    EventLog.seen = []
    cfg = tiny_config(colours, tmp_path / "runs", "epochs=1", "train.max_batches=1")
    _trainer(cfg, callbacks=[EventLog()]).fit()
    assert EventLog.seen[0] == "fit_start" and EventLog.seen[-1] == "fit_end"
    runs = sorted((tmp_path / "runs" / "classify").iterdir())
    with pytest.raises(ConfigError, match="train.callbacks: unknown callback 'no_such'"):
        _trainer(tiny_config(colours, tmp_path / "runs", "train.callbacks=[no_such]"))
    assert sorted((tmp_path / "runs" / "classify").iterdir()) == runs  # no folder claimed
    with pytest.raises(ConfigError, match="is not a visbricks.engine.callbacks.Callback"):
        _trainer(tiny_config(colours, tmp_path / "runs"), callbacks=[object()])


def test_patience_stops_after_that_many_validations_without_improvement(colours, tmp_path):
    # "epoch" in min mode improves only once (1 is its best): with patience 2 the run stops after
    # epoch 3 of 6, the two validations after the best.
    cfg = tiny_config(
        colours,
        tmp_path / "runs",
        "epochs=6",
        "train.max_batches=1",
        "train.patience=2",
        "train.metric=epoch",
        "train.metric_mode=min",
    )
    trainer = _trainer(cfg)
    trainer.fit()
    assert [row["epoch"] for row in trainer.history] == [1, 2, 3]
    assert trainer.stop_reason and "train.patience=2" in trainer.stop_reason
    assert "epoch" in trainer.stop_reason and "3" in trainer.stop_reason
    # The checkpoint of the last epoch is there to resume or evaluate.
    assert (trainer.weights_dir / "last.ckpt").is_file()


def test_patience_counts_validations_not_epochs_and_survives_a_resume(tmp_path):
    class History:  # the part of the Trainer EarlyStopping reads
        def __init__(self, values, metric="val/mAP", mode="max"):
            from visbricks.engine.settings import TrainSettings

            fields = {f: None for f in TrainSettings.__dataclass_fields__}
            fields |= {"metric": metric, "metric_mode": mode, "patience": 2}
            self.settings = TrainSettings(**fields)
            self.history = [
                {"epoch": i + 1} | ({metric: v} if v is not None else {})
                for i, v in enumerate(values)
            ]
            self.stop_reason = None

        def stop(self, reason):
            self.stop_reason = reason

    def stops(values, **kw):
        h = History(values, **kw)
        EarlyStopping().on_epoch_end(h, EpochEnd(len(values) - 1, h.history[-1], True, False, 0))
        return h.stop_reason is not None

    assert not stops([0.1, 0.2, 0.2])  # one validation without improvement
    assert stops([0.1, 0.3, 0.3, 0.2])  # ties do not improve
    assert not stops([0.1, None, 0.1, None])  # epochs without validation do not count
    assert stops([0.1, None, 0.1, None, 0.05])
    assert not stops([0.5, 0.4, 0.3], mode="min")
    assert stops([0.3, 0.4, 0.3], metric="val/loss", mode="min")


def test_every_task_satisfies_the_trainer_contract():
    protocol_methods = {
        name: inspect.signature(getattr(TrainableTask, name))
        for name in dir(TrainableTask)
        if not name.startswith("_") and callable(getattr(TrainableTask, name))
    }
    assert {"forward", "loss", "evaluate", "to_device"} <= set(protocol_methods)
    for name in TASKS.names():
        cls = TASKS.get(name)
        for method, wanted in protocol_methods.items():
            have = inspect.signature(getattr(cls, method))
            # The same parameters, in the same order (annotations may be narrower).
            assert list(have.parameters) == list(wanted.parameters), (name, method)
        for attribute in ("metric", "metric_mode"):
            assert isinstance(getattr(cls, attribute), str), (name, attribute)
        assert cls.metric_mode in ("max", "min")
