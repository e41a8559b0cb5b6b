"""The three roles a task plays besides training, one file each; ``tasks/base.py`` joins them.

- :class:`DataRole` (``data.py``): prepare (generate or check) the data, the class list, the
  train and val datasets.
- :class:`ModelRole` (``model.py``): backbone → neck → head from the registries, the head this
  task needs, pretrained weights.
- :class:`PredictorRole` (``predict.py``): raw image → network input, outputs → records, records
  drawn on the image; the batch drawings of a run's plots.

A task subclasses ``Task`` and overrides what its kind of data and head need: a data reader
(``find_classes``, ``datasets``), the head's task arguments (``build_head``), the loss, the
evaluator and the decoding. Each role reads only ``self.cfg`` and what the task's ``__init__``
set (``img_size``, ``mean``/``std``).
"""

from .data import DataRole
from .model import ModelRole
from .predict import PredictorRole

__all__ = ["DataRole", "ModelRole", "PredictorRole"]
