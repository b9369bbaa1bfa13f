"""How a scoring task gets the network over Spark Connect, where there is no broadcast.

A classic session broadcasts ``(kind, architecture bytes, weights bytes)``
(``sc.broadcast``); a Connect client cannot. A small network travels inside the
scoring function itself (:class:`InlineModel`); a large one would swell every plan
the client sends (the server refuses messages over
``spark.connect.grpc.maxInboundMessageSize``, 128 MiB by default), so it is added
once to the session as a file artifact (``spark.addArtifacts(..., file=True)``) and
each Python worker reads it from ``SparkFiles`` (:class:`ArtifactModel`). Either
way :mod:`sparkdl.worker.score_task` builds the module once per Python worker.

The artifact's format is a length-prefixed frame, not a pickle: a worker reads it
with its sizes checked against the file's.

Example::

    payload = InlineModel("spec", spec_json, weights)
    payload.value  # ("spec", spec_json, weights), as Broadcast.value gives it
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

MAGIC = b"SPARKDL-MODEL-1\n"
_HEADER = struct.Struct(">I")
_MAX_HEADER = 4096


@dataclass(frozen=True)
class InlineModel:
    """The network shipped inside the function (pickled with it, as a UDF's closure)."""

    kind: str
    architecture: bytes
    weights: bytes

    @property
    def value(self) -> tuple[str, bytes, bytes]:
        return self.kind, self.architecture, self.weights


@dataclass(frozen=True)
class ArtifactModel:
    """The network in a session file artifact called ``name``, read on the worker."""

    name: str

    @property
    def value(self) -> tuple[str, bytes, bytes]:
        from pyspark import SparkFiles

        return read_frame(SparkFiles.get(self.name))


def write_frame(path: str, kind: str, architecture: bytes, weights: bytes) -> None:
    """Write the artifact file :func:`read_frame` reads.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "m.bin")
        >>> write_frame(f, "spec", b"{}", b"w")
        >>> read_frame(f)
        ('spec', b'{}', b'w')
    """
    header = json.dumps({"kind": kind, "architecture": len(architecture),
                         "weights": len(weights)}).encode()
    with open(path, "wb") as out:
        out.write(MAGIC + _HEADER.pack(len(header)) + header)
        out.write(architecture)
        out.write(weights)


def read_frame(path: str) -> tuple[str, bytes, bytes]:
    """``(kind, architecture, weights)`` from a file :func:`write_frame` wrote.

    Raises:
        ValueError: the file is not such a frame, or its sizes do not add up.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not a sparkdl model artifact")
        (length,) = _HEADER.unpack(f.read(_HEADER.size))
        if length > _MAX_HEADER:
            raise ValueError(f"{path}: header of {length} bytes (at most {_MAX_HEADER})")
        header = json.loads(f.read(length))
        arch, weights = int(header["architecture"]), int(header["weights"])
        if len(MAGIC) + _HEADER.size + length + arch + weights != size or min(arch, weights) < 0:
            raise ValueError(f"{path}: its sizes do not match the file's {size} bytes")
        return str(header["kind"]), f.read(arch), f.read(weights)
