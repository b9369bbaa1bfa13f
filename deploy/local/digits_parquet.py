"""Write scikit-learn's digits as Parquet: the input of the Scala example
(``submit_scala_digits.sh``) and of the cluster tests' jobs.

Columns: ``features`` (64 doubles, the 8x8 image scaled to [0, 1]) and ``label``
(long). Run as a script, in a process of its own (importing scikit-learn sets
``KMP_*`` variables in the environment of whoever imports it)::

    .venv/bin/python deploy/local/digits_parquet.py out/digits.parquet
"""

from __future__ import annotations

import sys


def write(path: str) -> None:
    """Write the 1797 digits to ``path`` (a local Parquet file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    d = load_digits()
    pq.write_table(pa.table({"features": [list(map(float, r / 16.0)) for r in d.data],
                             "label": d.target.astype("int64")}), path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: digits_parquet.py OUTPUT.parquet")
    write(sys.argv[1])
