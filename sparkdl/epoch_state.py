"""Rank 0's training state after an epoch, as the bytes it hands the driver.

A fit that loses an executor restarts its barrier job and resumes from the
newest state the driver holds, exactly as from a checkpoint
(:class:`~sparkdl.checkpoints.Resume`): the same weights, optimizer state and
epoch position, so the final weights equal an uninterrupted run's.

Layout: an 8-byte big-endian header length, a JSON header (``epoch``,
``history``, the byte sizes of the two parts), the weights (safetensors), then
the optimizer state (``torch.save``, read back with ``weights_only=True``).
Nothing in it is unpickled.

Example:
    >>> from sparkdl.checkpoints import Resume
    >>> data = encode_state(Resume(2, b"weights", b"optimizer", [{"epoch": 1}, {"epoch": 2}]))
    >>> decode_state(data).epoch, decode_state(data).optimizer_state
    (2, b'optimizer')
"""

from __future__ import annotations

import json
import struct

from sparkdl.checkpoints import Resume

_HEADER = struct.Struct(">Q")
#: A header is epoch numbers and metrics; anything bigger is not a state.
MAX_HEADER_BYTES = 64 << 20


def encode_state(resume: Resume) -> bytes:
    """The bytes of ``resume``, for :func:`decode_state`."""
    header = json.dumps({"epoch": resume.epoch, "history": resume.history,
                         "weights": len(resume.weights),
                         "optimizer": len(resume.optimizer_state)}).encode("utf-8")
    return b"".join((_HEADER.pack(len(header)), header, resume.weights,
                     resume.optimizer_state))


def decode_state(data: bytes) -> Resume:
    """The :class:`~sparkdl.checkpoints.Resume` in ``data``.

    Raises:
        ValueError: if ``data`` is not a whole state (truncated, or its sizes disagree).
    """
    view = memoryview(data)
    if len(view) < _HEADER.size:
        raise ValueError(f"a training state of {len(view)} bytes has no header")
    (size,) = _HEADER.unpack_from(view)
    if size > min(MAX_HEADER_BYTES, len(view) - _HEADER.size):
        raise ValueError(f"a training state declares a {size}-byte header in "
                         f"{len(view)} bytes")
    header = json.loads(bytes(view[_HEADER.size:_HEADER.size + size]))
    epoch, weights, optimizer = header.get("epoch"), header.get("weights"), \
        header.get("optimizer")
    if not all(isinstance(v, int) and v >= 0 for v in (epoch, weights, optimizer)) or \
            not isinstance(header.get("history"), list):
        raise ValueError(f"a training state has a malformed header: {sorted(header)}")
    start = _HEADER.size + size
    if start + weights + optimizer != len(view):
        raise ValueError(f"a training state of {len(view)} bytes declares "
                         f"{start + weights + optimizer}")
    return Resume(epoch, bytes(view[start:start + weights]),
                  bytes(view[start + weights:]), header["history"])
