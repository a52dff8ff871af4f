"""Definitions, runs, members, centroids and projections in ``duckcluster.*``, and run artifacts.

Layout of artifacts (a local folder by default)::

    <artifacts_dir>/<quoted name>/<run_id>/centroids.parquet
    <artifacts_dir>/<quoted name>/<run_id>/members.parquet

(a quoted name longer than :data:`MAX_FOLDER_NAME` is cut and ends in ``~<hash>``).

A run is atomic: Parquet files are written into ``<run_id>.tmp`` and renamed,
then centroids, members and the run row commit in one transaction; on any
error both are undone and the run is recorded as ``failed`` with its error.

Lifecycle, race-free (see :func:`claimed`): a run start (with the refusal of a second full
run and the next ``run_seq``), the start of a queued run and ``cluster_delete`` each run in
one transaction that first updates the claim row of ``duckcluster.run_claims``; DuckDB gives
the second of two concurrent ones a write-write conflict and it tries again, so no
check-then-act race remains. ``cluster_delete`` refuses while a run of the definition is
running (queued runs are failed), and a run commits only while its row is still
``running``. A run's process is identified by :func:`process_token` (boot id, pid and
process start time), so a reused pid is not taken for a dead writer. Runs belong to one
incarnation of a definition: those started before it was (re)created are not its runs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import random
import secrets
import shutil
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import duckdb
import numpy as np
import pyarrow as pa

from .._errors import (
    DatabaseBusyError,
    RunFailedError,
    RunInProgressError,
    RunNotFoundError,
    SpecError,
    UnknownNameError,
    closest,
)
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


#: Longest folder name of a definition's artifacts (file systems allow 255 bytes; a
#: 128-character name quotes to up to 1,152).
MAX_FOLDER_NAME = 200


def run_dir(settings: Settings, name: str, run_id: str) -> str:
    return f"{settings.artifacts_dir.rstrip('/')}/{folder_name(name)}/{run_id}"


def folder_name(name: str) -> str:
    """The URL-quoted name; a long one (non-ASCII names quote 3-9 characters per
    character) is cut and given a hash of the whole name, so every valid name fits."""
    import hashlib

    safe = urllib.parse.quote(name, safe="")
    if safe in ("", ".", ".."):
        safe = safe.replace(".", "%2E") or "_"
    if len(safe) > MAX_FOLDER_NAME:
        head = safe[:MAX_FOLDER_NAME - 17]
        cut = head.rfind("%", len(head) - 2)  # never split a %XX escape
        head = head[:cut] if cut >= 0 else head
        safe = f"{head}~{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return safe


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
        cur.execute("INSERT INTO duckcluster.definitions (name, spec, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?)", [spec.name, spec.to_json(), ts, ts])
        cur.execute("INSERT OR REPLACE INTO duckcluster.meta "
                    f"SELECT 'incarnation:' || ?, CAST(({_CURRENT_SEQ}) AS VARCHAR)",
                    [spec.name])
    _EPOCH[0] += 1


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
    """Remove a definition (and, with ``drop_artifacts``, every row and file of its runs).

    Refused while one of its runs is running in this process (RunInProgressError: its
    commit would leave members, centroids and files no definition owns); its queued runs
    are failed, runs of dead processes abandoned. Returns the number of runs whose files
    were (or would have been) removed."""
    get_definition(cur, name)
    token = process_token()
    out: dict[str, list] = {}

    def body(_seq: int | None) -> None:
        get_definition(cur, name)  # in this transaction: deleted meanwhile?
        active = _active_runs(cur, name)
        busy = [r for r in active if r["status"] == "running" and r["process_token"] == token]
        if busy:
            b = busy[0]
            raise RunInProgressError(
                f"Cluster {name!r} has a {b['mode']} run in progress: {b['run_id']} (running "
                f"since {b['started_at']:%Y-%m-%d %H:%M:%S} UTC). Deleting the definition now "
                "would leave that run's members, centroids and files without an owner, so "
                f"nothing was deleted. Wait for it (SELECT cluster_wait('{b['run_id']}')), "
                "then delete again.")
        dead = [r for r in active if r["process_token"] != token]
        _abandon(cur, dead)
        ts = now()
        for r in active:
            if r not in dead:  # queued here: it must never start
                cur.execute(
                    "UPDATE duckcluster.runs SET status = 'failed', error = ?, finished_at = ? "
                    "WHERE run_id = ?",
                    [f"UnknownNameError: No cluster definition named {name!r}: cluster_delete "
                     "removed it before this queued run started.", ts, r["run_id"]])
        out["paths"] = [r[0] for r in cur.execute(
            "SELECT artifacts_path FROM duckcluster.runs WHERE name = ? AND "
            "artifacts_path IS NOT NULL", [name]).fetchall()]
        cur.execute("DELETE FROM duckcluster.definitions WHERE name = ?", [name])
        cur.execute("DELETE FROM duckcluster.meta WHERE key = 'incarnation:' || ?", [name])
        from .read_side import drop_members_view

        drop_members_view(cur, name)
        if drop_artifacts:
            for table in DEFINITION_TABLES:
                cur.execute(f"DELETE FROM duckcluster.{table} WHERE name = ?", [name])
        out["dead"] = dead

    claimed(cur, body, what="cluster_delete")
    _EPOCH[0] += 1
    _remove_run_folders(out["dead"], settings)
    if drop_artifacts:
        for p in out["paths"]:
            _rmtree(p)
    return len(out["paths"])


# -- runs -------------------------------------------------------------------------

def new_run_id() -> str:
    return f"run_{now():%Y%m%dT%H%M%S}_{secrets.token_hex(4)}"


# -- processes and the claim ------------------------------------------------------------

_TOKEN: tuple[int, str] | None = None
_EPOCH = [0]
_CLAIM_TRIES = 400
#: The runs of a definition's incarnation (a definition of that name deleted before
#: keeps its runs, which are not this one's): the runs whose run_seq is above the one the
#: definition was created at (duckcluster.meta 'incarnation:<name>'), so a wall clock set
#: back after cluster_create hides nothing; definitions without that row (written by hand
#: or by an older duckcluster, until opened read-write) fall back to started_at >= created_at.
INCARNATION = ("coalesce(r.run_seq > (SELECT CAST(i.value AS BIGINT) FROM duckcluster.meta i "
               "WHERE i.key = 'incarnation:' || d.name), r.started_at >= d.created_at)")
#: The run_seq a definition created now starts after: every run that starts later takes
#: a higher one (see _take_claim).
_CURRENT_SEQ = ("SELECT greatest(coalesce((SELECT max(run_seq) FROM duckcluster.runs), 0), "
                "coalesce((SELECT max(run_seq) FROM duckcluster.run_claims), 0))")


def epoch() -> int:
    """A counter bumped whenever this process creates, replaces or deletes a definition:
    caches of run lookups (assign_cluster's centroids) compare it."""
    return _EPOCH[0]


def process_token() -> str:
    """Who runs a run: ``<boot id>:<pid>:<start time in clock ticks>`` from /proc, so a
    later process that gets the same pid (PID 1 in a container) has another token; where
    /proc is missing, ``<host>:<pid>:<random>`` drawn once per process."""
    global _TOKEN
    pid = os.getpid()
    if _TOKEN is None or _TOKEN[0] != pid:  # (a forked child has its own)
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
                boot = f.read().strip()
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                start = f.read().rsplit(")", 1)[1].split()[19]  # field 22: starttime
            token = f"{boot}:{pid}:{start}"
        except (OSError, IndexError):
            token = f"{platform.node()}:{pid}:{secrets.token_hex(8)}"
        _TOKEN = (pid, token)
    return _TOKEN[1]


def claimed(cur, body: Callable[[int | None], object], next_seq: bool = False,
            what: str = "This call"):
    """``body(run_seq)`` in one transaction that first updates the claim row.

    Two concurrent claims conflict in DuckDB (the second writer of the row gets a
    TransactionException, whether the first is still open or committed after the second
    began); the loser rolls back and tries again with a fresh snapshot, which sees what
    the winner committed. ``next_seq``: also take the next ``run_seq`` (passed to
    ``body``; unique, above every stored one). ``what`` names the call in the error on a
    read-only database."""
    require_writable(cur, what)
    delay = 0.002
    for _ in range(_CLAIM_TRIES):
        cur.execute("BEGIN")
        try:
            seq = _take_claim(cur, next_seq)
            out = body(seq)
            cur.execute("COMMIT")
            return out
        except duckdb.TransactionException as exc:
            _rollback(cur)
            if "onflict" not in str(exc):
                raise
            time.sleep(delay * (1.0 + random.random()))
            delay = min(delay * 2, 0.1)
        except BaseException:
            _rollback(cur)
            raise
    raise DatabaseBusyError("The run catalog stayed busy with other sessions' runs for too "
                            "long; try again.")


def _take_claim(cur, next_seq: bool) -> int | None:
    seq = ("greatest(run_seq, (SELECT coalesce(max(run_seq), 0) FROM duckcluster.runs)) + 1"
           if next_seq else "run_seq")
    rows = cur.execute(f"UPDATE duckcluster.run_claims SET run_seq = {seq}, claimed_at = ? "
                       "WHERE scope = 'runs' RETURNING run_seq", [now()]).fetchall()
    if not rows:  # the row was removed by hand: put it back
        rows = cur.execute("INSERT INTO duckcluster.run_claims SELECT 'runs', coalesce("
                           f"max(run_seq), 0) + {int(next_seq)}, ? FROM duckcluster.runs "
                           "RETURNING run_seq", [now()]).fetchall()
    return int(max(r[0] for r in rows)) if next_seq else None


def _rollback(cur) -> None:
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error:  # DuckDB already rolled back the conflicting transaction
        pass


def _active_runs(cur, name: str, mode: str | None = None) -> list[dict]:
    """Queued and running runs of ``name`` (in the current transaction)."""
    rel = cur.execute(
        "SELECT run_id, name, mode, status, started_at, process_token, tmp_path FROM "
        "duckcluster.runs WHERE name = ? AND status IN ('queued', 'running')"
        + (" AND mode = ?" if mode else "") + " ORDER BY run_seq",
        [name, mode] if mode else [name])
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r)) for r in rel.fetchall()]


def run_in_progress(name: str, row: dict, verb: str = "run") -> RunInProgressError:
    """The refusal of a second full run of ``name`` while ``row`` is queued or running."""
    return RunInProgressError(
        f"Cluster {name!r} already has a full run {row['status']} in this process: "
        f"{row['run_id']} (since {row['started_at']:%Y-%m-%d %H:%M:%S} UTC). A second full "
        "run of the same definition is refused. Wait for it (SELECT cluster_wait("
        f"'{row['run_id']}')) or watch it (SELECT * FROM cluster_status('{row['run_id']}')), "
        f"then {verb} again.")


def _abandon(cur, rows: list[dict]) -> None:
    """Inside a claim: the runs of dead processes become 'abandoned', their rows removed."""
    ts = now()
    for r in rows:
        for table in ("members", "centroids", "projections", "partition_projections",
                      "map_references"):
            cur.execute(f"DELETE FROM duckcluster.{table} WHERE run_id = ?", [r["run_id"]])
        cur.execute(
            "UPDATE duckcluster.runs SET status = 'abandoned', error = coalesce(error, "
            "'the process running it ended before it finished'), finished_at = ? "
            "WHERE run_id = ?", [ts, r["run_id"]])


def _remove_run_folders(rows: list[dict], settings: Settings | None) -> None:
    """The half-written folders of abandoned runs: the ``.tmp`` folder the run recorded
    (and the folder it is renamed to), and where the current artifacts_dir would put them."""
    for r in rows:
        tmp = r.get("tmp_path")
        paths = [tmp, tmp[:-len(".tmp")] if tmp and tmp.endswith(".tmp") else None]
        if settings is not None and settings.artifacts_dir:
            final = run_dir(settings, r["name"], r["run_id"])
            paths += [final, final + ".tmp"]
        for p in paths:
            if p:
                _rmtree(p)


def start_run(cur, spec: ClusterSpec, mode: str, threshold: float | None,
              status: str = "running", verb: str = "run") -> str:
    """Insert the run row (committed at once, so a failure is always recorded).

    In one claim (:func:`claimed`): the definition must still exist, a full run is refused
    while another full run of it is queued or running in this process (RunInProgressError;
    those of dead processes are marked abandoned), and the row gets the next run_seq."""
    run_id = new_run_id()
    token = process_token()
    versions = json.dumps(library_versions(), sort_keys=True)
    dead: list[dict] = []

    def body(seq: int | None) -> None:
        get_definition(cur, spec.name)
        if mode == "full":
            active = _active_runs(cur, spec.name, "full")
            mine = [r for r in active if r["process_token"] == token]
            if mine:
                raise run_in_progress(spec.name, mine[0], verb)
            _abandon(cur, active)
            dead[:] = active
        cur.execute(
            "INSERT INTO duckcluster.runs (run_id, run_seq, name, mode, status, started_at, "
            "seed, assignment_threshold, spec, versions, pid, process_token) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, seq, spec.name, mode, status, now(), spec.seed, threshold,
             spec.to_json(), versions, os.getpid(), token])

    claimed(cur, body, next_seq=True, what="cluster_submit" if verb == "submit"
            else "cluster_execute")
    _remove_run_folders(dead, None)
    return run_id


def start_queued(cur, run_id: str) -> None:
    """A queued run leaves the queue: 'running', in a claim, unless it was failed (its
    definition deleted) or cancelled meanwhile (RunFailedError)."""
    def body(_seq: int | None) -> None:
        row = cur.execute("SELECT status, error FROM duckcluster.runs WHERE run_id = ?",
                          [run_id]).fetchall()
        if not row:
            raise RunNotFoundError(f"Run {run_id!r} no longer exists in the catalog.")
        if row[0][0] != "queued":
            raise RunFailedError(f"Run {run_id} cannot start: it is {row[0][0]}"
                                 + (f" ({row[0][1]})" if row[0][1] else "") + ".")
        cur.execute("UPDATE duckcluster.runs SET status = 'running', process_token = ? "
                    "WHERE run_id = ?", [process_token(), run_id])

    claimed(cur, body)


def set_status(cur, run_id: str, status: str) -> None:
    cur.execute("UPDATE duckcluster.runs SET status = ? WHERE run_id = ?", [status, run_id])


def fail_run(cur, run_id: str, error: str, started: _dt.datetime | None = None,
             status: str = "failed") -> None:
    """End a run as 'failed' (or 'cancelled': stopped on request) with its one-line error."""
    ts = now()
    cur.execute(
        "UPDATE duckcluster.runs SET status = ?, error = ?, finished_at = ?, "
        "duration_s = date_diff('microsecond', started_at, ?::TIMESTAMP) / 1e6 WHERE run_id = ?",
        [status, scrub(error), ts, ts, run_id])


def note_run(cur, run_id: str, note: str) -> None:
    """Attach a note to a succeeded run (its ``error`` column), e.g. a failed follow-up."""
    cur.execute("UPDATE duckcluster.runs SET error = ? WHERE run_id = ?", [scrub(note), run_id])


def mark_abandoned(cur, alive_pids: set[int] | None, settings: Settings) -> int:
    """Runs left queued/running by a process that is gone become 'abandoned'; their
    half-written artifacts (the ``.tmp`` folder they recorded, the run folder) are removed.
    Returns how many were marked.

    A run is this process's when its process token (boot id, pid, start time) is this
    process's: a reused pid does not keep a dead writer's run alive. Any other process
    that wrote the file has ended, since DuckDB lets one process write it at a time.
    ``alive_pids`` is kept for callers; only the token decides."""
    del alive_pids
    token = process_token()
    out: list[dict] = []

    def body(_seq: int | None) -> None:
        rel = cur.execute(
            "SELECT run_id, name, mode, status, started_at, process_token, tmp_path FROM "
            "duckcluster.runs WHERE status IN ('queued', 'running') AND "
            "process_token IS DISTINCT FROM ?", [token])
        cols = [d[0] for d in rel.description]
        out[:] = [dict(zip(cols, r)) for r in rel.fetchall()]
        _abandon(cur, out)

    if cur.execute("SELECT count(*) FROM duckcluster.runs WHERE status IN ('queued', "
                   "'running') AND process_token IS DISTINCT FROM ?", [token]).fetchall()[0][0]:
        claimed(cur, body)
        _remove_run_folders(out, settings)
    return len(out)


def latest_run(cur, name: str, mode: str | None = None) -> str:
    """The latest successful run of the current definition ``name`` (its incarnation:
    runs of a deleted definition of the same name do not count)."""
    q = ("SELECT r.run_id FROM duckcluster.runs r JOIN duckcluster.definitions d ON "
         f"d.name = r.name AND {INCARNATION} WHERE r.name = ? AND r.status = 'succeeded'"
         + (" AND r.mode = ?" if mode else "") + " ORDER BY r.run_seq DESC LIMIT 1")
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
    row = cur.execute("SELECT r.status, r.mode FROM duckcluster.runs r JOIN "
                      f"duckcluster.definitions d ON d.name = r.name AND {INCARNATION} "
                      "WHERE r.run_id = ? AND r.name = ?", [run_id, name]).fetchall()
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


#: ``partition`` of :func:`load_projection` for an unpartitioned run.
WHOLE_RUN = object()


def load_projection(cur, run_id: str, partition=WHOLE_RUN):
    """The stored map of a run (a :class:`~duckcluster.core.projection.Projection` or
    :class:`~duckcluster.core.projection.GraphMap`), or None (runs from before it was kept,
    partitioned runs from before each partition had one). ``partition``: the map of that
    partition (its value as text, None for the NULL partition) of a partitioned run."""
    from ..core.projection import GraphMap, Projection

    if partition is WHOLE_RUN:
        rel = cur.sql("SELECT * FROM duckcluster.projections WHERE run_id = $run",
                      params={"run": run_id})
        refs_where, args = "run_id = ?", [run_id]
    else:
        rel = cur.sql("SELECT * FROM duckcluster.partition_projections WHERE run_id = $run "
                      "AND partition IS NOT DISTINCT FROM $part",
                      params={"run": run_id, "part": partition})
        refs_where, args = "run_id = ? AND partition IS NOT DISTINCT FROM ?", [run_id, partition]
    rows = rel.fetchall()
    if not rows:
        return None
    row = dict(zip(rel.columns, rows[0]))
    if row.get("kind") != "graph":
        return Projection.from_row(row["dimensions"], row["mean"], row["components"])
    t = cur.execute(f"SELECT vector, x, y, z FROM duckcluster.map_references WHERE {refs_where} "
                    "ORDER BY ord", args).fetchnumpy()
    dims = int(row["dimensions"])
    refs = np.array([np.asarray(v, dtype=np.float32) for v in t["vector"]], dtype=np.float32)
    pos = np.column_stack([np.asarray(t[c], dtype=np.float32) for c in ("x", "y", "z")[:dims]])
    return GraphMap(refs.reshape(len(pos), -1), pos, dims)


def _map_table(run_id: str, name: str, projection: dict,
               partition: str | None = None) -> pa.Table | None:
    """The ``duckcluster.map_references`` rows of a graph map (``as_row()``), else None."""
    if projection.get("kind") != "graph":
        return None
    refs, pos = projection["references"], projection["positions"]
    m, d = refs.shape
    return pa.table({
        "run_id": pa.array([run_id] * m, pa.string()), "name": pa.array([name] * m, pa.string()),
        "ord": pa.array(np.arange(m, dtype=np.int32)),
        "vector": pa.ListArray.from_arrays(pa.array(np.arange(0, m * d + 1, d, dtype=np.int32)),
                                           pa.array(refs.ravel(), pa.float32())),
        **{c: pa.array(pos[:, i], pa.float32()) if i < pos.shape[1] else pa.nulls(m, pa.float32())
           for i, c in enumerate(("x", "y", "z"))},
        "partition": pa.array([partition] * m, pa.string())})


def _insert_map(cur, run_id: str, name: str, projection: dict, references: str | None,
                partition=WHOLE_RUN) -> None:
    """A run's map: its projections row (a partition's: its partition_projections row) and,
    for a graph map, its reference rows (the registered view ``references``, from
    :func:`_map_table`)."""
    if partition is WHOLE_RUN:
        cur.execute("INSERT INTO duckcluster.projections (run_id, name, dimensions, mean, "
                    "components, kind) VALUES (?, ?, ?, ?, ?, ?)",
                    [run_id, name, projection["dimensions"], projection["mean"],
                     projection["components"], projection.get("kind", "pca")])
    else:
        cur.execute("INSERT INTO duckcluster.partition_projections (run_id, name, partition, "
                    "dimensions, mean, components, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [run_id, name, partition, projection["dimensions"], projection["mean"],
                     projection["components"], projection.get("kind", "pca")])
    if references is not None:
        cur.execute("INSERT INTO duckcluster.map_references (run_id, name, ord, vector, x, y, z, "
                    f"partition) SELECT run_id, name, ord, vector, x, y, z, partition "
                    f"FROM {references}")


def commit_run(cur, run_id: str, settings: Settings, centroids: pa.Table, members: pa.Table,
               updates: dict, projection: dict | None = None,
               within: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
               id_type: str | None = None,
               partition_maps: list[tuple[str | None, dict]] | None = None) -> str:
    """Write artifacts, then rows + run status in one transaction. All or nothing.

    ``projection``: the run's plotting PCA (:meth:`Projection.as_row`), stored so
    assign runs based on this one use the same map. ``within(cur)``: more writes of
    the run (its lineage, carried labels) inside the same transaction. ``id_type``: the
    source's id type; members.parquet holds ids in it, and the definition's typed
    members view follows it. ``partition_maps``: (partition, ``as_row()``) of each
    partition's map (partitioned runs, instead of ``projection``)."""
    from .read_side import sync_members_view, view_id_type

    spec_name = updates.pop("_name")
    typed_id = f"* REPLACE (CAST(id AS {view_id_type(id_type)}) AS id)"
    final = run_dir(settings, spec_name, run_id)
    local = "://" not in final
    tmp = final + ".tmp" if local else final
    # recorded first: a process killed from here on leaves a folder the next open removes,
    # whatever artifacts_dir it uses
    cur.execute("UPDATE duckcluster.runs SET tmp_path = ? WHERE run_id = ?", [tmp, run_id])
    try:
        if local:
            os.makedirs(tmp, exist_ok=True)
        for fname, tbl in (("centroids", centroids), ("members", members)):
            view = f"__dc_{fname}_{run_id}"
            cur.register(view, tbl)
            picked = typed_id if fname == "members" else "*"
            try:
                cur.execute(f"COPY (SELECT {picked} FROM {view}) TO "
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
        refs = _map_table(run_id, spec_name, projection) if projection is not None else None
        if refs is not None:
            views["map_references"] = f"__dc_map_references_{run_id}"
            cur.register(views["map_references"], refs)
        for n, (part, row) in enumerate(partition_maps or []):
            got = _map_table(run_id, spec_name, row, part)
            if got is not None:
                views[f"map_references_{n}"] = f"__dc_map_references_{run_id}_{n}"
                cur.register(views[f"map_references_{n}"], got)
        try:  # views live outside the transaction: an aborted one cannot unregister
            cur.execute("BEGIN")
            try:
                _still_running(cur, run_id)
                for fname, tbl in (("centroids", centroids), ("members", members)):
                    cols = ", ".join(f'"{c}"' for c in tbl.column_names)
                    cur.execute(f"INSERT INTO duckcluster.{fname} ({cols}) "
                                f"SELECT {cols} FROM {views[fname]}")
                if id_type is not None:  # the source's id type may have changed since create
                    sync_members_view(cur, spec_name, id_type)
                if projection is not None:
                    _insert_map(cur, run_id, spec_name, projection, views.get("map_references"))
                for n, (part, row) in enumerate(partition_maps or []):
                    _insert_map(cur, run_id, spec_name, row, views.get(f"map_references_{n}"),
                                part)
                if within is not None:
                    within(cur)
                finished = now()
                updates = {**updates, "status": "succeeded", "artifacts_path": final,
                           "finished_at": finished}
                sets = ", ".join(f"{k} = ?" for k in updates)
                done = cur.execute(
                    f"UPDATE duckcluster.runs SET {sets}, duration_s = "
                    "date_diff('microsecond', started_at, ?::TIMESTAMP) / 1e6 "
                    "WHERE run_id = ? AND status = 'running' RETURNING run_id",
                    [*updates.values(), finished, run_id]).fetchall()
                if not done:
                    _still_running(cur, run_id)
                cur.execute("COMMIT")
            except duckdb.TransactionException as exc:  # its row changed under it
                _rollback(cur)
                raise RunFailedError(
                    f"Run {run_id} was not committed: its catalog row changed while it "
                    f"committed ({exc}); nothing of it was kept.") from None
            except BaseException:
                _rollback(cur)
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
    row = cur.execute("SELECT r.run_id FROM duckcluster.runs r JOIN duckcluster.definitions d "
                      f"ON d.name = r.name AND {INCARNATION} WHERE r.name = ? AND r.status = "
                      "'succeeded' AND r.mode = 'full' ORDER BY r.run_seq DESC LIMIT 1",
                      [name]).fetchall()
    return row[0][0] if row else None


def top_nodes(cur, run_id: str) -> pa.Table:
    """cluster_id, node_id, size, centroid, label, summary, keywords and partition of a
    run's top-level clusters (cluster_id order)."""
    return cur.sql("SELECT cluster_id, node_id, size, centroid, label, summary, keywords, "
                   "partition "
                   "FROM duckcluster.centroids WHERE run_id = ? AND hierarchy_level = 0 "
                   "ORDER BY cluster_id", params=[run_id]).to_arrow_table()


def cluster_partitions(cur, run_id: str) -> dict[int, str | None]:
    """cluster_id -> partition (text; NULL for unpartitioned runs) of a run's top-level
    clusters."""
    return {int(c): p for c, p in cur.execute(
        "SELECT cluster_id, partition FROM duckcluster.centroids WHERE run_id = ? AND "
        "hierarchy_level = 0", [run_id]).fetchall()}


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


@contextlib.contextmanager
def _positions(cur, ids):
    """Register ``ids`` (a source's ids, any type: an Arrow array as it is, else as text)
    with their positions as a temporary view; yields (view name, number of ids)."""
    view = f"__dc_ids_{secrets.token_hex(4)}"
    col = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else \
        pa.array(np.asarray(ids, dtype=object).tolist(), pa.string())
    cur.register(view, pa.table({"id": col, "pos": pa.array(np.arange(len(col),
                                                                        dtype=np.int64))}))
    try:
        yield view, len(col)
    finally:
        cur.unregister(view)


def unseen_rows(cur, run_id: str, ids) -> np.ndarray:
    """(n,) bool: which of ``ids`` (a source's ids, any type) are not members of ``run_id``
    (one anti-join in DuckDB)."""
    with _positions(cur, ids) as (view, n):
        pos = cur.sql(f"SELECT n.pos FROM {view} n ANTI JOIN (SELECT id FROM duckcluster.members "
                      f"WHERE run_id = ?) o ON o.id = CAST(n.id AS VARCHAR)",
                      params=[run_id]).fetchnumpy()["pos"]
    out = np.zeros(n, dtype=bool)
    out[np.asarray(pos, dtype=np.int64)] = True
    return out


def previous_clusters(cur, run_id: str, ids) -> np.ndarray:
    """(n,) int64: the cluster_id each of ``ids`` (a source's ids, any type) had in
    ``run_id``, -1 where it was noise or not a member (one join in DuckDB)."""
    with _positions(cur, ids) as (view, n):
        got = cur.sql(f"SELECT n.pos, o.cluster_id FROM {view} n JOIN (SELECT id, cluster_id "
                      f"FROM duckcluster.members WHERE run_id = ?) o "
                      f"ON o.id = CAST(n.id AS VARCHAR)", params=[run_id]).fetchnumpy()
    out = np.full(n, -1, dtype=np.int64)
    out[np.asarray(got["pos"], dtype=np.int64)] = np.asarray(got["cluster_id"], dtype=np.int64)
    return out


def same_rows(cur, run_id: str, spec, ids, fps: np.ndarray, partition=WHOLE_RUN) -> bool:
    """Whether ``run_id`` ran ``spec`` (the same stored definition) on exactly these rows:
    every one of ``ids`` a member with the same fingerprint, and no other member (of
    ``partition``, for a partitioned run)."""
    got = cur.execute("SELECT spec FROM duckcluster.runs WHERE run_id = ?", [run_id]).fetchall()
    if not got or got[0][0] is None or json.loads(got[0][0]) != json.loads(spec.to_json()):
        return False
    where, args = "run_id = ?", [run_id]
    if partition is not WHOLE_RUN:
        where, args = "run_id = ? AND partition IS NOT DISTINCT FROM ?", [run_id, partition]
    n = cur.execute(f"SELECT count(*) FROM duckcluster.members WHERE {where}", args
                    ).fetchall()[0][0]
    return int(n) == len(fps) and len(known_rows(cur, run_id, ids, fps)["pos"]) == len(fps)


#: A full run's own assignment threshold when it stored none (runs from before it was).
DEFAULT_THRESHOLD = 0.5


def own_threshold(cur, run_id: str) -> float:
    """A full run's own assignment threshold, the default of every assignment path
    (``assign_cluster``, assign runs, ``cluster_assign_parquet``, lineage, run sides of
    drift): the one it stored (:func:`duckcluster.core.noise.assign_threshold`), else
    :data:`DEFAULT_THRESHOLD`, as the pure-SQL ``_dc_own_threshold`` reads it."""
    row = cur.execute("SELECT assignment_threshold FROM duckcluster.runs WHERE run_id = ?",
                      [run_id]).fetchall()
    return float(row[0][0]) if row and row[0][0] is not None else DEFAULT_THRESHOLD


def assign_threshold(cur, spec, base_run_id: str, threshold) -> float:
    """The threshold of an assign run: the call's, else the definition's
    ``assignment_threshold``, else the base full run's own (:func:`own_threshold`), the
    default of ``assign_cluster`` and ``cluster_assign_parquet`` too."""
    if threshold is not None:
        return float(threshold)
    if spec.assignment_threshold is not None:
        return float(spec.assignment_threshold)
    return own_threshold(cur, base_run_id)


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


def _still_running(cur, run_id: str) -> None:
    """Inside the commit: the run row must still be 'running' (RunFailedError otherwise)."""
    row = cur.execute("SELECT status FROM duckcluster.runs WHERE run_id = ?",
                      [run_id]).fetchall()
    if not row or row[0][0] != "running":
        what = "was removed" if not row else f"is {row[0][0]!r}"
        raise RunFailedError(
            f"Run {run_id} was not committed: its catalog row {what} (another session "
            "deleted or ended it while it ran); nothing of it was kept.")


def _rmtree(path: str) -> None:
    if path and "://" not in path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
