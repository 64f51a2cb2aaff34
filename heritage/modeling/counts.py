"""Accumulators whose whole state is named integer counts, so that combining them is a sum.

A score fed image by image (:mod:`heritage.modeling.residual`'s threshold sweep,
:mod:`heritage.modeling.thin`'s thin-damage scores) keeps only counts and derives its ratios from them at
the end. Two accumulators over disjoint images (shards of a test part, ranks of a distributed evaluation,
the halves of an interrupted one) then combine exactly by adding their counts (:meth:`SummedCounts.merge`),
and the state is a dict of int64 arrays a resume checkpoint can hold (``torch.from_numpy`` each to save it
with ``torch.save`` and load it back with ``weights_only=True``).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


class SummedCounts:
    """Named int64 count arrays (``self.counts``), zero at the start, summed over images.

    Subclasses declare the arrays' shapes in ``__init__`` (``super().__init__(hits=(12,), n_images=())``)
    and add to them in their ``update``.
    """

    def __init__(self, **shapes: tuple[int, ...]) -> None:
        self.counts: dict[str, np.ndarray] = {name: np.zeros(shape, dtype=np.int64) for name, shape in shapes.items()}

    def merge(self, other: "SummedCounts") -> None:
        """Add ``other``'s counts (the same kind of accumulator, over other images) to these."""
        self.load_state_dict(other.counts, add=True)

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of the counts (what a checkpoint holds, or what ranks send to be summed)."""
        return {name: value.copy() for name, value in self.counts.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray], add: bool = False) -> None:
        """Replace the counts with ``state`` (arrays or tensors of the same names and shapes), or add it."""
        if set(state) != set(self.counts):
            raise ValueError(f"{type(self).__name__}: state holds {sorted(state)}, expected {sorted(self.counts)}")
        for name, value in state.items():
            value = np.asarray(value, dtype=np.int64)
            if value.shape != self.counts[name].shape:
                raise ValueError(f"{type(self).__name__}: {name} has shape {value.shape}, "
                                 f"expected {self.counts[name].shape}")
            self.counts[name] = self.counts[name] + value if add else value.copy()
