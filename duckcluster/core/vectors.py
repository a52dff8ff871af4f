"""Arrow embedding columns -> dense float32 numpy matrices.

Handles the column shapes of SPEC section 3: FLOAT[N]/DOUBLE[N] arrays, LIST
columns, sparse vectors (a MAP of index to weight, or a STRUCT of index and value
lists) and multi-vector columns (a LIST of vectors per row, pooled to one).
NULL rows are reported in a mask, never silently filled; NaN/Inf, empty vectors,
zero vectors and mixed dimensions raise :class:`DataError` naming a row id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._errors import DataError

_POOLS = {"mean": np.mean, "max": np.max, "first": lambda a, axis: a[0]}


@dataclass(frozen=True)
class Vectors:
    """Dense rows for the non-NULL entries, and which rows were NULL."""

    X: np.ndarray  # (n_valid, d) float32
    valid: np.ndarray  # (n,) bool


def to_dense(col: pa.Array | pa.ChunkedArray, ids: Sequence[str], column: str,
             pooling: str = "mean", dim: int | None = None) -> Vectors:
    """Convert one embedding column; ``ids`` name rows in error messages."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    t = arr.type
    if pa.types.is_map(t):
        X = _sparse_map(arr, valid, ids, column, dim)
    elif pa.types.is_struct(t):
        X = _sparse_struct(arr, valid, ids, column, dim)
    elif _is_list(t) and _is_list(t.value_type):
        X = _multi_vector(arr, valid, ids, column, pooling)
    elif _is_list(t) and _is_number(t.value_type):
        if valid.all():  # no filter: it copies the whole batch (154 MB per 100k x 384)
            X = _dense(arr, ids, column)
        else:
            X = _dense(arr.filter(pa.array(valid)), [i for i, v in zip(ids, valid) if v], column)
    else:
        raise DataError(
            f"Column {column!r} has type {t}, which is not an embedding. Use a FLOAT[N] or "
            "DOUBLE[N] array, a LIST of numbers, a MAP(INTEGER, FLOAT) sparse vector, a "
            "STRUCT(indices INTEGER[], values FLOAT[]) or a LIST of vectors."
        )
    return Vectors(X=X, valid=valid)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)


def _dense(arr: pa.Array, ids: Sequence[str], column: str) -> np.ndarray:
    """Non-NULL list rows -> (n, d); every row must have the same length."""
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if pa.types.is_fixed_size_list(arr.type):
        d = arr.type.list_size
        lengths = np.full(n, d)
    else:
        lengths = np.asarray(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
        d = int(lengths[0])
    bad = np.flatnonzero(lengths != d)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"Column {column!r} mixes dimensions: row id {ids[i]!r} has {int(lengths[i])} "
            f"values, but row id {ids[0]!r} has {d}. Every embedding of a column must have "
            "the same length; filter or fix the odd rows."
        )
    if d == 0:
        raise DataError(f"Column {column!r} has an empty embedding at row id {ids[0]!r}; "
                        "filter empty lists out (WHERE len(col) > 0) or make them NULL.")
    flat = arr.flatten()
    if flat.null_count:
        inner = np.asarray(flat.is_null().to_numpy(zero_copy_only=False)).reshape(n, d)
        i = int(np.flatnonzero(inner.any(axis=1))[0])
        raise DataError(f"Column {column!r} has a NULL element inside the embedding of row "
                        f"id {ids[i]!r}; a vector must be all numbers.")
    X = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, d)
    check_finite(X, ids, column)
    return X


def check_finite(X: np.ndarray, ids: Sequence[str], column: str) -> None:
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: no numpy warning
        if X.size and np.isfinite(X.sum(axis=1)).all():  # one pass, no (n, d) temporary
            return
    finite = np.isfinite(X).all(axis=1)  # a NaN/Inf, or finite values whose sum overflowed
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise DataError(f"Column {column!r} has NaN or Inf in the embedding of row id "
                        f"{ids[i]!r}; clean or filter those rows (e.g. WHERE NOT "
                        f"list_any(list_transform(col, lambda x: isnan(x) OR isinf(x)))).")


def unit_rows(X: np.ndarray, ids: Sequence[str], column: str,
              out: np.ndarray | None = None) -> np.ndarray:
    """``X`` (finite, float32) with unit L2 rows, refusing zero vectors
    (:func:`check_nonzero`'s error) — the norms computed once serve both. ``out``: a
    float32 matrix of at least as many rows and the same width to write the rows
    into (its first ``len(X)`` rows are returned), saving a copy."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    odd = ~np.isfinite(norms) | (norms == 0)  # zero, or squares under/overflowing float32
    if odd.any():
        rows = np.flatnonzero(odd)
        check_nonzero(X[rows], [ids[i] for i in rows], column)
        norms = norms.astype(np.float64)
        norms[rows] = np.linalg.norm(X[rows].astype(np.float64), axis=1)
        return (X / norms[:, None]).astype(np.float32)
    if (out is not None and out.dtype == np.float32 and out.ndim == 2
            and out.shape[1] == X.shape[1] and out.shape[0] >= X.shape[0]):
        return np.divide(X, norms[:, None], out=out[:X.shape[0]])
    return X / norms[:, None]


def combine_columns(dense: list, valid: np.ndarray, ids: np.ndarray,
                    out: np.ndarray | None = None) -> np.ndarray:
    """One unit-norm float32 matrix of the rows that have an embedding in every
    column: ``dense`` is ``[(to_dense result, column name), ...]`` and ``valid``
    those rows (n,). Each column is normalized (zero vectors refused), then several
    are concatenated and normalized again."""
    every = bool(valid.all())
    kept_ids = ids if every else ids[valid]
    parts = []
    for v, c in dense:
        sel = valid[v.valid]
        parts.append(unit_rows(v.X if sel.all() else v.X[sel], kept_ids, c,
                               out=out if len(dense) == 1 else None))
    if len(parts) == 1:
        return parts[0]
    return unit_rows(np.concatenate(parts, axis=1), kept_ids, "+".join(c for _, c in dense),
                     out=out)


def check_nonzero(X: np.ndarray, ids: Sequence[str], column: str) -> None:
    zero = ~(np.abs(X) > 0).any(axis=1)
    if zero.any():
        i = int(np.flatnonzero(zero)[0])
        raise DataError(f"Column {column!r} has a zero vector at row id {ids[i]!r}; a zero "
                        "vector has no direction for cosine similarity. Filter it out.")


def _multi_vector(arr, valid, ids, column, pooling) -> np.ndarray:
    keep = [i for i, v in zip(ids, valid) if v]
    arr = arr.filter(pa.array(valid))
    pool = _POOLS[pooling]
    lengths = np.asarray(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise DataError(f"Column {column!r} has an empty list of vectors at row id "
                        f"{keep[int(empty[0])]!r}; filter it out or make it NULL.")
    row_of = np.repeat(np.arange(len(arr)), lengths)
    inner = _dense(arr.flatten(), [keep[r] for r in row_of], column)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if pooling == "mean":
        out = np.add.reduceat(inner, starts, axis=0) / lengths[:, None]
    elif pooling == "max":
        out = np.maximum.reduceat(inner, starts, axis=0)
    else:
        out = inner[starts]
    del pool
    return out.astype(np.float32)


def _sparse(indices: list, values: list, valid, ids, column, dim) -> np.ndarray:
    rows = [(i, v) for i, v, ok in zip(indices, values, valid) if ok]
    keep = [r for r, ok in zip(ids, valid) if ok]
    max_idx = max((max(ix) for ix, _ in rows if ix), default=-1)
    d = dim or (max_idx + 1)
    if d <= 0:
        raise DataError(f"Column {column!r} holds only empty sparse vectors.")
    X = np.zeros((len(rows), d), dtype=np.float32)
    for r, (ix, vals) in enumerate(rows):
        if len(ix) != len(vals):
            raise DataError(f"Sparse vector at row id {keep[r]!r} of {column!r} has "
                            f"{len(ix)} indices but {len(vals)} values.")
        if ix and (min(ix) < 0 or max(ix) >= d):
            raise DataError(f"Sparse vector at row id {keep[r]!r} of {column!r} has an index "
                            f"outside [0, {d}).")
        X[r, ix] = vals
    check_finite(X, keep, column)
    return X


def _sparse_map(arr, valid, ids, column, dim) -> np.ndarray:
    keys = arr.keys if hasattr(arr, "keys") else None
    data = arr.to_pylist()
    idx = [[int(k) for k, _ in (m or [])] for m in data]
    val = [[float(v) for _, v in (m or [])] for m in data]
    del keys
    return _sparse(idx, val, valid, ids, column, dim)


def _sparse_struct(arr, valid, ids, column, dim) -> np.ndarray:
    names = [arr.type.field(i).name for i in range(arr.type.num_fields)]
    ikey = next((n for n in names if n in ("indices", "index", "idx")), None)
    vkey = next((n for n in names if n in ("values", "value", "weights")), None)
    if ikey is None or vkey is None:
        raise DataError(f"Column {column!r} is a STRUCT with fields {names}; a sparse vector "
                        "STRUCT needs 'indices' and 'values' lists.")
    idx = [list(x or []) for x in arr.field(ikey).to_pylist()]
    val = [list(x or []) for x in arr.field(vkey).to_pylist()]
    return _sparse(idx, val, valid, ids, column, dim)


def matrix(column, n: int, dim: int = 0) -> np.ndarray:
    """A list/array column of ``n`` equal-length float vectors as an (n, d) float32 matrix
    (zero-copy where Arrow allows); ``n = 0`` gives shape (0, dim)."""
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.asarray(column.flatten().to_numpy(), dtype=np.float32).reshape(n, -1)

