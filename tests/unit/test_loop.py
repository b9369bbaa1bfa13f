"""train_loop against hand-written PyTorch loops, with in-process collectives.

``SingleRank`` is a complete world-size-1 backend. ``ThreadGroup`` runs several
ranks as threads of this process and sums through shared memory, which checks
the loss scaling of uneven shards against a single-process reference.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from sparkdl.architecture import Architecture, weights_to_bytes
from sparkdl.collective.base import Collective, PeerInfo
from sparkdl.collective.torch_distributed import TorchDistributedCollective
from sparkdl.data.schedule import steps_per_epoch
from sparkdl.data.shard import LocalShard, ShardLayout
from sparkdl.worker.loop import train_loop
from sparkdl.worker.spec import TrainSpec

CPU = torch.device("cpu")


class SingleRank(Collective):
    """World size 1: sums are identities, broadcast has nobody to send to."""

    name = "single"

    def __init__(self):
        self.steps = 0
        self.reduced = []

    def advertise(self, rank, hosts):
        return {}

    def start(self, rank, peers, device, timeout_s):
        pass

    def size(self):
        return 1

    def broadcast_module(self, module):
        pass

    def step(self, optimizer, module, update=None):
        self.steps += 1
        (update or (lambda o: o.step()))(optimizer)

    def allreduce_sum(self, tensor):
        self.reduced.append(tensor.clone())
        return tensor

    def shutdown(self):
        pass


class ThreadGroup:
    """Shared state of ranks that run as threads."""

    def __init__(self, world_size):
        self.barrier = threading.Barrier(world_size, timeout=30)
        self.slots = [None] * world_size

    def sum(self, rank, tensor):
        self.slots[rank] = tensor.detach().clone()
        self.barrier.wait()
        total = torch.stack(self.slots).sum(dim=0)
        self.barrier.wait()  # nobody overwrites a slot before all have read
        return total


class ThreadRank(Collective):
    name = "threads"

    def __init__(self, group, rank):
        self.group, self.rank = group, rank

    def advertise(self, rank, hosts):
        return {}

    def start(self, rank, peers, device, timeout_s):
        pass

    def size(self):
        return len(self.group.slots)

    def broadcast_module(self, module):
        for t in module.state_dict(keep_vars=True).values():
            with torch.no_grad():
                t.data.copy_(self.group.sum(self.rank, t.data if self.rank == 0
                                            else torch.zeros_like(t.data)))

    def step(self, optimizer, module, update=None):
        params = [p for p in module.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params])
        flat = self.group.sum(self.rank, flat)
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        (update or (lambda o: o.step()))(optimizer)

    def allreduce_sum(self, tensor):
        return self.group.sum(self.rank, tensor)

    def shutdown(self):
        pass


def classification_data(n, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    return x, np.clip(y, 0, classes - 1)


def regression_data(n, features=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5][:features]) + 0.3).astype(np.float32)
    return x, y


def write_shard(directory, x, y, validation=None):
    os.makedirs(directory, exist_ok=True)
    cols = {"features": pa.array(x.tolist(), pa.list_(pa.float32())), "label": pa.array(y)}
    if validation is not None:
        cols["is_val"] = pa.array(validation)
    batches = [pa.record_batch(cols)] if len(x) else []
    layout = ShardLayout(("features",), "label", y.dtype.kind == "i",
                         validation_col="is_val" if validation is not None else None)
    return LocalShard.write(batches, str(directory), layout), layout


def make_spec(model, layout, loss, batch_size, epochs, lr=0.1, shuffle=True, world=1):
    return TrainSpec(architecture=Architecture.of(model), initial_weights=weights_to_bytes(model),
                     loss=loss, optimizer="sgd", optimizer_params={"lr": lr}, layout=layout,
                     batch_size=batch_size, epochs=epochs, seed=5, num_workers=world,
                     backend="torch", shuffle=shuffle, timeout_s=60)


def peer(rank, shard):
    return PeerInfo(rank=rank, host="127.0.0.1", pid=os.getpid(), executor_id=str(rank),
                    train_rows=len(shard.train_index),
                    validation_rows=len(shard.validation_index))


def reference_full_batch(model, x, y, loss_fn, epochs, lr, val=None):
    """Plain PyTorch: one full-batch SGD step per epoch; per-epoch metrics."""
    net = Architecture.of(model).build({k: v.clone() for k, v in model.state_dict().items()})
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    losses, accs, val_losses = [], [], []
    for _ in range(epochs):
        opt.zero_grad()
        out = net(xt)
        loss = loss_fn(out, yt)
        loss.backward()
        losses.append(loss.item())
        if yt.dtype == torch.int64:
            accs.append(float((out.argmax(1) == yt).float().mean()))
        opt.step()
        if val is not None:
            with torch.no_grad():
                val_losses.append(float(loss_fn(net(torch.from_numpy(val[0])),
                                                torch.from_numpy(val[1]))))
    return net, losses, accs, val_losses


def assert_same_weights(a, b, atol=1e-6):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=atol, rtol=1e-5)


def test_full_batch_sgd_matches_plain_pytorch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(20)
    shard, layout = write_shard(tmp_path, x, y)
    try:
        spec = make_spec(model, layout, "cross_entropy", batch_size=32, epochs=4)
        coll = SingleRank()
        trained, history = train_loop(spec, shard, coll, 0, [peer(0, shard)], CPU)
    finally:
        shard.close()
    ref, losses, accs, _ = reference_full_batch(model, x, y, F.cross_entropy, 4, 0.1)
    assert_same_weights(trained, ref)
    assert coll.steps == 4
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [h["train_rows"] for h in history] == [20] * 4
    np.testing.assert_allclose([h["train_loss"] for h in history], losses, rtol=1e-5)
    np.testing.assert_allclose([h["train_accuracy"] for h in history], accs)
    assert all(h["seconds"] >= 0 for h in history)
    assert "val_loss" not in history[0]
    # the loss actually went down: the test is not comparing two no-ops
    assert losses[-1] < losses[0]
    # the caller's model was not mutated
    assert not torch.equal(model.weight, trained.weight)


def test_minibatches_without_shuffle_match_plain_pytorch(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1)
    x, y = regression_data(10)
    shard, layout = write_shard(tmp_path, x, y)
    try:
        spec = make_spec(model, layout, "mse", batch_size=4, epochs=2, lr=0.05, shuffle=False)
        coll = SingleRank()
        trained, history = train_loop(spec, shard, coll, 0, [peer(0, shard)], CPU)
    finally:
        shard.close()
    ref = Architecture.of(model).build(model.state_dict())
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    epoch_losses = []
    for _ in range(2):
        total = 0.0
        for s in range(0, 10, 4):
            xb, yb = torch.from_numpy(x[s:s + 4]), torch.from_numpy(y[s:s + 4])
            opt.zero_grad()
            loss = F.mse_loss(ref(xb), yb.reshape(-1, 1))
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        epoch_losses.append(total / 10)
    assert coll.steps == 6
    assert_same_weights(trained, ref)
    np.testing.assert_allclose([h["train_loss"] for h in history], epoch_losses, rtol=1e-5)
    assert "train_accuracy" not in history[0]  # regression has no accuracy


def test_validation_rows_are_held_out(tmp_path):
    torch.manual_seed(2)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(30, seed=3)
    is_val = np.arange(30) % 5 == 0
    shard, layout = write_shard(tmp_path, x, y, validation=is_val)
    try:
        spec = make_spec(model, layout, "cross_entropy", batch_size=64, epochs=3)
        trained, history = train_loop(spec, shard, SingleRank(), 0, [peer(0, shard)], CPU)
    finally:
        shard.close()
    ref, losses, _, val_losses = reference_full_batch(
        model, x[~is_val], y[~is_val], F.cross_entropy, 3, 0.1, val=(x[is_val], y[is_val]))
    assert_same_weights(trained, ref)
    assert [h["train_rows"] for h in history] == [24] * 3
    assert [h["val_rows"] for h in history] == [6] * 3
    np.testing.assert_allclose([h["train_loss"] for h in history], losses, rtol=1e-5)
    np.testing.assert_allclose([h["val_loss"] for h in history], val_losses, rtol=1e-5)
    assert all(0.0 <= h["val_accuracy"] <= 1.0 for h in history)


def test_empty_rank_runs_the_same_steps_with_zero_gradient(tmp_path):
    torch.manual_seed(3)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(0)
    shard, layout = write_shard(tmp_path, x, y)
    other = PeerInfo(rank=1, host="127.0.0.1", pid=0, executor_id="1", train_rows=7,
                     validation_rows=0)
    try:
        spec = make_spec(model, layout, "cross_entropy", batch_size=2, epochs=3)
        coll = SingleRank()
        trained, history = train_loop(spec, shard, coll, 0, [peer(0, shard), other], CPU)
    finally:
        shard.close()
    assert coll.steps == 3 * steps_per_epoch([0, 7], 2) == 12
    # zero contribution: gradients of this rank are zero, so SGD leaves weights as given
    assert_same_weights(trained, model, atol=0)
    assert [h["train_rows"] for h in history] == [0, 0, 0]  # identity allreduce: own rows
    assert "train_loss" not in history[0]


def test_binary_accuracy_and_scalar_output(tmp_path):
    torch.manual_seed(4)
    model = torch.nn.Linear(2, 1)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float64)
    shard, layout = write_shard(tmp_path, x, y)
    try:
        spec = make_spec(model, layout, "bce_with_logits", batch_size=16, epochs=1)
        _, history = train_loop(spec, shard, SingleRank(), 0, [peer(0, shard)], CPU)
    finally:
        shard.close()
    with torch.no_grad():
        out = model(torch.from_numpy(x))[:, 0]
        loss = F.binary_cross_entropy_with_logits(out, torch.from_numpy(y).float())
    expected_acc = float(((out > 0).numpy() == (y > 0.5)).mean())
    assert history[0]["train_accuracy"] == pytest.approx(expected_acc)
    assert history[0]["train_loss"] == pytest.approx(float(loss), rel=1e-5)


def test_runs_are_repeatable_with_shuffle(tmp_path):
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = classification_data(23, seed=6)
    results = []
    for run in range(2):
        shard, layout = write_shard(tmp_path / str(run), x, y)
        try:
            spec = make_spec(model, layout, "cross_entropy", batch_size=5, epochs=2)
            trained, history = train_loop(spec, shard, SingleRank(), 0, [peer(0, shard)], CPU)
        finally:
            shard.close()
        results.append((trained, [h["train_loss"] for h in history]))
    assert_same_weights(results[0][0], results[1][0], atol=0)
    assert results[0][1] == results[1][1]


@pytest.mark.parametrize("split", [(5, 3), (0, 7), (1, 1), (10, 0, 3)])
def test_uneven_ranks_sum_to_the_global_batch_mean(tmp_path, split):
    """Threads as ranks: the result equals one process training on the union.

    With ``shuffle=False`` and batch size b, step s of the union reference uses
    rows [s*b, (s+1)*b) of every rank's shard together.
    """
    torch.manual_seed(6)
    model = torch.nn.Linear(3, 1)
    total = sum(split)
    x, y = regression_data(total, seed=7)
    bounds = np.cumsum([0, *split])
    shards, layout = [], None
    for r in range(len(split)):
        s, layout = write_shard(tmp_path / f"r{r}", x[bounds[r]:bounds[r + 1]],
                                y[bounds[r]:bounds[r + 1]])
        shards.append(s)
    batch, epochs, lr = 2, 2, 0.1
    spec = make_spec(model, layout, "mse", batch_size=batch, epochs=epochs, lr=lr,
                     shuffle=False, world=len(split))
    peers = [peer(r, s) for r, s in enumerate(shards)]
    group = ThreadGroup(len(split))
    results, errors = [None] * len(split), []

    def rank_main(r):
        try:
            results[r] = train_loop(spec, shards[r], ThreadRank(group, r), r, peers, CPU)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            group.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(len(split))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in shards:
        s.close()
    assert not errors, errors
    # reference: one model, step s sees every rank's s-th batch at once
    ref = Architecture.of(model).build(model.state_dict())
    opt = torch.optim.SGD(ref.parameters(), lr=lr)
    steps = steps_per_epoch(split, batch)
    for _ in range(epochs):
        for s in range(steps):
            rows = np.concatenate([np.arange(bounds[r], bounds[r + 1])[s * batch:(s + 1) * batch]
                                   for r in range(len(split))])
            opt.zero_grad()
            F.mse_loss(ref(torch.from_numpy(x[rows])), torch.from_numpy(y[rows]).reshape(-1, 1)
                       ).backward()
            opt.step()
    for trained, history in results:
        assert_same_weights(trained, ref, atol=1e-5)
        assert [h["train_rows"] for h in history] == [total] * epochs
    losses = [[h["train_loss"] for h in hist] for _, hist in results]
    assert all(v == losses[0] for v in losses)


def test_real_torch_backend_world_size_one(tmp_path):
    torch.manual_seed(7)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(12, seed=8)
    shard, layout = write_shard(tmp_path, x, y)
    coll = TorchDistributedCollective()
    try:
        extra = coll.advertise(0, ["127.0.0.1"])
        assert isinstance(extra["store_port"], int) and extra["store_port"] > 0
        me = PeerInfo(rank=0, host="127.0.0.1", pid=os.getpid(), executor_id="0",
                      train_rows=12, validation_rows=0, extra=extra)
        coll.start(0, [me], CPU, 60)
        assert torch.distributed.is_initialized()
        assert torch.distributed.get_world_size() == 1
        summed = coll.allreduce_sum(torch.tensor([1.0, 2.0], dtype=torch.float64))
        assert summed.tolist() == [1.0, 2.0]
        spec = make_spec(model, layout, "cross_entropy", batch_size=12, epochs=3)
        trained, history = train_loop(spec, shard, coll, 0, [me], CPU)
    finally:
        coll.shutdown()
        coll.shutdown()  # safe twice
        shard.close()
    assert not torch.distributed.is_initialized()
    ref, losses, accs, _ = reference_full_batch(model, x, y, F.cross_entropy, 3, 0.1)
    assert_same_weights(trained, ref)
    np.testing.assert_allclose([h["train_loss"] for h in history], losses, rtol=1e-5)
    np.testing.assert_allclose([h["train_accuracy"] for h in history], accs)


class TiedNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(3, 3)
        self.b = torch.nn.Linear(3, 3)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))[:, :1]


def test_tied_weights_stay_tied_through_training(tmp_path):
    torch.manual_seed(8)
    model = TiedNet()
    x, y = regression_data(8, seed=9)
    shard, layout = write_shard(tmp_path, x, y)
    try:
        spec = make_spec(model, layout, "mse", batch_size=8, epochs=2)
        trained, _ = train_loop(spec, shard, SingleRank(), 0, [peer(0, shard)], CPU)
    finally:
        shard.close()
    assert torch.equal(trained.a.weight, trained.b.weight)


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    """Two accumulated batches of 4 rows step like one batch of 8 (equal-size batches)."""
    torch.manual_seed(3)
    model = torch.nn.Linear(3, 1)
    x, y = regression_data(16)
    shard, layout = write_shard(tmp_path, x, y)
    try:
        small = dataclasses.replace(
            make_spec(model, layout, "mse", batch_size=4, epochs=2, shuffle=False),
            backward_passes_per_step=2)
        coll_small = SingleRank()
        accumulated, _ = train_loop(small, shard, coll_small, 0, [peer(0, shard)], CPU)
        big = make_spec(model, layout, "mse", batch_size=8, epochs=2, shuffle=False)
        coll_big = SingleRank()
        direct, _ = train_loop(big, shard, coll_big, 0, [peer(0, shard)], CPU)
    finally:
        shard.close()
    assert coll_small.steps == coll_big.steps == 4
    assert_same_weights(accumulated, direct)


def test_a_short_last_accumulation_group_still_steps(tmp_path):
    torch.manual_seed(4)
    x, y = regression_data(12)
    shard, layout = write_shard(tmp_path, x, y)
    try:
        spec = dataclasses.replace(
            make_spec(torch.nn.Linear(3, 1), layout, "mse", batch_size=4, epochs=1),
            backward_passes_per_step=2)
        coll = SingleRank()
        train_loop(spec, shard, coll, 0, [peer(0, shard)], CPU)
    finally:
        shard.close()
    assert coll.steps == 2  # 3 batches: one group of 2, one of 1


def test_the_loop_tells_the_backend_how_many_passes_it_accumulates(tmp_path):
    class Recording(SingleRank):
        def prepare_optimizer(self, optimizer, module, backward_passes_per_step=1):
            self.accumulated = backward_passes_per_step
            return optimizer

    x, y = regression_data(8)
    shard, layout = write_shard(tmp_path, x, y)
    try:
        spec = dataclasses.replace(
            make_spec(torch.nn.Linear(3, 1), layout, "mse", batch_size=4, epochs=1),
            backward_passes_per_step=2)
        coll = Recording()
        train_loop(spec, shard, coll, 0, [peer(0, shard)], CPU)
    finally:
        shard.close()
    assert coll.accumulated == 2 and coll.steps == 1
