"""Shared fixtures: real DuckDB files in tmp dirs and seeded synthetic embeddings."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))


def blobs(n_per: int = 100, k: int = 5, d: int = 32, spread: float = 0.05, seed: int = 0,
          sizes: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters on the unit sphere: (X float32 (n, d), true labels)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    sizes = sizes or [n_per] * k
    X = np.concatenate([c + spread * rng.normal(size=(s, d)) for c, s in zip(centers, sizes)])
    y = np.repeat(np.arange(k), sizes)
    return X.astype(np.float32), y


def embedding_table(X: np.ndarray, **extra) -> pa.Table:
    emb = pa.FixedSizeListArray.from_arrays(pa.array(X.astype(np.float32).ravel()), X.shape[1])
    return pa.table({"doc_id": np.arange(len(X), dtype=np.int64), **extra, "embedding": emb})


def load_table(con, name: str, X: np.ndarray, **extra) -> None:
    """CREATE TABLE name(doc_id BIGINT, ..., embedding FLOAT[d]) from a matrix."""
    con.register("__t", embedding_table(X, **extra))
    con.sql(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * EXCLUDE (embedding), '
            f"CAST(embedding AS FLOAT[{X.shape[1]}]) AS embedding FROM __t").fetchall()
    con.unregister("__t")


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "analytics.duckdb")


@pytest.fixture
def con(db_path):
    import duckcluster

    c = duckcluster.connect(db_path)
    yield c
    c.close()


@pytest.fixture
def docs(con):
    """Table docs: 5 blobs x 100 rows, 32-d, with the true label in column topic."""
    X, y = blobs()
    load_table(con, "docs", X, topic=y.astype(np.int32))
    return X, y


def stock_cli() -> str:
    """Path of the DuckDB CLI binary: the duckdb-cli wheel's executable, else `duckdb` on PATH."""
    spec = importlib.util.find_spec("duckdb_cli")
    if spec and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "duckdb"
        if binary.is_file():
            return str(binary)
    found = shutil.which("duckdb")
    if not found:
        pytest.skip("the stock DuckDB CLI is not installed (pip install duckdb-cli)")
    return found
