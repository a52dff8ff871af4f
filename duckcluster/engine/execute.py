"""Execution: DuckDB source -> pure numeric core -> catalog rows and artifacts.

:func:`create` stores a validated definition; :func:`execute` runs one: in memory (read
the source, :func:`duckcluster.core.fit.fit`), or streamed (:mod:`.stream`: a sampled
full run, an assign-mode run); :mod:`.tables` builds the catalog rows of either.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import _json
from .._errors import INTERRUPTED, RunCancelledError, SpecError, stored_message
from .._source import (
    check_query,
    describe,
    find_key,
    is_query,
    require_columns,
    source_sql,
)
from ..catalog import runs as catalog
from ..core import noise
from ..core.algorithms import get_algorithm
from ..core.fit import fit
from ..core.spec import ClusterSpec, check_rows
from ..core.threads import machine_sized
from . import lineage, partition, reader, stream, tables
from .reader import SourceData, read_source  # noqa: F401  (re-exported)

Progress = Callable[[str], None]


def _noop(stage: str) -> None:
    pass


def create(cur, args: Mapping[str, Any], replace: bool = False,
           check_labeling: Callable[[Mapping[str, Any]], Any] | None = None) -> ClusterSpec:
    """Validate and store a definition (checks the source and columns exist).

    ``check_labeling``: validates the ``labeling`` settings (passed in by the SQL layer,
    which knows the labels area; the engine never imports it)."""
    spec = ClusterSpec.from_dict(args)
    pinned = reader.pin_source(spec.source)  # relative file paths: absolute, stored as such
    if pinned != spec.source:
        spec = spec.replace(source=pinned)
    if spec.labeling and check_labeling is not None:  # typos fail here, not at labeling
        check_labeling(spec.labeling)
    src = source_sql(cur, spec.source)
    cols = describe(cur, src)
    require_columns(cols, list(spec.embedding), "embedding", spec.source)
    if spec.id is not None:
        require_columns(cols, [spec.id], "id", spec.source)
    else:
        spec = spec.replace(id=find_key(cur, spec.source, cols))
    reader.check_id_type(cols, spec.id, spec.source)
    if spec.partition_by is not None:
        partition.check(cur, spec, src, cols)
    catalog.put_definition(cur, spec, replace=replace)
    from ..catalog.read_side import sync_members_view  # ids in their own type

    sync_members_view(cur, spec.name, cols[spec.id])
    return spec


@machine_sized  # BLAS/OpenMP threads from the cores other processes leave free
def execute(cur, name: str, settings: catalog.Settings, mode: str = "full",
            threshold: float | None = None, progress: Progress = _noop,
            run_id: str | None = None) -> str:
    """Run a stored definition; returns the run id. Failures are recorded, then raised."""
    if mode not in ("full", "assign"):
        raise SpecError(f"mode must be 'full' or 'assign'. Got {mode!r}.")
    spec = catalog.get_definition(cur, name)
    if is_query(spec.source):  # stored by an older version: checked before any run row
        check_query(spec.source)
    if threshold is not None and not (0.0 <= float(threshold) <= 1.0):
        raise SpecError(f"assignment_threshold must be a float in the range [0, 1]. "
                        f"Got {threshold!r} instead.")
    base_run = catalog.latest_run(cur, name, mode="full") if mode == "assign" else None
    thr = catalog.assign_threshold(cur, spec, base_run, threshold) if mode == "assign" else None
    if run_id is None:
        run_id = catalog.start_run(cur, spec, mode, thr)
    else:
        catalog.start_queued(cur, run_id)
    timings: dict[str, float] = {}
    t0 = last = time.perf_counter()
    stage_name = "reading source"

    def stage(s: str) -> None:
        nonlocal last, stage_name
        t = time.perf_counter()
        timings[stage_name] = round(timings.get(stage_name, 0.0) + t - last, 4)
        last, stage_name = t, s.split(" ")[0]
        progress(f"{name}: {s}")

    try:
        progress(f"{name}: reading source")
        p = reader.plan(cur, spec)
        alg = get_algorithm(spec.algorithm)
        sampled = mode == "full" and bool(spec.sample_size) and p.n_rows > spec.sample_size \
            and spec.partition_by is None  # partitions: sample_size applies per partition
        extra_quality = partition_maps = None
        if mode == "assign" and spec.partition_by is not None:
            data, centroids, members, quality, n_clusters, extra_quality = \
                partition.assign_run(cur, run_id, spec, p, base_run, thr, stage)
            n_fit, projection, choices = 0, None, None
        elif mode == "assign":
            data, centroids, members, quality, n_clusters = stream.assign_run(
                cur, run_id, spec, p, base_run, thr, stage)
            n_fit, projection, choices = 0, None, None
        elif sampled:
            reader.check_memory(spec, spec.sample_size, p.dim, alg.quadratic_memory, True)
            data, centroids, members, quality, n_clusters, projection, choices = \
                stream.sampled_run(cur, run_id, spec, p, stage)
            n_fit = spec.sample_size
        elif spec.partition_by is not None:  # one read and fit per partition (partition.py)
            data, pf = partition.fit_partitions(cur, run_id, spec, p, stage)
            centroids, members, quality = pf.centroids, pf.members, pf.quality
            n_clusters, n_fit, choices = pf.n_clusters, pf.n_fit, pf.choices
            projection, extra_quality, partition_maps = None, pf.extra_quality, pf.maps
        else:
            reader.check_memory(spec, p.n_rows, p.dim, alg.quadratic_memory, False)
            data = read_source(cur, spec, p)
            check_rows(spec, len(data.ids))
            # a re-run starts from the previous run's clusters (lineage warm_start)
            result = fit(data.X, spec, progress=stage,
                         warm=lineage.warm_start(cur, spec, data.ids, data.X))
            if mode == "full":  # new topics it absorbed: clusters of their own (lineage)
                t_new = time.perf_counter()
                result = lineage.split_new_topics(cur, spec, data.ids, data.X, result)
                timings["new_topics"] = round(time.perf_counter() - t_new, 4)
                last += timings["new_topics"]  # not in the fitting stage's time
            centroids, members = tables.full_tables(run_id, spec, data, result)
            projection = result.projection
            quality = result.quality
            n_clusters = int(len(result.cluster_ids))
            n_fit = result.n_fit
            choices = result.choices
        # stable ids, lineage and carried labels (engine/lineage.py)
        if mode == "full":
            stage("matching clusters to the previous full run")
            identity = lineage.identify(cur, spec, run_id, centroids, members)
        else:
            identity = lineage.inherit(cur, base_run, centroids, members)
        centroids, members = identity.centroids, identity.members
        if mode == "full":  # assign_cluster's default threshold (core/noise.py)
            thr = noise.assign_threshold(
                choices, np.asarray(members.column("cluster_id").to_numpy()),
                members.column("cosine_similarity_to_centroid").to_numpy())
        stage("writing")
        q = quality.as_dict()
        if extra_quality is not None:  # per partition (cluster_quality shows a row each)
            q["partitions"] = extra_quality
        timings[stage_name] = round(time.perf_counter() - last, 4)
        timings["total"] = round(time.perf_counter() - t0, 4)
        updates = {
            "_name": spec.name, "n_rows": data.n_rows, "n_null": data.n_null,
            "n_members": len(data.ids), "n_fit": n_fit, "n_clusters": n_clusters,
            "dim": int(data.X.shape[1]), "input_hash": data.input_hash, "base_run_id": base_run,
            "assignment_threshold": thr,
            "timings": json.dumps(timings), "progress": "done",  # with the status, atomically
            "quality": _json.dumps(q),
            "choices": None if choices is None else _json.dumps(choices),
            **{k: q.get(k) for k in ("silhouette_score", "mean_cosine_to_centroid", "noise_ratio",
                                     "cluster_size_entropy", "davies_bouldin",
                                     "calinski_harabasz", "should_recluster")},
        }
        catalog.commit_run(cur, run_id, settings, centroids, members, updates,
                           projection=projection.as_row() if projection is not None else None,
                           within=lambda c: identity.write(c, run_id, spec.name),
                           id_type=p.id_type, partition_maps=partition_maps)
        progress(f"{name}: done")
        return run_id
    except BaseException as exc:
        cancelled = isinstance(exc, (KeyboardInterrupt, RunCancelledError))
        # a KeyboardInterrupt (Ctrl-C before a progress check saw it) says what it was
        why = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else None
        try:  # on a fresh cursor: this one may hold an aborted or unfinished statement
            with cur.cursor() as fresh:
                catalog.fail_run(fresh, run_id,
                                 stored_message(RunCancelledError(why) if why else exc),
                                 status="cancelled" if cancelled else "failed")
        except Exception:  # the database itself is gone; mark_abandoned will catch it
            pass
        raise
