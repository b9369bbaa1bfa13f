"""TensorBoard event files for ``logDir``, written by rank 0 on any sparkdl storage.

``torch.utils.tensorboard.SummaryWriter`` writes to local files only; ``logDir``
may be HDFS (WebHDFS, :mod:`sparkdl.storage`). So the events are built here with
TensorBoard's own protobuf classes and record framing (``RecordWriter``: length,
masked CRC-32C, payload), in memory, and the whole file is written through the
storage after every epoch, as ``metrics.jsonl`` is. Each rewrite keeps what was
there as its prefix, so ``tensorboard --logdir`` following the file sees it grow.

Scalars: per epoch (step = the epoch) ``epoch/<metric>`` for every number in the
epoch's record (``train_loss``, ``val_accuracy``, ...) and ``epoch/lr``; per logged
step (step = the global step) ``step/train_loss`` (rank 0's running mean in its
epoch) and ``step/samples_per_s``.

Example::

    events = EventLog()
    events.scalar("epoch/train_loss", 0.42, step=1)
    storage.write(EVENTS_FILE, events.to_bytes())
"""

from __future__ import annotations

import io
import time

#: The file's name: TensorBoard reads files whose name holds "tfevents"; one fixed
#: name per logDir, so a resumed fit rewrites the same file from its history.
EVENTS_FILE = "events.out.tfevents.0.sparkdl"
_SKIPPED = {"epoch", "lr"}


class EventLog:
    """Scalars as TensorBoard ``Event`` records, in order."""

    def __init__(self) -> None:
        from tensorboard.compat.proto import event_pb2

        first = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        self._records: list[bytes] = [first.SerializeToString()]

    def scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """Add one scalar (``simple_value``, as TensorBoard's own writers do)."""
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, simple_value=float(value))])
        event = event_pb2.Event(wall_time=wall_time or time.time(), step=int(step),
                                summary=summary)
        self._records.append(event.SerializeToString())

    def epoch(self, record: dict, lr: float | None = None) -> None:
        """Every number of an epoch's history record, plus the learning rate."""
        step = int(record["epoch"])
        for key, value in record.items():
            if key not in _SKIPPED and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                self.scalar(f"epoch/{key}", value, step)
        if lr is not None:
            self.scalar("epoch/lr", lr, step)

    def to_bytes(self) -> bytes:
        """The event file's content."""
        from tensorboard.summary.writer.record_writer import RecordWriter

        out = io.BytesIO()
        writer = RecordWriter(out)
        for record in self._records:
            writer.write(record)
        return out.getvalue()
