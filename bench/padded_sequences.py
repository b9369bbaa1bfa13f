"""Padded sequences: sparkdl with one worker vs a hand-written single-process PyTorch loop.

Synthetic token sequences (lengths 3-200, vocabulary 50, label 1 when the row holds
token 1, half of them do) train the same ``sparkdl.nn`` networks (Embedding-LSTM-Dense
and, outside ``--quick`` or with it, Embedding-TransformerEncoder-SequencePooling-Dense;
Adam, cross-entropy). Both sides shuffle all rows every epoch, cut batches of the same
size, pad each batch to its longest row (``maxLength`` 256) with 0 and call the module
as ``model(x, lengths)``, with as many torch threads as one sparkdl rank uses (it sets
``spark.task.cpus`` threads, here 1: ``local-cluster[1,1,1024]``).

sparkdl's time is the per-epoch ``seconds`` of ``model.history`` for
``TorchEstimator(numWorkers=1, padding={"value": 0, "maxLength": 256})`` reading a
ragged ``tokens array<int>`` column from Parquet: the first epoch is skipped (warm-up;
the launch is outside the epochs), the median of the rest is taken. The baseline is
the median epoch of the plain loop over in-memory tensors (``pad_sequence`` per batch,
first epoch skipped too), run once before and once after sparkdl. Both are reported as
samples/s; the ratio is sparkdl epoch time / plain epoch time (worst network).

Target: sparkdl / plain <= 1.2.

    .venv/bin/python bench/padded_sequences.py [--quick]
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from _common import cli, median, save, spark_session, verdict

TARGET = 1.2
VOCAB, MIN_LEN, MAX_LEN, PAD = 50, 3, 200, 0
MAX_LENGTH = 256  # padding maxLength; every row is shorter, so nothing is cut
TASK_CPUS = 1  # spark.task.cpus: the torch threads of a sparkdl rank (set_threads)
MASTER = "local-cluster[1,1,1024]"
LR = 3e-3
SEED = 0


def make_net(kind: str):
    """The ``sparkdl.nn`` network ``kind`` (``lstm`` or ``transformer``)."""
    from sparkdl.nn import (
        LSTM,
        Dense,
        Embedding,
        Input,
        SequencePooling,
        Sequential,
        TransformerEncoder,
    )

    if kind == "lstm":
        return Sequential([Input((None,), dtype="int64"), Embedding(VOCAB, 16), LSTM(32),
                           Dense(2)])
    return Sequential([Input((None,), dtype="int64"), Embedding(VOCAB, 32),
                       TransformerEncoder(num_heads=2, ff_dim=64), SequencePooling("max"),
                       Dense(2)])


def sequences(rows: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Token rows of 3-200 ids in [2, VOCAB); odd rows hold token 1 once (label 1)."""
    rng = np.random.default_rng(seed)
    tokens, labels = [], np.arange(rows, dtype=np.int64) % 2
    for i in range(rows):
        length = int(rng.integers(MIN_LEN, MAX_LEN + 1))
        ids = rng.integers(2, VOCAB, size=length).astype(np.int32)
        if labels[i]:
            ids[rng.integers(0, length)] = 1
        tokens.append(ids)
    return tokens, labels


def write_sequences(path: str, tokens: list[np.ndarray], labels: np.ndarray) -> str:
    """Write ``tokens`` (array<int>, ragged) and ``label`` (long) as one Parquet file."""
    os.makedirs(path, exist_ok=True)
    offsets = np.zeros(len(tokens) + 1, dtype=np.int32)
    np.cumsum([len(t) for t in tokens], out=offsets[1:])
    column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(tokens)))
    pq.write_table(pa.table({"tokens": column, "label": pa.array(labels)}),
                   os.path.join(path, "part-0.parquet"), row_group_size=16384)
    return path


def plain_loop(kind: str, tokens: list[torch.Tensor], labels: torch.Tensor,
               batch_size: int, epochs: int) -> list[float]:
    """What a user would write by hand: shuffle, pad each batch to its longest row,
    forward(x, lengths), backward, step."""
    torch.set_num_threads(TASK_CPUS)
    torch.manual_seed(SEED)
    model = make_net(kind).build()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    lengths_all = torch.tensor([min(len(t), MAX_LENGTH) for t in tokens], dtype=torch.int64)
    seconds = []
    for epoch in range(epochs):
        began = time.perf_counter()
        model.train()
        total, correct = 0.0, 0
        # sparkdl's epoch order for rank 0 (sparkdl.data.schedule.epoch_order).
        order = np.random.default_rng([SEED, epoch, 0]).permutation(len(tokens))
        for start in range(0, len(tokens), batch_size):
            idx = order[start:start + batch_size]
            x = torch.nn.utils.rnn.pad_sequence([tokens[i][:MAX_LENGTH] for i in idx],
                                                batch_first=True, padding_value=PAD)
            lengths, y = lengths_all[idx], labels[idx]
            opt.zero_grad()
            out = model(x, lengths)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((out.argmax(1) == y).sum())
        seconds.append(time.perf_counter() - began)
    return seconds


def sparkdl_epochs(spark, path: str, kind: str, batch_size: int, epochs: int) -> dict:
    from sparkdl import TorchEstimator

    df = spark.read.parquet(path)
    est = TorchEstimator(model=make_net(kind), inputCols=["tokens"],
                         padding={"value": PAD, "maxLength": MAX_LENGTH},
                         loss="cross_entropy", optimizer="adam", optimizerParams={"lr": LR},
                         batchSize=batch_size, epochs=epochs, numWorkers=1, seed=SEED,
                         verbose=0)
    began = time.perf_counter()
    model = est.fit(df)
    wall = time.perf_counter() - began
    history = model.history
    return {"seconds": [float(s) for s in history.metric("seconds")],
            "train_rows": history.metric("train_rows"),
            "train_accuracy": history.metric("train_accuracy"),
            "fit_wall": wall,
            "worker_seconds": history.workers[0].get("seconds") if history.workers else None}


def main(quick: bool = False) -> dict:
    rows, epochs, batch_size = (1_500, 3, 32) if quick else (5_000, 4, 32)
    kinds = ("lstm", "transformer")
    tokens, labels = sequences(rows, SEED)
    t_tokens = [torch.from_numpy(t.astype(np.int64)) for t in tokens]
    t_labels = torch.from_numpy(labels)
    mean_len = float(np.mean([len(t) for t in tokens]))

    # The plain loop runs before and after sparkdl, so slow drift in background
    # load on the machine affects both sides alike.
    plain_before = {k: plain_loop(k, t_tokens, t_labels, batch_size, epochs) for k in kinds}
    with tempfile.TemporaryDirectory(prefix="sparkdl-bench-") as tmp:
        path = write_sequences(f"{tmp}/data", tokens, labels)
        with spark_session(MASTER, "bench-padded-sequences",
                           **{"spark.task.cpus": str(TASK_CPUS)}) as spark:
            spark_runs = {k: sparkdl_epochs(spark, path, k, batch_size, epochs) for k in kinds}
    plain_after = {k: plain_loop(k, t_tokens, t_labels, batch_size, epochs) for k in kinds}

    print(f"[padded_sequences] rows={rows} (mean length {mean_len:.0f}, {MIN_LEN}-{MAX_LEN}) "
          f"batch={batch_size} epochs={epochs} threads={TASK_CPUS} master={MASTER}")
    per_model, ratios = {}, {}
    for k in kinds:
        run = spark_runs[k]
        trained = run["train_rows"][-1] or rows
        spark_med = median(run["seconds"][1:])
        plain_med = median(plain_before[k][1:] + plain_after[k][1:])
        ratio = spark_med / plain_med
        ratios[f"{k}: epoch time sparkdl / plain"] = ratio
        per_model[k] = {
            "sparkdl_epoch_seconds": run["seconds"], "sparkdl_train_rows": run["train_rows"],
            "sparkdl_train_accuracy": run["train_accuracy"],
            "sparkdl_fit_wall_seconds": run["fit_wall"],
            "sparkdl_worker_phase_seconds": run["worker_seconds"],
            "plain_epoch_seconds": {"before": plain_before[k], "after": plain_after[k]},
            "sparkdl_median_s": spark_med, "plain_median_s": plain_med,
            "sparkdl_samples_per_s": trained / spark_med,
            "plain_samples_per_s": rows / plain_med, "ratio": ratio,
        }
        print(f"[padded_sequences] {k:11s} sparkdl 1 worker : {trained / spark_med:8.0f} "
              f"samples/s  median epoch {spark_med:.3f}s  (all "
              f"{[round(s, 3) for s in run['seconds']]}, fit wall {run['fit_wall']:.1f}s)")
        print(f"[padded_sequences] {k:11s} plain PyTorch    : {rows / plain_med:8.0f} "
              f"samples/s  median epoch {plain_med:.3f}s  (all "
              f"{[round(s, 3) for s in plain_before[k] + plain_after[k]]})")
        print(f"[padded_sequences] {k:11s} ratio sparkdl/plain = {ratio:.3f}  "
              f"(target <= {TARGET}: {verdict(ratio <= TARGET)})")
    worst = max(ratios.values())
    print(f"[padded_sequences] worst ratio sparkdl/plain = {worst:.3f}  (target <= {TARGET}: "
          f"{verdict(worst <= TARGET)})")
    result = {
        "quick": quick,
        "config": {"rows": rows, "vocab": VOCAB, "lengths": [MIN_LEN, MAX_LEN],
                   "mean_length": mean_len, "padding": {"value": PAD, "maxLength": MAX_LENGTH},
                   "batch_size": batch_size, "epochs": epochs, "models": list(kinds),
                   "optimizer": {"adam": {"lr": LR}}, "torch_threads": TASK_CPUS,
                   "master": MASTER},
        "models": per_model,
        "ratios": ratios, "ratio": worst, "target": f"<= {TARGET}",
        "target_met": worst <= TARGET,
    }
    save("padded_sequences", result)
    return result


if __name__ == "__main__":
    cli(main, __doc__, "fewer rows and epochs")
