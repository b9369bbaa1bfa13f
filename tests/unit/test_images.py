"""Image columns: decoding, BGR order, transforms and size errors (no Spark)."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from sparkdl.data.images import (
    decode_bytes,
    decode_spark_image,
    prepare_images,
    sample_shape,
)
from sparkdl.data.inputs import InputRows, InputSpec, batch_columns
from sparkdl.errors import ConfigError, SchemaError


def _png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(out, format="PNG")
    return out.getvalue()


def _spark_struct(rows: list[dict]) -> pa.StructArray:
    return pa.array(rows, pa.struct([("origin", pa.string()), ("height", pa.int32()),
                                     ("width", pa.int32()), ("nChannels", pa.int32()),
                                     ("mode", pa.int32()), ("data", pa.binary())]))


def test_png_decodes_to_rgb_chw_and_gray_is_repeated():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 10
    rgb[..., 2] = 200
    out = decode_bytes(_png(rgb), "content")
    assert out.shape == (3, 4, 5) and out.dtype == np.uint8
    assert out[:, 0, 0].tolist() == [10, 0, 200]
    gray = decode_bytes(_png(np.full((2, 2), 7, np.uint8)), "content")
    assert gray[:, 1, 1].tolist() == [7, 7, 7]


def test_spark_image_bgr_and_bgra_become_rgb():
    bgr = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)  # 1x2, B G R
    out = decode_spark_image(1, 2, 3, bgr.tobytes(), "image")
    assert out[:, 0, 1].tolist() == [6, 5, 4]
    bgra = np.array([[[1, 2, 3, 255]]], np.uint8)
    assert decode_spark_image(1, 1, 4, bgra.tobytes(), "image")[:, 0, 0].tolist() == [3, 2, 1]
    assert decode_spark_image(1, 1, 1, b"\x09", "image")[:, 0, 0].tolist() == [9, 9, 9]


def test_invalid_spark_image_and_undecodable_bytes_name_column_and_file():
    with pytest.raises(SchemaError, match=r"'image' \(file file:/x.jpg\).*dropInvalid"):
        decode_spark_image(-1, -1, -1, b"", "image", "file:/x.jpg")
    with pytest.raises(SchemaError, match=r"'content' \(file /data/a.txt\) cannot be decoded"):
        decode_bytes(b"not an image", "content", "/data/a.txt")


def test_batch_is_float_in_unit_range_without_transform():
    img = np.full((3, 2, 2), 255, np.uint8)
    out = prepare_images([img, img * 0], None, "content")
    assert out.dtype == np.float32 and out.shape == (2, 3, 2, 2)
    assert out.max() == 1.0 and out.min() == 0.0


def test_transform_applies_per_image_and_float_results_are_kept():
    t = v2.Compose([v2.Resize((6, 6)), v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize([0.5] * 3, [0.5] * 3)])
    imgs = [np.zeros((3, 4, 4), np.uint8), np.full((3, 8, 5), 255, np.uint8)]
    out = prepare_images(imgs, t, "content")
    assert out.shape == (2, 3, 6, 6)
    assert out[0].min() == -1.0 and out[1].max() == 1.0
    gray = prepare_images(imgs[:1], v2.Grayscale(), "content")
    assert gray.shape == (1, 1, 4, 4)


def test_images_of_different_sizes_ask_for_a_resize():
    imgs = [np.zeros((3, 4, 4), np.uint8), np.zeros((3, 5, 4), np.uint8)]
    with pytest.raises(SchemaError, match=r"different sizes.*v2.Resize"):
        prepare_images(imgs, None, "content")
    with pytest.raises(SchemaError, match=r"shape \[3, 4, 4\].*checked with \[3, 8, 8\]"):
        prepare_images(imgs[:1], None, "content", (3, 8, 8))


def test_a_failing_or_non_tensor_transform_is_a_config_error():
    img = [np.zeros((3, 2, 2), np.uint8)]
    with pytest.raises(ConfigError, match="must return a tensor"):
        prepare_images(img, lambda x: x.numpy(), "content")
    with pytest.raises(ConfigError, match="transform of image column 'content' failed"):
        prepare_images(img, lambda x: 1 / 0, "content")


def test_sample_shape_checks_both_transforms_agree():
    png = _png(np.zeros((8, 8, 3), np.uint8))
    assert sample_shape(png, "binary", "content", {}) == (3, 8, 8)
    assert sample_shape(png, "binary", "content",
                        {"transform": v2.Resize((4, 4))}) == (3, 4, 4)
    with pytest.raises(ConfigError, match="different shapes"):
        sample_shape(png, "binary", "content", {"transform": v2.Resize((4, 4)),
                                                "scoreTransform": v2.Resize((5, 5))})


def test_input_rows_gather_binary_and_struct_images_across_batches():
    pngs = [_png(np.full((2, 2, 3), v, np.uint8)) for v in (0, 51, 102)]
    batches = [pa.record_batch({"content": pa.array(pngs[:2], pa.binary()),
                                "path": pa.array(["a", "b"])}),
               pa.record_batch({"content": pa.array(pngs[2:], pa.binary()),
                                "path": pa.array(["c"])})]
    spec = InputSpec("content", "float32", image="binary", origin="path")
    rows = InputRows.of([batch_columns(b, [spec]) for b in batches], [spec])
    (x,) = rows.arguments([2, 0])
    assert x.shape == (2, 3, 2, 2)
    assert np.allclose(x[:, 0, 0, 0], [0.4, 0.0])
    (x,) = rows.arguments([1], transform=lambda t: t[:1])
    assert x.shape == (1, 1, 2, 2)

    bgr = np.zeros((1, 1, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    struct = _spark_struct([{"origin": "o", "height": 1, "width": 1, "nChannels": 3,
                             "mode": 16, "data": bgr.tobytes()}])
    spec = InputSpec("image", "float32", image="struct")
    (x,) = InputRows.of([[struct]], [spec]).arguments([0])
    assert x[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_undecodable_row_names_its_file_when_gathered():
    batch = pa.record_batch({"content": pa.array([b"junk"], pa.binary()),
                             "path": pa.array(["hdfs:///x/bad.png"])})
    spec = InputSpec("content", "float32", image="binary", origin="path")
    rows = InputRows.of([batch_columns(batch, [spec])], [spec])
    with pytest.raises(SchemaError, match="bad.png"):
        rows.arguments([0])


def test_transforms_survive_copy_and_pickle():
    from sparkdl import TorchEstimator

    t = v2.Compose([v2.Resize((4, 4)), v2.ToDtype(torch.float32, scale=True)])
    est = TorchEstimator(model=torch.nn.Linear(2, 2), inputCols=["content"], transform=t,
                         scoreTransform=v2.Resize((4, 4)))
    copy = est.copy()
    assert copy.getTransform() is t and copy.getScoreTransform() is not None
    assert isinstance(pickle.loads(pickle.dumps(t)), v2.Compose)
    with pytest.raises(ConfigError, match="transform must be a callable"):
        est.setTransform(3)
    assert est.setTransform(None).getTransform() is None
