"""A seeded, epoch-dependent, shardable sampler that can start mid-epoch (exact resume).

Epoch ``e`` uses the permutation of the whole dataset drawn from numpy's
``SeedSequence([seed, e])`` (the pair itself is the entropy: no two seed/epoch pairs share an
order, so seed 0's epoch 1 is not seed 1's epoch 0 and multi-seed runs are independent), cut
to a whole number of *global* batches (the tail is dropped, so every optimizer step sees exactly
``global_batch`` samples), and rank ``r`` of ``W`` takes every ``W``-th index starting at ``r``.
Consecutive runs of ``global_batch / W`` indices of each rank therefore form the same global
batches ``perm[k*B:(k+1)*B]`` for any ``W``: a 2-process run sees the same batches as a
1-process run with the same ``data.batch_size``, and a resume may change the process count.
``set_epoch(e, skip=k)`` starts at this rank's ``k``-th sample (the ones already consumed).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from fst.types import ConfigError

#: The data-order scheme a checkpoint records (``order`` in its ``sampler`` entry): "seed+epoch"
#: (checkpoints written before issue 27, generator seed ``seed + epoch``) or "seed,epoch".
ORDER = "seed,epoch"
LEGACY_ORDER = "seed+epoch"


def permutation(n: int, seed: int, epoch: int, order: str = ORDER) -> torch.Tensor:
    """Epoch ``epoch``'s order of ``n`` samples. ``ORDER``: numpy's PCG64 seeded with
    ``SeedSequence([seed, epoch])`` (torch's CPU generator keeps only 32 bits of its seed, so
    packing the pair into one seed would collide); ``LEGACY_ORDER``: ``randperm`` seeded with
    ``seed + epoch``, as checkpoints written before issue 27 expect."""
    if order == LEGACY_ORDER:
        g = torch.Generator()
        g.manual_seed(seed + epoch)
        return torch.randperm(n, generator=g)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch)])))
    return torch.from_numpy(rng.permutation(n))


class ResumableSampler(Sampler[int]):
    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if global_batch % world_size:
            raise ConfigError(
                f"global batch {global_batch} not divisible by {world_size} processes; use a "
                f"multiple of {world_size} for data.batch_size"
            )
        if num_samples < global_batch:
            raise ConfigError(
                f"the training set has {num_samples} samples, fewer than one global batch "
                f"(data.batch_size={global_batch}); lower data.batch_size"
            )
        self.n, self.global_batch = num_samples, global_batch
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0
        self.order = ORDER  # a resumed run keeps its checkpoint's (``Trainer.load_state_dict``)

    @property
    def batches_per_epoch(self) -> int:
        """Global batches (optimizer steps without accumulation) in one epoch."""
        return self.n // self.global_batch

    @property
    def per_rank(self) -> int:
        """Samples this rank draws in a full epoch."""
        return self.batches_per_epoch * self.global_batch // self.world_size

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select epoch ``epoch``'s permutation and skip this rank's first ``skip`` samples."""
        if not 0 <= skip <= self.per_rank:
            raise ValueError(f"skip={skip} outside [0, {self.per_rank}]")
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        """This rank's indices of the current epoch, from the skip point on."""
        if self.shuffle:
            perm = permutation(self.n, self.seed, self.epoch, self.order)
        else:
            perm = torch.arange(self.n)
        perm = perm[: self.batches_per_epoch * self.global_batch]
        return perm[self.rank :: self.world_size][self.skip :].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return self.per_rank - self.skip
