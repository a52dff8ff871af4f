"""Definitions, runs, members, centroids and projections in ``duckcluster.*``, and run artifacts.

Layout of artifacts (a local folder by default)::

    <artifacts_dir>/<quoted name>/<run_id>/centroids.parquet
    <artifacts_dir>/<quoted name>/<run_id>/members.parquet

A run is atomic: Parquet files are written into ``<run_id>.tmp`` and renamed,
then centroids, members and the run row commit in one transaction; on any
error both are undone and the run is recorded as ``failed`` with its error.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import secrets
import shutil
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import duckdb
import numpy as np
import pyarrow as pa

from .._errors import RunNotFoundError, SpecError, UnknownNameError, closest
from .._secrets import scrub
from .._source import quote_literal
from ..core.spec import ClusterSpec
from ..core.vectors import matrix
from . import DEFINITION_TABLES, Settings, ensure, sql_text  # noqa: F401  (re-exported)

_LIBS = ("duckcluster", "duckdb", "numpy", "scikit-learn", "hdbscan", "umap-learn", "pyarrow")


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "not installed"
    return out


# -- settings ---------------------------------------------------------------

def resolve_artifacts_dir(cur: duckdb.DuckDBPyConnection, given: str | None) -> str:
    """Explicit > stored in duckcluster.meta > next to the database file > a temp folder."""
    if given:
        path = given if "://" in given else os.path.abspath(given)
        cur.execute("INSERT OR REPLACE INTO duckcluster.meta VALUES ('artifacts_dir', ?)", [path])
        return path
    row = cur.execute("SELECT value FROM duckcluster.meta WHERE key = 'artifacts_dir'").fetchall()
    if row:
        return row[0][0]
    db_path = cur.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0][0]
    if db_path and db_path != ":memory:":
        base, _ = os.path.splitext(os.path.abspath(db_path))
        path = base + ".artifacts"
        try:
            cur.execute("INSERT OR REPLACE INTO duckcluster.meta VALUES ('artifacts_dir', ?)", [path])
        except duckdb.Error:  # read-only database: just use it
            pass
        return path
    import tempfile

    return tempfile.mkdtemp(prefix="duckcluster-artifacts-")


def run_dir(settings: Settings, name: str, run_id: str) -> str:
    safe = urllib.parse.quote(name, safe="")
    if safe in ("", ".", ".."):
        safe = safe.replace(".", "%2E") or "_"
    return f"{settings.artifacts_dir.rstrip('/')}/{safe}/{run_id}"


def require_writable(cur, what: str) -> None:
    """A clear error instead of DuckDB's aborted-transaction one on a read-only database."""
    row = cur.execute("SELECT readonly FROM duckdb_databases() WHERE database_name = "
                      "current_database()").fetchall()
    if row and row[0][0]:
        raise SpecError(f"{what} writes to the catalog, but this database is open read-only. "
                        "Reopen it read-write (duckcluster.connect(path)).")


# -- definitions --------------------------------------------------------------

def definition_names(cur) -> list[str]:
    return [r[0] for r in cur.execute(
        "SELECT name FROM duckcluster.definitions ORDER BY name").fetchall()]


def put_definition(cur, spec: ClusterSpec, replace: bool = False) -> None:
    exists = cur.execute("SELECT count(*) FROM duckcluster.definitions WHERE name = ?",
                         [spec.name]).fetchall()[0][0]
    if exists and not replace:
        raise SpecError(
            f"A cluster definition named {spec.name!r} already exists. Pick another name, "
            f"pass replace := true to overwrite it, or SELECT cluster_delete({spec.name!r}) first."
        )
    ts = now()
    if exists:
        cur.execute("UPDATE duckcluster.definitions SET spec = ?, updated_at = ? WHERE name = ?",
                    [spec.to_json(), ts, spec.name])
    else:
        cur.execute("INSERT INTO duckcluster.definitions VALUES (?, ?, ?, ?)",
                    [spec.name, spec.to_json(), ts, ts])


def get_definition(cur, name: str) -> ClusterSpec:
    row = cur.execute("SELECT spec FROM duckcluster.definitions WHERE name = ?", [name]).fetchall()
    if not row:
        names = definition_names(cur)
        listed = ", ".join(repr(n) for n in names) if names else "none yet"
        raise UnknownNameError(
            f"No cluster definition named {name!r}.{closest(name, names)} Existing definitions: "
            f"{listed}. Create one with SELECT cluster_create({name!r}, source := ..., "
            "embedding := ...)."
        )
    return ClusterSpec.from_json(row[0][0])


def delete_definition(cur, name: str, drop_artifacts: bool, settings: Settings) -> int:
    get_definition(cur, name)
    paths = [r[0] for r in cur.execute(
        "SELECT artifacts_path FROM duckcluster.runs WHERE name = ? AND artifacts_path IS NOT NULL",
        [name]).fetchall()]
    cur.execute("BEGIN")
    try:
        cur.execute("DELETE FROM duckcluster.definitions WHERE name = ?", [name])
        if drop_artifacts:
            for table in DEFINITION_TABLES:
                cur.execute(f"DELETE FROM duckcluster.{table} WHERE name = ?", [name])
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    if drop_artifacts:
        for p in paths:
            _rmtree(p)
    return len(paths)


# -- runs -------------------------------------------------------------------------

def new_run_id() -> str:
    return f"run_{now():%Y%m%dT%H%M%S}_{secrets.token_hex(4)}"


def start_run(cur, spec: ClusterSpec, mode: str, threshold: float | None,
              status: str = "running") -> str:
    """Insert the run row (committed at once, so a failure is always recorded)."""
    run_id = new_run_id()
    cur.execute(
        "INSERT INTO duckcluster.runs (run_id, run_seq, name, mode, status, started_at, seed, "
        "assignment_threshold, spec, versions, pid) SELECT ?, coalesce(max(run_seq), 0) + 1, ?, ?, "
        "?, ?, ?, ?, ?, ?, ? FROM duckcluster.runs",
        [run_id, spec.name, mode, status, now(), spec.seed, threshold, spec.to_json(),
         json.dumps(library_versions(), sort_keys=True), os.getpid()])
    return run_id


def set_status(cur, run_id: str, status: str) -> None:
    cur.execute("UPDATE duckcluster.runs SET status = ? WHERE run_id = ?", [status, run_id])


def fail_run(cur, run_id: str, error: str, started: _dt.datetime | None = None) -> None:
    ts = now()
    cur.execute(
        "UPDATE duckcluster.runs SET status = 'failed', error = ?, finished_at = ?, "
        "duration_s = date_diff('microsecond', started_at, ?::TIMESTAMP) / 1e6 WHERE run_id = ?",
        [scrub(error), ts, ts, run_id])


def note_run(cur, run_id: str, note: str) -> None:
    """Attach a note to a succeeded run (its ``error`` column), e.g. a failed follow-up."""
    cur.execute("UPDATE duckcluster.runs SET error = ? WHERE run_id = ?", [scrub(note), run_id])


def mark_abandoned(cur, alive_pids: set[int], settings: Settings) -> int:
    """Runs left queued/running by a process that is gone become 'abandoned'; their
    half-written artifacts (the run folder or its ``.tmp``) are removed. Returns how
    many were marked."""
    rows = cur.execute(
        "SELECT run_id, pid, name FROM duckcluster.runs "
        "WHERE status IN ('queued', 'running')").fetchall()
    dead = [r for r in rows if r[1] not in alive_pids]
    for run_id, _pid, name in dead:
        cur.execute("BEGIN")
        cur.execute("DELETE FROM duckcluster.members WHERE run_id = ?", [run_id])
        cur.execute("DELETE FROM duckcluster.centroids WHERE run_id = ?", [run_id])
        cur.execute(
            "UPDATE duckcluster.runs SET status = 'abandoned', error = coalesce(error, "
            "'the process running it ended before it finished'), finished_at = ? WHERE run_id = ?",
            [now(), run_id])
        cur.execute("COMMIT")
        path = run_dir(settings, name, run_id)
        _rmtree(path)
        _rmtree(path + ".tmp")
    return len(dead)


def latest_run(cur, name: str, mode: str | None = None) -> str:
    q = ("SELECT run_id FROM duckcluster.runs WHERE name = ? AND status = 'succeeded'"
         + (" AND mode = ?" if mode else "") + " ORDER BY run_seq DESC LIMIT 1")
    row = cur.execute(q, [name, mode] if mode else [name]).fetchall()
    if not row:
        get_definition(cur, name)
        kind = f"successful {mode} run" if mode else "successful run"
        raise RunNotFoundError(
            f"Cluster {name!r} has no {kind} yet. Run SELECT cluster_execute({name!r}) first.")
    return row[0][0]


def get_run(cur, run_id: str) -> dict:
    rel = cur.execute("SELECT * FROM duckcluster.runs WHERE run_id = ?", [run_id])
    cols = [d[0] for d in rel.description]
    row = rel.fetchall()
    if not row:
        raise RunNotFoundError(f"No run with id {run_id!r}. List runs with "
                               "SELECT * FROM cluster_runs('<name>').")
    return dict(zip(cols, row[0]))


@dataclass(frozen=True)
class Centroids:
    """A run's top-level centroids: what assignment, drift and scale-out read."""

    run_id: str
    cluster_ids: np.ndarray                  # (k,) int32, ascending
    C: np.ndarray                            # (k, d) float32, as stored (unit rows)
    column: pa.Array                         # the stored ``centroid`` column (FLOAT[])
    labels: dict[str, list] | None = None    # field -> values aligned with cluster_ids


def resolve_run(cur, name: str, run_id: str | None = None, mode: str | None = None) -> str:
    """``run_id`` checked to be a successful run of definition ``name``, or its latest one
    (of ``mode`` when given)."""
    get_definition(cur, name)
    if run_id is None:
        return latest_run(cur, name, mode=mode)
    row = cur.execute("SELECT status, mode FROM duckcluster.runs WHERE run_id = ? AND name = ?",
                      [run_id, name]).fetchall()
    if not row or row[0][0] != "succeeded" or (mode and row[0][1] != mode):
        kind = f"successful {mode} run" if mode else "successful run"
        raise RunNotFoundError(
            f"No {kind} {run_id!r} of cluster {name!r}. List runs with "
            f"SELECT * FROM cluster_runs({quote_literal(name)}).")
    return run_id


def centroid_matrix(cur, run_id: str, fields: tuple[str, ...] = ()) -> Centroids:
    """Top-level centroids of a run as a (k, d) float32 matrix, plus the label ``fields``
    (``label``, ``summary``, ``keywords``) asked for. A run with no clusters gives k = 0."""
    extra = "".join(f", {f}" for f in fields if f in ("label", "summary", "keywords"))
    tbl = cur.sql(
        f"SELECT cluster_id, centroid{extra} FROM duckcluster.centroids WHERE run_id = ? AND "
        "hierarchy_level = 0 ORDER BY cluster_id", params=[run_id]).to_arrow_table()
    column = tbl.column("centroid").combine_chunks()
    ids = np.asarray(tbl.column("cluster_id").to_numpy(), dtype=np.int32)
    labels = {f: tbl.column(f).to_pylist() for f in fields if f in tbl.column_names}
    return Centroids(run_id=run_id, cluster_ids=ids, C=matrix(column, len(ids)), column=column,
                     labels=labels or None)


def load_projection(cur, run_id: str):
    """The stored plotting projection of a run, or None (runs from before it was kept)."""
    from ..core.projection import Projection

    row = cur.execute("SELECT dimensions, mean, components FROM duckcluster.projections "
                      "WHERE run_id = ?", [run_id]).fetchall()
    return Projection.from_row(*row[0]) if row else None


def commit_run(cur, run_id: str, settings: Settings, centroids: pa.Table, members: pa.Table,
               updates: dict, projection: dict | None = None,
               within: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> str:
    """Write artifacts, then rows + run status in one transaction. All or nothing.

    ``projection``: the run's plotting PCA (:meth:`Projection.as_row`), stored so
    assign runs based on this one use the same map. ``within(cur)``: more writes of
    the run (its lineage, carried labels) inside the same transaction."""
    spec_name = updates.pop("_name")
    final = run_dir(settings, spec_name, run_id)
    local = "://" not in final
    tmp = final + ".tmp" if local else final
    try:
        if local:
            os.makedirs(tmp, exist_ok=True)
        for fname, tbl in (("centroids", centroids), ("members", members)):
            view = f"__dc_{fname}_{run_id}"
            cur.register(view, tbl)
            try:
                cur.execute(f"COPY (SELECT * FROM {view}) TO "
                            f"{quote_literal(tmp + '/' + fname + '.parquet')} (FORMAT parquet)")
            finally:
                cur.unregister(view)
        if local:
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
        views = {fname: f"__dc_{fname}_{run_id}" for fname in ("centroids", "members")}
        cur.register(views["centroids"], centroids)
        cur.register(views["members"], members)
        try:  # views live outside the transaction: an aborted one cannot unregister
            cur.execute("BEGIN")
            try:
                for fname, tbl in (("centroids", centroids), ("members", members)):
                    cols = ", ".join(f'"{c}"' for c in tbl.column_names)
                    cur.execute(f"INSERT INTO duckcluster.{fname} ({cols}) "
                                f"SELECT {cols} FROM {views[fname]}")
                if projection is not None:
                    cur.execute("INSERT INTO duckcluster.projections VALUES (?, ?, ?, ?, ?)",
                                [run_id, spec_name, projection["dimensions"],
                                 projection["mean"], projection["components"]])
                if within is not None:
                    within(cur)
                finished = now()
                updates = {**updates, "status": "succeeded", "artifacts_path": final,
                           "finished_at": finished}
                sets = ", ".join(f"{k} = ?" for k in updates)
                cur.execute(f"UPDATE duckcluster.runs SET {sets}, duration_s = "
                            "date_diff('microsecond', started_at, ?::TIMESTAMP) / 1e6 "
                            "WHERE run_id = ?", [*updates.values(), finished, run_id])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        finally:
            for view in views.values():
                cur.unregister(view)
    except BaseException:
        if local:
            _rmtree(tmp)
            _rmtree(final)
        raise
    return final


# -- lineage ------------------------------------------------------------------------

def previous_full_run(cur, name: str) -> str | None:
    """The latest successful full run of a definition, or None (its first run)."""
    row = cur.execute("SELECT run_id FROM duckcluster.runs WHERE name = ? AND status = "
                      "'succeeded' AND mode = 'full' ORDER BY run_seq DESC LIMIT 1",
                      [name]).fetchall()
    return row[0][0] if row else None


def top_nodes(cur, run_id: str) -> pa.Table:
    """cluster_id, node_id, size, centroid, label, summary, keywords of a run's top-level
    clusters (cluster_id order)."""
    return cur.sql("SELECT cluster_id, node_id, size, centroid, label, summary, keywords "
                   "FROM duckcluster.centroids WHERE run_id = ? AND hierarchy_level = 0 "
                   "ORDER BY cluster_id", params=[run_id]).to_arrow_table()


def member_flows(cur, run_id: str, members: pa.Table) -> list[tuple[int, int, int]]:
    """(cluster_id in ``run_id``, cluster_id in ``members``, rows) over the ids both hold
    (noise is -1): one hash join in DuckDB."""
    view = f"__dc_flow_{secrets.token_hex(4)}"
    cur.register(view, members.select(["id", "cluster_id"]))
    try:
        return [(int(a), int(b), int(n)) for a, b, n in cur.execute(
            f"SELECT o.cluster_id, n.cluster_id, count(*) FROM duckcluster.members o "
            f"JOIN {view} n ON n.id = o.id WHERE o.run_id = ? GROUP BY ALL",
            [run_id]).fetchall()]
    finally:
        cur.unregister(view)


def known_rows(cur, run_id: str, ids, fps: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of a run that are also among (``ids``, ``fps``: fingerprints) unchanged:
    ``pos`` (index into ``ids``), cluster_id, similarity, x, y, z (one hash join)."""
    view = f"__dc_known_{secrets.token_hex(4)}"
    cur.register(view, pa.table({"id": ids, "fp": pa.array(fps, pa.int64()),
                                 "pos": pa.array(np.arange(len(fps), dtype=np.int64))}))
    try:
        return cur.sql(
            f"SELECT n.pos, o.cluster_id, o.cosine_similarity_to_centroid AS sim, o.x, o.y, o.z "
            f"FROM duckcluster.members o JOIN {view} n ON n.id = o.id AND n.fp = o.fingerprint "
            f"WHERE o.run_id = ?", params=[run_id]).fetchnumpy()
    finally:
        cur.unregister(view)


def next_cluster_id(cur, name: str) -> int:
    """The lowest cluster id the definition never used: its stored mark, or one above
    every id of its stored runs (definitions from before the mark existed)."""
    mark = cur.execute("SELECT max(next_cluster_id) FROM duckcluster.cluster_id_marks "
                       "WHERE name = ?", [name]).fetchall()[0][0]
    top = cur.execute("SELECT max(cluster_id) FROM duckcluster.centroids WHERE name = ?",
                      [name]).fetchall()[0][0]
    return max(int(mark) if mark is not None else 0, int(top) + 1 if top is not None else 0)


def write_lineage(cur, name: str, rows: list[dict], next_id: int) -> None:
    """Store a run's lineage rows and the definition's new id mark (inside the caller's
    transaction)."""
    if rows:  # a few rows per cluster: no view to register inside the transaction
        cols = list(rows[0])
        cur.executemany(f"INSERT INTO duckcluster.lineage ({', '.join(cols)}) VALUES "
                        f"({', '.join('?' * len(cols))})", [[r[c] for c in cols] for r in rows])
    cur.execute("DELETE FROM duckcluster.cluster_id_marks WHERE name = ?", [name])
    cur.execute("INSERT INTO duckcluster.cluster_id_marks VALUES (?, ?)", [name, int(next_id)])


def _rmtree(path: str) -> None:
    if path and "://" not in path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
