"""Reading a source in validated, normalized batches (the DuckDB edge).

Every run reads through :func:`batches`, ``BATCH_ROWS`` rows at a time, so
assignment and sampled fits stream with bounded memory. Each batch is checked
(NaN/Inf, zero vectors, mixed dimensions) and its embeddings L2-normalized
(several columns: each normalized, then concatenated and normalized again). Ids
are checked once, in SQL, before reading (NULL or duplicate ids).

Order: tables and Parquet/CSV files are read in their scan order, which DuckDB
keeps stable (``preserve_insertion_order``), so no global sort holds the whole
source in memory; views and query sources (whose order a join may shuffle) are
read ``ORDER BY`` the id. In-memory runs sort the rows by id afterwards
(:func:`read_all`), so their result never depends on the scan order. The input
hash covers ids and vectors in the order a run used them.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from .._errors import DataError, ResourceError, SpecError
from .._source import (
    _FILE_RE,
    describe,
    find_key,
    name_bad_file,
    quote_ident,
    require_columns,
    source_sql,
)
from ..core import progress
from ..core.spec import ClusterSpec
from ..core.vectors import combine_columns, to_dense

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Plan:
    """What a run will read: the source SQL, the id column, row count and widths."""

    src: str
    id_col: str
    n_rows: int
    sparse_dims: dict[str, int]  # width of each sparse column, from the whole source
    dim: int | None  # embedding width after concatenation, when known before reading
    ordered: bool = True  # ORDER BY the id when streaming (views, queries)
    id_type: str = "VARCHAR"  # DuckDB type of the id column


@dataclass
class Batch:
    ids: np.ndarray  # (m,) object str, rows with an embedding
    id_arrow: pa.Array  # the same ids as an Arrow string array
    X: np.ndarray  # (m, d) float32 normalized
    start: int  # position of the batch's first row among all source rows
    valid: np.ndarray  # (rows in batch,) bool: which rows had an embedding
    key: pa.Array | None = None  # the ids in their own type (batches(with_key=True))


class ReadStats:
    """Rows read, NULL embeddings skipped, and the SHA-256 of what was read.

    Hashing (~0.3 s per 100k x 384 rows) runs on a helper thread — hashlib releases
    the GIL — overlapping the read and the fit; at most one batch waits for it, so
    memory stays bounded. :meth:`hexdigest` waits for the last batch.
    """

    def __init__(self) -> None:
        self.n_rows = 0
        self.n_null = 0
        self.hash = hashlib.sha256()
        self._pending: threading.Thread | None = None

    def update(self, ids: np.ndarray, X: np.ndarray) -> None:
        head = "\x1f".join(ids.tolist()).encode() + b"\x1e"
        body = np.ascontiguousarray(X).reshape(-1).view(np.uint8)
        self._wait()
        t = threading.Thread(target=self._digest, args=(head, body),
                             name="duckcluster-hash", daemon=True)
        try:
            t.start()
        except RuntimeError:  # no new threads while the interpreter shuts down
            self._digest(head, body)
            return
        self._pending = t

    def _digest(self, head: bytes, body: np.ndarray) -> None:
        self.hash.update(head)
        self.hash.update(body)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.join()
            self._pending = None

    def hexdigest(self) -> str:
        self._wait()
        return self.hash.hexdigest()


def pin_source(source: str) -> str:
    """A stored source that reads the same files from any working directory.

    A relative Parquet/CSV path or glob becomes absolute, resolved against the working
    directory of the process that creates the definition (where DuckDB just read it to
    validate the columns); URLs and table names are kept. A query source that reads a
    relative path that exists here is refused with the absolute path to write instead
    (rewriting text inside a query could change what the query means)."""
    s = source.strip()
    if s.startswith("(") and s.endswith(")"):
        for lit in _string_literals(s):
            if _is_local_relative(lit) and _glob.glob(os.path.expanduser(lit)):
                raise SpecError(
                    f"The query source reads the relative path {lit!r}, which each process "
                    "would resolve against its own working directory (a scheduler, a "
                    "notebook and the CLI would read different files). Write the absolute "
                    f"path instead: {os.path.abspath(os.path.expanduser(lit))!r}.")
        return source
    if _FILE_RE.search(s) and _is_local_relative(s) and _glob.glob(os.path.expanduser(s)):
        return os.path.abspath(os.path.expanduser(s))  # (a table named 'a*b' is no file)
    return source


def _is_local_relative(path: str) -> bool:
    return "://" not in path and not os.path.isabs(os.path.expanduser(path))


def _string_literals(sql: str) -> list[str]:
    """The '...' string constants of a SQL text (DuckDB's own tokenizer)."""
    try:
        tokens = duckdb.tokenize(sql)
    except Exception:  # noqa: BLE001 - not SQL DuckDB can tokenize: the binder says why later
        return []
    out = []
    for i, (pos, kind) in enumerate(tokens):
        if kind != duckdb.token_type.string_const:
            continue
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        text = sql[pos:end].rstrip()
        if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
            out.append(text[1:-1].replace("''", "'"))
    return out


def plan(cur, spec: ClusterSpec) -> Plan:
    """What a run will read (checks ids and counts rows first, in SQL)."""
    try:
        return _plan(cur, spec)
    except duckdb.Error as exc:  # a damaged file of a glob: say which
        raise name_bad_file(cur, spec.source, "*", exc) from None


def _plan(cur, spec: ClusterSpec) -> Plan:
    src = source_sql(cur, spec.source)
    cols = describe(cur, src)
    require_columns(cols, list(spec.embedding), "embedding", spec.source)
    id_col = spec.id or find_key(cur, spec.source, cols)
    require_columns(cols, [id_col], "id", spec.source)
    check_id_type(cols, id_col, spec.source)
    qid = quote_ident(id_col)
    n_rows, n_ids = cur.sql(f"SELECT count(*), count({qid}) FROM {src}").fetchall()[0]
    if n_rows == 0:
        raise DataError(f"Source {spec.source!r} is empty: there is nothing to cluster. "
                        "Load rows first or check the WHERE clause of a query source.")
    if n_ids < n_rows:
        raise DataError(f"The id column {id_col!r} has NULL values; ids must be unique and "
                        "not NULL.")
    dup = cur.sql(f"SELECT CAST({qid} AS VARCHAR) FROM {src} GROUP BY {qid} "
                  "HAVING count(*) > 1 LIMIT 1").fetchall()
    if dup:
        raise DataError(f"The id column {id_col!r} is not unique: {dup[0][0]!r} appears more "
                        "than once. Name a unique column with id := '<column>'.")
    sparse, dims = {}, []
    for c in spec.embedding:
        t = cols[c].upper()
        q = quote_ident(c)
        if t.startswith("MAP("):
            sparse[c] = int(cur.sql(f"SELECT coalesce(max(list_max(map_keys({q}))), -1) + 1 "
                                    f"FROM {src}").fetchall()[0][0])
            dims.append(sparse[c])
        elif t.startswith("STRUCT("):
            field_name = next((f for f in ("indices", "index", "idx") if f in t.lower()), None)
            if field_name:
                sparse[c] = int(cur.sql(
                    f"SELECT coalesce(max(list_max({q}.{field_name})), -1) + 1 FROM {src}"
                ).fetchall()[0][0])
                dims.append(sparse[c])
            else:
                dims.append(None)
        elif t.endswith("]") and t[:-1].rsplit("[", 1)[-1].isdigit():
            dims.append(int(t[:-1].rsplit("[", 1)[-1]))
        else:
            dims.append(None)
    dim = sum(dims) if all(d is not None for d in dims) else None
    return Plan(src=src, id_col=id_col, n_rows=int(n_rows), sparse_dims=sparse, dim=dim,
                ordered=not _stable_scan(cur, src), id_type=cols[id_col])


def check_id_type(cols: dict[str, str], id_col: str, source: str) -> None:
    """An id is one scalar value per row (it is compared, sorted and stored as text):
    LIST, ARRAY, STRUCT, MAP and UNION columns are refused before any work."""
    t = cols[id_col].upper()
    if t.endswith("]") or t.startswith(("STRUCT", "MAP", "UNION")):
        raise SpecError(
            f"The id column {id_col!r} of source {source!r} has type {cols[id_col]}, but an id "
            "must be one scalar value per row (an integer, text, UUID, date or time). Name "
            "another column with id := '<column>', or number the rows in a query source such "
            f"as '(SELECT row_number() OVER () AS row_id, * FROM ...)' with id := 'row_id'.")


def _stable_scan(cur, src: str) -> bool:
    """Whether a plain scan of ``src`` returns rows in the same order every time: files
    and base tables yes; views and queries (a join may reorder) are not trusted."""
    if src.startswith("'"):
        return True
    if src.startswith("("):
        return False
    name = src.rsplit(".", 1)[-1]
    name = name[1:-1].replace('""', '"') if name.startswith('"') else name
    views = cur.execute("SELECT count(*) FROM duckdb_views() WHERE lower(view_name) = lower(?)",
                        [name]).fetchall()[0][0]
    return views == 0


def read_all(cur, spec: ClusterSpec, p: Plan, stats: ReadStats
             ) -> tuple[np.ndarray, np.ndarray]:
    """Every row with an embedding, in memory and sorted by id: (ids, X).

    Reads in scan order (no sort in DuckDB, which would hold every row twice) and
    reorders here (by the id in its own type) only when the rows are not already in
    order; ``stats`` counts rows and hashes the sorted result."""
    import pyarrow.compute as pc

    id_parts, key_parts, mats = [], [], []
    # width known before reading: fill one matrix (no second copy to concatenate)
    buf = np.empty((p.n_rows, p.dim), dtype=np.float32) if p.dim else None
    filled = 0
    for b in batches(cur, spec, p, stats, ordered=False, hash_rows=False, with_key=True,
                     into=buf):
        id_parts.append(b.id_arrow)
        key_parts.append(b.key)
        if buf is not None and b.X.base is not None and np.may_share_memory(b.X, buf) \
                and len(mats) == 0:  # normalized straight into buf[filled:]
            filled += len(b.X)
        elif buf is not None and b.X.shape[1] == p.dim and filled + len(b.X) <= len(buf):
            buf[filled:filled + len(b.X)] = b.X
            filled += len(b.X)
        else:  # unexpected width (the error comes next) or more rows than counted
            if buf is not None:
                mats, buf = [buf[:filled]], None
            mats.append(b.X)
        progress.step("rows read", stats.n_rows, p.n_rows)
    if buf is not None:
        mats = [buf[:filled]]
    check_dims({m.shape[1] for m in mats if len(m)}, spec)
    if not mats or sum(len(m) for m in mats) == 0:
        return np.zeros(0, dtype=object), np.zeros((0, 0), dtype=np.float32)
    id_arr = pa.chunked_array(id_parts).combine_chunks()
    X = np.concatenate(mats) if len(mats) > 1 else mats[0]
    del mats, buf
    key = pa.chunked_array(key_parts).combine_chunks()  # the id in its own type
    if len(key) > 1 and not pc.all(pc.less(key[:-1], key[1:])).as_py():
        order = pc.sort_indices(key).to_numpy()
        id_arr = id_arr.take(order)
        X = X[order]
    ids = np.asarray(id_arr.to_numpy(zero_copy_only=False), dtype=object)
    stats.update(ids, X)
    return ids, X


def batches(cur, spec: ClusterSpec, p: Plan, stats: ReadStats,
            batch_rows: int | None = None, ordered: bool | None = None,
            hash_rows: bool = True, with_key: bool = False,
            into: np.ndarray | None = None) -> Iterator[Batch]:
    """Yield validated, normalized batches of the whole source (``batch_rows`` rows
    each, default :data:`BATCH_ROWS`), in a stable order: scan order, or by id when
    ``ordered`` (default: the plan's choice for the source). ``into``: a float32
    matrix the batches' rows are normalized into, one after the other, while they
    fit (each ``Batch.X`` is then a view of it; saves a copy of every row)."""
    pos = 0
    emb = ", ".join(quote_ident(c) for c in spec.embedding)
    qid = quote_ident(p.id_col)
    order = f" ORDER BY {qid}" if (p.ordered if ordered is None else ordered) else ""
    key = f", {qid} AS __dc_key" if with_key else ""
    select = f"CAST({qid} AS VARCHAR) AS __dc_id, {emb}{key}"
    try:
        reader = cur.sql(f"SELECT {select} FROM {p.src}{order}").to_arrow_reader(
            batch_rows or BATCH_ROWS)
    except duckdb.Error as exc:
        raise name_bad_file(cur, spec.source, select, exc) from None
    try:
        it = iter(reader)
        while True:
            try:
                rb = next(it)
            except StopIteration:
                break
            except (duckdb.Error, OSError, pa.ArrowException) as exc:
                raise name_bad_file(cur, spec.source, select, exc) from None
            if rb.num_rows == 0:
                continue
            out = into[pos:] if into is not None and pos < len(into) else None
            b = _batch(rb, spec, p, stats, out=out)
            if out is not None and np.may_share_memory(b.X, into):
                pos += len(b.X)
            else:
                into = None  # a batch that did not fit: the rest are copies
            if with_key:
                k = rb.column(rb.num_columns - 1)
                b.key = _own(k if b.valid.all() else k.filter(pa.array(b.valid)))
            if hash_rows:
                stats.update(b.ids, b.X)
            yield b
    finally:  # an unfinished result would block the cursor (DuckDB 2.0)
        reader.close()


def _batch(rb, spec: ClusterSpec, p: Plan, stats: ReadStats,
           out: np.ndarray | None = None) -> Batch:
    id_arr = rb.column(0)
    if id_arr.null_count:  # the plan checked; a concurrent writer may have added one
        raise DataError(f"The id column {p.id_col!r} has NULL values; ids must be unique and "
                        "not NULL.")
    ids = np.asarray(id_arr.to_numpy(zero_copy_only=False), dtype=object)
    valid = np.ones(len(ids), dtype=bool)
    dense = []
    for j, c in enumerate(spec.embedding):
        v = to_dense(rb.column(j + 1), ids, c, spec.pooling, dim=p.sparse_dims.get(c))
        dense.append((v, c))
        valid &= v.valid
    X = combine_columns(dense, valid, ids, out=out)
    all_valid = bool(valid.all())
    kept = ids if all_valid else ids[valid]
    start = stats.n_rows
    stats.n_rows += len(ids)
    stats.n_null += int((~valid).sum())
    return Batch(ids=kept, X=X, start=start, valid=valid,
                 id_arrow=_own(id_arr if all_valid else id_arr.filter(pa.array(valid))))


def _own(arr: pa.Array) -> pa.Array:
    """A copy in pyarrow's memory. A column DuckDB exported keeps its whole batch
    alive (the embeddings too): holding the id columns of a 3M-row stream held every
    vector (5.9 GB peak instead of under 2 GB)."""
    return pa.concat_arrays([arr])


def check_dims(dims: set[int], spec: ClusterSpec) -> None:
    if len(dims) > 1:
        raise DataError(f"The embeddings of {', '.join(spec.embedding)} change dimension "
                        f"within the source ({sorted(dims)}); every row must have the same "
                        "length.")


# -- memory ---------------------------------------------------------------------------

#: Working copies of the embeddings an in-memory run holds at its peak (Arrow
#: batch, normalized matrix, preprocessing output), used by :func:`check_memory`.
WORKING_COPIES = 3
#: Share of available memory a run may plan to use.
MEMORY_SHARE = 0.8


def available_memory() -> int | None:
    """Bytes of memory available: DUCKCLUSTER_MEMORY_LIMIT (e.g. '2GB') or MemAvailable."""
    env = os.environ.get("DUCKCLUSTER_MEMORY_LIMIT")
    if env:
        return parse_bytes(env)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def parse_bytes(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    t = text.strip().upper().replace(" ", "")
    num = t.rstrip("KMGTIB")
    unit = t[len(num):]
    if unit not in units or not num:
        raise ValueError(f"Cannot read {text!r} as a size; use e.g. '2GB' or '512MiB'.")
    return int(float(num) * units[unit])


def estimate_bytes(n_fit: int, dim: int, quadratic: bool) -> int:
    """Peak bytes of fitting ``n_fit`` rows of width ``dim`` in memory."""
    need = n_fit * dim * 4 * WORKING_COPIES
    if quadratic:
        need += n_fit * n_fit * 8
    return int(need)


def whitening_square_bytes(spec: ClusterSpec, n: int, d: int) -> int:
    """Bytes of whitening's m x m matrices (m = min(n, d)): covariance, eigenvectors
    and LAPACK's workspace, or the SVD's factors when n < d."""
    if not any(m == "whitening" for m, _ in spec.preprocessing):
        return 0
    m = min(n, d)
    return 3 * 8 * m * m


def whitening_bytes(spec: ClusterSpec, n: int, d: int) -> int:
    """Peak extra bytes of a whitening step: two float64 copies of the rows plus its
    m x m matrices."""
    if not any(m == "whitening" for m, _ in spec.preprocessing):
        return 0
    return 2 * 8 * n * d + whitening_square_bytes(spec, n, d)


def check_memory(spec: ClusterSpec, n_fit: int, dim: int | None, quadratic: bool,
                 sampled: bool) -> None:
    """Stop before reading when the fit would not fit in memory, saying what would."""
    avail = available_memory()
    if avail is None or dim is None:
        return
    budget = MEMORY_SHARE * avail
    square = whitening_square_bytes(spec, n_fit, dim)
    if square > budget:  # does not shrink with fewer rows once n >= d
        m = min(n_fit, dim)
        raise ResourceError(
            f"Whitening {n_fit:,} rows x {dim} dimensions needs {m:,} x {m:,} float64 matrices "
            f"(the covariance and its eigenvectors, about {square / 1e9:.1f} GB) and an "
            f"eigendecomposition of O({m:,}^3) work; about {avail / 1e9:.1f} GB is available. "
            "Reduce the dimensions first, e.g. preprocessing := [{'method': 'pca', "
            "'n_components': 256}, {'method': 'whitening'}], or fit on fewer rows than "
            "dimensions (sample_size), where whitening works in the rows' span.")
    need = estimate_bytes(n_fit, dim, quadratic) + whitening_bytes(spec, n_fit, dim)
    if need <= budget:
        return
    per_row = dim * 4 * WORKING_COPIES
    fit_rows = int(budget // per_row)
    if quadratic:  # solve n*per_row + 8 n^2 <= budget
        fit_rows = int((-per_row + (per_row ** 2 + 32 * budget) ** 0.5) / 16)
    fit_rows = max(2, min(fit_rows, n_fit) // 1000 * 1000 or fit_rows)
    what = "the sample" if sampled else "every row"
    raise ResourceError(
        f"Fitting {spec.algorithm} on {n_fit:,} rows x {dim} dimensions would need about "
        f"{need / 1e9:.1f} GB of memory ({what} held {WORKING_COPIES} times"
        f"{', plus an n x n distance matrix' if quadratic else ''}); about "
        f"{avail / 1e9:.1f} GB is available. Set sample_size := {fit_rows} (or less) to fit "
        "on a seeded sample and stream the assignment of every row, or cluster a "
        "lower-dimensional embedding column (e.g. reduced with PCA beforehand)."
        + (" Or choose an algorithm without an n x n matrix, such as kmeans or hdbscan."
           if quadratic else ""))


@dataclass(frozen=True)
class SourceData:
    """Rows of a source with an embedding, in id order."""

    ids: np.ndarray  # (n,) str, rows with an embedding
    X: np.ndarray  # (n, d) float32, L2-normalized (concatenated columns)
    n_rows: int  # all source rows
    n_null: int  # rows skipped for a NULL embedding
    stats: ReadStats = field(repr=False)

    @property
    def input_hash(self) -> str:
        """SHA-256 of the ids and vectors read (waits for the hashing thread)."""
        return self.stats.hexdigest()


def read_source(cur, spec: ClusterSpec, p: Plan | None = None) -> SourceData:
    """Read every row (id order) into memory: validated and normalized."""
    p = p or plan(cur, spec)
    stats = ReadStats()
    ids, X = read_all(cur, spec, p, stats)
    if X.shape[0] == 0:
        raise DataError(f"Every row of {spec.source!r} has a NULL embedding in "
                        f"{', '.join(spec.embedding)}; there is nothing to cluster.")
    return SourceData(ids=ids, X=X, n_rows=stats.n_rows, n_null=stats.n_null, stats=stats)
