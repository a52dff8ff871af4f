"""Cluster identity at the end of a full run, before its commit.

The new run's top-level clusters are matched to those of the previous successful full
run of the definition (:mod:`duckcluster.core.lineage`): matched clusters take the old
ids (``stable_ids``, the default), every other one an id the definition never used; the
lineage rows, the new id mark and the labels carried by clusters that continued
unchanged are written in the run's own transaction (:meth:`Identity.write`).

Hierarchical runs: the top-level clusters are matched and keep their ids; a sub-cluster's
node id is derived from its top-level id (``cl_<id>_sub_<n>``, ``n`` numbered in this
run), so sub-node ids are not stable and sub-nodes are labeled afresh.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..catalog import labels as label_store
from ..catalog import runs as catalog
from ..core import lineage
from ..core.spec import ClusterSpec

_NODE = re.compile(r"^cl_(-?\d+)(.*)$", re.S)


@dataclass
class Identity:
    """A full run's tables with their final ids, and what its commit writes besides."""

    centroids: pa.Table
    members: pa.Table
    previous_run: str | None = None
    rows: list[dict] = field(default_factory=list)  # duckcluster.lineage rows
    next_id: int = 0
    carried: list[dict] = field(default_factory=list)  # label rows (source 'carried')
    full: bool = True  # a full run (assign runs write no lineage and no id mark)

    def write(self, cur, run_id: str, name: str) -> None:
        """Inside the run's transaction: lineage rows, the id mark, carried labels."""
        if self.full:
            catalog.write_lineage(cur, name, self.rows, self.next_id)
        if self.carried:
            label_store.write_labels(cur, run_id, name, self.carried, catalog.now())


def _matrix(col: pa.ChunkedArray | pa.Array, k: int) -> np.ndarray:
    if k == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = col.combine_chunks().flatten() if isinstance(col, pa.ChunkedArray) else col.flatten()
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(k, -1)


def identify(cur, spec: ClusterSpec, run_id: str, centroids: pa.Table,
             members: pa.Table) -> Identity:
    """Match the run's clusters to the previous full run's and renumber its tables."""
    level = np.asarray(centroids.column("hierarchy_level").to_numpy(), dtype=np.int64)
    top = np.flatnonzero(level == 0)
    new_ids = np.asarray(centroids.column("cluster_id").to_numpy(), dtype=np.int64)[top]
    Cn = _matrix(centroids.column("centroid").take(pa.array(top)), len(top))
    sizes = np.asarray(centroids.column("size").to_numpy(), dtype=np.int64)[top]
    next_id = catalog.next_cluster_id(cur, spec.name)
    prev = catalog.previous_full_run(cur, spec.name)
    if prev is None:
        fresh = spec.stable_ids and next_id > 0  # never reuse ids of earlier runs
        final = [next_id + n for n in range(len(new_ids))] if fresh else new_ids.tolist()
        return _renumbered(centroids, members, new_ids, final, next_id)
    old = catalog.top_nodes(cur, prev)
    old_ids = np.asarray(old.column("cluster_id").to_numpy(), dtype=np.int64)
    Co = _matrix(old.column("centroid"), len(old_ids))
    pos_old = {int(c): i for i, c in enumerate(old_ids)}
    pos_new = {int(c): j for j, c in enumerate(new_ids)}
    flows = [(pos_old.get(a, -1), pos_new.get(b, -1), n)
             for a, b, n in catalog.member_flows(cur, prev, members)]
    F = lineage.flow_matrix(len(old_ids), len(new_ids), flows)
    new_parts = _partitions(centroids, top)
    old_parts = old.column("partition").to_pylist()
    if spec.partition_by is None and not any(p is not None for p in old_parts):
        linked = lineage.link(Co, Cn, F, spec.lineage, new_sizes=sizes)
    else:  # a partition's clusters continue the previous run's of the same partition only
        linked = _link_by_partition(Co, Cn, F, spec.lineage, sizes, old_parts, new_parts)
    if spec.stable_ids:
        final, next_id = lineage.assign_ids(new_ids, linked.match, old_ids, next_id)
    else:
        final = new_ids.tolist()
    out = _renumbered(centroids, members, new_ids, final, next_id)
    out.previous_run = prev
    old_sizes = np.asarray(old.column("size").to_numpy(), dtype=np.int64)
    out.rows = [{
        "name": spec.name, "run_id": run_id, "previous_run_id": prev, "event": e.event,
        "previous_cluster_id": int(old_ids[e.old]) if e.old >= 0 else None,
        "cluster_id": int(final[e.new]) if e.new >= 0 else None, "matched": e.matched,
        "centroid_similarity": e.similarity, "member_overlap": e.overlap,
        "previous_share": e.previous_share, "share": e.share, "shared_members": e.shared,
        "previous_size": int(old_sizes[e.old]) if e.old >= 0 else None,
        "size": int(sizes[e.new]) if e.new >= 0 else None,
        "partition": new_parts[e.new] if e.new >= 0 else old_parts[e.old]}
        for e in linked.events]
    keep = [(int(linked.match[j]), int(j)) for j in np.flatnonzero(linked.keep_label)]
    out.carried = _carried(cur, prev, old, keep, final)
    if out.carried:
        out.centroids = _with_labels(out.centroids, out.carried)
    return out


def _partitions(centroids: pa.Table, top: np.ndarray) -> list:
    """The partition of each top-level cluster (all None without partition_by)."""
    if "partition" not in centroids.column_names:
        return [None] * len(top)
    return centroids.column("partition").take(pa.array(top)).to_pylist()


def _link_by_partition(Co, Cn, F, options, sizes, old_parts, new_parts) -> lineage.Linked:
    """:func:`duckcluster.core.lineage.link` within each partition, in the positions of the
    whole run. Rows that changed partition count as having left (the old cluster's noise
    column) and as new (the new cluster's noise row), as rows that became noise do."""
    k_old, k_new = len(old_parts), len(new_parts)
    match = np.full(k_new, -1, dtype=np.int64)
    keep = np.zeros(k_new, dtype=bool)
    events: list[lineage.Event] = []
    keys = {p for p in old_parts} | {p for p in new_parts}
    for key in sorted(keys, key=lambda p: (p is None, p or "")):
        io = np.array([i for i, p in enumerate(old_parts) if p == key], dtype=np.int64)
        jn = np.array([j for j, p in enumerate(new_parts) if p == key], dtype=np.int64)
        others_o = np.setdiff1d(np.arange(k_old), io)
        others_n = np.setdiff1d(np.arange(k_new), jn)
        Fg = np.zeros((len(io) + 1, len(jn) + 1), dtype=np.int64)
        Fg[:len(io), :len(jn)] = F[np.ix_(io, jn)]
        Fg[:len(io), len(jn)] = F[io, k_new] + F[np.ix_(io, others_n)].sum(axis=1)
        Fg[len(io), :len(jn)] = F[k_old, jn] + F[np.ix_(others_o, jn)].sum(axis=0)
        width = Cn.shape[1] if Cn.ndim == 2 and Cn.size else (Co.shape[1] if Co.ndim == 2 else 0)
        co = Co[io] if len(io) else np.zeros((0, width), np.float32)
        cn = Cn[jn] if len(jn) else np.zeros((0, width), np.float32)
        got = lineage.link(co, cn, Fg, options, new_sizes=sizes[jn])
        match[jn] = np.where(got.match >= 0, io[np.maximum(got.match, 0)] if len(io) else -1,
                             -1)
        keep[jn] = got.keep_label
        events += [dataclasses.replace(e, old=int(io[e.old]) if e.old >= 0 else -1,
                                       new=int(jn[e.new]) if e.new >= 0 else -1)
                   for e in got.events]
    order = {e: n for n, e in enumerate(lineage.EVENTS)}
    events.sort(key=lambda e: (order[e.event], e.old if e.old >= 0 else 1 << 40,
                               e.new if e.new >= 0 else 1 << 40))
    return lineage.Linked(match=match, events=events, keep_label=keep)


def warm_start(cur, spec: ClusterSpec, ids, X: np.ndarray, partition=catalog.WHOLE_RUN
               ) -> lineage.WarmStart | None:
    """What a full run of ``spec`` over the rows ``ids`` (vectors ``X``) starts from: the
    previous successful full run's cluster of each row (k-means and auto,
    :mod:`duckcluster.core.fit`), or None: a first run, another algorithm, ``lineage :=
    {'warm_start': false}``, or no row of the previous run left.

    A re-run of the same definition on unchanged rows (same ids and vectors as the previous
    run, no other rows; ``partition``: those of one partition) starts from what the previous
    run started from, so it reproduces it (seeded): from scratch when that one did."""
    import json

    from ..core.fit import WARM_ALGORITHMS

    if spec.algorithm not in WARM_ALGORITHMS or \
            not lineage.validate_options(spec.lineage)["warm_start"]:
        return None
    prev = catalog.previous_full_run(cur, spec.name)
    if prev is None:
        return None
    source = prev
    if catalog.same_rows(cur, prev, spec, ids, lineage.fingerprints(X), partition):
        choices = json.loads(catalog.get_run(cur, prev).get("choices") or "null") or {}
        if partition is not catalog.WHOLE_RUN:
            choices = next((p.get("choices") or {} for p in choices.get("partitions", [])
                            if p.get("partition") == partition), {})
        started = (choices or {}).get("warm_start")
        if not started:
            return None  # the previous run fitted these rows from scratch: so does this one
        source = started["from_run"]
    labels = catalog.previous_clusters(cur, source, ids)
    return lineage.WarmStart(labels, source) if (labels >= 0).any() else None


def split_new_topics(cur, spec: ClusterSpec, ids, X: np.ndarray, result):
    """A full run's fit with the new topics it absorbed into existing clusters split off
    as clusters of their own (:func:`duckcluster.core.lineage.new_topics`), so that the
    lineage sees them ``born``; ``result`` unchanged when there are none, on a first run,
    for hierarchical runs and with ``lineage := {'split_new_topics': false}``.

    ``ids``, ``X`` (n, d) L2-normalized: the rows of the fit (``result`` a
    :class:`~duckcluster.core.fit.FitResult` aligned with them). The far rows are those the
    previous full run did not have whose best cosine to its centroids is below its own
    assignment threshold (the one ``assign_cluster`` uses). After the split, the new
    topic takes the cluster's other unseen rows that are closer to it than to what is left
    (one step), centroids, similarities and quality are recomputed, and
    ``cluster_runs.choices`` records what was split (``new_topics``)."""
    import dataclasses

    from ..core.assign import centroids_from_labels, similarity_to_own
    from ..core.quality import compute_quality

    o = lineage.validate_options(spec.lineage)
    if not o["split_new_topics"] or result.hierarchy is not None or \
            not len(result.cluster_ids) or len(ids) != len(result.labels):
        return result
    prev = catalog.previous_full_run(cur, spec.name)
    if prev is None:
        return result
    old = catalog.centroid_matrix(cur, prev)
    if not len(old.cluster_ids) or old.C.shape[1] != X.shape[1]:
        return result
    unseen = catalog.unseen_rows(cur, prev, ids)
    if not unseen.any():
        return result
    thr = catalog.own_threshold(cur, prev)
    rows = np.flatnonzero(unseen)
    best = np.full(len(unseen), np.inf, dtype=np.float32)
    best[rows] = (X[rows] @ old.C.T).max(axis=1)
    groups = lineage.new_topics(result.labels, unseen, best, thr, spec.lineage)
    if not groups:
        return result
    labels = result.labels.copy()
    fresh = int(result.cluster_ids.max()) + 1
    report = []
    for pos in groups:
        c = int(labels[pos[0]])
        labels[pos] = fresh
        ids_now, C = centroids_from_labels(X, np.where(np.isin(labels, [c, fresh]), labels, -1))
        c_new, c_rest = C[list(ids_now).index(fresh)], C[list(ids_now).index(c)]
        others = np.flatnonzero(unseen & (labels == c))
        closer = others[X[others] @ c_new > X[others] @ c_rest]
        labels[closer] = fresh
        report.append({"from_cluster": c, "rows": int((labels == fresh).sum()),
                       "far_rows": int(len(pos))})
        fresh += 1
    cluster_ids, C = centroids_from_labels(X, labels)
    sims = similarity_to_own(X, C, labels, cluster_ids)
    choices = {**(result.choices or {}), "new_topics": {
        "threshold": round(float(thr), 4), "previous_run_id": prev, "split_off": report}}
    return dataclasses.replace(result, labels=labels, cluster_ids=cluster_ids, centroids=C,
                               similarity=sims, choices=choices,
                               quality=compute_quality(X, labels, sims, spec.seed))


def inherit(cur, base_run: str, centroids: pa.Table, members: pa.Table) -> Identity:
    """An assign run uses its base run's clusters: it carries their labels."""
    old = catalog.top_nodes(cur, base_run)
    ids = old.column("cluster_id").to_pylist()
    pairs = [(i, i) for i in range(len(ids))]
    out = Identity(centroids, members, full=False)
    out.carried = _carried(cur, base_run, old, pairs, ids)
    if out.carried:
        out.centroids = _with_labels(centroids, out.carried)
    return out


def _carried(cur, prev: str, old: pa.Table, pairs, final: list[int]) -> list[dict]:
    """Label rows that carry the previous run's labels: ``pairs`` (old position, new
    position) of the clusters that keep theirs; ``final``: the new clusters' ids."""
    details = label_store.label_details(cur, prev)
    labels = old.column("label").to_pylist()
    summaries = old.column("summary").to_pylist()
    keywords = old.column("keywords").to_pylist()
    node_ids = old.column("node_id").to_pylist()
    rows = []
    for i, j in pairs:
        if labels[i] is None:
            continue
        d = details.get(node_ids[i], {})
        rows.append({
            "node_id": f"cl_{final[j]}", "label": labels[i], "summary": summaries[i],
            "keywords": keywords[i], "attributes": d.get("attributes"), "source": "carried",
            "provider": d.get("provider"), "model": d.get("model"),
            "representative_ids": d.get("representative_ids") or [], "merged_into": None,
            "carried_from_run_id": d.get("carried_from_run_id") or prev})
    return rows


def _with_labels(centroids: pa.Table, carried: list[dict]) -> pa.Table:
    """The centroid table with label, summary and keywords of the carried nodes (so the
    run's centroids.parquet has them too)."""
    by_node = {r["node_id"]: r for r in carried}
    nodes = centroids.column("node_id").to_pylist()
    got = [by_node.get(n) for n in nodes]
    cols = {
        "label": pa.array([r["label"] if r else None for r in got], pa.string()),
        "summary": pa.array([r["summary"] if r else None for r in got], pa.string()),
        "keywords": pa.array([list(r["keywords"]) if r and r["keywords"] is not None else None
                              for r in got], pa.list_(pa.string())),
    }
    for name, arr in cols.items():
        i = centroids.schema.get_field_index(name)
        centroids = centroids.set_column(i, name, arr) if i >= 0 else \
            centroids.append_column(name, arr)
    return centroids


def _renumbered(centroids: pa.Table, members: pa.Table, new_ids: np.ndarray,
                final: list[int], next_id: int) -> Identity:
    """Both tables with every top-level id ``new_ids[j]`` replaced by ``final[j]``
    (cluster_id columns and the ``cl_<id>`` prefix of node ids)."""
    final_arr = np.asarray(final, dtype=np.int64)
    mark = max(int(next_id), int(final_arr.max()) + 1 if len(final_arr) else 0)
    if np.array_equal(final_arr, new_ids):
        return Identity(centroids, members, next_id=mark)
    lut = {int(a): int(b) for a, b in zip(new_ids, final_arr)}
    order = np.argsort(new_ids)
    keys, vals = new_ids[order], final_arr[order]

    def ids(col) -> pa.Array:
        x = np.asarray(col.to_numpy(), dtype=np.int64)
        at = np.minimum(np.searchsorted(keys, x), len(keys) - 1)
        return pa.array(np.where((x >= 0) & (keys[at] == x), vals[at], x).astype(np.int32))

    def node(s: str | None) -> str | None:
        m = _NODE.match(s) if s is not None else None
        return f"cl_{lut.get(int(m[1]), int(m[1]))}{m[2]}" if m else s

    def nodes(col) -> pa.Array:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        values = pa.array([node(v) for v in arr.dictionary.to_pylist()], pa.string())
        return pa.DictionaryArray.from_arrays(arr.indices, values)

    def replace(tbl: pa.Table, name: str, arr) -> pa.Table:
        return tbl.set_column(tbl.schema.get_field_index(name), name, arr)

    centroids = replace(centroids, "cluster_id", ids(centroids.column("cluster_id")))
    centroids = replace(centroids, "node_id", pa.array(
        [node(v) for v in centroids.column("node_id").to_pylist()], pa.string()))
    centroids = replace(centroids, "parent_cluster_id", pa.array(
        [node(v) for v in centroids.column("parent_cluster_id").to_pylist()], pa.string()))
    centroids = replace(centroids, "child_cluster_ids", pa.array(
        [[node(c) for c in v] if v is not None else None
         for v in centroids.column("child_cluster_ids").to_pylist()], pa.list_(pa.string())))
    members = replace(members, "cluster_id", ids(members.column("cluster_id")))
    for name in ("node_id", "parent_cluster_id"):
        members = replace(members, name, nodes(members.column(name)))
    return Identity(centroids, members, next_id=mark)


def keep_known(cur, base_run: str, ids, fps: np.ndarray, labels: np.ndarray,
               sims: np.ndarray, coords: np.ndarray | None):
    """An assign run's rows that its base full run clustered and that did not change
    (same id, same vector fingerprint) keep that run's cluster (noise included),
    similarity and map position: on unchanged data an assign run reproduces its base
    run, and only new or edited rows go to the nearest centroid. Base runs from before
    fingerprints were stored keep nothing."""
    known = catalog.known_rows(cur, base_run, ids, fps)
    pos = np.asarray(known["pos"], dtype=np.int64)
    if not len(pos):
        return labels, sims, coords
    labels = labels.copy()
    sims = np.asarray(sims, dtype=np.float32).copy()
    labels[pos] = np.asarray(known["cluster_id"], dtype=np.int64)
    sim = known["sim"]
    sims[pos] = np.ma.filled(sim.astype(np.float32), np.nan) if np.ma.isMaskedArray(sim) \
        else np.asarray(sim, dtype=np.float32)
    if coords is not None:
        coords = np.array(coords, dtype=np.float32, copy=True)
        for axis, col in enumerate(("x", "y", "z")[:coords.shape[1]]):
            v = known[col]
            v = np.ma.filled(v.astype(np.float32), np.nan) if np.ma.isMaskedArray(v) \
                else np.asarray(v, dtype=np.float32)
            ok = ~np.isnan(v)
            coords[pos[ok], axis] = v[ok]
    return labels, sims, coords
