"""Image columns as network inputs: decoded, transformed and stacked on the workers.

Two kinds of column hold images:

* ``binary``: encoded file bytes (PNG, JPEG, ...), as ``spark.read.format("binaryFile")``
  gives in ``content``; decoded with Pillow.
* the struct of Spark's ``image`` source (``origin``, ``height``, ``width``,
  ``nChannels``, ``mode``, ``data``): raw row-major ``height x width x nChannels``
  bytes in OpenCV's BGR(A) order.

Both become uint8 RGB tensors ``(3, H, W)`` (grayscale is repeated, alpha dropped;
``v2.Grayscale()`` in a transform gives one channel). Decoding happens per gathered
batch, on the worker that trains or scores it: the JVM ships the bytes as they are
stored. Each image then goes through the transform (a callable taking and returning
one tensor, e.g. a torchvision transforms v2 ``Compose``), and the batch is stacked
into one float32 tensor ``(batch, C, H, W)``: a uint8 result is scaled to [0, 1],
any other result is cast to float32 as it is (so ``v2.Normalize`` output arrives
unchanged).

Example:
    >>> import io
    >>> import numpy as np
    >>> from PIL import Image
    >>> png = io.BytesIO()
    >>> Image.fromarray(np.full((2, 3), 255, np.uint8)).save(png, format="PNG")
    >>> decode_bytes(png.getvalue(), "content").shape
    (3, 2, 3)
    >>> bgr = bytes([255, 0, 0])  # one blue pixel as Spark's image source stores it
    >>> decode_spark_image(1, 1, 3, bgr, "image")[:, 0, 0].tolist()
    [0, 0, 255]
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from sparkdl.errors import ConfigError, SchemaError

#: The fields of the struct Spark's ``image`` source reads into its ``image`` column.
SPARK_IMAGE_FIELDS = ("origin", "height", "width", "nChannels", "mode", "data")

#: What the error for images of different sizes suggests.
RESIZE_HINT = ("Add a resizing transform, e.g. transform=v2.Compose([v2.Resize((32, 32)), "
               "v2.ToDtype(torch.float32, scale=True)]) (from torchvision.transforms import "
               "v2), and the same resize in scoreTransform.")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("Image columns are decoded with Pillow, which is not installed: "
                          "pip install 'sparkdl[images]' (Pillow and torchvision) on the "
                          "driver and the executors.") from None
    return Image


def _where(column: str, origin: str | None) -> str:
    return f"column {column!r}" + (f" (file {origin})" if origin else "")


def decode_bytes(data: bytes, column: str, origin: str | None = None) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ... what Pillow reads) as uint8 RGB ``(3, H, W)``.

    Raises:
        SchemaError: the bytes are not an image Pillow can read, naming the column
            and the file when known.
    """
    image_module = _pillow()
    try:
        with image_module.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad bytes
        raise SchemaError(
            f"Image {_where(column, origin)} cannot be decoded: {type(e).__name__}: {e}. "
            "A binary input column must hold image files Pillow reads (PNG, JPEG, ...); "
            "filter the others out, e.g. binaryFile's pathGlobFilter='*.png'.") from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def decode_spark_image(height: int, width: int, channels: int, data: bytes, column: str,
                       origin: str | None = None) -> np.ndarray:
    """A Spark ``image`` source row (BGR(A) or gray bytes) as uint8 RGB ``(3, H, W)``.

    Raises:
        SchemaError: an invalid image (the source's ``-1`` fields) or bytes that do
            not fill ``height x width x nChannels``.
    """
    if height is None or height < 1 or width < 1 or channels not in (1, 3, 4) or \
            data is None or len(data) != height * width * channels:
        raise SchemaError(
            f"Image {_where(column, origin)} is not a valid image of the image source "
            f"(height={height}, width={width}, nChannels={channels}, "
            f"{0 if data is None else len(data)} bytes). Read with "
            "spark.read.format('image').option('dropInvalid', True).")
    pixels = np.frombuffer(data, dtype=np.uint8).reshape(height, width, channels)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    else:
        pixels = pixels[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


class ImageColumn:
    """The images of one record batch's column, decoded when rows are gathered.

    Args:
        arr: the column: binary (encoded files) or the ``image`` source struct.
        column: its name, for errors.
        origins: per row, the file it came from (binaryFile's ``path``), or ``None``.
    """

    def __init__(self, arr: pa.Array, column: str, origins: pa.Array | None = None):
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.null_count:
            raise SchemaError(f"Image column {column!r} has {arr.null_count} null value(s) "
                              "in this batch; drop them before training or scoring.")
        self.arr, self.column, self.origins = arr, column, origins
        self.struct = pa.types.is_struct(arr.type)

    def __len__(self) -> int:
        return len(self.arr)

    def decode(self, row: int) -> np.ndarray:
        """Row ``row`` as uint8 RGB ``(3, H, W)``."""
        if self.struct:
            fields = {name: self.arr.field(name)[row].as_py()
                      for name in ("origin", "height", "width", "nChannels")}
            return decode_spark_image(fields["height"], fields["width"], fields["nChannels"],
                                      self.arr.field("data")[row].as_py(), self.column,
                                      fields["origin"])
        origin = self.origins[row].as_py() if self.origins is not None else None
        return decode_bytes(self.arr[row].as_py(), self.column, origin)


def prepare_images(images: Sequence[np.ndarray], transform: Callable | None, column: str,
                   shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Transform each decoded image and stack them: float32 ``(batch, C, H, W)``.

    Args:
        images: uint8 ``(3, H, W)`` arrays.
        transform: applied to each image as a uint8 tensor; ``None``: none.
        column: the input column, for errors.
        shape: the per-image shape the network was checked with (training), or
            ``None`` (scoring: any shape all images share).

    Raises:
        SchemaError: images of different shapes (with the resize to add), or of
            another shape than ``shape``.
        ConfigError: the transform fails or does not return a tensor.
    """
    import torch

    out = []
    for image in images:
        tensor = torch.from_numpy(image)
        if transform is not None:
            try:
                tensor = transform(tensor)
            except Exception as e:  # noqa: BLE001 - the user's transform, named in the error
                raise ConfigError(f"The transform of image column {column!r} failed on an "
                                  f"image of shape {list(image.shape)}: "
                                  f"{type(e).__name__}: {e}") from e
            if not isinstance(tensor, torch.Tensor):
                raise ConfigError(f"The transform of image column {column!r} must return a "
                                  f"tensor. Received: {type(tensor).__name__} (end a "
                                  "torchvision pipeline with v2.ToImage()/v2.ToDtype).")
        out.append(tensor)
    if not out:
        return np.zeros((0, *(shape or ())), dtype=np.float32)
    sizes = sorted({tuple(t.shape) for t in out})
    if len(sizes) > 1:
        raise SchemaError(f"Image column {column!r} has images of different sizes in one "
                          f"batch ({', '.join(str(list(s)) for s in sizes[:4])}): they "
                          f"cannot be stacked into one tensor. {RESIZE_HINT}")
    if shape is not None and sizes[0] != tuple(shape):
        raise SchemaError(f"Image column {column!r} has images of shape {list(sizes[0])} "
                          f"after the transform, but the network was checked with "
                          f"{list(shape)} (the first image's). {RESIZE_HINT}")
    batch = torch.stack(out)
    batch = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
    return batch.numpy()


def check_transform(name: str, fn) -> Callable | None:
    """``fn`` if it is ``None`` or callable, else a :class:`ConfigError`."""
    if fn is not None and not callable(fn):
        raise ConfigError(f"{name} must be a callable taking one uint8 image tensor "
                          "(C, H, W) and returning a tensor (e.g. a torchvision v2.Compose). "
                          f"Received: {type(fn).__name__}")
    return fn


def sample_shape(row_value, kind: str, column: str, transforms: dict[str, Callable | None]
                 ) -> tuple[int, ...]:
    """The per-image shape the network receives, from one image of the column.

    The driver decodes this one image (a row of ``df.select(column).first()``) so the
    network can be probed, and the shape each transform gives checked, before the job.

    Args:
        row_value: the column's value in one row (bytes, or the image struct as a Row).
        kind: ``"binary"`` or ``"struct"``.
        column: the column name.
        transforms: by name (``transform``, ``scoreTransform``), the transforms to check.

    Raises:
        ConfigError: two transforms give images of different shapes.
    """
    if kind == "struct":
        image = decode_spark_image(row_value["height"], row_value["width"],
                                   row_value["nChannels"], bytes(row_value["data"]), column,
                                   row_value["origin"])
    else:
        image = decode_bytes(bytes(row_value), column)
    shapes = {name: prepare_images([image], fn, column).shape[1:]
              for name, fn in transforms.items()} or \
        {"none": prepare_images([image], None, column).shape[1:]}
    if len(set(shapes.values())) > 1:
        found = ", ".join(f"{k}: {list(v)}" for k, v in shapes.items())
        raise ConfigError(f"The transforms of image column {column!r} give images of "
                          f"different shapes: {found}. "
                          "The network sees both (training and validation/scoring): make "
                          "them resize to the same size.")
    return tuple(next(iter(shapes.values())))
