"""Several inputs, padded ragged columns and sample weights: from Arrow to forward's
arguments, and the training loop's exactness with them (2 ranks == 1 process)."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from sparkdl.architecture import Architecture, weights_to_bytes
from sparkdl.data.inputs import InputRows, InputSpec, Padding
from sparkdl.data.schedule import bucket_order
from sparkdl.data.shard import LocalShard, ShardLayout
from sparkdl.errors import ConfigError
from sparkdl.worker.loop import train_loop
from sparkdl.worker.spec import TrainSpec

# pytest imports test modules by path (--import-mode=importlib); the in-process
# collectives of test_loop are shared from there.
sys.path.insert(0, os.path.dirname(__file__))
from test_loop import CPU, SingleRank, ThreadGroup, ThreadRank, assert_same_weights  # noqa: E402

PAD = Padding(0.0, None)


def tokens(rows):
    return pa.array(rows, pa.list_(pa.int64()))


def test_ragged_rows_pad_to_the_batch_longest_across_record_batches():
    spec = InputSpec("t", "int64", (), ragged=True, padding=Padding(-1.0, 3))
    rows = InputRows.of([[tokens([[1, 2], [3, 4, 5, 6]])], [tokens([[7], [8, 9, 10]])]],
                        [spec])
    (padded,), (lengths,) = rows.take([2, 1, 0])
    assert padded.dtype == np.int64
    assert padded.tolist() == [[7, -1, -1], [3, 4, 5], [1, 2, -1]]  # cut at maxLength 3
    assert lengths.tolist() == [1, 3, 2]
    (padded,), (lengths,) = rows.take([0, 2])
    assert padded.tolist() == [[1, 2], [7, -1]]  # as long as this batch's longest row


def test_sliced_arrow_arrays_and_vectors_per_step():
    steps = pa.array([[[1.0, 2.0]], [[3.0, 4.0], [5.0, 6.0]], [[7.0, 8.0]]],
                     pa.list_(pa.list_(pa.float32())))
    spec = InputSpec("s", "float32", (2,), ragged=True, padding=PAD)
    rows = InputRows.of([[steps.slice(1)]], [spec])
    (padded,), (lengths,) = rows.take([1, 0])
    assert padded.shape == (2, 2, 2)
    assert padded[0].tolist() == [[7.0, 8.0], [0.0, 0.0]] and lengths.tolist() == [1, 2]


def test_several_inputs_keep_their_dtypes_then_the_lengths():
    dense = pa.array([[0.5, 1.5], [2.5, 3.5]], pa.list_(pa.float64()))
    ids = pa.array([3, 4], pa.int32())
    specs = [InputSpec("d", "float32", (2,)), InputSpec("i", "int64", (1,)),
             InputSpec("t", "int64", (), ragged=True, padding=PAD)]
    args = InputRows.of([[dense, ids, tokens([[1], [2, 3]])]], specs).arguments([1])
    assert [a.dtype for a in args] == [np.float32, np.int64, np.int64, np.int64]
    assert args[0].tolist() == [[2.5, 3.5]] and args[1].tolist() == [[4]]
    assert args[2].tolist() == [[2, 3]] and args[3].tolist() == [2]


def test_padding_settings_are_checked():
    assert Padding.from_param({}) is None
    with pytest.raises(ConfigError, match="unknown key"):
        Padding.from_param({"maxlen": 5})
    with pytest.raises(ConfigError, match="maxLength must be a positive integer"):
        Padding.from_param({"maxLength": 0})


def test_bucketing_is_a_seeded_permutation_that_keeps_step_sizes():
    order = np.random.default_rng(0).permutation(103)
    lengths = np.random.default_rng(1).integers(1, 50, size=103)
    a = bucket_order(order, lengths[order], 10, seed=3, epoch=1, rank=0, pool=4)
    b = bucket_order(order, lengths[order], 10, seed=3, epoch=1, rank=0, pool=4)
    assert (a == b).all() and sorted(a) == sorted(order)
    # rows stay in their pool of 4 batches; the last pool's short batch stays last
    assert set(a[80:]) == set(order[80:]) and len(a[100:]) == 3
    spread = [np.ptp(lengths[a[i:i + 10]]) for i in range(0, 100, 10)]
    plain = [np.ptp(lengths[order[i:i + 10]]) for i in range(0, 100, 10)]
    assert np.mean(spread) < np.mean(plain) / 2


class BagOfTokens(torch.nn.Module):
    """Mean of embeddings over each row's valid tokens, plus a dense side input."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 4)
        self.side = torch.nn.Linear(2, 4)
        self.out = torch.nn.Linear(4, 3)

    def forward(self, side, ids, lengths):
        mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        pooled = (self.embed(ids) * mask[..., None]).sum(1) / lengths[:, None]
        return self.out(torch.tanh(pooled + self.side(side)))


def ragged_data(n, seed):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, 20, size=rng.integers(1, 9)).tolist() for _ in range(n)]
    side = rng.normal(size=(n, 2)).astype(np.float32)
    labels = np.array([r[0] % 3 for r in rows], dtype=np.int64)
    weights = rng.uniform(0.0, 2.0, size=n).astype(np.float32)
    return rows, side, labels, weights


def write_inputs_shard(directory, rows, side, labels, weights):
    os.makedirs(directory, exist_ok=True)
    inputs = (InputSpec("side", "float32", (2,)),
              InputSpec("ids", "int64", (), ragged=True, padding=PAD))
    layout = ShardLayout(("side", "ids"), "label", True, inputs=inputs, weight_col="w")
    batch = pa.record_batch({"side": pa.array(side.tolist(), pa.list_(pa.float32())),
                             "ids": tokens(rows), "label": pa.array(labels),
                             "w": pa.array(weights)})
    return LocalShard.write([batch] if len(rows) else [], str(directory), layout), layout


def reference(model, rows, side, labels, weights, epochs, lr, batch):
    net = Architecture.of(model).build({k: v.clone() for k, v in model.state_dict().items()})
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(epochs):
        for s in range(0, len(rows), batch):
            chunk = rows[s:s + batch]
            width = max(map(len, chunk))
            ids = torch.tensor([r + [0] * (width - len(r)) for r in chunk])
            lengths = torch.tensor([len(r) for r in chunk])
            w = torch.from_numpy(weights[s:s + batch])
            opt.zero_grad()
            out = net(torch.from_numpy(side[s:s + batch]), ids, lengths)
            per_row = F.cross_entropy(out, torch.from_numpy(labels[s:s + batch]),
                                      reduction="none")
            ((per_row * w).sum() / w.sum()).backward()
            opt.step()
    return net


@pytest.mark.parametrize("split", [(9, 5), (0, 11), (6, 6)])
def test_two_ranks_with_padding_and_weights_equal_one_process(tmp_path, split):
    """Step s of one process over the ranks' rows side by side is step s of the ranks."""
    torch.manual_seed(0)
    model = BagOfTokens()
    rows, side, labels, weights = ragged_data(sum(split), seed=1)
    bounds = np.cumsum([0, *split])
    parts = [slice(bounds[r], bounds[r + 1]) for r in range(2)]
    shards = [write_inputs_shard(tmp_path / str(r), rows[parts[r]], side[parts[r]],
                                 labels[parts[r]], weights[parts[r]]) for r in range(2)]
    from test_loop import peer

    peers = [peer(r, s) for r, (s, _) in enumerate(shards)]
    group = ThreadGroup(2)
    results = [None, None]
    spec = TrainSpec(architecture=Architecture.of(model),
                     initial_weights=weights_to_bytes(model), loss="cross_entropy",
                     optimizer="sgd", optimizer_params={"lr": 0.5}, layout=shards[0][1],
                     batch_size=3, epochs=2, seed=5, num_workers=2, backend="torch",
                     shuffle=False, timeout_s=60)

    def rank_main(r):
        results[r] = train_loop(spec, shards[r][0], ThreadRank(group, r), r, peers, CPU)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, _ in shards:
        s.close()
    # one process: global step s holds rank 0's rows [3s, 3s+3) then rank 1's
    order = []
    steps = -(-max(split) // 3)
    for s in range(steps):
        for r in range(2):
            order.extend(range(bounds[r] + 3 * s, min(bounds[r] + 3 * s + 3, bounds[r + 1])))
    sizes = [sum(min(3, max(0, n - 3 * s)) for n in split) for s in range(steps)]
    ref = Architecture.of(model).build({k: v.clone() for k, v in model.state_dict().items()})
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(2):
        start = 0
        for size in sizes:
            idx = order[start:start + size]
            start += size
            chunk = [rows[i] for i in idx]
            width = max(map(len, chunk))
            ids = torch.tensor([r + [0] * (width - len(r)) for r in chunk])
            lengths = torch.tensor([len(r) for r in chunk])
            w = torch.from_numpy(weights[idx])
            opt.zero_grad()
            out = ref(torch.from_numpy(side[idx]), ids, lengths)
            per_row = F.cross_entropy(out, torch.from_numpy(labels[idx]), reduction="none")
            ((per_row * w).sum() / w.sum()).backward()
            opt.step()
    assert_same_weights(results[0][0], ref, atol=1e-5)
    assert_same_weights(results[1][0], ref, atol=1e-5)
    history = results[0][1]
    assert history[0]["train_rows"] == sum(split)


def test_a_single_process_matches_a_hand_written_padded_loop(tmp_path):
    torch.manual_seed(2)
    model = BagOfTokens()
    rows, side, labels, weights = ragged_data(10, seed=3)
    shard, layout = write_inputs_shard(tmp_path, rows, side, labels, weights)
    from test_loop import peer

    spec = TrainSpec(architecture=Architecture.of(model), initial_weights=weights_to_bytes(model),
                     loss="cross_entropy", optimizer="sgd", optimizer_params={"lr": 0.5},
                     layout=layout, batch_size=4, epochs=3, seed=5, num_workers=1,
                     backend="torch", shuffle=False, timeout_s=60)
    trained, history = train_loop(spec, shard, SingleRank(), 0, [peer(0, shard)], CPU)
    shard.close()
    assert_same_weights(trained, reference(model, rows, side, labels, weights, 3, 0.5, 4),
                        atol=1e-6)
    assert len(history) == 3


def test_bucketing_trains_the_same_rows(tmp_path):
    torch.manual_seed(3)
    model = BagOfTokens()
    rows, side, labels, weights = ragged_data(40, seed=4)
    shard, layout = write_inputs_shard(tmp_path, rows, side, labels, weights)
    bucketed = dataclasses.replace(layout, inputs=(
        layout.inputs[0], dataclasses.replace(layout.inputs[1],
                                              padding=Padding(0.0, None, True))))
    from test_loop import peer

    spec = TrainSpec(architecture=Architecture.of(model), initial_weights=weights_to_bytes(model),
                     loss="cross_entropy", optimizer="sgd", optimizer_params={"lr": 0.5},
                     layout=bucketed, batch_size=4, epochs=2, seed=5, num_workers=1,
                     backend="torch", timeout_s=60)
    shard.layout = bucketed
    _, history = train_loop(spec, shard, SingleRank(), 0, [peer(0, shard)], CPU)
    shard.close()
    assert [h["train_rows"] for h in history] == [40, 40]


class TwoOutputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(3, 2)
        self.b = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.a(x), self.b(x)


def test_a_multi_output_objective_matches_a_hand_written_loop(tmp_path):
    from test_loop import peer

    torch.manual_seed(4)
    model = TwoOutputs()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    kind = (x[:, 0] > 0).astype(np.int64)
    size = (x[:, 1] * 2).astype(np.float32)
    layout = ShardLayout(("x",), None, False, label_cols=("k", "s"),
                         integer_label_cols=(True, False))
    batch = pa.record_batch({"x": pa.array(x.tolist(), pa.list_(pa.float32())),
                             "k": pa.array(kind), "s": pa.array(size)})
    shard = LocalShard.write([batch], str(tmp_path), layout)
    spec = TrainSpec(architecture=Architecture.of(model), initial_weights=weights_to_bytes(model),
                     loss=("cross_entropy", "mse"), optimizer="sgd",
                     optimizer_params={"lr": 0.1}, layout=layout, batch_size=5, epochs=2,
                     seed=5, num_workers=1, backend="torch", shuffle=False, timeout_s=60,
                     loss_weights=(1.0, 0.5), labels=("kind", "size"), metrics=("accuracy",
                                                                               "mae"))
    trained, history = train_loop(spec, shard, SingleRank(), 0, [peer(0, shard)], CPU)
    shard.close()
    ref = Architecture.of(model).build({k: v.clone() for k, v in model.state_dict().items()})
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(2):
        for s in range(0, 12, 5):
            a, b = ref(torch.from_numpy(x[s:s + 5]))
            opt.zero_grad()
            (F.cross_entropy(a, torch.from_numpy(kind[s:s + 5]))
             + 0.5 * F.mse_loss(b[:, 0], torch.from_numpy(size[s:s + 5]))).backward()
            opt.step()
    assert_same_weights(trained, ref)
    record = history[-1]
    assert record["train_loss"] == pytest.approx(
        record["train_kind_loss"] + 0.5 * record["train_size_loss"])
    assert "train_kind_accuracy" in record and "train_size_mae" in record
    assert "train_kind_mae" not in record and "train_accuracy" not in record
