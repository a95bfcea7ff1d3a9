"""BatchSource over a site's dataset: collates the keys a party declares into batches for the engine."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medsplit.errors import DataError

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
        missing = [k for k in self.keys if samples and k not in samples[0]]
        if missing:  # medsplit.engine.checks says this first, with the experiment's fix; this is the last guard
            held = sorted(k for k in samples[0] if k != "row_id")
            raise DataError(f"the site's data has no key '{missing[0]}' (it holds: {', '.join(held)})",
                            hint="declare only keys the site's YAML has under modalities: or labels:")
        return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in self.keys}

    def row_ids(self, indices: Sequence[int]) -> list[str]:
        return [self.dataset.row_ids[i] for i in indices]
