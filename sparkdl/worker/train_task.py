"""The Spark task that trains one rank: what it receives, what it returns, its entry point.

``train_task(spec, batches)`` is what the PySpark estimator's
``mapInArrow(..., barrier=True)`` runs, with a :class:`ShippedSpec`; it yields
rows of :data:`RESULT_SCHEMA`. Training one rank takes four layers, and each
function is named for its layer:

* Spark task glue: :func:`train_task` here (PySpark), ``_train`` in
  :mod:`sparkdl.worker.jvm_worker` (the Scala estimator's worker). Each turns its
  launcher's task into a :class:`~sparkdl.worker.context.StaticRankContext`.
* The rank, whatever launched it: :func:`sparkdl.worker.rank.train_rank` writes
  the shard, meets the other ranks, picks the rank's process and yields the
  result rows.
* The rank process: :func:`sparkdl.worker.rank_process.train_in_process` in this
  process, or :meth:`sparkdl.worker.rank_child.RankChild.train` in a fresh child
  (Horovod), starts the backend and collects the result.
* The training loop: :func:`sparkdl.worker.loop.train_loop`, epochs of steps over
  the shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from sparkdl.data.shard import ShardLayout

if TYPE_CHECKING:
    from sparkdl.rendezvous import RendezvousAddress
    from sparkdl.worker.spec import TrainSpec

#: Schema of the rows a training task returns to the driver.
RESULT_SCHEMA = pa.schema([("rank", pa.int32()), ("kind", pa.string()),
                           ("payload", pa.binary())])
RESULT_DDL = "rank int, kind string, payload binary"


@dataclass(frozen=True)
class ShippedSpec:
    """A :class:`~sparkdl.worker.spec.TrainSpec` as the barrier task receives it.

    The network, its weights and any custom loss or optimizer stay pickled
    (``payload``): unpickling them imports torch, about two seconds in a fresh
    Spark Python worker. A backend that trains in a child process (Horovod) hands
    the bytes on, so its task reads only the plain fields below and never imports
    torch; the child, already imported, unpickles the spec.

    Example:
        >>> from sparkdl.worker.spec import TrainSpec
        >>> from sparkdl.architecture import Architecture
        >>> import torch
        >>> spec = TrainSpec(architecture=Architecture.of(torch.nn.Linear(2, 1)),
        ...                  initial_weights=None, loss="mse", optimizer="sgd",
        ...                  optimizer_params={}, layout=ShardLayout(("f",), "y", False),
        ...                  batch_size=8, epochs=1, seed=0, num_workers=1, backend="torch")
        >>> shipped = ShippedSpec.of(spec)
        >>> shipped.backend, shipped.load() == spec
        ('torch', True)
    """

    payload: bytes = field(repr=False)
    backend: str
    backend_options: dict
    layout: ShardLayout
    rendezvous: RendezvousAddress | None = None  # None: meet through allGather

    @classmethod
    def of(cls, spec: TrainSpec) -> ShippedSpec:
        from sparkdl.architecture import dumps_code  # the driver has torch imported

        # A custom loss or optimizer from a script or notebook travels by value,
        # as the network's own code does.
        return cls(dumps_code(spec, spec.loss, spec.optimizer), spec.backend,
                   dict(spec.backend_options), spec.layout, spec.rendezvous)

    def load(self) -> TrainSpec:
        """The full :class:`~sparkdl.worker.spec.TrainSpec` (imports torch)."""
        import pickle

        return pickle.loads(self.payload)


def train_task(spec: ShippedSpec, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Train one rank inside a PySpark barrier task (``mapInArrow(barrier=True)``).

    Args:
        spec: the run, as shipped to every task.
        batches: this partition's Arrow record batches.

    Yields:
        Result record batches with :data:`RESULT_SCHEMA`.

    Example::

        df.mapInArrow(functools.partial(train_task, ShippedSpec.of(spec)), RESULT_DDL,
                      barrier=True).collect()
    """
    # Imported here: the driver imports this module for ShippedSpec, the task
    # machinery is needed on executors only.
    from sparkdl.worker.context import spark_rank_context
    from sparkdl.worker.rank import train_rank

    yield from train_rank(spec, batches, spark_rank_context(spec))
