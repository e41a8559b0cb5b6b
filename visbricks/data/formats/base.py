"""The dataset-format contract: one :class:`DatasetFormat` subclass per on-disk layout.

A format is registered by name in :data:`~visbricks.registry.DATASETS`::

    @DATASETS.register("voc")
    class VOC(DatasetFormat):
        kind = "detection"
        looks_for = "Annotations/*.xml (+ JPEGImages/, ImageSets/Main/*.txt)"

        @classmethod
        def sniff(cls, path): ...            # does this folder or data YAML look like me?
        def read(self, path, split=None, classes=None, strict=False): ...
        def write(self, records, out_dir, split="train", **options): ...
        def splits(self, path): ...

Every module in ``visbricks/data/formats/`` is imported by the package, so adding a format is
one new file. :func:`visbricks.data.formats.find_format` asks each registered format (lowest
``priority`` first) whether a folder is its own, and honours a data YAML's ``format:`` key;
``data convert``, ``data check``, training configs and the CLI all go through it.

What ``read`` returns depends on ``kind``: a :class:`~visbricks.data.records.DetectionSet` for
``detection`` (and for mask formats, whose records carry ``mask_file``), a
:class:`~visbricks.data.classification.ClassificationSet` for
``classification``; lanes and sequence formats document theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import yaml

from ...errors import DataError
from ...registry import DATASETS
from ..io import is_image_file

KINDS = ("detection", "classification", "segmentation", "lanes", "sequence")
SPLITS = ("train", "val", "test")
YAML_SUFFIXES = (".yaml", ".yml")


class DatasetFormat:
    """One dataset layout. Subclasses set the class attributes and implement the methods.

    Instances carry no state: ``DATASETS.get(name)()`` gives a usable reader/writer.
    """

    name: ClassVar[str] = ""  # filled in from the registry name by find_format's helpers
    kind: ClassVar[str] = "detection"  # one of KINDS: what read() returns and who uses it
    also_kinds: ClassVar[tuple[str, ...]] = ()  # e.g. VOC with SegmentationClass/ serves both
    looks_for: ClassVar[str] = ""  # shown when auto-detection fails: what sniff() checks
    priority: ClassVar[int] = 50  # sniffed in ascending order: specific layouts before generic
    writable: ClassVar[bool] = False  # True when write() is implemented (data convert --to)

    @classmethod
    def serves(cls, kind: str | None) -> bool:
        return kind is None or kind == cls.kind or kind in cls.also_kinds

    @classmethod
    def sniff(cls, path: Path) -> bool:
        """True when ``path`` (a folder, or a data YAML without ``format:``) is this format."""
        return False

    def read(
        self,
        path: str | Path,
        split: str | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
    ) -> Any:
        """Read ``split`` (None: everything, or the format's default) of the dataset at ``path``.

        ``classes`` fixes the class list and order. Bad samples are skipped and listed in the
        result's ``problems``; with ``strict=True`` the first one is a DataError.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot read")

    def write(
        self, records: Any, out_dir: str | Path, split: str = "train", **options: Any
    ) -> Path:
        """Write ``records`` as ``split`` into ``out_dir``; returns the dataset's data YAML."""
        raise DataError(f"writing the {self.name or type(self).__name__} format is not supported")

    def splits(self, path: str | Path) -> list[str | None]:
        """Split names present at ``path``; ``[None]`` when it is one undivided set."""
        return [None]

    # ---- data-YAML hooks (``format: NAME`` with ``train:``/``val:`` values) -------------------
    split_help: ClassVar[str] = "a path relative to the root"

    def read_source(self, spec: Any, value: Any, strict: bool) -> Any:
        """Read the split whose data-YAML value is ``value`` (a path relative to ``spec.root``;
        None: the whole root). ``spec`` is a :class:`~.datayaml.DataSpec`."""
        path = spec.root / value if value is not None else spec.root
        return self.read(path, split=None, classes=spec.classes, strict=strict)

    def split_value_ok(self, value: Any) -> bool:
        return value is None or isinstance(value, str)

    def default_splits(self, spec: Any) -> dict[str, Any]:
        """Split values when the YAML names none: the splits found under the root."""
        found = {s: s for s in self.splits(spec.root) if s is not None}
        return found or {"train": None}


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A data YAML as a dict; DataError names the file when it is unreadable or not a mapping."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"data YAML not found: {path}") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read data YAML {path}: {e}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: a data YAML must be a mapping of keys")
    return doc


def is_yaml(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in YAML_SUFFIXES


def has_images(folder: Path, recursive: bool = False) -> bool:
    """True when ``folder`` holds at least one image file (looks no deeper unless asked)."""
    if not folder.is_dir():
        return False
    files = folder.rglob("*") if recursive else folder.iterdir()
    return any(is_image_file(p) for p in files)


def data_yaml_of(path: Path) -> Path | None:
    """The data YAML that describes ``path``: the file itself, or ``data.yaml`` in the folder."""
    if is_yaml(path):
        return path
    for name in ("data.yaml", "data.yml"):
        if path.is_dir() and (path / name).is_file():
            return path / name
    return None


def format_names(kind: str | None = None, writable: bool = False) -> list[str]:
    """Registered format names serving ``kind`` (all when None), in sniffing order."""
    names = [
        n
        for n in DATASETS.names()
        if DATASETS.get(n).serves(kind) and (DATASETS.get(n).writable or not writable)
    ]
    return sorted(names, key=lambda n: (DATASETS.get(n).priority, n))


def get_format(name: str) -> DatasetFormat:
    """A reader/writer for the registered format ``name`` (ConfigError lists the known ones)."""
    fmt = DATASETS.get(name)()
    fmt.name = name
    return fmt


def find_format(path: str | Path, kind: str | None = None) -> DatasetFormat:
    """Auto-detect the format of a dataset folder, data YAML, or annotation file.

    A data YAML (given, or ``data.yaml`` in the folder) names its format with ``format:``, which
    overrides every guess; without it, and for plain folders, each registered format serving
    ``kind`` is asked in priority order. When none matches the DataError lists what was looked for.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    names = format_names(kind)
    yaml_file = data_yaml_of(path)
    if yaml_file is not None:
        declared = read_yaml_mapping(yaml_file).get("format")
        if declared is not None:
            if str(declared) not in DATASETS:
                DATASETS.get(str(declared))  # ConfigError: unknown format, closest name
            if str(declared) not in names:
                raise DataError(
                    f"{yaml_file}: format {declared!r} holds {DATASETS.get(declared).kind} data, "
                    f"not {kind} (formats for {kind}: {', '.join(names)})"
                )
            return get_format(str(declared))
        path = yaml_file
    for name in names:
        if DATASETS.get(name).sniff(path):
            return get_format(name)
    looked = "; ".join(f"{n}: {DATASETS.get(n).looks_for}" for n in names)
    what = f"a {kind} dataset" if kind else "a dataset"
    raise DataError(
        f"cannot tell the format of {path} as {what}; looked for {looked}. "
        "Name it with 'format:' in a data YAML (or data.format=NAME)"
    )
