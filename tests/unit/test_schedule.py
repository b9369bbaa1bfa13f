"""Step equalisation across ranks and per-epoch row order."""

from __future__ import annotations

import numpy as np
import pytest

from sparkdl.data.schedule import (
    epoch_order,
    global_batch_rows,
    local_batch_rows,
    steps_per_epoch,
)

SHARDS = [[5, 3], [0, 7], [1, 1], [10, 0, 3], [0, 0], [4], [8, 8, 8], [2, 9, 0, 1]]


@pytest.mark.parametrize("rows", SHARDS)
@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 16])
def test_every_rank_runs_the_same_steps(rows, batch_size):
    steps = steps_per_epoch(rows, batch_size)
    # enough steps for the largest shard, and not one more
    assert steps * batch_size >= max(rows)
    assert (steps - 1) * batch_size < max(rows) or steps == 0
    per_rank = [local_batch_rows(r, batch_size, steps) for r in rows]
    for r, local in zip(rows, per_rank):
        assert len(local) == steps
        assert (local >= 0).all()
        assert (local <= batch_size).all()
        assert int(local.sum()) == r
        # a rank's batches are full until its shard runs out, then empty
        nonfull = np.flatnonzero(local < batch_size)
        if len(nonfull):
            assert (local[nonfull[0] + 1:] == 0).all()
    total = global_batch_rows(rows, batch_size)
    assert len(total) == steps
    np.testing.assert_array_equal(total, np.sum(per_rank, axis=0) if steps else [])
    assert int(total.sum()) == sum(rows)
    # every step has at least one row somewhere (no 0/0 loss scaling)
    assert (total > 0).all()


def test_known_values():
    assert steps_per_epoch([5, 3], 2) == 3
    assert global_batch_rows([5, 3], 2).tolist() == [4, 3, 1]
    assert steps_per_epoch([0, 7], 2) == 4
    assert local_batch_rows(0, 2, 4).tolist() == [0, 0, 0, 0]
    assert global_batch_rows([0, 7], 2).tolist() == [2, 2, 2, 1]
    assert steps_per_epoch([1, 1], 4) == 1
    assert global_batch_rows([1, 1], 4).tolist() == [2]
    assert steps_per_epoch([10, 0, 3], 4) == 3
    assert global_batch_rows([10, 0, 3], 4).tolist() == [7, 4, 2]
    assert steps_per_epoch([], 4) == 0


def test_local_batch_rows_never_negative_past_the_end():
    out = local_batch_rows(3, 5, 10)
    assert out.tolist() == [3] + [0] * 9


def test_epoch_order_is_a_permutation():
    for rows in (0, 1, 7, 100):
        order = epoch_order(rows, seed=3, epoch=1, rank=2)
        assert sorted(order.tolist()) == list(range(rows))


def test_epoch_order_deterministic():
    a = epoch_order(50, seed=11, epoch=2, rank=1)
    b = epoch_order(50, seed=11, epoch=2, rank=1)
    np.testing.assert_array_equal(a, b)


def test_epoch_order_varies_with_epoch_rank_and_seed():
    base = epoch_order(50, seed=11, epoch=0, rank=0)
    assert not np.array_equal(base, epoch_order(50, seed=11, epoch=1, rank=0))
    assert not np.array_equal(base, epoch_order(50, seed=11, epoch=0, rank=1))
    assert not np.array_equal(base, epoch_order(50, seed=12, epoch=0, rank=0))
    # (seed, epoch, rank) is not collapsed into a sum
    assert not np.array_equal(epoch_order(50, 0, 1, 0), epoch_order(50, 0, 0, 1))


def test_epoch_order_without_shuffle():
    assert epoch_order(5, seed=1, epoch=4, rank=3, shuffle=False).tolist() == [0, 1, 2, 3, 4]
