"""Slice datasets for unpaired training.

Volumes arrive on the template-aligned model grid, already scaled to [−1, 1]
(``synthesis/modelspace.py``). A :class:`SliceSet` indexes the axial slices of one domain that
hold brain; :class:`UnpairedSampler` draws the MRI and the PET batches from *independent*
shuffles, so which T1w slice meets which PET slice is random — the domains may even have
different sizes and come from different people. The sampler is a pure function of
``(seed, step)``: resuming at step *k* reproduces the batches of an uninterrupted run exactly,
and the sampler position is just the step number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pseudopet_bids.synthesis.modelspace import context_slices


def brain_slices(mask: np.ndarray, min_fraction: float = 0.02) -> np.ndarray:
    """Indices of axial slices whose brain covers at least ``min_fraction`` of the slice."""
    frac = mask.reshape(-1, mask.shape[2]).mean(axis=0)
    return np.flatnonzero(frac >= min_fraction)


@dataclass
class SliceSet:
    """The brain slices of one domain (a list of volumes on the model grid)."""

    volumes: list[np.ndarray]
    masks: list[np.ndarray]
    context: int = 0
    min_fraction: float = 0.02
    index: list[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.volumes) != len(self.masks):
            raise ValueError("one mask per volume is needed")
        self.index = [(v, int(z)) for v, m in enumerate(self.masks)
                      for z in brain_slices(m, self.min_fraction)]

    def __len__(self) -> int:
        return len(self.index)

    def get(self, i: int) -> np.ndarray:
        """Slice ``i`` as (2k+1, X, Y) float32."""
        v, z = self.index[i]
        return context_slices(self.volumes[v], z, self.context).astype(np.float32, copy=False)


class UnpairedSampler:
    """Batches of unpaired MRI and PET slices, deterministic in (seed, step, rank).

    Each domain is walked through a fresh random permutation per epoch of *that* domain (its own
    seed stream), so epochs of the two domains never line up. With data parallelism each rank
    takes its own positions of the same global sequence.
    """

    DOMAINS = ("mri", "pet")

    def __init__(self, sets: dict[str, SliceSet], batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        for name in self.DOMAINS:
            if name not in sets or len(sets[name]) == 0:
                raise ValueError(f"no {name} slices to train on")
        self.sets = sets
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    def _perm(self, domain: int, epoch: int) -> np.ndarray:
        key = (domain, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 8:
                self._perm_cache.clear()
            n = len(self.sets[self.DOMAINS[domain]])
            rng = np.random.default_rng([self.seed, domain, epoch])
            self._perm_cache[key] = rng.permutation(n)
        return self._perm_cache[key]

    def indices(self, step: int) -> dict[str, list[int]]:
        """Slice indices of each domain in the batch of ``step`` for this rank."""
        out = {}
        first = (step * self.world_size + self.rank) * self.batch_size
        for d, name in enumerate(self.DOMAINS):
            n = len(self.sets[name])
            out[name] = [int(self._perm(d, p // n)[p % n])
                         for p in range(first, first + self.batch_size)]
        return out

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """``{"mri": (B, C, X, Y), "pet": (B, C, X, Y)}`` float32 for ``step``."""
        idx = self.indices(step)
        return {name: np.stack([self.sets[name].get(i) for i in idx[name]])
                for name in self.DOMAINS}
