"""Driver-side checks and preparation of the columns a network reads.

Everything here runs before the barrier job: a bad column is reported in seconds,
with the column name, what was found and what to change. Checks that need the
data (nulls, ragged arrays, label range, emptiness) share one aggregate query.

Example:
    >>> from pyspark.sql.types import ArrayType, FloatType
    >>> column_kind(ArrayType(ArrayType(FloatType())))
    ('array', 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    IntegralType,
    NumericType,
    StructType,
)

from sparkdl.data.inputs import InputSpec, Padding
from sparkdl.errors import ConfigError, SchemaError

#: What the README lists as supported; echoed in errors.
SUPPORTED = ("Spark ML vector (dense or sparse)", "array<numeric> (nested arrays for tensors)",
             "numeric (int, long, float, double; several columns allowed)",
             "images in inputCols (binary image files, the image source's struct)")


def column_kind(data_type: DataType) -> tuple[str, int] | None:
    """Classify a Spark type as ``("vector", 1)``, ``("array", depth)`` or ``("number", 0)``.

    Returns ``None`` for types sparkdl cannot feed to a network.
    """
    if isinstance(data_type, VectorUDT):
        return ("vector", 1)
    if isinstance(data_type, NumericType):
        return ("number", 0)
    if isinstance(data_type, BinaryType):  # encoded image files (binaryFile's content)
        return ("image", "binary")
    if isinstance(data_type, StructType) and {"height", "width", "nChannels", "data"} \
            <= set(data_type.names):  # the image source's struct
        return ("image", "struct")
    depth = 0
    while isinstance(data_type, ArrayType):
        depth += 1
        data_type = data_type.elementType
    if depth and isinstance(data_type, NumericType):
        return ("array", depth)
    return None


def is_integral(data_type: DataType) -> bool:
    """Whether a (nested) array's elements, or a number, are integers (token ids).

    Example:
        >>> from pyspark.sql.types import ArrayType, FloatType, IntegerType
        >>> is_integral(ArrayType(IntegerType())), is_integral(ArrayType(FloatType()))
        (True, False)
    """
    while isinstance(data_type, ArrayType):
        data_type = data_type.elementType
    return isinstance(data_type, IntegralType)


def as_tensor(name: str, kind: tuple, integral: bool) -> Column:
    """:func:`as_float_tensor`, or for integer columns a cast to 64-bit integers; an
    image column as it is (decoded on the workers)."""
    if kind[0] == "image":
        return F.col(name)
    if not integral or kind[0] == "vector":
        return as_float_tensor(name, kind)
    type_str = "bigint"
    for _ in range(kind[1] if kind[0] == "array" else 0):
        type_str = f"array<{type_str}>"
    return F.col(name).cast(type_str)


def require_columns(schema: StructType, names: Sequence[str], role: str,
                    stacked: bool = True) -> dict[str, tuple]:
    """Check that ``names`` exist and have supported types; return their kinds.

    ``stacked``: several columns become one tensor, so they must all be numbers
    (``featuresCols``); ``inputCols`` are separate tensors and take any kind.

    Raises:
        SchemaError: naming the missing column (with the existing ones) or the
            unsupported type (with the supported ones).
    """
    kinds = {}
    for name in names:
        if name not in schema.names:
            raise SchemaError(
                f"{role} column {name!r} does not exist. Existing columns: {schema.names}. "
                f"Set the {role} column parameter to one of them."
            )
        kind = column_kind(schema[name].dataType)
        if kind is None:
            raise SchemaError(
                f"{role} column {name!r} has unsupported type "
                f"{schema[name].dataType.simpleString()}. Supported: {', '.join(SUPPORTED)}."
            )
        if kind[0] == "image" and stacked:
            raise SchemaError(
                f"{role} column {name!r} holds images "
                f"({schema[name].dataType.simpleString()}): images are network inputs, "
                f"one tensor each; pass them with inputCols=[{name!r}].")
        kinds[name] = kind
    if stacked and len(names) > 1 and any(k[0] != "number" for k in kinds.values()):
        raise SchemaError(
            f"Several {role} columns {list(names)} must all be numeric; found "
            f"{ {n: schema[n].dataType.simpleString() for n in names} }. Assemble them "
            "into one array or vector column instead."
        )
    return kinds


def require_boolean(schema: StructType, name: str, role: str) -> None:
    """Check that ``name`` exists and is boolean."""
    if name not in schema.names:
        raise SchemaError(f"{role} column {name!r} does not exist. Existing columns: "
                          f"{schema.names}.")
    if not isinstance(schema[name].dataType, BooleanType):
        raise SchemaError(f"{role} column {name!r} must be boolean; found "
                          f"{schema[name].dataType.simpleString()}.")


def as_float_tensor(name: str, kind: tuple) -> Column:
    """A float32 expression for a column, computed in the JVM (no Python per row).

    Vectors become ``array<float>`` and numeric arrays are cast to float, so
    workers receive float32 buffers they can view without copying.
    """
    col = F.col(name)
    if kind[0] == "vector":
        return vector_to_array(col, "float32")
    if kind[0] == "array":
        type_str = "float"
        for _ in range(kind[1]):
            type_str = f"array<{type_str}>"
        return col.cast(type_str)
    return col.cast("float")


def _levels(name: str, kind: tuple) -> list[Column]:
    """Per-row arrays whose element sizes give each nesting level's lengths."""
    col = vector_to_array(F.col(name)) if kind[0] == "vector" else F.col(name)
    levels = [F.array(F.size(col))]
    inner = col
    for _ in range(1, kind[1]):
        levels.append(F.transform(inner, lambda a: F.size(a)))
        inner = F.flatten(inner)
    return levels


def _leaves(name: str, kind: tuple) -> Column:
    col = F.col(name)
    for _ in range(1, kind[1]):
        col = F.flatten(col)
    return col


@dataclass(frozen=True)
class DataStats:
    """What the one validation query found.

    Attributes:
        rows: number of rows.
        shapes: per feature column, the per-row shape (``None`` if rows == 0); a
            ragged column's first axis is ``None``.
        lengths: per ragged column, its shortest and longest row.
        label_min: smallest label value (scalar labels).
        label_max: largest label value (scalar labels).
        label_size: per-row label size for array/vector labels, else ``None``.
    """

    rows: int
    shapes: dict
    label_min: float | None
    label_max: float | None
    label_size: int | None
    lengths: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)

    def for_label(self, name: str) -> DataStats:
        """These stats with ``label_*`` describing label column ``name`` (labelCols)."""
        if name not in self.labels:
            return self
        low, high, size = self.labels[name]
        return DataStats(self.rows, self.shapes, low, high, size, self.lengths, self.labels)


#: How to let ragged arrays in: said wherever they are refused.
PADDING_HINT = ("or set padding={'value': 0, 'maxLength': 256} (with inputCols or featuresCol) "
                "to pad each batch to its longest row and pass the lengths to forward(x, "
                "lengths)")


def collect_stats(df: DataFrame, feature_kinds: dict[str, tuple], label_col: str | None,
                  label_kind: tuple | None, integer_labels: bool,
                  ragged: Sequence[str] = (), weight_col: str | None = None,
                  extra_labels: dict[str, tuple[tuple, bool]] | None = None) -> DataStats:
    """Run one aggregate query over the data and raise on the first problem found.

    Args:
        df: the data.
        feature_kinds: the input columns and their :func:`column_kind`.
        label_col: the label column, or ``None``.
        label_kind: its kind.
        integer_labels: labels must be class ids.
        ragged: input columns whose rows may differ in length (first axis only).
        weight_col: a numeric column of sample weights (no nulls, none negative).
        extra_labels: more label columns (``labelCols``): name -> (kind, class ids?);
            their range and size are in :attr:`DataStats.labels`.

    Raises:
        SchemaError: for an empty DataFrame, nulls, ragged arrays, empty sequences,
            non-integer class labels, ragged label arrays or negative weights.
    """
    aggs = [F.count(F.lit(1)).alias("rows")]
    checks = dict(feature_kinds)
    labels = {} if label_col is None else {label_col: (label_kind, integer_labels)}
    labels.update(extra_labels or {})
    for name, (kind, _) in labels.items():
        checks[name] = kind
    for i, (name, kind) in enumerate(checks.items()):
        aggs.append(F.sum(F.col(name).isNull().cast("long")).alias(f"n{i}"))
        if kind[0] == "array":
            aggs.append(F.sum(F.exists(_leaves(name, kind), lambda x: x.isNull())
                              .cast("long")).alias(f"e{i}"))
        if kind[0] == "image":  # undecodable-for-sure rows: empty files, invalid images
            bad = F.length(F.col(name)) == 0 if kind[1] == "binary" else \
                F.col(f"{name}.nChannels") < 1
            aggs.append(F.sum(bad.cast("long")).alias(f"bad{i}"))
        for lvl, sizes in enumerate(_levels(name, kind)
                                    if kind[0] not in ("number", "image") else []):
            aggs.append(F.min(F.array_min(sizes)).alias(f"lo{i}_{lvl}"))
            aggs.append(F.max(F.array_max(sizes)).alias(f"hi{i}_{lvl}"))
    if weight_col is not None:
        aggs.append(F.sum(F.col(weight_col).isNull().cast("long")).alias("w_null"))
        aggs.append(F.sum((F.col(weight_col) < 0).cast("long")).alias("w_neg"))
        aggs.append(F.sum(F.isnan(F.col(weight_col).cast("double")).cast("long"))
                    .alias("w_nan"))
    for j, (name, (kind, integer)) in enumerate(labels.items()):
        if kind[0] != "number":
            continue
        aggs.append(F.min(name).cast("double").alias(f"label_min{j}"))
        aggs.append(F.max(name).cast("double").alias(f"label_max{j}"))
        if integer:
            aggs.append(F.sum((F.col(name) != F.floor(name)).cast("long"))
                        .alias(f"label_frac{j}"))
    row = df.agg(*aggs).first().asDict()
    if not row["rows"]:
        raise SchemaError("The DataFrame is empty: there is nothing to train on. Check the "
                          "filters and the source path.")
    shapes = {}
    lengths: dict[str, tuple[int, int]] = {}
    sizes: dict[str, int | None] = {}
    if weight_col is not None:
        for key, what in (("w_null", "null"), ("w_nan", "NaN"), ("w_neg", "negative")):
            if row[key]:
                raise SchemaError(
                    f"Sample weight column {weight_col!r} has {row[key]} {what} value(s) out "
                    f"of {row['rows']} rows. Weights must be numbers >= 0: fill or drop them "
                    "before fitting.")
    for i, name in enumerate(checks):
        role = "label" if name in labels else "feature"
        if row[f"n{i}"]:
            raise SchemaError(
                f"{role.capitalize()} column {name!r} has {row[f'n{i}']} null value(s) out "
                f"of {row['rows']} rows. Drop them (df.na.drop(subset=[{name!r}])) or fill "
                "them before fitting.")
        if row.get(f"bad{i}"):
            raise SchemaError(
                f"Image column {name!r} has {row[f'bad{i}']} row(s) that are no image "
                "(empty files, or invalid images of the image source). Drop them first, "
                "e.g. df.filter(F.length('content') > 0), or read with "
                "spark.read.format('image').option('dropInvalid', True).")
        if row.get(f"e{i}"):
            raise SchemaError(
                f"{role.capitalize()} column {name!r} has {row[f'e{i}']} row(s) with null "
                "array elements. Fill or drop them before fitting.")
        shape = []
        lvl = 0
        while f"lo{i}_{lvl}" in row:
            lo, hi = row[f"lo{i}_{lvl}"], row[f"hi{i}_{lvl}"]
            if lvl == 0 and name in ragged:
                if lo < 1:
                    raise SchemaError(
                        f"Feature column {name!r} has empty arrays: a padded sequence needs "
                        f"at least one element per row. Drop them first "
                        f"(df.filter(F.size({name!r}) > 0)).")
                lengths[name] = (int(lo), int(hi))
                shape.append(None)
                lvl += 1
                continue
            if lo != hi:
                raise SchemaError(
                    f"{role.capitalize()} column {name!r} has ragged arrays: lengths range "
                    f"from {lo} to {hi} at nesting level {lvl + 1}. Every row must have the "
                    f"same shape; filter with F.size({name!r}) == n, or pad the arrays"
                    + (f", {PADDING_HINT}" if role == "feature" and lvl == 0 else "") + ".")
            shape.append(int(lo))
            lvl += 1
        if name in labels:
            sizes[name] = math.prod(shape) if shape else None
        else:
            shapes[name] = tuple(shape)
    for j, name in enumerate(labels):
        if not row.get(f"label_frac{j}"):
            continue
        raise SchemaError(
            f"Label column {name!r} has {row[f'label_frac{j}']} non-integer value(s), but "
            "this loss expects integer class ids 0..C-1. Use a regression loss (mse) or "
            "index the labels (StringIndexer).")
    found = {name: (row.get(f"label_min{j}"), row.get(f"label_max{j}"), sizes.get(name))
             for j, name in enumerate(labels)}
    first = found.get(label_col, (None, None, None))
    return DataStats(row["rows"], shapes, *first, lengths, found)


def input_specs(schema: StructType, names: Sequence[str], kinds: dict[str, tuple],
                padding: Padding | None, shapes: dict | None = None,
                columns: Sequence[str] | None = None) -> tuple[InputSpec, ...]:
    """What each ``inputCols`` column becomes in ``forward``.

    Integer columns (token ids) stay 64-bit integers, the rest are float32; array
    columns are padded sequences when ``padding`` covers them.

    Args:
        schema: the DataFrame's schema.
        names: the input columns, in ``forward``'s order.
        kinds: their :func:`column_kind`.
        padding: the ``padding`` Param, or ``None``.
        shapes: per column, the shape :func:`collect_stats` found (training), or
            ``None`` to take what each batch has (scoring).
        columns: the names the columns have where the specs are used (a fit's
            prepared shard), default ``names``.

    Raises:
        ConfigError: ``padding`` names a column that is not an array input.
    """
    wrong = [c for c in (padding.cols or ()) if c not in names or kinds[c][0] != "array"] \
        if padding is not None else []
    if wrong:
        raise ConfigError(f"padding cols {wrong} are not array columns of inputCols "
                          f"{list(names)}. Received: cols={list(padding.cols)}")
    specs = []
    for i, name in enumerate(names):
        kind = kinds[name]
        if kind[0] == "image":  # decoded on the workers; the estimator sets the shape
            origin = "path" if kind[1] == "binary" and "path" in schema.names else None
            specs.append(InputSpec(columns[i] if columns else name, "float32",
                                   image=kind[1], origin=origin))
            continue
        ragged = padding is not None and kind[0] == "array" and padding.pads(name)
        integral = kind[0] != "vector" and is_integral(schema[name].dataType)
        shape = None
        if shapes is not None:
            found = tuple(shapes[name]) or (1,)
            shape = found[1:] if ragged else found
        specs.append(InputSpec(columns[i] if columns else name,
                               "int64" if integral else "float32", shape, ragged,
                               padding if ragged else None))
    return tuple(specs)
