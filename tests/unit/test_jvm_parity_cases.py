"""The Python verdicts that ScalaTest compares against are those of today's sparkdl.nn.

``jvm/src/test/python/make_parity_cases.py`` records what ``Network.from_json``
says about ~1,200 specs; a change to ``sparkdl/nn`` or the schema without
re-running it would let the Scala DSL drift unnoticed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "jvm/src/test/python/make_parity_cases.py"


def test_recorded_python_verdicts_are_current():
    spec = importlib.util.spec_from_file_location("make_parity_cases", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path, text in module.render().items():
        assert path.read_text() == text, (
            f"{path} is stale: run .venv/bin/python jvm/src/test/python/make_parity_cases.py")
