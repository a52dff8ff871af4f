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
- a partitioned full run is always read in memory (no streamed sampled run) and stores no
  plotting projection: each partition has its own map (x, y), and rows an assign run adds
  have no map position unless its base run placed them.
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


def values(cur, spec: ClusterSpec, p: reader.Plan, ids: np.ndarray) -> pa.Array:
    """The partition of every row of ``ids`` (text, NULL for a NULL value), read in SQL."""
    cols = describe(cur, p.src)
    expr = expression(spec, cols)
    tbl = cur.sql(f"SELECT CAST({quote_ident(p.id_col)} AS VARCHAR) AS id, "
                  f"CAST({expr} AS VARCHAR) AS part FROM {p.src}").to_arrow_table()
    at = pc.index_in(pa.array(ids.tolist() if isinstance(ids, np.ndarray) else ids,
                              pa.string()), value_set=tbl.column("id").combine_chunks())
    if at.null_count:
        raise DataError(f"Source {spec.source!r} changed while the run read it; run it again "
                        "when writers are done.")
    return tbl.column("part").combine_chunks().take(at)


def _groups(part: pa.Array) -> list[tuple[str | None, np.ndarray]]:
    """(value, row positions) per partition: text order, NULL last."""
    enc = pc.dictionary_encode(part)
    codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False))
    null = np.asarray(part.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    names = enc.dictionary.to_pylist()
    out = [(v, np.flatnonzero((codes == i) & ~null)) for i, v in enumerate(names)]
    out.sort(key=lambda g: g[0])
    if null.any():
        out.append((None, np.flatnonzero(null)))
    return [g for g in out if len(g[1])]


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


def fit_partitions(cur, run_id: str, spec: ClusterSpec, p: reader.Plan, data: SourceData,
                   stage: Stage) -> PartitionedFit:
    """One fit per partition of an in-memory run; the tables of all, ids unique in the run."""
    part = values(cur, spec, p, data.ids)
    groups = _groups(part)
    need = get_algorithm(spec.algorithm).min_rows(dict(spec.params))
    n = len(data.ids)
    labels = np.full(n, -1, dtype=np.int64)
    sims = np.full(n, np.nan, dtype=np.float32)
    cents, mems, per, quals = [], [], [], []
    next_id, n_fit = 0, 0
    for g, (value, rows) in enumerate(groups):
        where = f"partition {_label(value)}, {g + 1} of {len(groups)}"
        stage(f"fitting {where} ({len(rows):,} rows)")
        sub = SourceData(ids=data.ids[rows], X=data.X[rows], n_rows=len(rows), n_null=0,
                         stats=data.stats)
        fitted = min(len(rows), spec.sample_size) if spec.sample_size else len(rows)
        why = None
        if fitted < need:
            why = (f"not clustered: {len(rows)} rows, {spec.algorithm} with these params "
                   f"needs at least {need}; its rows are noise (-1)")
        else:
            try:  # fewer distinct vectors than clusters (auto aims at 5 at least)
                check_distinct(sub.X if not spec.sample_size else sub.X[:spec.sample_size],
                               spec)
            except DataError as exc:
                why = f"not clustered: {exc} Its rows are noise (-1)."
        if why is not None:
            c, m = tables.flat_tables(
                run_id, spec, sub.ids, np.full(len(rows), -1, dtype=np.int64),
                np.full(len(rows), np.nan, dtype=np.float32), None,
                np.zeros(0, dtype=np.int64), np.zeros((0, data.X.shape[1]), np.float32),
                fps=fingerprints(sub.X))
            per.append({"partition": value, "n_members": int(len(rows)), "n_clusters": 0,
                        "skipped": why})
            quals.append({"partition": value, "n_members": int(len(rows)), "n_clusters": 0,
                          "noise_ratio": 1.0, "skipped": why})
        else:
            with counted.reporting(_tagged(counted.current(), where)):
                try:
                    r = fit(sub.X, spec, progress=lambda s: stage(f"{s} ({where})"))
                except DuckclusterError as exc:
                    raise type(exc)(f"partition {_label(value)}: {exc}") from None
            c, m = tables.full_tables(run_id, spec, sub, r)
            k = len(r.cluster_ids)
            ident = lineage._renumbered(c, m, np.asarray(r.cluster_ids, dtype=np.int64),
                                        list(range(next_id, next_id + k)), 0)
            c, m = ident.centroids, ident.members
            next_id += k
            n_fit += r.n_fit
            per.append({"partition": value, "n_members": int(len(rows)), "n_clusters": int(k),
                        "choices": r.choices})
            quals.append({"partition": value, "n_members": int(len(rows)), "n_clusters": int(k),
                          **{key: v for key, v in r.quality.as_dict().items()
                             if key != "n_clusters"}})
        labels[rows] = np.asarray(m.column("cluster_id").to_numpy(), dtype=np.int64)
        sims[rows] = np.asarray(m.column("cosine_similarity_to_centroid").to_numpy(
            zero_copy_only=False), dtype=np.float32)
        cents.append(_plain(_with_partition(c, value)))
        mems.append((rows, _plain(_with_partition(m, value))))
    centroids = pa.concat_tables(cents, promote_options="permissive") if cents else None
    members = pa.concat_tables([t for _, t in mems], promote_options="permissive")
    order = np.argsort(np.concatenate([r for r, _ in mems]), kind="stable")
    members = members.take(pa.array(order))  # back in id order, as unpartitioned runs are
    stage("quality metrics")
    quality = compute_quality(data.X, labels, np.where(labels >= 0, sims, np.nan), spec.seed)
    choices = {"partition_by": spec.partition_by, "partitions": per}
    maps = [p["choices"].get("map") for p in per if p.get("choices")]
    if maps and all(m == maps[0] for m in maps) and maps[0] is not None:
        choices["map"] = maps[0]  # what every partition's x, y are (plots' titles)
    return PartitionedFit(centroids=centroids, members=members, quality=quality,
                          n_clusters=int(next_id), n_fit=int(n_fit), choices=choices,
                          extra_quality=quals)


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
    expr = expression(spec, describe(cur, p.src))
    found = [r[0] for r in cur.sql(f"SELECT DISTINCT CAST({expr} AS VARCHAR) FROM {p.src}"
                                   ).fetchall()]
    found = sorted(v for v in found if v is not None) + ([None] if None in found else [])
    stats = reader.ReadStats()
    rng = np.random.default_rng(spec.seed)
    probe = np.sort(rng.choice(p.n_rows, size=min(p.n_rows, stream.ASSIGN_QUALITY_SAMPLE),
                               replace=False))
    ids, labels, sims, fps, parts, probe_X, probe_rows = [], [], [], [], [], [], []
    quals: list[dict] = []  # per partition (cluster_quality's 'partition' rows)
    n_done = 0
    for g, value in enumerate(found):
        where = f"partition {_label(value)}, {g + 1} of {len(found)}"
        mine = np.array([cp == value for cp in cluster_part], dtype=bool)
        C = base.C[mine]
        cids = base.cluster_ids[mine].astype(np.int64)
        test = "IS NULL" if value is None else f"= {quote_literal(value)}"
        sub = dataclasses.replace(p, src=f"(SELECT * FROM {p.src} WHERE CAST({expr} AS "
                                         f"VARCHAR) {test}) AS __dc_partition")
        # (a partition without clusters: every row -1; the id list must not be empty)
        out = stream._stream_assign(cur, spec, sub, C, cids if len(cids) else np.array([-1]), stats,
                                    lambda s: stage(f"{s} ({where})"), threshold=thr,
                                    probe=probe)
        i, new_lab, new_sim, _ = out.arrays()
        fp = np.concatenate(out.fps)
        # unchanged rows keep the base run's decision, unless they moved to this partition
        lab, sim, _ = lineage.keep_known(cur, base_run, i, fp, new_lab, new_sim, None)
        moved = (lab >= 0) & ~np.isin(lab, cids)
        lab = np.where(moved, new_lab, lab)
        sim = np.where(moved, new_sim, sim)
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
    centroids, members = tables.flat_tables(run_id, spec, id_arr, labels_all, sims_all, None,
                                            base.cluster_ids.astype(np.int64), base.C,
                                            centroid_column=base.column,
                                            fps=np.concatenate(fps))
    centroids = centroids.append_column("partition", pa.array(cluster_part, pa.string()))
    members = members.append_column("partition", _repeated(parts))
    data = stream._summary(id_arr, base.C, stats)
    return data, centroids, members, quality, \
        int(len(np.unique(labels_all[labels_all >= 0]))), quals
