"""Batch sampling that keeps images of similar shape together, so collate pads little."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class GroupedBatchSampler(Sampler[list[int]]):
    """Yields batches of dataset indices whose images share an aspect-ratio group.

    Groups are the intervals of width/height cut at ``bin_edges`` (default: portrait < 1 <=
    landscape). Each epoch every index appears exactly once (``drop_last`` drops each group's
    incomplete last batch instead); with ``shuffle`` the order inside groups and the order of
    batches are drawn from ``generator``, so a seeded generator gives the same epochs.
    Use as ``DataLoader(ds, batch_sampler=GroupedBatchSampler(ds.aspect_ratios(), 8))``.
    """

    def __init__(
        self,
        aspect_ratios: Sequence[float],
        batch_size: int,
        drop_last: bool = False,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        bin_edges: Sequence[float] = (1.0,),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ratios = np.asarray(aspect_ratios, dtype=np.float64)
        if ratios.ndim != 1 or not np.all(np.isfinite(ratios) & (ratios > 0)):
            raise ValueError("aspect_ratios must be a flat sequence of positive finite numbers")
        edges = np.asarray(sorted(bin_edges), dtype=np.float64)
        self.group_ids = np.digitize(ratios, edges)  # ratio == edge goes to the upper group
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.generator = generator

    def _groups(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.group_ids == g) for g in np.unique(self.group_ids)]

    def __iter__(self) -> Iterator[list[int]]:
        generator = self.generator
        if self.shuffle and generator is None:
            # Like RandomSampler: a fresh seed per epoch, taken from torch's global RNG.
            generator = torch.Generator()
            generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        batches: list[list[int]] = []
        for members in self._groups():
            if self.shuffle:
                members = members[torch.randperm(len(members), generator=generator).numpy()]
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                if len(chunk) < self.batch_size and self.drop_last:
                    continue
                batches.append(chunk.tolist())
        if self.shuffle:
            order = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[i] for i in order]
        yield from batches

    def __len__(self) -> int:
        sizes = [len(m) for m in self._groups()]
        if self.drop_last:
            return sum(n // self.batch_size for n in sizes)
        return sum(-(-n // self.batch_size) for n in sizes)
