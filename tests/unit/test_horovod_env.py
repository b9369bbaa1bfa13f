"""The environment a Horovod rank starts with: horovodrun's variables and the tuning options."""

from __future__ import annotations

from sparkdl.collective.horovod_backend import horovod_env, plan_slots


def _env(options: dict, rank: int = 0) -> dict[str, str]:
    return horovod_env(plan_slots(["h1", "h2", "h1"])[rank], "h1", 4242, options, 90.5)


def test_ranks_get_horovodrun_variables_from_their_hosts():
    env = _env({}, rank=2)
    assert env["HOROVOD_RANK"] == "2" and env["HOROVOD_SIZE"] == "3"
    assert (env["HOROVOD_LOCAL_RANK"], env["HOROVOD_LOCAL_SIZE"]) == ("1", "2")
    assert (env["HOROVOD_CROSS_RANK"], env["HOROVOD_CROSS_SIZE"]) == ("0", "1")
    assert env["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "h1"
    assert env["HOROVOD_GLOO_RENDEZVOUS_PORT"] == "4242"
    assert env["HOROVOD_GLOO_TIMEOUT_SECONDS"] == "90"
    assert env["HOROVOD_CONTROLLER"] == env["HOROVOD_CPU_OPERATIONS"] == "gloo"


def test_tuning_options_are_set_only_when_asked_so_horovods_defaults_hold():
    assert "HOROVOD_FUSION_THRESHOLD" not in _env({})
    assert "HOROVOD_CYCLE_TIME" not in _env({})
    assert _env({"fusion_threshold_mb": 32})["HOROVOD_FUSION_THRESHOLD"] == str(32 << 20)
    assert _env({"fusion_threshold_mb": 0.5})["HOROVOD_FUSION_THRESHOLD"] == str(1 << 19)
    assert _env({"cycle_time_ms": 2})["HOROVOD_CYCLE_TIME"] == "2.0"
