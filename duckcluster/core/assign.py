"""Nearest-centroid assignment by cosine similarity, vectorized and chunked.

All inputs are L2-normalized float32 rows, so cosine similarity is a dot
product: assignment is a chunked ``X @ C.T`` plus an argmax, O(n * k * d) time
and O(batch * k) extra memory. ``assign`` is the body of the ``assign_cluster``
UDF (called per 2,048-row vector) and of ``mode := 'assign'`` runs.

>>> X = normalize_rows(np.array([[1, 0], [0, 2], [1, 1]]))
>>> ids, C = centroids_from_labels(X, np.array([0, 1, -1]))
>>> idx, sims = assign(X, C, threshold=0.8)
>>> idx.tolist()
[0, 1, -1]
"""

from __future__ import annotations

import threading

import numpy as np

from .._errors import DataError, SpecError

# Chunks are sized so a (rows x k) or (rows x d) temporary stays near 16M floats.
_CHUNK_ELEMENTS = 1 << 24


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """Return a float32 copy of ``X`` (n, d) with unit L2 rows; zero rows stay zero."""
    X = np.array(X, dtype=np.float32, copy=True, ndmin=2)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    inv = np.zeros_like(norms)
    np.divide(1.0, norms, out=inv, where=norms > 0)
    X *= inv[:, None]
    return X


#: Up to this many clusters, centroid sums and own-centroid similarities use
#: dense BLAS products (cost n x k x d); above, per-row work (cost n x d).
DENSE_MAX_CLUSTERS = 64


def _chunk_rows(width: int, batch_rows: int) -> int:
    return max(1, min(int(batch_rows), _CHUNK_ELEMENTS // max(int(width), 1)))


def centroids_from_labels(
    X_norm: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Centroid of every cluster: the L2-normalized mean of its rows.

    Returns ``(cluster_ids, C)``: int64 ids of shape (k,), sorted, without -1,
    and float32 centroids of shape (k, d) in the same order. Sums accumulate in
    float64, chunk by chunk.
    """
    X_norm = np.asarray(X_norm, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    if labels.shape[0] != X_norm.shape[0]:
        raise DataError(
            f"labels has {labels.shape[0]} entries but X has {X_norm.shape[0]} rows."
        )
    cluster_ids, _, sums = cluster_sums(X_norm, labels)
    return cluster_ids, centroids_of(sums)


def cluster_sums(X_norm: np.ndarray, labels: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cluster_ids, counts, sums)`` of the non-noise rows: sorted int64 ids, float64
    sizes (k,) and float64 sums (k, d); what :func:`centroids_from_labels` and the
    quality metrics (:func:`duckcluster.core.quality.evaluate`) are made of."""
    X_norm = np.asarray(X_norm, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    kept = labels >= 0
    cluster_ids = np.unique(labels[kept])
    k = cluster_ids.size
    pos = np.searchsorted(cluster_ids, labels)  # position in cluster_ids, junk for noise
    counts = np.bincount(pos[kept], minlength=k).astype(np.float64)
    return cluster_ids, counts, _cluster_sums(X_norm, pos, kept, k)


def centroids_of(sums: np.ndarray) -> np.ndarray:
    """float32 L2-normalized rows of float64 cluster sums (zero sums stay zero)."""
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0).astype(np.float32)


def _cluster_sums(X: np.ndarray, pos: np.ndarray, kept: np.ndarray, k: int) -> np.ndarray:
    """float64 (k, d) sums of the rows of each cluster (``pos``: cluster index per
    row, valid where ``kept``)."""
    from scipy import sparse

    n, d = X.shape
    sums = np.zeros((k, d), dtype=np.float64)
    if 0 < k <= DENSE_MAX_CLUSTERS:
        # one float32 BLAS product per 4,096 rows (one-hot k x rows), added up in
        # float64: 100k x 384, k = 30: 0.027 s vs 0.117 s sparse; error 1.4e-8
        for start in range(0, n, 4096):
            lab, m = pos[start:start + 4096], kept[start:start + 4096]
            onehot = np.zeros((k, lab.size), dtype=np.float32)
            onehot[lab[m], np.flatnonzero(m)] = 1.0
            sums += onehot @ X[start:start + 4096]
        return sums
    step = _chunk_rows(d, 65536)
    for start in range(0, n, step):
        stop = min(start + step, n)
        m = kept[start:stop]
        if not m.any():
            continue
        rows = np.flatnonzero(m)
        onehot = sparse.csr_matrix(
            (np.ones(rows.size), (pos[start:stop][m], rows)), shape=(k, stop - start)
        )
        sums += onehot @ X[start:stop].astype(np.float64)
    return sums


def assign(
    X_norm: np.ndarray,
    C: np.ndarray,
    threshold: float | None = None,
    batch_rows: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row by cosine similarity.

    Parameters: ``X_norm`` (n, d) and ``C`` (k, d), both L2-normalized;
    ``threshold``: rows whose best similarity is below it get -1, default=None
    (no threshold); ``batch_rows``: rows per matmul chunk (also capped so the
    chunk's n x k block stays near 16M floats).

    Returns ``(idx, sims)``: int64 row index into ``C`` (-1 below threshold) and
    float32 best similarity, both of shape (n,). Ties go to the lowest index.
    With no centroids every row is -1 with similarity NaN.
    """
    X_norm = np.asarray(X_norm, dtype=np.float32)
    C = np.asarray(C, dtype=np.float32)
    n = X_norm.shape[0]
    idx = np.full(n, -1, dtype=np.int64)
    sims = np.full(n, np.nan, dtype=np.float32)
    if C.shape[0] == 0 or n == 0:
        return idx, sims
    if X_norm.shape[1] != C.shape[1]:
        raise DataError(
            f"Embeddings have {X_norm.shape[1]} dimensions but the centroids have "
            f"{C.shape[1]}; assign with embeddings of the dimension the run used."
        )
    CT = np.ascontiguousarray(C.T)
    step = _chunk_rows(C.shape[0], batch_rows)
    for start in range(0, n, step):
        S = X_norm[start : start + step] @ CT
        best = np.argmax(S, axis=1)  # first maximum -> lowest index on ties
        idx[start : start + step] = best
        sims[start : start + step] = np.take_along_axis(S, best[:, None], axis=1)[:, 0]
    if threshold is not None:
        idx[~(sims >= threshold)] = -1
    return idx, sims


def assign_raw(X: np.ndarray, C: np.ndarray, what: str = "assign_cluster"
               ) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`assign` for rows that are NOT normalized (one small batch).

    Cosine argmax is invariant to each row's scale, so the rows are multiplied as
    they are and only the best similarity is divided by the row norm: one pass
    less than normalizing first. ``C`` (k, d) must be L2-normalized. Returns
    ``(idx, sims)`` as :func:`assign` with no threshold.

    A row with NaN or Inf, or a zero vector (no direction, so no nearest centroid),
    raises :class:`DataError` showing its values, as ``cluster_execute`` refuses
    them. The check costs one test of the n norms; only rows whose float32 norm is
    zero or not finite are looked at again, in float64 (tiny or huge but valid
    values are assigned correctly).
    """
    X = np.asarray(X, dtype=np.float32)
    C = np.asarray(C, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # NaN/Inf rows: an error below
        S = X @ C.T
        idx = np.argmax(S, axis=1)
        best = np.take_along_axis(S, idx[:, None], axis=1)[:, 0]
        norms = np.sqrt(np.vecdot(X, X))  # 20% faster than einsum here
    ok = np.isfinite(norms) & (norms > 0)
    if not ok.all():
        _odd_rows(X, C, np.flatnonzero(~ok), idx, best, norms, what)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sims = (best / norms).astype(np.float32)
    return idx.astype(np.int64), sims


class Nearest:
    """Centroids prepared once for many small batches of rows that are NOT normalized:
    the ``assign_cluster`` UDF, one call per 2,048-row vector.

    :meth:`raw` is :func:`assign_raw` without its per-call setup: the centroids are
    transposed into a contiguous (d, k) block once, and each thread reuses its own
    (rows, k) similarity block, so a batch costs one sgemm into that block
    (``np.matmul(out=)``), an argmax, a flat gather of the best similarity and the row
    norms. A fresh 2,048 x 100 block per call was a fresh 800 KB allocation (mmap and
    page faults at every call). ``C`` (k, d) must be L2-normalized. A block larger than
    :attr:`KEEP_BYTES` (above ~1,000 centroids) is not kept between calls: it would stay
    allocated per thread and run, and the matmul then dwarfs the allocation anyway.
    """

    #: Largest per-thread similarity block kept between calls.
    KEEP_BYTES = 8 << 20

    def __init__(self, C: np.ndarray) -> None:
        self.C = np.ascontiguousarray(C, dtype=np.float32)
        self.CT = np.ascontiguousarray(self.C.T)
        self._local = threading.local()

    def _block(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        buf = getattr(self._local, "buf", None)
        if buf is None or buf[0].shape[0] < n:
            rows, k = max(n, 2048), self.C.shape[0]
            if rows * k * 4 > self.KEEP_BYTES:
                rows = n
            buf = (np.empty((rows, k), dtype=np.float32), np.arange(rows, dtype=np.int64) * k)
            if rows * k * 4 <= self.KEEP_BYTES:
                self._local.buf = buf
        return buf

    def raw(self, X: np.ndarray, what: str = "assign_cluster"
            ) -> tuple[np.ndarray, np.ndarray]:
        """``(idx, sims)`` of the rows of ``X`` (n, d) float32, as :func:`assign_raw`:
        int64 index into ``C`` and float32 cosine similarity; NaN/Inf rows and zero
        vectors raise :class:`DataError`."""
        n = X.shape[0]
        if X.dtype != np.float32:
            X = X.astype(np.float32)
        block, base = self._block(n)
        S = block[:n]
        with np.errstate(over="ignore", invalid="ignore"):  # NaN/Inf rows: an error below
            np.matmul(X, self.CT, out=S)
            idx = S.argmax(axis=1)
            best = S.reshape(-1)[base[:n] + idx]
            norms = np.sqrt(np.vecdot(X, X))
        ok = np.isfinite(norms) & (norms > 0)
        if not ok.all():
            _odd_rows(X, self.C, np.flatnonzero(~ok), idx, best, norms, what)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            sims = best / norms
        return idx, sims


def _odd_rows(X: np.ndarray, C: np.ndarray, rows: np.ndarray, idx: np.ndarray,
              best: np.ndarray, norms: np.ndarray, what: str) -> None:
    """Rows whose float32 norm is 0 or not finite: refuse NaN/Inf and zero vectors,
    redo the others (squares under- or overflowing float32) in float64, in place."""
    X64, n64 = _refuse_bad(X[rows], what)
    S = (X64 / n64[:, None]) @ C.T.astype(np.float64)
    j = np.argmax(S, axis=1)
    idx[rows] = j
    best[rows] = S[np.arange(len(rows)), j]
    norms[rows] = 1.0


def check_vectors(X: np.ndarray, what: str = "assign_cluster") -> None:
    """Refuse NaN/Inf rows and zero vectors of ``X`` (n, d) (assign_raw's check, for
    batches that are not assigned: a run without clusters)."""
    X = np.asarray(X, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.vecdot(X, X)
    ok = np.isfinite(norms) & (norms > 0)
    if not ok.all():
        _refuse_bad(X[~ok], what)


def _refuse_bad(rows: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows in float64, their norms), or DataError for the first NaN/Inf row, else the
    first zero vector."""
    X64 = rows.astype(np.float64)
    finite = np.isfinite(X64).all(axis=1)
    n64 = np.linalg.norm(np.where(finite[:, None], X64, 0.0), axis=1)
    if not finite.all():
        raise DataError(_bad_vector_message(rows[int(np.argmax(~finite))], what))
    if (n64 == 0).any():
        raise DataError(_bad_vector_message(rows[int(np.argmax(n64 == 0))], what))
    return X64, n64


def _bad_vector_message(v: np.ndarray, what: str) -> str:
    shown = ", ".join(f"{x:g}" for x in v[:4].tolist()) + (", ..." if v.size > 4 else "")
    if not np.isfinite(v).all():
        return (f"{what}: an embedding has NaN or Inf ([{shown}], {v.size} values), so it has "
                "no nearest centroid. Filter such rows (WHERE NOT list_any(list_transform("
                "embedding::FLOAT[], lambda x: isnan(x) OR isinf(x)))) or fix the embedding "
                "pipeline.")
    return (f"{what}: an embedding is a zero vector ([{shown}], {v.size} values), which has no "
            "direction, so no nearest centroid by cosine. Filter such rows (WHERE "
            "list_dot_product(embedding::FLOAT[], embedding::FLOAT[]) > 0) or fix the embedding "
            "pipeline (a zero vector often means an empty input text).")


def check_threshold(threshold: np.ndarray, what: str = "assign_cluster") -> None:
    """A threshold is a cosine similarity: finite and in [-1, 1] (the caller leaves out
    NULLs, which mean the run's own threshold). Cheap: one pass over the batch's values."""
    t = np.asarray(threshold, dtype=np.float32)
    bad = ~((t >= -1.0) & (t <= 1.0))  # NaN fails both comparisons
    if bad.any():
        raise SpecError(f"{what}: threshold must be a cosine similarity in the range [-1, 1] "
                        f"(-1 keeps every assignment), or NULL for the run's own threshold. Got "
                        f"{float(t[np.argmax(bad)]):g} instead.")  # as the SQL macro's printf('%g')


def similarity_to_own(
    X_norm: np.ndarray, C: np.ndarray, labels: np.ndarray, cluster_ids: np.ndarray
) -> np.ndarray:
    """Cosine similarity of each row to its own cluster's centroid, float32 (n,).

    ``C[i]`` is the centroid of ``cluster_ids[i]`` (sorted, as returned by
    :func:`centroids_from_labels`). Noise rows (-1) get NaN.
    """
    X_norm = np.asarray(X_norm, dtype=np.float32)
    C = np.asarray(C, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    cluster_ids = np.asarray(cluster_ids).astype(np.int64, copy=False).ravel()
    n, d = X_norm.shape
    out = np.full(n, np.nan, dtype=np.float32)
    kept = labels >= 0
    pos = np.searchsorted(cluster_ids, labels)
    pos_ok = np.minimum(pos, max(cluster_ids.size - 1, 0))
    found = kept & (cluster_ids.size > 0)
    if cluster_ids.size:
        found &= cluster_ids[pos_ok] == labels
    if (kept & ~found).any():
        missing = np.unique(labels[kept & ~found])[:5].tolist()
        raise DataError(f"Labels {missing} have no centroid in cluster_ids.")
    if 0 < cluster_ids.size <= DENSE_MAX_CLUSTERS:
        # few clusters: all similarities by one BLAS product per chunk, then pick
        # (100k x 384, k = 30: 0.031 s vs 0.086 s gathering each row's centroid)
        CT = np.ascontiguousarray(C.T)
        for start in range(0, n, 65536):
            m = kept[start:start + 65536]
            S = X_norm[start:start + 65536] @ CT
            r = np.flatnonzero(m)
            out[start + r] = S[r, pos[start:start + 65536][r]]
        return out
    step = _chunk_rows(d, 65536)
    for start in range(0, n, step):
        m = kept[start : start + step]
        if not m.any():
            continue
        rows = X_norm[start : start + step][m]
        cents = C[pos[start : start + step][m]]
        out[start : start + step][m] = np.einsum("ij,ij->i", rows, cents)
    return out
