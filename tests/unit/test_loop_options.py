"""train_loop's optional parts against hand-written PyTorch: learning-rate schedulers,
gradient clipping, early stopping, mixed precision, metrics and their resume."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, mean_absolute_error, roc_auc_score, top_k_accuracy_score

# pytest imports test modules by path (--import-mode=importlib); the in-process
# collectives and data helpers of test_loop are shared from there.
sys.path.insert(0, os.path.dirname(__file__))
from test_loop import (  # noqa: E402
    CPU,
    SingleRank,
    ThreadGroup,
    ThreadRank,
    assert_same_weights,
    classification_data,
    make_spec,
    peer,
    regression_data,
    write_shard,
)

from sparkdl.architecture import Architecture
from sparkdl.checkpoints import RunOutputs, latest_checkpoint, parameter_shapes
from sparkdl.errors import ConfigError
from sparkdl.history import TrainingHistory
from sparkdl.lr_schedulers import SchedulerPlan
from sparkdl.storage.base import StorageLocation
from sparkdl.worker.early_stopping import EarlyStopping
from sparkdl.worker.loop import train_loop


def _train(tmp_path, model, x, y, loss="cross_entropy", batch_size=64, epochs=3, lr=0.1,
           validation=None, **options):
    shard, layout = write_shard(tmp_path, x, y, validation=validation)
    try:
        spec = dataclasses.replace(
            make_spec(model, layout, loss, batch_size=batch_size, epochs=epochs, lr=lr,
                      shuffle=False), **options)
        return train_loop(spec, shard, SingleRank(), 0, [peer(0, shard)], CPU)
    finally:
        shard.close()


def _reference(model, x, y, epochs, lr, batch_size=64, scheduler=None, clip=None,
               loss_fn=F.cross_entropy, per_step=False):
    net = Architecture.of(model).build({k: v.clone() for k, v in model.state_dict().items()})
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    sched = scheduler(opt) if scheduler else None
    lrs = []
    for _ in range(epochs):
        for s in range(0, len(x), batch_size):
            opt.zero_grad()
            loss_fn(net(torch.from_numpy(x[s:s + batch_size])),
                    torch.from_numpy(y[s:s + batch_size])).backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if sched is not None and per_step:
                sched.step()
        if sched is not None and not per_step:
            sched.step()
    return net, lrs


def test_step_scheduler_matches_pytorch_and_the_lr_is_in_the_history(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(20)
    trained, history = _train(tmp_path, model, x, y, epochs=3,
                              lr_scheduler=SchedulerPlan("step", {"step_size": 1, "gamma": 0.5}))
    ref, _ = _reference(model, x, y, 3, 0.1,
                        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5))
    assert_same_weights(trained, ref)
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.05, 0.025])


def test_onecycle_steps_per_optimizer_step(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(20)
    trained, history = _train(tmp_path, model, x, y, batch_size=5, epochs=2,
                              lr_scheduler=SchedulerPlan("onecycle", {"max_lr": 0.5}))
    ref, lrs = _reference(model, x, y, 2, 0.1, batch_size=5, per_step=True,
                          scheduler=lambda o: torch.optim.lr_scheduler.OneCycleLR(
                              o, max_lr=0.5, total_steps=8))
    assert_same_weights(trained, ref)
    assert history[0]["lr"] == pytest.approx(lrs[3])  # the lr of the epoch's last step


def test_callable_and_plateau_schedulers(tmp_path):
    torch.manual_seed(2)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(20)
    _, history = _train(tmp_path / "a", model, x, y, epochs=3, lr_scheduler=SchedulerPlan(
        lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1)))
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.01, 0.001])
    # train_loss goes down, so a plateau watching it in "max" mode cuts the lr after
    # every epoch past the first (the first sets the best value)
    _, history = _train(tmp_path / "b", model, x, y, epochs=4, lr_scheduler=SchedulerPlan(
        "plateau", {"mode": "max", "patience": 0, "factor": 0.5}))
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_a_bad_scheduler_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="Unknown lrScheduler 'linear'"):
        SchedulerPlan("linear")
    with pytest.raises(ConfigError, match="interval"):
        SchedulerPlan("step", {"interval": "batch"})


def test_gradient_clipping_matches_pytorch(tmp_path):
    torch.manual_seed(3)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(20)
    x = x * 50  # big gradients, so the clip bites
    trained, _ = _train(tmp_path, model, x, y, epochs=2, batch_size=5, gradient_clip_norm=0.5)
    ref, _ = _reference(model, x, y, 2, 0.1, batch_size=5, clip=0.5)
    unclipped, _ = _reference(model, x, y, 2, 0.1, batch_size=5)
    assert_same_weights(trained, ref)
    assert not torch.allclose(ref.weight, unclipped.weight)


def test_clipping_across_ranks_equals_one_process(tmp_path):
    torch.manual_seed(4)
    model = torch.nn.Linear(3, 1)
    x, y = regression_data(12, seed=4)
    x = x * 20
    parts = [(x[:7], y[:7]), (x[7:], y[7:])]
    shards = [write_shard(tmp_path / str(r), *parts[r]) for r in range(2)]
    peers = [peer(r, s) for r, (s, _) in enumerate(shards)]
    group = ThreadGroup(2)
    results = [None, None]

    def rank_main(r):
        spec = dataclasses.replace(
            make_spec(model, shards[r][1], "mse", batch_size=64, epochs=2, lr=0.05,
                      shuffle=False, world=2), gradient_clip_norm=1.0)
        results[r] = train_loop(spec, shards[r][0], ThreadRank(group, r), r, peers, CPU)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, _ in shards:
        s.close()
    ref, _ = _reference(model, x, y[:, None], 2, 0.05, clip=1.0, loss_fn=F.mse_loss)
    assert_same_weights(results[0][0], ref, atol=1e-5)
    assert_same_weights(results[1][0], ref, atol=1e-5)


def test_early_stopping_stops_and_restores_the_best_epoch(tmp_path):
    torch.manual_seed(5)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(20)
    # the loss falls every epoch, so "max" mode sees no improvement after epoch 1
    stop = EarlyStopping.from_param({"monitor": "train_loss", "mode": "max", "patience": 2,
                                     "restoreBest": True})
    trained, history = _train(tmp_path, model, x, y, epochs=10, early_stopping=stop)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "did not improve for 2 epochs" in history[-1]["stopped_early"]
    assert history[-1]["restored_epoch"] == 1
    after_one, _ = _reference(model, x, y, 1, 0.1)
    assert_same_weights(trained, after_one)
    h = TrainingHistory(history)
    assert h.stopped_epoch == 3 and "train_loss" in h.stop_reason


def test_early_stopping_checks_its_settings():
    with pytest.raises(ConfigError, match="unknown key"):
        EarlyStopping.from_param({"monitr": "val_loss"})
    with pytest.raises(ConfigError, match="validation set"):
        EarlyStopping.from_param({"monitor": "val_loss"}).check_monitor(["train_loss"])
    assert EarlyStopping.from_param({"monitor": "val_accuracy"}).mode == "max"
    assert EarlyStopping.from_param({}) is None


def test_resume_keeps_scheduler_and_early_stopping_state(tmp_path):
    torch.manual_seed(6)
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(24, seed=6)
    options = dict(lr_scheduler=SchedulerPlan("step", {"step_size": 1, "gamma": 0.7}),
                   early_stopping=EarlyStopping.from_param(
                       {"monitor": "train_loss", "patience": 5}))
    straight, straight_history = _train(tmp_path / "a", model, x, y, epochs=4, **options)

    where = StorageLocation("local", str(tmp_path / "ckpt"))
    shard, layout = write_shard(tmp_path / "b", x, y)
    base = dataclasses.replace(make_spec(model, layout, "cross_entropy", 64, 2, shuffle=False),
                               outputs=RunOutputs(checkpoints=where), **options)
    train_loop(base, shard, SingleRank(), 0, [peer(0, shard)], CPU)
    resume = latest_checkpoint(where, parameter_shapes(model.state_dict()))
    assert resume.epoch == 2
    spec = dataclasses.replace(base, epochs=4, outputs=RunOutputs(checkpoints=where,
                                                                  resume=resume))
    resumed, history = train_loop(spec, shard, SingleRank(), 0, [peer(0, shard)], CPU)
    shard.close()
    assert_same_weights(resumed, straight, atol=0)
    assert [h["lr"] for h in history] == pytest.approx([h["lr"] for h in straight_history[2:]])


def test_bf16_mixed_trains_on_cpu_with_float32_weights(tmp_path):
    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = classification_data(64, seed=7)
    trained, history = _train(tmp_path, model, x, y, epochs=5, batch_size=16,
                              precision="bf16-mixed")
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in trained.parameters())
    full, _ = _train(tmp_path / "full", model, x, y, epochs=5, batch_size=16)
    assert not torch.equal(trained[0].weight, full[0].weight)  # autocast did change the math


def test_16_mixed_needs_a_gpu(tmp_path):
    model = torch.nn.Linear(4, 3)
    x, y = classification_data(8)
    with pytest.raises(ConfigError, match="16-mixed.*GPU"):
        _train(tmp_path, model, x, y, precision="16-mixed")


@pytest.mark.parametrize("split", [(13, 4), (0, 9), (6, 6)])
def test_metrics_are_exact_over_ranks(tmp_path, split):
    torch.manual_seed(8)
    model = torch.nn.Linear(4, 6)
    x, y = classification_data(sum(split), classes=6, seed=8)
    y = (y + (x[:, 2] > 0) * 3).astype(np.int64)
    names = ("accuracy", "top5_accuracy", "f1", "auc")
    bounds = np.cumsum([0, *split])
    shards = [write_shard(tmp_path / str(r), x[bounds[r]:bounds[r + 1]],
                          y[bounds[r]:bounds[r + 1]], validation=np.ones(split[r], bool))
              for r in range(len(split))]
    peers = [peer(r, s) for r, (s, _) in enumerate(shards)]
    group = ThreadGroup(len(split))
    results = [None] * len(split)

    def rank_main(r):
        spec = dataclasses.replace(
            make_spec(model, shards[r][1], "cross_entropy", batch_size=4, epochs=1,
                      world=len(split)), metrics=names)
        results[r] = train_loop(spec, shards[r][0], ThreadRank(group, r), r, peers, CPU)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(len(split))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, _ in shards:
        s.close()
    # every row is a validation row: the metrics are of the unchanged model on all rows
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    probs = torch.softmax(logits, 1).numpy()
    record = results[0][1][0]
    assert {k: v for k, v in results[1][1][0].items() if k != "seconds"} == \
        {k: v for k, v in record.items() if k != "seconds"}
    assert record["val_rows"] == sum(split)
    assert record["val_accuracy"] == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))
    assert record["val_top5_accuracy"] == pytest.approx(
        top_k_accuracy_score(y, probs, k=5, labels=range(6)))
    assert record["val_f1"] == pytest.approx(f1_score(y, logits.argmax(1).numpy(),
                                                      average="macro"))
    present = sorted(set(y))
    auc = np.mean([roc_auc_score(y == c, probs[:, c]) for c in present])
    assert record["val_auc"] == pytest.approx(auc)


def test_regression_and_binary_metrics(tmp_path):
    torch.manual_seed(9)
    model = torch.nn.Linear(3, 1)
    x, y = regression_data(15, seed=9)
    _, history = _train(tmp_path / "r", model, x, y, loss="mse", epochs=1, lr=0.0,
                        validation=np.ones(15, bool), metrics=("mae", "rmse"))
    with torch.no_grad():
        pred = model(torch.from_numpy(x))[:, 0].numpy()
    assert history[0]["val_mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-5)
    assert history[0]["val_rmse"] == pytest.approx(np.sqrt(np.mean((y - pred) ** 2)), rel=1e-5)

    model = torch.nn.Linear(2, 1)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=40) > 0).astype(np.float64)
    _, history = _train(tmp_path / "b", model, x, y, loss="bce_with_logits", epochs=1,
                        lr=0.0, validation=np.ones(40, bool), metrics=("auc", "f1"))
    with torch.no_grad():
        score = model(torch.from_numpy(x))[:, 0].numpy()
    assert history[0]["val_auc"] == pytest.approx(roc_auc_score(y, score))
    assert history[0]["val_f1"] == pytest.approx(f1_score(y, score > 0))
