"""Bad data, counted and named: what every ``visbricks data check`` report shares (its problems,
each with its split and file), and the datasets' skip of an unreadable sample."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import DataError

T = TypeVar("T")


class ProblemList:
    """Mixin of the check reports (boxes, masks, lanes): ``problems`` as (split, file, reason)."""

    problems: list[tuple[str, str, str]]

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_lines(self) -> list[str]:
        """ "no problems found", or the count and one line per problem."""
        if self.ok:
            return ["no problems found"]
        n = len(self.problems)
        return [f"{n} problem{'s' * (n != 1)}:"] + [
            f"  [{split}] {file}: {reason}" for split, file, reason in self.problems
        ]


def first_readable(
    dataset: Any, index: int, records: Sequence[Any], read: Callable[[int, Any], T], root: Any
) -> T:
    """``read(i, record)`` of the sample at ``index``, or of the next readable one: a sample
    whose file fails with a DataError is skipped, counted (``dataset.num_skipped``), remembered
    (``dataset.bad_files``: file → reason, never read again) and warned once; with
    ``dataset.strict`` the error is raised. Replacing a bad sample by the next index keeps an
    epoch deterministic. Shared by the box, mask and lane datasets."""
    n = len(records)
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for a dataset of {n} images")
    index %= n
    for offset in range(n):
        i = (index + offset) % n
        record = records[i]
        if record.file in dataset.bad_files:
            dataset.num_skipped += 1
            continue
        try:
            return read(i, record)
        except DataError as err:
            if dataset.strict:
                raise
            dataset.bad_files[record.file] = str(err)
            dataset.num_skipped += 1
            warnings.warn(f"skipping sample {record.file}: {err}", stacklevel=3)
    bad = dataset.bad_files
    raise DataError(
        f"no readable sample in dataset {root} ({len(bad)} bad files, e.g. {next(iter(bad), '?')})"
    )
