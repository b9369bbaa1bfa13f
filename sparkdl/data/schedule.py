"""Per-epoch step schedule that keeps every rank in lock-step.

Allreduce is collective: if one rank ran one step more than another, the last
allreduce would wait forever. Every rank therefore runs the same number of steps,
derived from the row counts of all ranks (exchanged at rendezvous). A rank whose
shard runs out contributes an empty batch, and each rank scales its loss by
``local_rows / global_rows`` so that summing gradients gives exactly the mean over
the global batch, however uneven the shards are.

Example:
    >>> steps_per_epoch([5, 3], batch_size=2)
    3
    >>> global_batch_rows([5, 3], batch_size=2).tolist()
    [4, 3, 1]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def steps_per_epoch(rows_per_rank: Sequence[int], batch_size: int) -> int:
    """Number of optimizer steps every rank runs in one epoch.

    Example:
        >>> steps_per_epoch([0, 0], 4)
        0
    """
    most = max(rows_per_rank, default=0)
    return -(-most // batch_size)


def local_batch_rows(rows: int, batch_size: int, steps: int) -> np.ndarray:
    """Rows one rank contributes at each step (``0`` once its shard is used up).

    Example:
        >>> local_batch_rows(5, 2, 4).tolist()
        [2, 2, 1, 0]
    """
    starts = np.arange(steps) * batch_size
    return np.clip(rows - starts, 0, batch_size)


def global_batch_rows(rows_per_rank: Sequence[int], batch_size: int) -> np.ndarray:
    """Rows in the global batch at each step, summed over ranks."""
    steps = steps_per_epoch(rows_per_rank, batch_size)
    total = np.zeros(steps, dtype=np.int64)
    for rows in rows_per_rank:
        total += local_batch_rows(rows, batch_size, steps)
    return total


def epoch_order(rows: int, seed: int, epoch: int, rank: int, shuffle: bool = True) -> np.ndarray:
    """The order in which one rank visits its rows in one epoch.

    Depends only on ``(seed, epoch, rank)``, so repeated runs are identical.

    Example:
        >>> bool((epoch_order(4, seed=1, epoch=0, rank=0) == epoch_order(4, 1, 0, 0)).all())
        True
        >>> epoch_order(3, 1, 0, 0, shuffle=False).tolist()
        [0, 1, 2]
    """
    if not shuffle:
        return np.arange(rows)
    return np.random.default_rng([seed, epoch, rank]).permutation(rows)
