"""Per-partition clustering of a definition (``partition_by := 'column or expression'``).

One clustering per value of the partition, like PostGIS ``ST_ClusterDBSCAN(...) OVER
(PARTITION BY ...)``: every partition is fitted on its own (the definition's algorithm,
seed and ``sample_size``, which applies per partition), and the run's tables hold them all
with a ``partition`` column (the value as text). Rules:

- NULL partition values form one partition of their own (as in GROUP BY); its ``partition``
  is NULL, the same as every row of an unpartitioned definition.
- cluster ids are unique within the run, across partitions (so ``cluster_id`` stays the key
  of a run's clusters everywhere: labels, drift, lineage); each partition's clusters take the
  next ids in partition order (text order, NULL last), before stable ids renumber them.
- a partition with fewer rows than the algorithm needs (``min_rows`` of its params, e.g.
  ``n_clusters`` for k-means, ``min_cluster_size`` for hdbscan) is not fitted: its rows are
  noise (-1) and ``choices.partitions`` says why.
- a partitioned full run reads one partition at a time (a DuckDB query per partition
  value: memory holds the largest partition's vectors, not the source's; no streamed sampled
  run) and stores each partition's own map (``duckcluster.partition_projections`` and its
  ``map_references`` rows; the same kinds as unpartitioned runs: a layout of the neighbour
  graph when the pipeline builds one, else PCA), so an assign run places a new row on its
  partition's map.
- an assign run puts each row into the nearest cluster of its own partition; a partition
  the base run does not have gives -1.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._errors import DataError, DuckclusterError, SpecError, closest
from .._source import describe, quote_ident, quote_literal, validate_text_expression
from ..catalog import runs as catalog
from ..core import progress as counted
from ..core.algorithms import get_algorithm
from ..core.fit import check_distinct, fit
from ..core.lineage import fingerprints
from ..core.quality import compute_quality
from ..core.spec import ClusterSpec
from . import lineage, reader, stream, tables
from .reader import SourceData

Stage = Callable[[str], None]


def expression(spec: ClusterSpec, cols: dict[str, str]) -> str:
    """The SQL of the partition: the quoted column, or the expression in parentheses."""
    part = spec.partition_by
    if part in cols:
        return quote_ident(part)
    by_lower = {c.lower(): c for c in cols}
    if part.lower() in by_lower:
        return quote_ident(by_lower[part.lower()])
    return f"({part})"


def check(cur, spec: ClusterSpec, src: str, cols: dict[str, str]) -> None:
    """At create time: the partition is a column or one scalar expression over the source's
    rows (not an aggregate), else a SpecError that says what is allowed."""
    part = spec.partition_by
    shown = f"partition_by {part!r} of source {spec.source!r}"
    if part not in cols and part.lower() not in {c.lower() for c in cols}:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            raise SpecError(f"The partition_by column {part!r} does not exist in source "
                            f"{spec.source!r}.{closest(part, cols)} Available columns: "
                            f"{', '.join(repr(c) for c in cols)}.")
        try:
            validate_text_expression(cur, part)
        except SpecError:
            raise SpecError(
                f"'partition_by' must name a column of the source or be one SQL expression "
                f"over its columns, like 'lang' or 'lower(lang)'. Got {part!r}; available "
                f"columns: {', '.join(repr(c) for c in cols)}.") from None
    expr = expression(spec, cols)
    try:  # with the id next to it, an aggregate fails to bind ("must appear in GROUP BY")
        t = describe(cur, f"(SELECT {quote_ident(spec.id)} AS __dc_id, {expr} AS __dc_part "
                          f"FROM {src}) AS __dc_p")["__dc_part"].upper()
    except Exception as exc:  # noqa: BLE001 - the binder's message says what is wrong
        msg = str(exc).split("\n")[0].removeprefix("Cannot read the source: ")
        raise SpecError(f"{shown} is not a column or a per-row expression of the source: "
                        f"{msg}. Name a column, or an expression like 'lower(lang)'.") from None
    if t.endswith("]") or t.startswith(("STRUCT", "MAP", "UNION")):
        raise SpecError(f"{shown} has type {t}; a partition is one scalar value per row (text, "
                        "a number, a date). Name another column or an expression like "
                        "'tags[1]'.")


def _label(v: str | None) -> str:
    return "NULL" if v is None else repr(v)


def _with_partition(tbl: pa.Table, value: str | None) -> pa.Table:
    n = tbl.num_rows
    col = pa.nulls(n, pa.string()) if value is None else \
        pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                       pa.array([value], pa.string()))
    return tbl.append_column("partition", col)


def _repeated(parts: list[tuple[str | None, int]]) -> pa.DictionaryArray:
    """Each partition value repeated for its rows (NULL for the NULL partition)."""
    named = [v for v, _ in parts if v is not None]
    code = {v: i for i, v in enumerate(named)}
    idx = np.concatenate([np.full(k, -1 if v is None else code[v], dtype=np.int32)
                          for v, k in parts])
    return pa.DictionaryArray.from_arrays(pa.array(np.maximum(idx, 0), mask=idx < 0),
                                          pa.array(named, pa.string()))


def _plain(tbl: pa.Table) -> pa.Table:
    """Dictionary columns as plain strings (partitions' dictionaries differ)."""
    for i, f in enumerate(tbl.schema):
        if pa.types.is_dictionary(f.type):
            tbl = tbl.set_column(i, f.name, pc.cast(tbl.column(i), f.type.value_type))
    return tbl


@dataclasses.dataclass
class PartitionedFit:
    centroids: pa.Table
    members: pa.Table
    quality: object  # core.quality.Quality of the whole run (partitions in ``extra``)
    n_clusters: int
    n_fit: int
    choices: dict
    extra_quality: list[dict]
    #: (partition, ``as_row()``) of each clustered partition's map (catalog.commit_run)
    maps: list[tuple[str | None, dict]] = dataclasses.field(default_factory=list)


def counts(cur, spec: ClusterSpec, p: reader.Plan, cols: dict[str, str]
           ) -> list[tuple[str | None, int]]:
    """(partition value as text, source rows) of every partition: text order, NULL last
    (``cols``: the source's columns, :func:`describe`)."""
    expr = expression(spec, cols)
    got = cur.sql(f"SELECT CAST({expr} AS VARCHAR), count(*) FROM {p.src} GROUP BY 1"
                  ).fetchall()
    named = sorted((v, int(n)) for v, n in got if v is not None)
    return named + [(None, int(n)) for v, n in got if v is None]


def plan_of(spec: ClusterSpec, p: reader.Plan, cols: dict[str, str], value: str | None,
            n_rows: int) -> reader.Plan:
    """The read plan of one partition: the source filtered to its rows (one DuckDB query)."""
    test = "IS NULL" if value is None else f"= {quote_literal(value)}"
    return dataclasses.replace(p, src=f"(SELECT * FROM {p.src} WHERE CAST("
                                      f"{expression(spec, cols)} AS VARCHAR) {test}) "
                                      "AS __dc_partition", n_rows=n_rows)


def fit_partitions(cur, run_id: str, spec: ClusterSpec, p: reader.Plan, stage: Stage
                   ) -> tuple[SourceData, PartitionedFit]:
    """One read and one fit per partition (a DuckDB query per partition value, so memory
    holds one partition's vectors at a time, not the source's); the tables of all, ids
    unique in the run. Returns the run's read summary (its ``X`` holds no rows) and the
    fit. Geometric quality metrics of the whole run use a seeded sample of at most
    :data:`stream.ASSIGN_QUALITY_SAMPLE` rows' vectors (every row below that)."""
    alg = get_algorithm(spec.algorithm)
    cols = describe(cur, p.src)
    groups = counts(cur, spec, p, cols)
    largest = max(n for _, n in groups)
    reader.check_memory(spec, min(largest, spec.sample_size) if spec.sample_size else largest,
                        p.dim, alg.quadratic_memory, bool(spec.sample_size))
    need = alg.min_rows(dict(spec.params))
    stats = reader.ReadStats()
    rng = np.random.default_rng(spec.seed)
    keep_share = min(1.0, stream.ASSIGN_QUALITY_SAMPLE / max(p.n_rows, 1))
    ids_all, labels_all, sims_all, probe_X, probe_pos, widths = [], [], [], [], [], set()
    cents, mems, per, quals, maps = [], [], [], [], []
    next_id = n_fit = n_done = 0
    for g, (value, n_part) in enumerate(groups):
        where = f"partition {_label(value)}, {g + 1} of {len(groups)}"
        stage(f"reading {where} ({n_part:,} rows)")
        ids, X = reader.read_all(cur, spec, plan_of(spec, p, cols, value, n_part), stats)
        if not len(ids):  # every row of it has a NULL embedding
            continue
        widths.add(int(X.shape[1]))
        reader.check_dims(widths, spec)
        sub = SourceData(ids=ids, X=X, n_rows=len(ids), n_null=0, stats=stats)
        c, m, r, info, qual = _fit_one(cur, run_id, spec, sub, value, where, need, stage)
        if r is not None:
            k = len(r.cluster_ids)
            ident = lineage._renumbered(c, m, np.asarray(r.cluster_ids, dtype=np.int64),
                                        list(range(next_id, next_id + k)), 0)
            c, m = ident.centroids, ident.members
            next_id += k
            n_fit += r.n_fit
            if r.projection is not None:
                maps.append((value, r.projection.as_row()))
        per.append(info)
        quals.append(qual)
        ids_all.append(ids)
        labels_all.append(np.asarray(m.column("cluster_id").to_numpy(), dtype=np.int64))
        sims_all.append(np.asarray(m.column("cosine_similarity_to_centroid").to_numpy(
            zero_copy_only=False), dtype=np.float32))
        take = np.arange(len(ids)) if keep_share >= 1.0 else np.sort(rng.choice(
            len(ids), size=min(len(ids), int(np.ceil(keep_share * len(ids)))), replace=False))
        probe_X.append(X[take])
        probe_pos.append(take + n_done)
        n_done += len(ids)
        cents.append(_plain(_with_partition(c, value)))
        mems.append(_plain(_with_partition(m, value)))
        del X, sub, r  # the next partition's vectors take their place
    if not n_done:
        raise DataError(f"Every row of {spec.source!r} has a NULL embedding in "
                        f"{', '.join(spec.embedding)}; there is nothing to cluster.")
    ids = np.concatenate(ids_all)
    if stats.n_rows != p.n_rows or len(np.unique(ids)) != len(ids):
        raise DataError(f"Source {spec.source!r} changed while the run read it; run it again "
                        "when writers are done.")
    labels, sims = np.concatenate(labels_all), np.concatenate(sims_all)
    centroids = pa.concat_tables(cents, promote_options="permissive") if cents else None
    members = pa.concat_tables(mems, promote_options="permissive")
    stage("quality metrics")
    rows = np.concatenate(probe_pos)
    sims = np.where(labels >= 0, sims, np.nan).astype(np.float32)
    quality = compute_quality(np.concatenate(probe_X), labels[rows], sims[rows], spec.seed,
                              population=None if len(rows) == len(ids) else (labels, sims))
    choices = {"partition_by": spec.partition_by, "partitions": per}
    shown = [q["choices"].get("map") for q in per if q.get("choices")]
    if shown and all(m == shown[0] for m in shown) and shown[0] is not None:
        choices["map"] = shown[0]  # what every partition's x, y are (plots' titles)
    data = SourceData(ids=ids, X=np.zeros((0, widths.pop()), dtype=np.float32),
                      n_rows=stats.n_rows, n_null=stats.n_null, stats=stats)
    return data, PartitionedFit(centroids=centroids, members=members, quality=quality,
                                n_clusters=int(next_id), n_fit=int(n_fit), choices=choices,
                                extra_quality=quals, maps=maps)


def _fit_one(cur, run_id: str, spec: ClusterSpec, sub: SourceData, value: str | None,
             where: str, need: int, stage: Stage):
    """One partition's tables, fit (None when too small to cluster: its rows are noise),
    ``choices.partitions`` entry and quality row."""
    n = len(sub.ids)
    fitted = min(n, spec.sample_size) if spec.sample_size else n
    why = None
    if fitted < need:
        why = (f"not clustered: {n} rows, {spec.algorithm} with these params "
               f"needs at least {need}; its rows are noise (-1)")
    else:
        try:  # fewer distinct vectors than clusters (auto aims at 5 at least)
            check_distinct(sub.X if not spec.sample_size else sub.X[:spec.sample_size], spec)
        except DataError as exc:
            why = f"not clustered: {exc} Its rows are noise (-1)."
    if why is not None:
        c, m = tables.flat_tables(
            run_id, spec, sub.ids, np.full(n, -1, dtype=np.int64),
            np.full(n, np.nan, dtype=np.float32), None,
            np.zeros(0, dtype=np.int64), np.zeros((0, sub.X.shape[1]), np.float32),
            fps=fingerprints(sub.X))
        return c, m, None, {"partition": value, "n_members": n, "n_clusters": 0,
                            "skipped": why}, \
            {"partition": value, "n_members": n, "n_clusters": 0, "noise_ratio": 1.0,
             "skipped": why}
    # a re-run starts from the previous run's clusters of these rows (lineage warm_start)
    warm = lineage.warm_start(cur, spec, sub.ids, sub.X, value)
    with counted.reporting(_tagged(counted.current(), where)):
        try:
            r = fit(sub.X, spec, progress=lambda s: stage(f"{s} ({where})"), warm=warm)
        except DuckclusterError as exc:
            raise type(exc)(f"partition {_label(value)}: {exc}") from None
    c, m = tables.full_tables(run_id, spec, sub, r)
    k = len(r.cluster_ids)
    return c, m, r, {"partition": value, "n_members": n, "n_clusters": int(k),
                     "choices": r.choices}, \
        {"partition": value, "n_members": n, "n_clusters": int(k),
         **{key: v for key, v in r.quality.as_dict().items() if key != "n_clusters"}}


def _tagged(callback, where: str):
    """A counted-progress callback that says which partition the work is in."""
    if callback is None:
        return None
    return lambda what, done, total: callback(f"{what} ({where})", done, total)


def assign_run(cur, run_id: str, spec: ClusterSpec, p: reader.Plan, base_run: str,
               thr: float, stage: Stage):
    """Assign mode: every row to the nearest centroid of its own partition in the base run
    (one streamed pass per partition; a partition the base run lacks gives -1). Returns
    the run's tables and quality as :func:`stream.assign_run` does, plus each partition's
    quality."""
    base = catalog.centroid_matrix(cur, base_run)
    base_part = catalog.cluster_partitions(cur, base_run)
    cluster_part = [base_part.get(int(c)) for c in base.cluster_ids]
    cols = describe(cur, p.src)
    found = counts(cur, spec, p, cols)
    dims = spec.dimensions
    stats = reader.ReadStats()
    rng = np.random.default_rng(spec.seed)
    probe = np.sort(rng.choice(p.n_rows, size=min(p.n_rows, stream.ASSIGN_QUALITY_SAMPLE),
                               replace=False))
    ids, labels, sims, fps, parts, probe_X, probe_rows, coords = [], [], [], [], [], [], [], []
    quals: list[dict] = []  # per partition (cluster_quality's 'partition' rows)
    n_done = 0
    for g, (value, n_part) in enumerate(found):
        where = f"partition {_label(value)}, {g + 1} of {len(found)}"
        mine = np.array([cp == value for cp in cluster_part], dtype=bool)
        C = base.C[mine]
        cids = base.cluster_ids[mine].astype(np.int64)
        # the partition's map in the base run: new rows land where its rows are (None:
        # a partition it did not cluster, or a run from before partitions had maps)
        projection = catalog.load_projection(cur, base_run, value) if len(cids) else None
        if projection is not None and projection.input_dims not in (None, C.shape[1]):
            projection = None
        # (a partition without clusters: every row -1; the id list must not be empty)
        out = stream._stream_assign(cur, spec, plan_of(spec, p, cols, value, n_part), C,
                                    cids if len(cids) else np.array([-1]), stats,
                                    lambda s: stage(f"{s} ({where})"), threshold=thr,
                                    probe=probe, projection=projection)
        i, new_lab, new_sim, new_xy = out.arrays()
        fp = np.concatenate(out.fps)
        if new_xy is None:
            new_xy = np.full((len(new_lab), dims), np.nan, dtype=np.float32)
        # unchanged rows keep the base run's decision, unless they moved to this partition
        lab, sim, xy = lineage.keep_known(cur, base_run, i, fp, new_lab, new_sim, new_xy)
        moved = (lab >= 0) & ~np.isin(lab, cids)
        lab = np.where(moved, new_lab, lab)
        sim = np.where(moved, new_sim, sim)
        xy = np.where(moved[:, None], new_xy, xy)
        coords.append(xy)
        pr = np.concatenate(out.probe_rows) if out.probe_rows else np.zeros(0, np.int64)
        px = np.concatenate(out.probe_X) if out.probe_X else \
            np.zeros((0, max(base.C.shape[1], 1)), dtype=np.float32)
        q = compute_quality(px, lab[pr], sim[pr].astype(np.float32), spec.seed,
                            population=(lab, sim.astype(np.float32)))
        quals.append({**q.as_dict(), "partition": value, "n_members": int(len(lab))})
        if len(pr):
            probe_rows.append(pr + n_done)
            probe_X.append(px)
        n_done += len(lab)
        ids.append(i)
        labels.append(lab)
        sims.append(sim)
        fps.append(fp)
        parts.append((value, len(lab)))
    if not n_done:
        raise DataError(f"Every row of {spec.source!r} has a NULL embedding in "
                        f"{', '.join(spec.embedding)}; there is nothing to cluster.")
    id_arr = pa.chunked_array([c for i in ids for c in i.chunks], pa.string())
    labels_all, sims_all = np.concatenate(labels), np.concatenate(sims).astype(np.float32)
    stage("quality metrics")
    rows = np.concatenate(probe_rows) if probe_rows else np.zeros(0, np.int64)
    Xq = np.concatenate(probe_X) if probe_X else \
        np.zeros((0, max(base.C.shape[1], 1)), dtype=np.float32)
    quality = compute_quality(Xq, labels_all[rows], sims_all[rows], spec.seed,
                         population=(labels_all, sims_all))
    centroids, members = tables.flat_tables(run_id, spec, id_arr, labels_all, sims_all,
                                            np.concatenate(coords),
                                            base.cluster_ids.astype(np.int64), base.C,
                                            centroid_column=base.column,
                                            fps=np.concatenate(fps))
    centroids = centroids.append_column("partition", pa.array(cluster_part, pa.string()))
    members = members.append_column("partition", _repeated(parts))
    data = stream._summary(id_arr, base.C, stats)
    return data, centroids, members, quality, \
        int(len(np.unique(labels_all[labels_all >= 0]))), quals
