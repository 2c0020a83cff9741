"""Result tables on disk: each as CSV, and as Parquet beside it where pyarrow is installed.

Parquet keeps the column types a CSV loses (categories, integers with gaps, booleans), so pandas,
polars or DuckDB read the tables back as written. pyarrow is the ``parquet`` extra, outside the
core install; without it the CSVs are written alone and :data:`PARQUET_NOTE` says so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

PARQUET_NOTE = "no Parquet copies of the tables: they need pyarrow (pip install 'festgym[parquet]')"


def parquet_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def write_tables(out: Path, tables: Mapping[str, pd.DataFrame]) -> dict[str, Path]:
    """Write each table as ``<name>.csv`` (and ``<name>.parquet`` where pyarrow is installed) into
    ``out``; returns file name -> path, in the order written."""
    parquet = parquet_available()
    files: dict[str, Path] = {}
    for name, frame in tables.items():
        files[f"{name}.csv"] = out / f"{name}.csv"
        frame.to_csv(files[f"{name}.csv"], index=False)
        if parquet:
            files[f"{name}.parquet"] = out / f"{name}.parquet"
            frame.to_parquet(files[f"{name}.parquet"], index=False)
    return files
