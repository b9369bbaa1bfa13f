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


#: Batches per bucketing pool: rows are sorted by length within this many batches.
BUCKET_POOL = 50


def bucket_order(order: np.ndarray, lengths: np.ndarray, batch_size: int, seed: int,
                 epoch: int, rank: int, pool: int = BUCKET_POOL) -> np.ndarray:
    """``order`` with rows of similar length moved into the same batches.

    Within each pool of ``pool`` batches of the epoch order, rows are sorted by
    length (ties keep their order) and the pool's batches are then visited in a
    seeded random order, so long and short batches still mix across the epoch. The
    result depends only on its arguments, so runs repeat; the number of rows per
    step is unchanged, so the ranks' lock-step schedule is too.

    Args:
        order: the epoch's row order (positions into the shard).
        lengths: the length of each row in ``order``, position by position.
        batch_size: rows per step.
        seed: the fit's seed.
        epoch: the epoch (0-based).
        rank: this rank.
        pool: batches per pool.

    Example:
        >>> order = np.arange(6)
        >>> bucket_order(order, np.array([5, 1, 5, 1, 5, 1]), 3, 0, 0, 0).tolist()
        [1, 3, 5, 0, 2, 4]
    """
    span = batch_size * pool
    rng = np.random.default_rng([seed, epoch, rank, 1])
    out = []
    for start in range(0, len(order), span):
        block = order[start:start + span]
        block = block[np.argsort(lengths[start:start + span], kind="stable")]
        batches = [block[i:i + batch_size] for i in range(0, len(block), batch_size)]
        # a short last batch stays last: every rank's steps keep their row counts
        full = [b for b in batches if len(b) == batch_size]
        tail = [b for b in batches if len(b) != batch_size]
        out.extend(full[i] for i in rng.permutation(len(full)))
        out.extend(tail)
    return np.concatenate(out) if out else order
