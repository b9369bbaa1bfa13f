"""Variable-length sequences end to end on two executors: ragged token columns padded
per batch, an LSTM and a TransformerEncoder (sparkdl.nn) trained to >= 0.95, ragged
rows scored; several inputs, a hand-written module taking (x, lengths), sample
weights, and the errors that come before any job."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from sparkdl import TorchEstimator, TorchModel
from sparkdl.errors import SchemaError
from sparkdl.nn import (
    Dense,
    Embedding,
    Input,
    SequencePooling,
    Sequential,
)

pytestmark = [pytest.mark.spark, pytest.mark.slow]

VOCAB = 50


def example_networks() -> dict:
    """The networks of python/train_text.py, the example these tests stand behind."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "python" / "train_text.py"
    spec = importlib.util.spec_from_file_location("train_text", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VOCAB == VOCAB
    return module.networks()


@pytest.fixture(scope="module")
def text(spark):
    """Token sequences of 3-200 ids; label 1 when the row holds token 1 (half do)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2000):
        length = int(rng.integers(3, 201))
        ids = rng.integers(2, VOCAB, size=length)
        if i % 2:
            ids[rng.integers(0, length)] = 1
        rows.append((ids.tolist(), i % 2, float(rng.normal()), i >= 1600))
    df = spark.createDataFrame(rows, "tokens array<int>, label long, side double, test boolean")
    return df.filter(~F.col("test")).cache(), df.filter(F.col("test")).cache()


def accuracy(scored) -> float:
    return scored.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]


def fit(model, train, **params):
    settings = dict(model=model, inputCols=["tokens"], padding={"value": 0, "maxLength": 256},
                    optimizerParams={"lr": 3e-3}, batchSize=16, epochs=5, numWorkers=2,
                    verbose=0, seed=1)
    return TorchEstimator(**{**settings, **params}).fit(train)


def test_an_lstm_learns_ragged_token_sequences_and_scores_them(text, tmp_path):
    train, test = text
    model = fit(example_networks()["lstm"], train)
    assert len({w["executor_id"] for w in model.history.workers}) == 2
    scored = model.transform(test)
    assert accuracy(scored) >= 0.95
    model.save(str(tmp_path / "lstm"))
    again = TorchModel.load(str(tmp_path / "lstm"), trusted=False)
    assert again.getPadding() == {"value": 0, "maxLength": 256}
    a = [r.rawPrediction for r in scored.orderBy("tokens").limit(20).collect()]
    b = [r.rawPrediction for r in again.transform(test).orderBy("tokens").limit(20).collect()]
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)


def test_a_transformer_encoder_with_bucketing(text):
    train, test = text
    model = fit(example_networks()["transformer"], train, epochs=3, validationFraction=0.1,
                padding={"value": 0, "maxLength": 256, "bucketing": True})
    assert model.history[-1]["val_accuracy"] >= 0.95
    assert accuracy(model.transform(test)) >= 0.95


class PackedGRU(torch.nn.Module):
    """What users write by hand: forward(x, lengths) with pack_padded_sequence."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16, padding_idx=0)
        self.gru = torch.nn.GRU(16, 24, batch_first=True)
        self.side = torch.nn.Linear(1, 24)
        self.out = torch.nn.Linear(24, 2)

    def forward(self, ids, side, lengths):
        assert ids.dtype == torch.int64, ids.dtype  # token ids arrive as integers
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, hidden = self.gru(packed)
        return self.out(torch.relu(hidden[-1] + self.side(side)))


def test_several_inputs_and_a_hand_written_packed_module(text):
    train, test = text
    model = fit(PackedGRU(), train, inputCols=["tokens", "side"], epochs=5)
    # the plumbing under test: two inputs and lengths reach a hand-written module
    assert accuracy(model.transform(test)) >= 0.85
    assert model.getInputCols() == ["tokens", "side"]


def test_sample_weights_ignore_rows_of_weight_zero(text):
    train, test = text
    # a third of the rows get the wrong label but weight 0: training must not see them
    noisy = train.withColumn("noisy", F.rand(7) < 1 / 3).select(
        "tokens", F.when(F.col("noisy"), 1 - F.col("label")).otherwise(F.col("label"))
        .alias("label"), F.when(F.col("noisy"), 0.0).otherwise(1.0).alias("w"))
    net = Sequential([Input((None,), dtype="int64"), Embedding(VOCAB, 32),
                      SequencePooling("max"), Dense(2)])
    weighted = fit(net, noisy, sampleWeightCol="w", epochs=4)
    assert accuracy(weighted.transform(test)) >= 0.95


def test_ragged_rows_without_padding_say_how_to_pad(spark, text):
    train, _ = text
    net = Sequential([Input((None,), dtype="int64"), Embedding(VOCAB, 8),
                      SequencePooling("mean"), Dense(2)])
    with pytest.raises(SchemaError, match=r"ragged arrays.*set padding=\{'value': 0"):
        TorchEstimator(model=net, featuresCol="tokens", numWorkers=2, verbose=0).fit(train)
    empty = spark.createDataFrame([([1, 2], 0), ([], 1)], "tokens array<int>, label long")
    with pytest.raises(SchemaError, match="empty arrays"):
        fit(net, empty)
    weights = train.withColumn("w", F.lit(-1.0))
    with pytest.raises(SchemaError, match="Sample weight column 'w' has .* negative"):
        fit(net, weights, sampleWeightCol="w")


class MaskedMean(torch.nn.Module):
    """Mean of the valid tokens' embeddings: the result does not depend on padding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, 6)
        self.out = torch.nn.Linear(6, 3)

    def forward(self, ids, lengths):
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        return self.out((self.embed(ids) * mask[..., None]).sum(1) / lengths[:, None])


def test_two_workers_equal_one_and_plain_pytorch_with_padding_and_weights(spark):
    """Full-batch SGD over 101 ragged, weighted rows: each step's global batch is the
    whole set, so 2 workers, 1 worker and a hand-written weighted loop end equal."""
    rng = np.random.default_rng(5)
    rows = [rng.integers(1, VOCAB, size=rng.integers(1, 12)).tolist() for _ in range(101)]
    labels = rng.integers(0, 3, size=101)
    weights = rng.uniform(0.0, 2.0, size=101)
    df = spark.createDataFrame([(r, int(y), float(w)) for r, y, w in zip(rows, labels, weights)],
                               "tokens array<int>, label long, w double")

    def fit(workers):
        return TorchEstimator(model=MaskedMean(), inputCols=["tokens"],
                              padding={"value": 0}, sampleWeightCol="w", optimizer="sgd",
                              optimizerParams={"lr": 0.5}, batchSize=101, epochs=4,
                              numWorkers=workers, seed=3, verbose=0).fit(df)

    two, one = fit(2), fit(1)
    reference = MaskedMean()
    opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    lengths = torch.tensor([len(r) for r in rows])
    w = torch.tensor(weights, dtype=torch.float32)
    for _ in range(4):
        opt.zero_grad()
        per_row = torch.nn.functional.cross_entropy(reference(ids, lengths),
                                                    torch.from_numpy(labels), reduction="none")
        ((per_row * w).sum() / w.sum()).backward()
        opt.step()
    expected = reference.state_dict()
    for model in (two, one):
        for name, value in model.getModel().state_dict().items():
            np.testing.assert_allclose(value.numpy(), expected[name].numpy(), atol=2e-5)
    assert two.history.metric("train_loss") == pytest.approx(one.history.metric("train_loss"),
                                                              rel=1e-5)
