"""The clustering pipeline as data: arrays in, a :class:`FitResult` out.

No DuckDB here. Stored definitions (``engine/execute.py``) and the one-shot
``cluster_embeddings`` call :func:`fit`; a sampled run that streams its rows
(``engine/stream.py``) fits its sample with the same :func:`fit_sample`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .._errors import DataError
from .algorithms import get_algorithm
from .algorithms.kmeans import WARM
from .assign import assign, centroids_of, cluster_sums
from .backend import get_executor
from .hierarchy import Hierarchy, build_hierarchy
from .lineage import WarmStart
from .noise import apply as apply_noise
from .preprocess import capture_graphs, run_preprocessing
from .projection import GraphMap, Projection, fit_projection, graph_map
from .quality import Quality, evaluate
from .spec import ClusterSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FitResult:
    """Everything a full run produces, aligned with the input rows."""

    labels: np.ndarray  # (n,) int64, -1 = noise
    cluster_ids: np.ndarray  # (k,) int64
    centroids: np.ndarray  # (k, d) float32, L2-normalized, original space
    similarity: np.ndarray  # (n,) float32 cosine to own centroid, NaN for noise
    coords: np.ndarray | None  # (n, dimensions) float32
    hierarchy: Hierarchy | None
    quality: Quality
    n_fit: int  # rows the algorithm saw (sample_size)
    projection: Projection | GraphMap | None = None  # the map behind coords
    choices: dict | None = None  # what 'auto' / n_clusters 'auto' chose (cluster_runs.choices)
    noise_assigned: np.ndarray | None = None  # (n,) bool: noise the policy put in a cluster


def _noop(stage: str) -> None:
    pass


#: Above this many rows the distinct-rows check is skipped.
DISTINCT_CHECK_MAX_ROWS = 200_000


def check_distinct(X: np.ndarray, spec: ClusterSpec) -> None:
    """Algorithms asked for k clusters need at least k distinct embeddings."""
    k = spec.params.get("n_clusters") or spec.params.get("n_components")
    if not isinstance(k, int) or k <= 1 or X.shape[0] > DISTINCT_CHECK_MAX_ROWS or X.shape[0] == 0:
        return
    # Rows with distinct projections on a random direction are distinct: one matvec
    # settles the usual case; only when it finds fewer than k, sort the rows.
    direction = np.random.default_rng(0).standard_normal(X.shape[1]).astype(X.dtype)
    if len(np.unique(X @ direction)) >= k:
        return
    rows = np.ascontiguousarray(X).view(np.dtype((np.void, X.dtype.itemsize * X.shape[1])))
    distinct = len(np.unique(rows))
    if distinct < k:
        what = "n_clusters" if "n_clusters" in spec.params else "n_components"
        raise DataError(
            f"The source has only {distinct} distinct embedding(s) among {X.shape[0]:,} rows, "
            f"so {spec.algorithm} cannot make {k} clusters. Lower {what} to at most "
            f"{distinct}, or check the embedding pipeline (identical vectors often mean "
            "an empty or constant input text).")


@contextlib.contextmanager
def quiet_fit_warnings() -> Iterator[None]:
    """Degenerate inputs (constant columns, fewer distinct points than asked) make
    sklearn warn on stderr in the middle of a query; the quality metrics and
    should_recluster report them instead."""
    import sys

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        exc = sys.modules.get("sklearn.exceptions")  # never imported for this (1+ s)
        if exc is not None:
            warnings.simplefilter("ignore", exc.ConvergenceWarning)
        # ConvergenceWarning is a UserWarning: those raised in sklearn's modules are here
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
        yield


@dataclass(frozen=True)
class SampleFit:
    """The algorithm's result on the rows it saw: labels after the noise policy, the
    centroids of its clusters, what 'auto' chose, and the noise rows the policy assigned."""

    labels: np.ndarray  # (n_fit,) int64, -1 = noise
    cluster_ids: np.ndarray  # (k,) int64
    centroids: np.ndarray  # (k, d) float32, L2-normalized, original space
    choices: dict | None
    noise_assigned: np.ndarray  # (n_fit,) bool
    graph: tuple | None = None  # (fuzzy graph, embedding) of the first umap step, if any
    #: cluster_sums of the rows and labels (the centroids' makings; quality reuses them)
    sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def fit_sample(X_fit: np.ndarray, spec: ClusterSpec, progress: Progress = _noop,
               rows: str = "rows", warm: WarmStart | None = None) -> SampleFit:
    """The fitting steps every run shares: preprocessing, the algorithm, the noise
    policy and the centroids, on the rows the algorithm sees (all, or a sample).
    ``warm``: the previous run's cluster of each of these rows (k-means and auto start
    from it, :mod:`.algorithms.kmeans`; ``choices.warm_start`` says so)."""
    params = dict(spec.params)
    if warm is not None and spec.algorithm in WARM_ALGORITHMS:
        params[WARM] = np.asarray(warm.labels, dtype=np.int64)
    else:
        warm = None
    progress("preprocessing")
    with capture_graphs() as graphs:  # the map is laid out on the same neighbour graph
        Xp = run_preprocessing(X_fit, spec.preprocessing, spec.seed)
        progress(f"fitting {spec.algorithm} on {X_fit.shape[0]:,} {rows}"
                 + (" from the previous run" if warm is not None else ""))
        fitted = get_algorithm(spec.algorithm).fit_explained(Xp, params, spec.seed)
    noise = apply_noise(X_fit, np.asarray(fitted.labels, dtype=np.int64), spec.noise_policy,
                        spec.noise_threshold)
    choices = fitted.choices
    if warm is not None:
        choices = {**(choices or {}), "warm_start": _warm_report(warm, params, choices)}
    if noise.report is not None:
        choices = {**(choices or {}), "noise": noise.report}
    sums = cluster_sums(X_fit, noise.labels)
    return SampleFit(noise.labels, sums[0], centroids_of(sums[2]), choices, noise.assigned,
                     graphs[0] if graphs else None, sums)


#: Algorithms a re-run starts from the previous run's clusters (``lineage := {'warm_start':
#: false}`` turns it off).
WARM_ALGORITHMS = ("kmeans", "auto")


def _warm_report(warm: WarmStart, params: dict, choices: dict | None) -> dict:
    """``choices.warm_start``: the run it started from, previous clusters kept as starting
    centres, new centres added (auto reports its chosen k's; k-means: from n_clusters)."""
    got = dict((choices or {}).get("warm_start") or {})
    if not got:
        k = params.get("n_clusters")
        k = (choices or {}).get("n_clusters", k) if k == "auto" else k
        present = int(np.unique(warm.labels[warm.labels >= 0]).size)
        got = {"kept": min(int(k), present), "added": max(int(k) - present, 0)}
    return {"from_run": warm.from_run, **got}


def run_map(X_fit: np.ndarray, f: SampleFit, spec: ClusterSpec
            ) -> tuple[Projection | GraphMap, np.ndarray | None]:
    """The run's map: a layout of the neighbour graph when the pipeline built one
    (returned with the positions of every fitted row), else the PCA of the rows
    (positions None: ``transform`` them).

    The graph may cover only a seeded sample of the fitted rows (``auto`` above its
    ``fit_rows``): then the sample is laid out and the other rows are placed on that
    map as assign runs place new rows (:meth:`GraphMap.transform`); the sample's own
    rows are found by their fingerprints. A graph over rows the pipeline transformed
    first (whitening before a sampled fit) is not used: PCA."""
    from .lineage import fingerprints

    if f.graph is None:
        return Projection(X_fit, spec.dimensions, spec.seed), None
    graph, embedding, rows = f.graph
    if graph.shape[0] == X_fit.shape[0]:
        return graph_map(X_fit, graph, embedding, spec.dimensions, spec.seed)
    if rows.shape[1] == X_fit.shape[1] and graph.shape[0] < X_fit.shape[0]:
        fp_rows, fp_fit = fingerprints(rows), fingerprints(X_fit)
        order = np.argsort(fp_rows, kind="stable")
        at = np.minimum(np.searchsorted(fp_rows[order], fp_fit), len(order) - 1)
        hit = fp_rows[order][at] == fp_fit
        if np.isin(fp_rows, fp_fit[hit]).all():  # every graph row is a fitted row
            gm, layout = graph_map(rows, graph, embedding, spec.dimensions, spec.seed)
            placed = gm.transform(X_fit, f.centroids)
            placed[hit] = layout[order[at[hit]]]
            return gm, placed
    return Projection(X_fit, spec.dimensions, spec.seed), None


def with_map(choices: dict | None, projection) -> dict | None:
    """``choices`` with the map recorded: always for a graph map, and for runs that
    record choices anyway; a run with no ``map`` entry has the PCA map."""
    if projection is None or (choices is None and projection.kind == "pca"):
        return choices
    return {**(choices or {}), "map": projection.describe()}


def fit(X_norm: np.ndarray, spec: ClusterSpec, progress: Progress = _noop,
        with_coords: bool = True, warm: WarmStart | None = None) -> FitResult:
    """Run preprocessing, the algorithm, centroids, hierarchy, coordinates and quality.
    ``warm``: the previous run's cluster of every row of ``X_norm`` (:func:`fit_sample`)."""
    with quiet_fit_warnings():
        return _fit(X_norm, spec, progress, with_coords, warm)


def _fit(X_norm: np.ndarray, spec: ClusterSpec, progress: Progress,
         with_coords: bool, warm: WarmStart | None = None) -> FitResult:
    check_distinct(X_norm if not spec.sample_size else X_norm[: spec.sample_size], spec)
    seed = spec.seed
    n = X_norm.shape[0]
    rng = np.random.default_rng(seed)
    sample = None
    if spec.sample_size and n > spec.sample_size:
        sample = np.sort(rng.choice(n, size=spec.sample_size, replace=False))
    X_fit = X_norm if sample is None else X_norm[sample]

    if warm is not None and sample is not None:
        warm = WarmStart(warm.labels[sample], warm.from_run)
    f = fit_sample(X_fit, spec, progress, warm=warm)
    choices, cluster_ids, C = f.choices, f.cluster_ids, f.centroids
    sums = f.sums
    if sample is None:
        labels = f.labels
        assigned = f.noise_assigned
    else:
        progress(f"assigning {n:,} rows to {len(cluster_ids)} centroids")
        idx, _ = assign(X_norm, C) if len(cluster_ids) else (np.full(n, -1), None)
        labels = np.where(idx >= 0, cluster_ids[np.maximum(idx, 0)], -1).astype(np.int64)
        sums = None
        if len(cluster_ids):
            sums = cluster_sums(X_norm, labels)
            cluster_ids, C = sums[0], centroids_of(sums[2])
        assigned = np.zeros(n, dtype=bool)
        assigned[sample] = f.noise_assigned  # the other rows went to their nearest centroid

    hierarchy = None
    if spec.hierarchical and spec.max_hierarchy_depth > 1:
        progress("sub-clustering")
        hierarchy = build_hierarchy(X_norm, labels, spec.max_hierarchy_depth, seed,
                                    executor=get_executor(spec.backend))
    coords = projection = None
    if with_coords:
        progress("laying out the map")
        projection, placed = run_map(X_fit, f, spec) if f.graph is not None else \
            (None, None)
        if placed is None:  # PCA of every row (fit_projection samples above FIT_SAMPLE)
            projection = fit_projection(X_norm, spec.dimensions, seed)
            coords = projection.transform(X_norm)
        elif sample is None:
            coords = placed
        else:
            coords = projection.transform(X_norm, f.centroids)
            coords[sample] = placed
        choices = with_map(choices, projection)
    progress("quality metrics")
    sims, quality = evaluate(X_norm, labels, seed, sums)  # and each row's own similarity
    return FitResult(labels=labels, cluster_ids=cluster_ids, centroids=C, similarity=sims,
                     coords=coords, hierarchy=hierarchy, quality=quality,
                     n_fit=int(X_fit.shape[0]), projection=projection,
                     choices=choices, noise_assigned=assigned)
