"""Catalog I/O of the labels area: label details, LLM cache, failures, enrichments, taxonomies.

The only module that reads and writes those ``duckcluster.*`` tables (and the
label columns of ``duckcluster.centroids``). DDL: ``sql/catalog_labels.sql``.
Callers own transactions: functions taking ``cur`` run inside whatever
BEGIN ... COMMIT the caller opened.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .._errors import SpecError, UnknownNameError, closest
from .._secrets import scrub, scrub_value
from .._source import quote_literal


@dataclass(frozen=True)
class NodeRow:
    """One centroid row of a run."""

    node_id: str
    cluster_id: int
    parent_id: str | None
    level: int
    size: int
    centroid: np.ndarray
    label: str | None = None
    summary: str | None = None
    keywords: tuple[str, ...] | None = None
    mean_similarity: float | None = None




def run_nodes(cur, run_id: str) -> list[NodeRow]:
    """Centroid rows of a run in stored order (top level, then sub-clusters pre-order)."""
    tbl = cur.sql("SELECT node_id, cluster_id, parent_cluster_id, hierarchy_level, size, "
                  "centroid, label, summary, keywords, mean_cosine_similarity FROM duckcluster.centroids "
                  "WHERE run_id = ? ORDER BY rowid", params=[run_id]).to_arrow_table()
    cents = tbl.column("centroid").to_pylist()
    out = []
    for i, r in enumerate(tbl.drop_columns(["centroid"]).to_pylist()):
        out.append(NodeRow(r["node_id"], int(r["cluster_id"]), r["parent_cluster_id"],
                           int(r["hierarchy_level"]), int(r["size"]),
                           np.asarray(cents[i], dtype=np.float32), r["label"], r["summary"],
                           tuple(r["keywords"]) if r["keywords"] is not None else None,
                           r["mean_cosine_similarity"]))
    return out


def run_members(cur, run_id: str) -> pa.Table:
    """id, cluster_id, node_id (deepest node), similarity of every non-noise member."""
    return cur.sql("SELECT id, cluster_id, node_id, cosine_similarity_to_centroid AS sim "
                   "FROM duckcluster.members WHERE run_id = ? AND cluster_id >= 0 ORDER BY id",
                   params=[run_id]).to_arrow_table()


# -- label cache -------------------------------------------------------------------------

def cache_get(cur, keys: Sequence[str], now: _dt.datetime) -> dict[str, Any]:
    """Unexpired cached answers for ``keys``."""
    if not keys:
        return {}
    rows = cur.execute(
        "SELECT cache_key, response FROM duckcluster.label_cache WHERE expires_at > ? "
        "AND cache_key IN (SELECT unnest(?::VARCHAR[])) ORDER BY created_at",
        [now, list(keys)]).fetchall()
    return {k: json.loads(v) for k, v in rows}


def cache_put(cur, entries: Iterable[tuple[str, str, str, Any]], now: _dt.datetime,
              ttl_seconds: int) -> None:
    """Store (key, provider, model, answer) entries; expired entries are purged."""
    exp = now + _dt.timedelta(seconds=ttl_seconds)
    cur.execute("DELETE FROM duckcluster.label_cache WHERE expires_at <= ?", [now])
    for key, provider, model, value in entries:
        cur.execute("DELETE FROM duckcluster.label_cache WHERE cache_key = ?", [key])
        cur.execute("INSERT INTO duckcluster.label_cache VALUES (?, ?, ?, ?, ?, ?)",
                    [key, provider, model, json.dumps(scrub_value(value), sort_keys=True),
                     now, exp])


# -- labels ----------------------------------------------------------------------------------

def write_labels(cur, run_id: str, name: str, rows: Sequence[Mapping[str, Any]],
                 now: _dt.datetime) -> None:
    """Set label / summary / keywords on the run's centroids and replace its label details.

    ``rows``: dicts with node_id, label, summary, keywords, attributes, source, provider,
    model, representative_ids, merged_into (and carried_from_run_id for carried labels).
    """
    if not rows:
        return
    # an answer (or a cached one from an older version) may echo a key: never store it
    rows = [{**r, **scrub_value({k: r[k] for k in ("label", "summary", "keywords",
                                                   "attributes")})} for r in rows]
    tbl = pa.table({
        "node_id": pa.array([r["node_id"] for r in rows], pa.string()),
        "label": pa.array([r["label"] for r in rows], pa.string()),
        "summary": pa.array([r["summary"] for r in rows], pa.string()),
        "keywords": pa.array([None if r["keywords"] is None else list(r["keywords"])
                              for r in rows], pa.list_(pa.string())),
        "attributes": pa.array([json.dumps(r["attributes"], sort_keys=True)
                                if r["attributes"] else None for r in rows], pa.string()),
        "source": pa.array([r["source"] for r in rows], pa.string()),
        "provider": pa.array([r["provider"] for r in rows], pa.string()),
        "model": pa.array([r["model"] for r in rows], pa.string()),
        "representative_ids": pa.array([list(r["representative_ids"]) for r in rows],
                                       pa.list_(pa.string())),
        "merged_into": pa.array([r["merged_into"] for r in rows], pa.string()),
        "carried_from_run_id": pa.array([r.get("carried_from_run_id") for r in rows],
                                        pa.string()),
    })
    view = f"__dc_labels_{run_id}"
    cur.register(view, tbl)
    try:
        cur.execute(f"UPDATE duckcluster.centroids AS c SET label = l.label, summary = l.summary, "
                    f"keywords = l.keywords FROM {view} AS l WHERE c.run_id = ? AND "
                    f"c.node_id = l.node_id", [run_id])
        cur.execute(f"DELETE FROM duckcluster.labels WHERE run_id = ? AND node_id IN "
                    f"(SELECT node_id FROM {view})", [run_id])
        cur.execute(f"INSERT INTO duckcluster.labels (run_id, name, node_id, label, summary, "
                    f"keywords, attributes, source, provider, model, representative_ids, "
                    f"merged_into, labeled_at, carried_from_run_id) SELECT ?, ?, node_id, label, "
                    f"summary, keywords, attributes::JSON, source, provider, model, "
                    f"representative_ids, merged_into, ?, carried_from_run_id FROM {view}",
                    [run_id, name, now])
    finally:
        cur.unregister(view)


def has_labels(cur, name: str) -> bool:
    """Whether any run of a definition has labels (cluster_label, or carried)."""
    return cur.execute("SELECT count(*) > 0 FROM duckcluster.labels WHERE name = ?",
                       [name]).fetchall()[0][0]


def label_details(cur, run_id: str) -> dict[str, dict[str, Any]]:
    """node_id -> the run's duckcluster.labels row (source, provider, model, ...)."""
    rel = cur.execute("SELECT node_id, attributes, source, provider, model, representative_ids, "
                      "carried_from_run_id FROM duckcluster.labels WHERE run_id = ?", [run_id])
    cols = [d[0] for d in rel.description]
    out = {}
    for row in rel.fetchall():
        d = dict(zip(cols, row))
        if d["attributes"] is not None:
            d["attributes"] = json.loads(d["attributes"])
        out[d.pop("node_id")] = d
    return out


def write_failures(cur, run_id: str, name: str, failures: Sequence[Mapping[str, Any]],
                   now: _dt.datetime) -> None:
    for f in failures:
        cur.execute("INSERT INTO duckcluster.label_failures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [run_id, name, f["node_id"], f["provider"], f["model"], f["kind"],
                     scrub(f["error"]), f["attempts"], now])


def rewrite_centroids_artifact(cur, run_id: str) -> str | None:
    """Rewrite the run's centroids.parquet from the catalog so it carries the labels."""
    row = cur.execute("SELECT artifacts_path FROM duckcluster.runs WHERE run_id = ?",
                      [run_id]).fetchall()
    path = row[0][0] if row else None
    if not path:
        return None
    final = f"{path.rstrip('/')}/centroids.parquet"
    local = "://" not in final
    if local and not os.path.isdir(path):
        return None
    tmp = final + ".tmp" if local else final
    cur.execute(f"COPY (SELECT * FROM duckcluster.centroids WHERE run_id = "
                f"{quote_literal(run_id)} ORDER BY rowid) TO {quote_literal(tmp)} "
                "(FORMAT parquet)")
    if local:
        os.replace(tmp, final)
    return final


# -- enrichments -------------------------------------------------------------------------------

def record_enrichment(cur, row: Mapping[str, Any]) -> None:
    cur.execute("INSERT INTO duckcluster.enrichments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [row["name"], row["run_id"], row["target"], row["id_column"], list(row["fields"]),
                 list(row["columns"]), row["created_target"], row["n_rows"], row["n_matched"],
                 row["n_inserted"], row["enriched_at"]])


def enriched_columns(cur, target: str) -> set[str]:
    """Columns of ``target`` that earlier cluster_enrich calls wrote (safe to overwrite)."""
    rows = cur.execute("SELECT DISTINCT unnest(columns) FROM duckcluster.enrichments "
                       "WHERE target = ?", [target]).fetchall()
    return {r[0] for r in rows}


# -- taxonomies --------------------------------------------------------------------------------

def taxonomy_names(cur) -> list[str]:
    return [r[0] for r in cur.execute(
        "SELECT taxonomy FROM duckcluster.taxonomies ORDER BY taxonomy").fetchall()]


def taxonomy_exists(cur, taxonomy: str) -> bool:
    return cur.execute("SELECT count(*) FROM duckcluster.taxonomies WHERE taxonomy = ?",
                       [taxonomy]).fetchall()[0][0] > 0


def load_taxonomy(cur, taxonomy: str) -> tuple[dict[str, Any], pa.Table]:
    """(header row, nodes table in level, node_id order) or UnknownNameError."""
    rel = cur.execute("SELECT * FROM duckcluster.taxonomies WHERE taxonomy = ?", [taxonomy])
    cols = [d[0] for d in rel.description]
    row = rel.fetchall()
    if not row:
        names = taxonomy_names(cur)
        raise UnknownNameError(
            f"No taxonomy named {taxonomy!r}.{closest(taxonomy, names)} Existing taxonomies: "
            f"{', '.join(repr(n) for n in names) or 'none yet'}. Create one with "
            f"SELECT cluster_promote('<cluster name>', taxonomy_name := {quote_literal(taxonomy)}).")
    nodes = cur.sql("SELECT node_id, parent_node_id, level, label, centroid FROM "
                    "duckcluster.taxonomy_nodes WHERE taxonomy = ? ORDER BY level, node_id",
                    params=[taxonomy]).to_arrow_table()
    return dict(zip(cols, row[0])), nodes


def write_taxonomy(cur, taxonomy: str, nodes: pa.Table, threshold: float, dim: int,
                   mode: str, now: _dt.datetime) -> int:
    """Create, replace or merge (upsert by node_id) a taxonomy's nodes; returns the node count."""
    exists = taxonomy_exists(cur, taxonomy)
    if exists and mode == "create":
        raise SpecError(
            f"Taxonomy {taxonomy!r} already exists. Pass mode := 'replace' to rebuild it from "
            "this run, or mode := 'merge' to add and update nodes by node_id.")
    if exists:
        old_dim = cur.execute("SELECT dim FROM duckcluster.taxonomies WHERE taxonomy = ?",
                              [taxonomy]).fetchall()[0][0]
        if mode == "merge" and old_dim != dim:
            raise SpecError(f"Taxonomy {taxonomy!r} has {old_dim}-dimensional nodes; this run's "
                            f"centroids have {dim}. Merge only runs of the same embedding model, "
                            "or use mode := 'replace'.")
    view = "__dc_taxonomy_nodes"
    cur.register(view, nodes)
    try:
        if mode == "replace":
            cur.execute("DELETE FROM duckcluster.taxonomy_nodes WHERE taxonomy = ?", [taxonomy])
        else:
            cur.execute(f"DELETE FROM duckcluster.taxonomy_nodes WHERE taxonomy = ? AND node_id IN "
                        f"(SELECT node_id FROM {view})", [taxonomy])
        cur.execute(f"INSERT INTO duckcluster.taxonomy_nodes SELECT ?, node_id, parent_node_id, "
                    f"level, label, summary, keywords, centroid, size, source_name, source_run_id, "
                    f"source_node_id, ? FROM {view}", [taxonomy, now])
    finally:
        cur.unregister(view)
    n = cur.execute("SELECT count(*) FROM duckcluster.taxonomy_nodes WHERE taxonomy = ?",
                    [taxonomy]).fetchall()[0][0]
    if exists:
        cur.execute("UPDATE duckcluster.taxonomies SET threshold = ?, dim = ?, n_nodes = ?, "
                    "updated_at = ? WHERE taxonomy = ?", [threshold, dim, n, now, taxonomy])
    else:
        cur.execute("INSERT INTO duckcluster.taxonomies VALUES (?, ?, ?, ?, ?, ?)",
                    [taxonomy, threshold, dim, n, now, now])
    return int(n)


def delete_taxonomy(cur, taxonomy: str) -> None:
    load_taxonomy(cur, taxonomy)
    cur.execute("DELETE FROM duckcluster.taxonomy_nodes WHERE taxonomy = ?", [taxonomy])
    cur.execute("DELETE FROM duckcluster.taxonomies WHERE taxonomy = ?", [taxonomy])
