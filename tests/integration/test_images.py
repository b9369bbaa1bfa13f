"""Training and scoring from image files (PNG via binaryFile, and the image source),
on local disk and HDFS, decoded and augmented on the workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pyspark.sql import functions as F
from torchvision.transforms import v2

from sparkdl import TorchEstimator
from sparkdl.errors import SchemaError, UntrustedCodeError
from sparkdl.ml.model import TorchModel

pytestmark = [pytest.mark.spark, pytest.mark.slow]

TRAIN = v2.Compose([v2.Grayscale(), v2.RandomAffine(degrees=8, translate=(0.06, 0.06)),
                    v2.ToDtype(torch.float32, scale=True)])
SCORE = v2.Compose([v2.Grayscale(), v2.ToDtype(torch.float32, scale=True)])


def cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 10))


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory):
    """The digits as 16x16 grayscale PNGs under ``label=<digit>/img_<n>.png``."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits_png")
    data = load_digits()
    for n, (img, label) in enumerate(zip(data.images, data.target)):
        pixels = np.kron((img * 255 / 16).astype(np.uint8), np.ones((2, 2), np.uint8))
        folder = root / f"label={label}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(folder / f"img_{n}.png")
    return root


def _split(df, path_col="path"):
    number = F.regexp_extract(path_col, r"img_(\d+)\.png", 1).cast("int")
    return df.filter(number % 5 != 0), df.filter(number % 5 == 0)


def _accuracy(df) -> float:
    return df.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]


def _predictions(df, key="path"):
    return [(r[0], r[1]) for r in df.select(key, "prediction").orderBy(key).collect()]


def test_train_from_png_files_on_hdfs_and_score_local_files(spark, hdfs, png_dir, tmp_path):
    jvm = spark.sparkContext._jvm
    target = jvm.org.apache.hadoop.fs.Path(f"{hdfs.uri}/images/digits")
    conf = jvm.org.apache.hadoop.conf.Configuration(spark.sparkContext._jsc.hadoopConfiguration())
    # closing a file polls the NameNode after 400 ms by default: 1,800 files took minutes
    conf.set("dfs.client.block.write.locateFollowingBlock.initial.delay.ms", "5")
    fs = jvm.org.apache.hadoop.fs.FileSystem.newInstance(target.toUri(), conf)
    fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(str(png_dir)), target)

    train, _ = _split(spark.read.format("binaryFile").load(f"{hdfs.uri}/images/digits"))
    est = TorchEstimator(model=cnn, inputCols=["content"], labelCol="label",
                         transform=TRAIN, scoreTransform=SCORE, optimizerParams={"lr": 3e-3},
                         batchSize=32, epochs=6, numWorkers=2, seed=1, backend="torch",
                         validationFraction=0.1)
    model = est.fit(train)
    assert model.history.epochs[-1]["val_accuracy"] >= 0.8
    assert model.getScoreTransform() is SCORE

    _, test = _split(spark.read.format("binaryFile").option("pathGlobFilter", "*.png")
                     .load(str(png_dir)))
    scored = model.transform(test)
    assert _accuracy(scored) >= 0.85
    before = _predictions(scored)

    saved = str(tmp_path / "model")
    model.save(saved)
    with pytest.raises(UntrustedCodeError, match="score_transform.pkl"):
        TorchModel.load(saved, trusted=False)
    loaded = TorchModel.load(saved, trusted=True)
    assert _predictions(loaded.transform(test)) == before

    # the image source's struct (BGR bytes, decoded by Spark) scores the same
    images = spark.read.format("image").load(str(png_dir))
    _, test_images = _split(images, "image.origin")
    from_source = loaded.copy({loaded.inputCols: ["image"]}).transform(test_images)
    same = [(r[0].split("/")[-1], r[1]) for r in from_source.select(
        "image.origin", "prediction").collect()]
    assert sorted(same) == sorted((p.split("/")[-1], q) for p, q in before)


def test_train_from_the_image_source(spark, png_dir):
    train, _ = _split(spark.read.format("image").load(str(png_dir)), "image.origin")
    model = TorchEstimator(model=cnn, inputCols=["image"], scoreTransform=SCORE,
                           transform=SCORE, optimizerParams={"lr": 3e-3}, batchSize=64,
                           epochs=2, numWorkers=2, seed=1, backend="torch").fit(train)
    assert model.history.epochs[-1]["train_accuracy"] > 0.5


def test_bad_image_files_are_named(spark, png_dir, tmp_path):
    (tmp_path / "label=1").mkdir()
    (tmp_path / "label=1" / "img_1.png").write_bytes(b"not a png")
    for name in ("img_2.png", "img_3.png"):
        (tmp_path / "label=1" / name).write_bytes((png_dir / "label=1").glob("*.png")
                                                  .__next__().read_bytes())
    df = spark.read.format("binaryFile").load(str(tmp_path)).orderBy(F.desc("path"))
    est = TorchEstimator(model=cnn, inputCols=["content"], transform=SCORE, batchSize=4,
                         epochs=1, numWorkers=2, backend="torch", maxRestarts=0)
    with pytest.raises(Exception, match=r"(?s)'content' \(file .*img_1.png\) cannot be decoded"):
        est.fit(df)
    nulls = df.withColumn("content", F.when(F.col("path").contains("img_1"), None)
                          .otherwise(F.col("content")))
    with pytest.raises(SchemaError, match=r"'content' has 1 null value"):
        est.fit(nulls)
