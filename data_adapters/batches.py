"""BatchSource over a site's dataset: collates the keys a party declares into batches for the engine."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["DatasetSource"]


class DatasetSource:
    """The engine's view of a SiteDataset: ``batch`` stacks the declared keys, ``row_ids`` stay at the site."""

    def __init__(self, dataset, keys: Sequence[str]) -> None:
        self.dataset = dataset
        self.keys = tuple(keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: Sequence[int], seed: int | None = None) -> dict[str, torch.Tensor]:
        """The declared keys of rows ``indices``; ``seed`` (a training step) fixes each row's augmentation."""
        samples = [self.dataset.sample(i, None if seed is None else seed * 1_000_003 + j)
                   for j, i in enumerate(indices)]
        return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in self.keys}

    def row_ids(self, indices: Sequence[int]) -> list[str]:
        return [self.dataset.row_ids[i] for i in indices]
