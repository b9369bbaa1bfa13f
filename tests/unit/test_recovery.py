"""Restart machinery without Spark: the state codec, the driver's report channel,
and how a failed barrier job is classified."""

from __future__ import annotations

import dataclasses
import io
import socket
import struct

import pytest
import torch

from sparkdl.checkpoints import Resume
from sparkdl.epoch_state import decode_state, encode_state
from sparkdl.errors import ConfigError, TrainingCodeError
from sparkdl.ml.recovery import RestartPolicy, failure_facts, retryable
from sparkdl.rendezvous import DriverRendezvous


def _state(epoch=2) -> Resume:
    from sparkdl.architecture import weights_to_bytes

    module = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(module.parameters())
    module(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    return Resume(epoch, weights_to_bytes(module), buffer.getvalue(),
                  [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": float("nan")}])


def test_a_state_round_trips():
    state = _state()
    back = decode_state(encode_state(state))
    assert (back.epoch, back.weights, back.optimizer_state) == \
        (state.epoch, state.weights, state.optimizer_state)
    assert back.history[0] == state.history[0]


@pytest.mark.parametrize("cut", [0, 3, 8, 20, -1, -100])
def test_a_truncated_state_is_refused(cut):
    data = encode_state(_state())
    with pytest.raises(ValueError, match="training state"):
        decode_state(data[:cut])


def test_a_state_with_a_huge_header_is_refused_before_reading_it():
    with pytest.raises(ValueError, match="header"):
        decode_state(struct.pack(">Q", 1 << 62) + b"{}")


def _received(max_state_bytes=1 << 20):
    got = {"states": [], "failures": []}
    rdv = DriverRendezvous(1, "127.0.0.1", on_state=lambda e, b: got["states"].append((e, b)),
                           max_state_bytes=max_state_bytes,
                           on_failure=lambda r, t: got["failures"].append((r, t)))
    return rdv, got


def test_rank_zero_hands_its_state_to_the_driver():
    rdv, got = _received()
    with rdv:
        assert rdv.address.post_state(3, b"x" * 1000) is True
    assert got["states"] == [(3, b"x" * 1000)]


def test_a_state_over_the_cap_is_not_sent():
    rdv, got = _received(max_state_bytes=100)
    with rdv:
        assert rdv.address.post_state(1, b"x" * 101) is False
    assert got["states"] == []


def test_the_driver_refuses_a_state_over_its_cap_even_if_the_rank_claims_more_room():
    rdv, got = _received(max_state_bytes=100)
    with rdv:
        lying = dataclasses.replace(rdv.address, max_state_bytes=1 << 30)
        assert lying.post_state(1, b"x" * 5000) is False
    assert got["states"] == []


def test_a_peer_without_the_key_cannot_hand_in_a_state():
    rdv, got = _received()
    with rdv:
        wrong = dataclasses.replace(rdv.address, authkey=b"k" * 32)
        with pytest.raises(Exception, match="refused"):
            wrong.post_state(1, b"x" * 10)
        # A raw connection that sends a state header without the handshake.
        with socket.create_connection(("127.0.0.1", rdv.address.port), timeout=5) as raw:
            raw.sendall(struct.pack("!i", 40) + b'{"kind": "state", "epoch": 1, "bytes": 4}')
    assert got["states"] == []


def test_a_failure_in_user_code_reaches_the_driver():
    rdv, got = _received()
    with rdv:
        rdv.address.post_failure(1, "Traceback ...\nValueError: boom")
    assert got["failures"] == [(1, "Traceback ...\nValueError: boom")]


def test_no_state_is_taken_without_a_receiver():
    with DriverRendezvous(1, "127.0.0.1") as rdv:
        assert rdv.address.max_state_bytes == 0
        assert rdv.address.post_state(1, b"x") is False


@pytest.mark.parametrize("message", [
    "ExecutorLostFailure (executor 1 exited caused by one of the running tasks)",
    "A training worker failed: RuntimeError: [gloo] Connection closed by peer",
    "Python worker exited unexpectedly (crashed)",
    "Rank 1 waited 600 s at the rendezvous for the other ranks",
])
def test_infrastructure_failures_are_retried(message):
    assert retryable(message)


@pytest.mark.parametrize("message", [
    f"A training worker failed: sparkdl.errors.{TrainingCodeError.__name__}: raised ValueError",
    f"sparkdl.errors.{ConfigError.__name__}: batchSize must be >= 1",
    "ModuleNotFoundError: No module named 'mylib'",
])
def test_failures_that_repeat_are_not_retried(message):
    assert not retryable(message)


def test_failure_facts_name_the_rank_and_executor():
    text = ("Could not recover from a failed barrier ResultStage. Most recent failure reason: "
            "Stage failed because barrier task ResultTask(12, 0) finished unsuccessfully.\n"
            "ExecutorLostFailure (executor 2 exited caused by one of the running tasks)")
    assert failure_facts(text) == {"failed_rank": 0, "failed_executor": "2"}
    assert failure_facts("something else") == {}


@pytest.mark.parametrize("field,value", [("max_restarts", -1), ("state_interval", 1.5)])
def test_restart_policy_checks_its_settings(field, value):
    with pytest.raises(ConfigError, match="must be"):
        RestartPolicy(**{field: value})
