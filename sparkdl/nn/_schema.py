"""The JSON Schema (draft 2020-12) of the network spec, shipped in ``sparkdl/schemas``.

Example:
    >>> schema()["properties"]["format"]["const"]
    'sparkdl.network/v1'
    >>> validate({"format": "sparkdl.network/v1", "inputs": [{"name": "x", "shape": [3]}],
    ...           "layers": [{"type": "Dense"}]})
    Traceback (most recent call last):
    ...
    sparkdl.errors.ConfigError: Invalid network spec at layers/0: 'units' is a required property
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from sparkdl.errors import ConfigError

SCHEMA_FILE = "network-v1.schema.json"


@functools.cache
def schema() -> dict:
    """The schema as a dict (read once from the package data)."""
    return json.loads(resources.files("sparkdl").joinpath("schemas", SCHEMA_FILE).read_text())


@functools.cache
def _validator():
    import jsonschema

    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema())
    return cls(schema())


def validate(obj) -> None:
    """Check ``obj`` against the schema.

    Raises:
        ConfigError: naming the JSON path of the most relevant error and what is wrong.
    """
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(obj))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "<root>"
        message = error.message
        if not error.absolute_path and error.validator in ("required", None):
            if error.validator is None:  # the false schema: layers with nodes/outputs
                message = "'layers' cannot be given with 'nodes' or 'outputs'"
            message += (". A spec has either 'layers' (a sequential stack) or 'nodes' and "
                        "'outputs' (a graph)")
        raise ConfigError(f"Invalid network spec at {path}: {message}")
