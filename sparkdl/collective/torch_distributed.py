"""The ``torch`` backend: ``torch.distributed`` with gloo on CPU, NCCL on GPU.

Rank 0 opens a ``TCPStore`` on a free port (port 0, chosen by the OS, so there is
no race for a fixed port); the port travels to the other ranks through the barrier
allGather. The store listens only on rank 0's executor address, the one the other
ranks dial: left to itself it would bind every interface
(:mod:`sparkdl.collective.listen`). Gradients are flattened into one buffer and
summed with a single allreduce per step, the same fusion Horovod does.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from sparkdl.collective.base import Collective, PeerInfo
from sparkdl.collective.listen import listen_on


def master_store(host: str, world_size: int) -> dist.TCPStore:
    """Rank 0's ``TCPStore``, listening on ``host``'s address only.

    TCPStore binds every interface unless handed a socket that is already bound
    (``master_listen_fd``); it then owns that descriptor and closes it with the
    store.

    Example:
        >>> store = master_store("127.0.0.1", 1)
        >>> store.port > 0
        True
    """
    with listen_on(host) as sock:
        # The store gets a duplicate and this socket closes on leaving the block,
        # whether the store took its descriptor or failed before it did.
        fd = os.dup(sock.fileno())
        try:
            return dist.TCPStore(host, sock.getsockname()[1], world_size, is_master=True,
                                 wait_for_workers=False, master_listen_fd=fd)
        except BaseException:
            _close_if_same(fd, sock)
            raise


def _close_if_same(fd: int, sock: socket.socket) -> None:
    """Close ``fd`` if it is still the duplicate of ``sock``: a failed TCPStore closes
    the descriptor it was given with one backend and not with the other, and a
    number closed twice may by then name another file."""
    try:
        same = os.path.samestat(os.fstat(fd), os.fstat(sock.fileno()))
    except OSError:
        return
    if same:
        os.close(fd)


class TorchDistributedCollective(Collective):
    """Allreduce through ``torch.distributed``.

    Example:
        >>> TorchDistributedCollective().name
        'torch'
    """

    name = "torch"

    def __init__(self) -> None:
        self._store: dist.TCPStore | None = None
        self._group_started = False
        self._device = torch.device("cpu")

    def advertise(self, rank: int, hosts: list[str]) -> dict:
        if rank != 0:
            return {}
        self._store = master_store(hosts[0], len(hosts))
        return {"store_port": self._store.port}

    def start(self, rank: int, peers: list[PeerInfo], device: torch.device,
              timeout_s: float) -> None:
        timeout = timedelta(seconds=timeout_s)
        master = peers[0]
        if self._store is None:
            self._store = dist.TCPStore(master.host, int(master.extra["store_port"]),
                                        len(peers), is_master=False, timeout=timeout)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=self._store, rank=rank,
                                world_size=len(peers), timeout=timeout)
        self._group_started = True
        self._world_size = len(peers)
        self._device = device

    def size(self) -> int:
        return dist.get_world_size()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        tensors = [t.data for t in module.state_dict(keep_vars=True).values()]
        for t in tensors:
            dist.broadcast(t, src=0)

    def step(self, optimizer: torch.optim.Optimizer, module: torch.nn.Module,
             update=None) -> None:
        update = update or _optimizer_step
        if self._world_size == 1:  # nothing to sum with: skip the flatten/copy
            update(optimizer)
            return
        params = [p for p in module.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if grads:
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
                p.grad = g
        update(optimizer)

    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        # NCCL reduces only device tensors; gloo takes them where they are.
        out = tensor.to(self._device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(tensor.device)

    def shutdown(self) -> None:
        if self._group_started:
            dist.destroy_process_group()
            self._group_started = False
        self._store = None


def _optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    optimizer.step()
