"""Assign (and enrich) a partitioned Parquet dataset to a run's centroids, into Parquet.

The rows never enter DuckDB: ``'local'`` streams each input file in batches of
``batch_rows`` through this process (memory bounded by one batch), ``'ray'``
reads the files with Ray Data (``read_parquet`` -> ``map_batches`` ->
``write_parquet``), so the batches run on every CPU of the Ray cluster. Both
call :func:`assign_batch`, a pure function of one Arrow table and the
centroids, whose result for a row does not depend on the batch the row
arrives in (see :func:`assign_stable`): the two backends write the same rows.

Output is a folder of Parquet files with the id column (or every source column,
``keep_columns``) plus ``fields``. It is written to a temporary sibling folder
and renamed at the end, so a failed call leaves no partial output.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from .._errors import DataError, SpecError, closest
from .._params import Param, parse_field_list, validate_params
from ..catalog import runs as catalog
from ..catalog.runs import Centroids
from ..core import progress
from ..core.backend import check_address, check_backend, ensure_ray
from ..core.vectors import check_finite, to_dense

#: field -> Arrow type of the output column
FIELDS: dict[str, pa.DataType] = {
    "cluster_id": pa.int32(),
    "similarity": pa.float32(),
    "label": pa.string(),
    "summary": pa.string(),
    "keywords": pa.list_(pa.string()),
    "run_id": pa.string(),
}
DEFAULT_FIELDS = ("cluster_id", "similarity")

OPTIONS: dict[str, Param] = {
    "embedding": Param(str, "embedding", doc="embedding column of the Parquet files"),
    "id": Param(str, "id", nullable=True, doc="id column written to the output"),
    "threshold": Param(float, None, low=-1.0, high=1.0, nullable=True,
                       doc="minimum cosine similarity; below it cluster_id is -1; NULL = the "
                           "run's own threshold (assign_cluster's default); -1 keeps every row"),
    "run_id": Param(str, None, nullable=True, doc="default: the latest successful full run"),
    "keep_columns": Param(bool, False, doc="write every source column, not only the id"),
    "overwrite": Param(bool, False, doc="replace an existing output folder of Parquet files"),
    "backend": Param(str, "local", doc="'local' or 'ray'"),
    "ray_address": Param(str, None, nullable=True, doc="Ray cluster address (else RAY_ADDRESS)"),
    "batch_rows": Param(int, 65_536, low=1, doc="rows per batch"),
}

#: candidates within this cosine of the best one are scored again exactly
_TIE_TOL = 1e-3
_EXACT_CHUNK = 8192


@dataclass(frozen=True)
class Job:
    """The validated options of one call, as the batches see them."""

    embedding: str
    id: str | None
    threshold: float | None
    fields: tuple[str, ...]
    keep_columns: bool


@dataclass(frozen=True)
class AssignResult:
    """What a call wrote."""

    output: str
    run_id: str
    backend: str
    n_files: int
    n_rows: int
    n_assigned: int
    n_noise: int
    n_null: int
    seconds: float

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- the numeric core ---------------------------------------------------------------------

def assign_stable(X: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of ``X`` (n, d), not normalized; ``C`` (k, d) unit rows.

    Returns ``(idx, sims)`` of shape (n,): int64 index into ``C`` and float32
    cosine similarity (NaN for a zero row). BLAS gives a row different last bits
    in batches of different sizes (a 1-row batch goes through gemv), which can
    flip near-ties. So ``X @ C.T`` only shortlists: the centroids within
    ``_TIE_TOL`` of the best are scored again for that row alone in float64, and
    the winner's similarity is its float64 score rounded to float32. A row's
    result therefore depends on the row only. Ties go to the lowest index.
    """
    X = np.asarray(X, dtype=np.float32)
    C = np.asarray(C, dtype=np.float32)
    n = X.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    S = X @ C.T
    idx = np.argmax(S, axis=1)
    best = np.take_along_axis(S, idx[:, None], axis=1)[:, 0]
    cand = S >= (best - _TIE_TOL * norms.astype(np.float32))[:, None]
    for r in np.flatnonzero(cand.sum(axis=1) > 1):
        c = np.flatnonzero(cand[r])
        exact = C[c].astype(np.float64) @ X[r].astype(np.float64)
        idx[r] = c[int(np.argmax(exact))]
    sims = np.empty(n, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in range(0, n, _EXACT_CHUNK):
            e = slice(s, s + _EXACT_CHUNK)
            dots = np.einsum("ij,ij->i", X[e], C[idx[e]], dtype=np.float64)
            sims[e] = (dots / norms[e]).astype(np.float32)
    return idx.astype(np.int64), sims


class _RowNames(Sequence):
    """Row names for error messages ('id 7'), made only when one is shown."""

    def __init__(self, ids: pa.Array | None):
        self.ids = ids

    def __len__(self) -> int:
        return 0 if self.ids is None else len(self.ids)

    def __getitem__(self, i):  # type: ignore[override]
        return str(self.ids[i].as_py()) if self.ids is not None else f"#{i}"


def _matrix(col: pa.ChunkedArray | pa.Array, names: _RowNames, column: str
            ) -> tuple[np.ndarray, np.ndarray]:
    """(X of the non-NULL rows, valid mask): zero-copy for NULL-free float lists."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    t = arr.type
    if (not arr.null_count and (pa.types.is_list(t) or pa.types.is_fixed_size_list(t))
            and pa.types.is_floating(t.value_type) and n):
        flat = arr.flatten()
        d = len(flat) // n
        same = pa.types.is_fixed_size_list(t) or bool((np.diff(arr.offsets.to_numpy()) == d).all())
        if not flat.null_count and same and d and len(flat) == n * d:
            X = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, d)
            check_finite(X, names, column)
            return X, np.ones(n, dtype=bool)
    ids = names if names.ids is not None else [f"#{i}" for i in range(n)]
    v = to_dense(arr, ids, column)
    return v.X, v.valid


def assign_batch(tbl: pa.Table, ref: Centroids, job: Job) -> pa.Table:
    """One batch of source rows -> output rows (id or all columns, then ``job.fields``)."""
    n = tbl.num_rows
    ids = tbl.column(job.id).combine_chunks() if job.id else None
    X, valid = _matrix(tbl.column(job.embedding), _RowNames(ids), job.embedding)
    k = len(ref.cluster_ids)
    cid = np.full(n, -1, dtype=np.int32)
    sim = np.full(n, np.nan, dtype=np.float32)
    pos = np.full(n, -1, dtype=np.int64)
    if k and X.shape[0]:
        if X.shape[1] != ref.C.shape[1]:
            raise DataError(f"The embeddings in {job.embedding!r} have {X.shape[1]} dimensions "
                            f"but run {ref.run_id} has {ref.C.shape[1]}. Use the embedding model "
                            "of the definition's source.")
        idx, best = assign_stable(X, ref.C)
        keep = best >= job.threshold if job.threshold is not None else ~np.isnan(best)
        cid[valid] = np.where(keep, ref.cluster_ids[idx], -1)
        sim[valid] = best
        pos[valid] = np.where(keep, idx, -1)
    null = ~valid
    cols: dict[str, pa.Array] = {}
    if job.keep_columns:
        cols.update({name: tbl.column(name) for name in tbl.column_names})
    elif job.id:
        cols[job.id] = ids
    for f in job.fields:
        cols[f] = _field(f, cid, sim, pos, null, ref)
    return pa.table(cols)


def _field(f: str, cid, sim, pos, null, ref: Centroids) -> pa.Array:
    if f == "cluster_id":
        return pa.array(cid, type=pa.int32(), mask=null)
    if f == "similarity":
        return pa.array(sim, type=pa.float32(), mask=null | np.isnan(sim))
    if f == "run_id":
        return pa.array([None if m else ref.run_id for m in null], type=pa.string())
    values = (ref.labels or {}).get(f) or [None] * len(ref.cluster_ids)
    return pa.array([values[p] if p >= 0 else None for p in pos], type=FIELDS[f])


# -- validation ------------------------------------------------------------------------------

def parse_fields(fields: Any) -> tuple[str, ...]:
    return parse_field_list(fields, FIELDS, DEFAULT_FIELDS, "cluster_assign_parquet", "['cluster_id', 'similarity']")


def parquet_files(source: Any) -> list[str]:
    """The files of a Parquet file, folder (recursively) or glob, sorted."""
    if not isinstance(source, str) or not source.strip():
        raise SpecError("source must be a Parquet file, a folder of Parquet files or a glob "
                        f"such as 'data/*.parquet'. Got {source!r}.")
    s = os.path.expanduser(source.strip())
    if os.path.isdir(s):
        files = glob.glob(os.path.join(s, "**", "*.parquet"), recursive=True)
    elif any(ch in s for ch in "*?["):
        files = [f for f in glob.glob(s, recursive=True) if os.path.isfile(f)]
    else:
        files = [s] if os.path.isfile(s) else []
    if not files:
        raise DataError(f"No Parquet files match {source!r}. Pass a Parquet file, a folder "
                        "holding .parquet files or a glob such as 'data/*.parquet'.")
    return sorted(os.path.abspath(f) for f in files)


def check_columns(files: list[str], job: Job) -> None:
    import pyarrow.parquet as pq

    names = pq.read_schema(files[0]).names
    for role, col in (("embedding", job.embedding), ("id", job.id)):
        if col is not None and col not in names:
            raise SpecError(f"The {role} column {col!r} is not in {files[0]!r}."
                            f"{closest(col, names)} Its columns: {', '.join(names)}.")
    if job.keep_columns:
        clash = [f for f in job.fields if f in names]
        if clash:
            raise SpecError(f"The Parquet files already have column(s) "
                            f"{', '.join(map(repr, clash))}; drop them from fields, or pass "
                            "keep_columns := false.")


def check_output(output: Any, files: list[str], overwrite: bool) -> str:
    """The absolute output folder; an existing one only with ``overwrite`` (Parquet only)."""
    if not isinstance(output, str) or not output.strip():
        raise SpecError(f"output must name a folder to write Parquet files into. Got {output!r}.")
    if "://" in output:
        raise SpecError(f"output must be a local folder (on a multi-node Ray cluster, a shared "
                        f"file system mounted at the same path on every node). Got {output!r}.")
    out = os.path.abspath(os.path.expanduser(output.strip()))
    if any(os.path.commonpath([out, f]) == out for f in files):
        raise SpecError(f"output {output!r} contains source files; pick a folder outside the "
                        "source dataset.")
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise SpecError(f"output {output!r} is a file; pass a folder.")
        entries = os.listdir(out)
        if entries and not overwrite:
            raise SpecError(f"output folder {output!r} exists and is not empty. Pass "
                            "overwrite := true to replace it, or pick a new folder.")
        other = [e for e in entries if not e.endswith(".parquet")]
        if entries and other:
            raise SpecError(f"output folder {output!r} holds files that are not Parquet "
                            f"({', '.join(sorted(other)[:3])}); overwrite only replaces a folder "
                            "of Parquet files. Pick a new folder.")
    return out


def check_not_artifacts(cur, out: str, output: Any) -> None:
    """Refuse an output folder that is, holds or lies inside the artifacts folder or any
    run's artifact folder: ``overwrite := true`` would replace a run's Parquet files."""
    rows = cur.execute(
        "SELECT 'the artifacts folder', value FROM duckcluster.meta WHERE key = 'artifacts_dir' "
        "UNION ALL SELECT 'the artifacts of run ' || run_id, artifacts_path FROM duckcluster.runs "
        "WHERE artifacts_path IS NOT NULL UNION ALL SELECT 'the temporary folder of run ' || "
        "run_id, tmp_path FROM duckcluster.runs WHERE tmp_path IS NOT NULL AND status IN "
        "('queued', 'running')").fetchall()
    hits = []
    for what, path in rows:
        if not path or "://" in path:
            continue
        p = os.path.abspath(path)
        common = os.path.commonpath([out, p])
        if out == p:
            hits.append((0, 0, "is", what, p))
        elif common == p:
            hits.append((1, -len(p), "is inside", what, p))
        elif common == out:
            hits.append((2, len(p), "holds", what, p))
    if hits:
        _, _, how, what, p = min(hits)  # the most telling: the same folder, the closest one
        raise SpecError(
            f"output {output!r} {how} {what} ({p}); cluster_assign_parquet never writes "
            "there, even with overwrite := true. Pick a folder outside the artifacts folder.")


def prepare(source: Any, output: Any, fields: Any, options: Mapping[str, Any]
            ) -> tuple[list[str], str, Job, dict[str, Any]]:
    """Validate everything before any work: (files, output folder, job, options)."""
    opts = validate_params("cluster_assign_parquet", OPTIONS, options)
    check_backend(opts["backend"])
    check_address(opts["ray_address"])
    fields_t = parse_fields(fields)
    if "cluster_id" not in fields_t:
        raise SpecError("fields must include 'cluster_id'. Got "
                        f"{list(fields_t)!r}.")
    if opts["id"] is None and not opts["keep_columns"]:
        raise SpecError("Name the id column (id := 'doc_id'), or pass keep_columns := true to "
                        "write every source column.")
    job = Job(embedding=opts["embedding"], id=opts["id"], threshold=opts["threshold"],
              fields=fields_t, keep_columns=opts["keep_columns"])
    files = parquet_files(source)
    check_columns(files, job)
    out = check_output(output, files, opts["overwrite"])
    return files, out, job, opts


# -- the two backends ------------------------------------------------------------------------

def _unreadable(exc: BaseException, where: str) -> DataError:
    hint = ""
    if "list offsets" in str(exc):  # measured with DuckDB 2.0 files and pyarrow 26
        hint = (" DuckDB writes NULL fixed-size arrays (FLOAT[N]) in a form pyarrow cannot "
                "read; write the column as a list instead: COPY (SELECT * REPLACE "
                "(CAST(embedding AS FLOAT[]) AS embedding) FROM ...) TO '...parquet'.")
    return DataError(f"Cannot read the Parquet data of {where}: {exc}.{hint}")


def _batches(path: str, batch_rows: int, cols: list[str] | None):
    import pyarrow.parquet as pq

    it = pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=cols)
    while True:
        try:
            rb = next(it)
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise _unreadable(exc, repr(path)) from None
        yield rb


def _run_local(files: list[str], tmp: str, ref: Centroids, job: Job, batch_rows: int) -> None:
    import pyarrow.parquet as pq

    cols = None if job.keep_columns else [c for c in (job.id, job.embedding) if c]
    for i, path in enumerate(files):
        writer = None
        try:
            for rb in _batches(path, batch_rows, cols):
                out = assign_batch(pa.Table.from_batches([rb]), ref, job)
                if writer is None:
                    writer = pq.ParquetWriter(os.path.join(tmp, f"part-{i:05d}.parquet"),
                                              out.schema)
                writer.write_table(out)
        finally:
            if writer is not None:
                writer.close()
        progress.step("Parquet files", i + 1, len(files))


def _ray_batch(tbl: pa.Table, ref: Centroids, job: Job) -> pa.Table:
    return assign_batch(tbl, ref, job)


def _run_ray(files: list[str], tmp: str, ref: Centroids, job: Job, batch_rows: int,
             address: str | None) -> None:
    ray = ensure_ray(address)
    cols = None if job.keep_columns else [c for c in (job.id, job.embedding) if c]
    ds = ray.data.read_parquet(files, partitioning=None)
    if cols is not None:
        ds = ds.select_columns(cols)  # pushed down into the read
    ds = ds.map_batches(_ray_batch, batch_format="pyarrow", batch_size=batch_rows,
                        fn_kwargs={"ref": ref, "job": job}, zero_copy_batch=True)
    try:
        ds.write_parquet(tmp)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, pa.ArrowInvalid):
            raise _unreadable(cause, "the dataset") from None
        if isinstance(cause, BaseException):
            raise cause from None
        raise


def _stats(tmp: str) -> tuple[int, int, int, int]:
    """(rows, assigned, noise, NULL) of the files written."""
    import pyarrow.dataset as pads

    files = sorted(glob.glob(os.path.join(tmp, "*.parquet")))
    if not files:
        return 0, 0, 0, 0
    col = pads.dataset(files, format="parquet").to_table(columns=["cluster_id"]).column(0)
    a = col.to_numpy(zero_copy_only=False)
    null = int(col.null_count)
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    noise = int((a[valid] == -1).sum())
    return len(a), len(a) - null - noise, noise, null


def run(files: list[str], out: str, ref: Centroids, job: Job, opts: Mapping[str, Any]
        ) -> AssignResult:
    """Write the output folder (atomically: a temporary sibling renamed at the end)."""
    t0 = time.perf_counter()
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        if opts["backend"] == "ray":
            _run_ray(files, tmp, ref, job, opts["batch_rows"], opts["ray_address"])
        else:
            _run_local(files, tmp, ref, job, opts["batch_rows"])
        n_rows, n_assigned, n_noise, n_null = _stats(tmp)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return AssignResult(output=out, run_id=ref.run_id, backend=opts["backend"],
                        n_files=len(files), n_rows=n_rows, n_assigned=n_assigned,
                        n_noise=n_noise, n_null=n_null,
                        seconds=round(time.perf_counter() - t0, 3))


def load_centroids(cur, name: str, run_id: str | None, fields: Sequence[str]) -> Centroids:
    """The top-level centroids (and label fields) of ``run_id`` or the latest full run."""
    run_id = catalog.resolve_run(cur, name, run_id, mode=None if run_id else "full")
    return catalog.centroid_matrix(cur, run_id, tuple(f for f in fields
                                                      if f in ("label", "summary", "keywords")))


def _refuse_partitioned(cur, name: str) -> None:
    """A partition_by definition's rows belong to their partition's clusters; this path
    assigns to every centroid of the run, so it refuses them (before any file is written)."""
    by = catalog.get_definition(cur, name).partition_by
    if by is not None:
        raise SpecError(
            f"cluster_assign_parquet assigns each row to the nearest centroid of the whole run, "
            f"but {name!r} clusters each value of {by!r} on its own. Assign in SQL instead: "
            f"assign_cluster(embedding, {name!r}, partition := {by}) over read_parquet(...), "
            "or cluster_execute(mode := 'assign').")


def assign_parquet(cur, name: str, source: Any, output: Any, fields: Any = None,
                   options: Mapping[str, Any] | None = None) -> AssignResult:
    """Validate, read the centroids, then assign every row of ``source`` into ``output``."""
    if isinstance(output, str) and output.strip() and "://" not in output:
        check_not_artifacts(cur, os.path.abspath(os.path.expanduser(output.strip())), output)
    files, out, job, opts = prepare(source, output, fields, options or {})
    _refuse_partitioned(cur, name)
    ref = load_centroids(cur, name, opts["run_id"], job.fields)
    if job.threshold is None:  # the run's own, as assign_cluster's default
        job = replace(job, threshold=catalog.own_threshold(cur, ref.run_id))
    return run(files, out, ref, job, opts)
