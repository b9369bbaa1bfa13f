"""A saved model's directory on this machine's disk, without Spark.

For copies that leave Spark: the model an MLflow run logs (its artifacts are files
on the driver), whichever kind of session trained it. The layout is the one
:mod:`sparkdl.ml.persistence` writes everywhere, so ``TorchModel.load`` reads it.

Example::

    writer = TorchModelWriter(model)
    writer._files = LocalFiles(spark)
    writer.files.save_directory("/tmp/m", writer.saveImpl)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from sparkdl.ml.files import ModelFiles

#: The metadata file (pyspark and Scala read every file of ``metadata/``).
METADATA_PART = "part-00000"


class LocalFiles(ModelFiles):
    """:class:`~sparkdl.ml.files.ModelFiles` on the local disk (``spark`` only gives
    the Spark version the metadata records; reading needs none)."""

    def write_bytes(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(data)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read_metadata_line(self, path: str) -> str | None:
        # Hidden and underscore names are not data, as Hadoop's listing skips them.
        parts = sorted(n for n in os.listdir(path) if not n.startswith((".", "_")))
        if not parts:
            return None
        with open(os.path.join(path, parts[0]), encoding="utf-8") as f:
            return f.readline() or None

    def save_metadata(self, instance, path: str, extra: dict) -> None:
        from pyspark.ml.util import DefaultParamsWriter

        text = DefaultParamsWriter._get_metadata_to_save(instance, self.spark,
                                                         extraMetadata=extra)
        self.write_bytes(os.path.join(path, "metadata", METADATA_PART), text.encode() + b"\n")

    def delete(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def save_directory(self, path: str, write: Callable[[str], None],
                       overwrite: bool = False) -> None:
        self.save_in_place(path, write, overwrite)
