"""The data role of a task: data prepared once (generated or checked), classes, datasets."""

from __future__ import annotations

from pathlib import Path

from ...config import Config
from ...data.bundle import DataBundle
from ...errors import ConfigError


class DataRole:
    cfg: Config
    name: str
    _classes: list[str] | None

    @property
    def data_root(self) -> Path:
        if self.cfg.data.root is None:
            raise ConfigError("data.root is not set: give the dataset folder (data.root=PATH)")
        return Path(self.cfg.data.root).expanduser()

    def prepare_data(self) -> None:
        """Generate the synthetic data of ``data.synth`` at ``data.root`` when it is absent."""
        synth = dict(self.cfg.data.synth or {})
        if not synth:
            if not self.data_root.exists():
                raise ConfigError(f"data.root: dataset not found: {self.data_root}")
            return
        kind = synth.pop("kind", None)
        self.generate(kind, self.data_root, synth)

    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        raise ConfigError(f"task {self.name!r} cannot generate data.synth kind {kind!r}")

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            synth = dict(self.cfg.data.synth or {})
            if self.cfg.data.classes:  # given (or saved with the weights): no data needed
                self._classes = list(self.cfg.data.classes)
            elif synth and not self.data_root.exists():
                # Reading classes never generates data (prepare_data does, explicitly): a
                # generator's class list is known without running it.
                from ...data.synth import synth_classes

                self._classes = synth_classes(synth.get("kind"))
            else:
                if not synth:
                    self.prepare_data()  # only checks that data.root exists, naming the key
                self._classes = self.find_classes()
        return self._classes

    def find_classes(self) -> list[str]:
        raise NotImplementedError

    # The class count a model is built with when no data is at hand (``use_data_free_classes``).
    placeholder_classes = 2
    # False for tasks whose class list is fixed by the task itself (lanes, depth): find_classes
    # then reads no data.
    classes_from_data = True

    def use_data_free_classes(self) -> str | None:
        """Make ``self.classes`` answerable without generating or requiring data, for commands
        that only build the model (``visbricks summary``): ``data.classes``, else a generator's
        class list (``data.synth``), else the dataset's own when ``data.root`` exists, else
        ``placeholder_classes`` placeholder names. Returns the line that names a placeholder
        when one was used (a summary must not pass a guessed head width off as the real one),
        else None."""
        d = self.cfg.data
        if not self.classes_from_data:
            self._classes = self.find_classes()
            return None
        root = None if d.root is None else Path(d.root).expanduser()
        if self._classes is not None or d.classes or d.synth or (root and root.exists()):
            return None  # self.classes finds them without generating anything
        n = self.placeholder_classes
        self._classes = [f"class{i}" for i in range(n)]
        why = "data.root is not set" if root is None else f"data.root {root} does not exist"
        return (
            f"classes: {n} placeholder classes ({why}; pass data.classes=[a,b,...] or "
            "data=PATH for the real count)"
        )

    def build_data(self) -> DataBundle:
        """Train and val datasets: the one place data is prepared (generated on first use by a
        preset with ``data.synth``, else checked to exist) before it is read. Every entry point
        (train, eval, demo, quantize, the Python API) goes through here."""
        # Every reader decodes images to RGB (data/io.py): a model built for another channel
        # count (model.in_channels, which `summary` and the Python API may still use) failed at
        # its first convolution inside training, after the run folder was made.
        channels = self.cfg.model.in_channels
        if channels != 3:
            raise ConfigError(
                f"model.in_channels={channels}, but images are read as RGB (3 channels): "
                "training and evaluation need model.in_channels=3"
            )
        self.prepare_data()
        return self.datasets()

    def datasets(self) -> DataBundle:
        """The train and val datasets of prepared data (a task's own reading)."""
        raise NotImplementedError
