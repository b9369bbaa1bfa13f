"""The Scala DSL, driven from Python through py4j in the shared session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.errors import IllegalArgumentException

from sparkdl.errors import ConfigError
from sparkdl.jvm import jar_path
from sparkdl.nn import Dense, Dropout, Input, Network, Sequential

pytestmark = [pytest.mark.spark]

VECTORS = sorted((Path(__file__).resolve().parents[1] / "vectors").glob("network_*.json"))


@pytest.fixture(scope="module")
def jvm_nn(spark):
    jar_path()  # a clear error naming `make jvm` when the jar was never built
    return spark._jvm.sparkdl.nn.Network


@pytest.mark.parametrize("vector", VECTORS, ids=lambda p: p.stem)
def test_scala_reads_and_writes_the_python_bytes(jvm_nn, vector):
    case = json.loads(vector.read_text())
    net = jvm_nn.fromJson(json.dumps(case["spec"]))
    assert net.toJson() == case["expected"]["canonical_json"]
    assert net.paramCount() == case["expected"]["param_count"]


def test_a_python_network_round_trips_through_scala(jvm_nn):
    net = Sequential([Input((64,)), Dense(32, activation="relu"), Dropout(0.1), Dense(10)])
    assert jvm_nn.fromJson(net.to_json()).toJson() == net.to_json()


@pytest.mark.parametrize("breakage", ["unknown layer", "bad shape"])
def test_scala_errors_carry_the_python_message(jvm_nn, breakage):
    bad = json.loads(Sequential([Input((4, 5)), Dense(2)]).to_json())
    if breakage == "unknown layer":
        bad["layers"][0]["type"] = "Densse"
    else:
        bad["layers"].insert(0, {"type": "Conv2d", "filters": 3, "kernel_size": 3})
    text = json.dumps(bad)
    with pytest.raises(ConfigError) as python:
        Network.from_json(text)
    # pyspark turns the JVM's IllegalArgumentException into its own exception class
    with pytest.raises(IllegalArgumentException) as scala:
        jvm_nn.fromJson(text)
    assert str(python.value) in str(scala.value)
