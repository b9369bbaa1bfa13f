"""The ``horovod`` backend: Horovod's allreduce (gloo on CPU, NCCL when built with it).

No mpirun, no ssh, no extra Spark job: rank 0 hosts Horovod's own gloo
rendezvous server (``RendezvousServer``, bound to rank 0's executor address:
:mod:`sparkdl.collective.horovod_rendezvous`) and its port travels to the other ranks
through the barrier ``allGather``. Each rank then sets the variables ``horovodrun``
would set (``HOROVOD_RANK``, ``HOROVOD_GLOO_RENDEZVOUS_ADDR``, ...) and calls
``hvd.init()``. Ranks keep Spark's numbering; ranks on the same host get
consecutive local ranks, which pick distinct GPUs.

Training uses ``hvd.DistributedOptimizer`` (tensor fusion) with a *sum* of
gradients, since sparkdl already scales each rank's loss to make the sum the
global-batch mean.

Adasum: Horovod implements its Adasum op only over MPI, which needs ``mpirun``.
Here the same per-tensor Adasum combination is computed from one fused
``hvd.allgather`` of every rank's gradients, reduced pairwise in a fixed tree, so
all ranks get bit-identical results. Each rank's gradient is its own batch mean.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparkdl.collective.base import Collective, PeerInfo
from sparkdl.errors import ConfigError
from sparkdl.validation import require_positive

if TYPE_CHECKING:  # torch is imported where used: the Spark task only advertises and hands over
    import torch

INSTALL_HINT = ("Horovod is not installed in this Python environment. Build and install it "
                "with deploy/horovod/build.sh (PyPI's Horovod 0.28.1 needs the patches there), "
                "or use backend='torch'.")

#: Options accepted in ``backendOptions`` for this backend.
OPTIONS = {
    "compression": ("none", "fp16"),
    "op": ("sum", "adasum"),
    "fusion_threshold_mb": None,
    "cycle_time_ms": None,
    # Read by the worker's ProcessPolicy (sparkdl.worker.rank_process), not the backend.
    "warm_process": (True, False),
    "warm_idle_s": None,
}


@dataclass(frozen=True)
class SlotPlan:
    """Horovod's placement of one rank: local/cross ranks derived from hosts."""

    hostname: str
    rank: int
    local_rank: int
    cross_rank: int
    size: int
    local_size: int
    cross_size: int


def plan_slots(hosts: list[str]) -> list[SlotPlan]:
    """Horovod slot layout for ranks ``0..n-1`` living on ``hosts[rank]``.

    Example:
        >>> [(s.local_rank, s.cross_rank, s.cross_size) for s in plan_slots(["a", "b", "a"])]
        [(0, 0, 2), (0, 1, 2), (1, 0, 1)]
    """
    order = list(dict.fromkeys(hosts))
    local_rank, local_size = [], {h: hosts.count(h) for h in order}
    seen: dict[str, int] = {}
    for h in hosts:
        local_rank.append(seen.get(h, 0))
        seen[h] = local_rank[-1] + 1
    plans = []
    for rank, (h, lr) in enumerate(zip(hosts, local_rank)):
        with_slot = [x for x in order if local_size[x] > lr]
        plans.append(SlotPlan(h, rank, lr, with_slot.index(h), len(hosts), local_size[h],
                              len(with_slot)))
    return plans


def adasum(grads: torch.Tensor) -> torch.Tensor:
    """Adasum-combine per-rank gradients ``(ranks, ...)`` of one tensor.

    Pairs are combined level by level as ``(1 - a.b/2|a|^2) a + (1 - a.b/2|b|^2) b``
    (Maleki et al., 2021, as in Horovod): orthogonal gradients add up, identical
    ones are not double counted.

    Example:
        >>> import torch
        >>> adasum(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).tolist()
        [1.0, 1.0]
        >>> adasum(torch.tensor([[2.0, 2.0], [2.0, 2.0]])).tolist()
        [2.0, 2.0]
    """
    import torch

    level = list(grads.double())
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            a, b = level[i], level[i + 1]
            dot = torch.sum(a * b)
            na, nb = torch.sum(a * a), torch.sum(b * b)
            ca = 1 - dot / (2 * na) if na > 0 else torch.tensor(1.0, dtype=a.dtype)
            cb = 1 - dot / (2 * nb) if nb > 0 else torch.tensor(1.0, dtype=b.dtype)
            nxt.append(ca * a + cb * b)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].to(grads.dtype)


def check_options(options: dict) -> None:
    """Validate ``backendOptions`` on the driver.

    Raises:
        ConfigError: for an unknown key or value.
    """
    for key, value in options.items():
        if key not in OPTIONS:
            raise ConfigError(f"Unknown horovod backendOptions key {key!r}. Valid keys: "
                              f"{sorted(OPTIONS)}. Received: {key}={value!r}")
        choices = OPTIONS[key]
        if choices is not None and value not in choices:
            raise ConfigError(f"backendOptions[{key!r}] must be one of {list(choices)}. "
                              f"Received: {key}={value!r}")
        if choices is None:
            require_positive(f"backendOptions[{key!r}]", value)


def horovod_env(me: SlotPlan, rendezvous_host: str, rendezvous_port: int, options: dict,
                timeout_s: float) -> dict[str, str]:
    """The variables ``horovodrun`` would set for rank ``me``, plus the tuning options.

    Example:
        >>> env = horovod_env(plan_slots(["a", "b"])[1], "a", 7000, {}, 60)
        >>> env["HOROVOD_RANK"], env["HOROVOD_CROSS_RANK"], "HOROVOD_FUSION_THRESHOLD" in env
        ('1', '1', False)
    """
    env = {
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": rendezvous_host,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(rendezvous_port),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_HOSTNAME": me.hostname,
        "HOROVOD_RANK": str(me.rank),
        "HOROVOD_SIZE": str(me.size),
        "HOROVOD_LOCAL_RANK": str(me.local_rank),
        "HOROVOD_LOCAL_SIZE": str(me.local_size),
        "HOROVOD_CROSS_RANK": str(me.cross_rank),
        "HOROVOD_CROSS_SIZE": str(me.cross_size),
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(int(timeout_s)),
    }
    # Horovod's own defaults (a 64 MB fusion buffer) unless asked otherwise.
    if "fusion_threshold_mb" in options:
        env["HOROVOD_FUSION_THRESHOLD"] = str(int(options["fusion_threshold_mb"] * 1024 * 1024))
    if "cycle_time_ms" in options:
        env["HOROVOD_CYCLE_TIME"] = str(float(options["cycle_time_ms"]))
    return env


def _iface_for(host: str) -> str | None:
    """The network interface holding ``host``'s address, for gloo to bind to."""
    import psutil

    try:
        address = socket.gethostbyname(host)
    except OSError:
        return None
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == address for a in addrs):
            return name
    return None


class HorovodCollective(Collective):
    """Allreduce through Horovod, started inside Spark barrier tasks.

    Example:
        >>> HorovodCollective({"compression": "fp16"}).name
        'horovod'
    """

    name = "horovod"

    def __init__(self, options: dict | None = None) -> None:
        check_options(options or {})
        self._options = dict(options or {})
        self._server = None
        self._saved_env: dict[str, str | None] = {}
        self._started = False

    def advertise(self, rank: int, hosts: list[str]) -> dict:
        if rank != 0:
            return {}
        from horovod.runner.common.util.hosts import SlotInfo

        from sparkdl.collective.horovod_rendezvous import bound_rendezvous_server

        # On the address the other ranks dial (they get peers[0].host), not on
        # every interface as Horovod's own server would.
        self._server = bound_rendezvous_server(hosts[0])
        port = self._server.start()
        # The plan must be in place before any peer connects: init() clears the
        # server's key-value store, so a late init would drop early arrivals.
        self._server.init([SlotInfo(**vars(s)) for s in plan_slots(hosts)])
        return {"rendezvous_port": port}

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def start(self, rank: int, peers: list[PeerInfo], device: torch.device,
              timeout_s: float) -> None:
        import horovod.torch as hvd

        me = plan_slots([p.host for p in peers])[rank]
        env = horovod_env(me, peers[0].host, peers[0].extra["rendezvous_port"], self._options,
                          timeout_s)
        iface = _iface_for(me.hostname)
        if iface:
            env["HOROVOD_GLOO_IFACE"] = iface
        self._set_env(env)
        hvd.init()
        self._started = True
        if hvd.size() != len(peers) or hvd.rank() != rank:
            raise RuntimeError(f"Horovod started as rank {hvd.rank()}/{hvd.size()}, "
                               f"expected {rank}/{len(peers)}")

    def size(self) -> int:
        import horovod.torch as hvd

        return hvd.size()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        import horovod.torch as hvd

        hvd.broadcast_parameters(module.state_dict(), root_rank=0)

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer, module: torch.nn.Module,
                          backward_passes_per_step: int = 1) -> torch.optim.Optimizer:
        import horovod.torch as hvd

        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        if self._adasum:
            return optimizer  # combined in step(), see the module docstring
        compression = (hvd.Compression.fp16 if self._options.get("compression") == "fp16"
                       else hvd.Compression.none)
        return hvd.DistributedOptimizer(
            optimizer, named_parameters=module.named_parameters(), compression=compression,
            op=hvd.Sum, backward_passes_per_step=backward_passes_per_step)

    @property
    def _adasum(self) -> bool:
        return self._options.get("op") == "adasum"

    def loss_weight(self, local_rows: int, global_rows: int) -> float:
        if self._adasum:
            return 1.0 if local_rows else 0.0
        return super().loss_weight(local_rows, global_rows)

    def step(self, optimizer: torch.optim.Optimizer, module: torch.nn.Module,
             update=None) -> None:
        if self._adasum:
            self._adasum_gradients(module)
            if update is None:
                optimizer.step()
            else:
                update(optimizer)
        elif update is None:
            optimizer.step()  # a DistributedOptimizer sums gradients first
        else:
            # The sums must be in place before update() unscales or clips them.
            optimizer.synchronize()
            with optimizer.skip_synchronize():
                update(optimizer)

    def _adasum_gradients(self, module: torch.nn.Module) -> None:
        import horovod.torch as hvd
        import torch

        params = [p for p in module.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        if self._options.get("compression") == "fp16":
            gathered = hvd.allgather(flat.half().unsqueeze(0), name="sparkdl.adasum").to(
                flat.dtype)
        else:
            gathered = hvd.allgather(flat.unsqueeze(0), name="sparkdl.adasum")
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = adasum(gathered[:, offset:offset + n]).view_as(g)
            offset += n

    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        import horovod.torch as hvd

        return hvd.allreduce(tensor, op=hvd.Sum, name="sparkdl.metrics")

    def shutdown(self) -> None:
        if self._started:
            import horovod.torch as hvd

            hvd.shutdown()
            self._started = False
        if self._server is not None:
            self._server.stop()
            self._server = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
