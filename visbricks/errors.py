"""Errors a user can act on. The CLI prints these as one line instead of a traceback."""


class VisbricksError(Exception):
    """Base class: the message names the file, key or value at fault and what to do."""


class ConfigError(VisbricksError):
    """A config key, type or value is wrong (unknown key, wrong type, missing path)."""


class DataError(VisbricksError):
    """A dataset file or folder is missing, unreadable or malformed."""


class WeightsError(VisbricksError):
    """A weights file cannot be found, read or safely loaded."""


class TrainingDiverged(VisbricksError):
    """The loss became NaN or infinite; the message names the epoch, step and batch."""
