"""Background runs: ``cluster_submit`` queues a run, a worker thread executes it.

One :class:`Runner` per database instance. ``submit`` validates the request,
inserts the run row with status ``queued`` (committed at once) and returns its
id; a worker thread takes queued runs in order and runs them with
:func:`duckcluster.engine.execute.execute` on **its own connection**: for a database
file a new ``duckdb.connect`` to the same file (same instance, same
configuration), so the run goes on if the caller closes its connection; for an
in-memory database a cursor of the caller's connection (close that connection
and the run fails). Workers start on demand and end when the queue is empty, so
an idle database holds no threads and, once its connections close, no file lock.

While it runs, the stage of a run is written to ``duckcluster.runs.progress``
(at most twice a second) and ``cluster_status(run_id)`` reads it. Failures are
recorded by ``execute``; a run that fails before ``execute`` takes it (its
definition was deleted meanwhile...) is recorded failed here, so no run is left
``queued``. A run still ``running`` when its process dies is marked
``abandoned`` the next time the database is opened (``duckcluster.install``).

Worker threads are not daemons: a script that submits runs and ends waits for
them at exit instead of abandoning them. :meth:`Runner.cancel` stops runs
cooperatively at their next progress report (the scheduler's SIGTERM path, Ctrl-C in
the shell or during ``cluster_wait``); a cancelled run is recorded ``cancelled`` with
the reason (``RunCancelledError: cancelled: ...``), never half-written.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from .._errors import (
    RunCancelledError,
    RunInProgressError,  # noqa: F401 - re-exported (ops.triggers imports it here)
    SpecError,
)
from .._source import check_query, is_query
from ..catalog import ops as store
from ..catalog import runs as catalog
from ..core import progress as core_progress

log = logging.getLogger("duckcluster.background")

_PROGRESS_EVERY_S = 0.5
_SUBMIT_LOCK = threading.Lock()
_RUNNERS: "weakref.WeakSet[Runner]" = weakref.WeakSet()


@dataclass
class _Job:
    run_id: str
    name: str
    mode: str
    threshold: float | None
    done: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    status: str = "queued"


def refuse_second_full_run(cur, name: str, verb: str = "run") -> None:
    """Raise RunInProgressError when a full run of ``name`` is queued or running in
    this process (a background one, or a synchronous one on another thread).

    An early, cheap answer before any validation; the race-free refusal is the claim in
    :func:`~duckcluster.catalog.runs.start_run`, which gives the same error."""
    busy = store.active_runs(cur, name, mode="full", process_token=catalog.process_token())
    if busy:
        raise catalog.run_in_progress(name, busy[0], verb)


class Runner:
    """Queue and worker threads of one database instance.

    ``open_connection()`` returns the cursor a run executes on; it is closed when
    the run ends. ``on_finished(conn, run_id)`` is called after each run, on the
    worker thread and before the run counts as done (webhook delivery: so
    ``cluster_wait`` returns once the run's notifications went out).
    ``reopen()`` reaches the database when that cursor's connection was closed,
    to record the failure.
    """

    def __init__(self, open_connection: Callable[[], duckdb.DuckDBPyConnection],
                 settings: catalog.Settings, workers: int = 1,
                 on_finished: Callable[[duckdb.DuckDBPyConnection, str], None] | None = None,
                 reopen: Callable[[], duckdb.DuckDBPyConnection] | None = None):
        self._open = open_connection
        self._reopen = reopen
        self.settings = settings
        self.workers = max(1, int(workers))
        self.on_finished = on_finished
        self._lock = threading.Lock()
        self._queue: collections.deque[_Job] = collections.deque()
        self._jobs: dict[str, _Job] = {}
        self._threads: set[threading.Thread] = set()
        self._running: dict[str, _Job] = {}
        _RUNNERS.add(self)

    # -- submitting ---------------------------------------------------------------------
    def submit(self, cur, name: str, mode: str = "full", threshold: float | None = None,
               on_queued: Callable[[str], None] | None = None) -> str:
        """Validate, insert a queued run row and queue it; returns the run id at once.

        ``on_queued(run_id)`` runs after the row is committed and before any worker
        can take the run (a trigger records its firing there).
        """
        if name is None:
            raise SpecError("cluster_submit needs a definition name; got NULL.")
        mode = mode or "full"
        if mode not in ("full", "assign"):
            raise SpecError(f"mode must be 'full' or 'assign'. Got {mode!r}.")
        if threshold is not None and not (0.0 <= float(threshold) <= 1.0):
            raise SpecError("assignment_threshold must be a float in the range [0, 1]. "
                            f"Got {threshold!r} instead.")
        catalog.require_writable(cur, "cluster_submit")
        _preload()
        spec = catalog.get_definition(cur, name)
        if is_query(spec.source):  # a stored multi-statement source never runs
            check_query(spec.source)
        thr = None
        if mode == "assign":  # latest_run: a clear error now, not in the worker
            thr = catalog.assign_threshold(cur, spec, catalog.latest_run(cur, name, mode="full"),
                                           threshold)
        with _SUBMIT_LOCK:
            if mode == "full":
                refuse_second_full_run(cur, name, "submit")
            run_id = store.queue_run(cur, spec, mode, thr)
            if on_queued is not None:
                try:
                    on_queued(run_id)
                except BaseException as exc:
                    store.fail_queued(cur, run_id, f"{type(exc).__name__}: {exc}")
                    raise
            job = _Job(run_id, name, mode, threshold)
            with self._lock:
                self._jobs[run_id] = job
                self._queue.append(job)
                self._spawn()
        return run_id

    def _spawn(self) -> None:
        alive = {t for t in self._threads if t.is_alive()}
        self._threads = alive
        if len(alive) < min(self.workers, len(self._queue) + len(self._running)):
            t = threading.Thread(target=self._work, name="duckcluster-run", daemon=False)
            self._threads.add(t)
            t.start()

    # -- waiting and cancelling ---------------------------------------------------------
    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        """True when ``run_id`` (a run of this runner) finished within ``timeout`` seconds."""
        job = self._jobs.get(run_id)
        return True if job is None else job.done.wait(timeout)

    def knows(self, run_id: str) -> bool:
        return run_id in self._jobs

    def active(self) -> list[str]:
        """Run ids queued or running here."""
        with self._lock:
            return [j.run_id for j in self._jobs.values() if not j.done.is_set()]

    def cancel(self, reason: str, run_ids: list[str] | None = None) -> list[str]:
        """Cancel queued runs now and running ones at their next progress report."""
        hit = []
        with self._lock:
            for job in self._jobs.values():
                if job.done.is_set() or (run_ids is not None and job.run_id not in run_ids):
                    continue
                job.cancel_reason = reason
                hit.append(job.run_id)
        return hit

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every queued and running run; True if all finished in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for run_id in self.active():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.wait(run_id, left):
                return False
        return True

    # -- the worker ---------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._threads.discard(threading.current_thread())
                    return
                job = self._queue.popleft()
                self._running[job.run_id] = job
            conn = None
            try:
                conn = self._open()
                conn.execute("SET enable_progress_bar = false")
                self._run(conn, job)
            except BaseException as exc:  # a worker never dies silently
                log.error("background run %s: %s", job.run_id, exc)
                self._record_failure(conn, job, f"{type(exc).__name__}: {exc}")
            finally:
                # closed before the run counts as done: whoever waited for it may close
                # the parent connection next, which DuckDB refuses while a cursor works
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                with self._lock:
                    self._running.pop(job.run_id, None)
                job.done.set()

    def _record_failure(self, conn, job: _Job, error: str) -> None:
        """Record a run that could not run to its end; through ``reopen`` if needed."""
        job.status = "failed"
        for opener in ((lambda: conn.cursor()) if conn is not None else None, self._reopen):
            if opener is None:
                continue
            try:
                c = opener()
                try:
                    store.fail_queued(c, job.run_id, error)
                finally:
                    c.close()
                return
            except Exception as exc:  # connection closed: try the next way
                log.debug("recording the failure of %s: %s", job.run_id, exc)

    def _run(self, conn: duckdb.DuckDBPyConnection, job: _Job) -> None:
        from ..engine.execute import execute

        with conn.cursor() as cur, conn.cursor() as pcur:
            if job.cancel_reason:
                catalog.fail_run(pcur, job.run_id, f"RunCancelledError: cancelled before it "
                                                   f"started: {job.cancel_reason}",
                                 status="cancelled")
                job.status = "cancelled"
                return
            store.mark_started(pcur, job.run_id)
            progress = _Progress(pcur, job)
            try:
                # counted steps (UMAP epochs, batches) too: cancel is seen within one step
                with core_progress.reporting(progress.step):
                    execute(cur, job.name, self.settings, mode=job.mode,
                            threshold=job.threshold, progress=progress, run_id=job.run_id)
                job.status = "succeeded"
                store.set_progress(pcur, job.run_id, "done")
            except Exception as exc:
                job.status = "cancelled" if isinstance(exc, RunCancelledError) else "failed"
                # execute records failures inside its run; earlier ones (the definition
                # was deleted, no full run any more) would leave the row queued, and a
                # closed connection leaves it running: record those here
                why = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, duckdb.ConnectionException):
                    why = ("the connection that submitted the run was closed while it ran; "
                           "keep it open until background runs end (SELECT cluster_wait"
                           f"(run_id)). DuckDB said: {exc}")
                try:
                    store.fail_queued(pcur, job.run_id, why, status=job.status)
                except duckdb.Error:
                    self._record_failure(None, job, why)
                log.info("background run %s of %r failed: %s", job.run_id, job.name, exc)
            if self.on_finished is not None:
                try:
                    self.on_finished(conn, job.run_id)
                except Exception as exc:  # notifications never fail a run
                    log.warning("after run %s: %s", job.run_id, exc)


def _preload() -> None:
    """Import now what a run may import lazily later.

    A script that submits runs and ends leaves them to finish while the
    interpreter shuts down, when ``concurrent.futures`` (imported by joblib and
    scikit-learn) can no longer be imported: "can't register atexit after
    shutdown". Importing it here, on the submitting thread, is cheap.
    """
    import concurrent.futures.process  # noqa: F401
    import concurrent.futures.thread  # noqa: F401


class _Progress:
    """The progress callback of a background run: persists the stage, honours cancel."""

    def __init__(self, cur, job: _Job):
        self.cur = cur
        self.job = job
        self.last = 0.0
        self.prefix = f"{job.name}: "

    def __call__(self, msg: str) -> None:
        if self.job.cancel_reason:  # execute records the run 'cancelled'
            raise RunCancelledError(f"cancelled: {self.job.cancel_reason}")
        text = msg[len(self.prefix):] if msg.startswith(self.prefix) else msg
        now = time.monotonic()
        if now - self.last >= _PROGRESS_EVERY_S or text in ("done", "writing"):
            self.last = now
            try:
                store.set_progress(self.cur, self.job.run_id, text)
            except duckdb.Error as exc:  # progress is best effort; the run goes on
                log.debug("progress of %s: %s", self.job.run_id, exc)

    def step(self, what: str, done: int | None = None, total: int | None = None) -> None:
        """A counted step of the numeric core (core.progress.step): '<what> <done>/<total>'."""
        if done is None:
            self(what)
        else:
            self(f"{what} {done:,}" + (f"/{total:,}" if total else ""))


def file_reopener(cursor: Callable[[], duckdb.DuckDBPyConnection]
                  ) -> Callable[[], duckdb.DuckDBPyConnection] | None:
    """A way to reach the database file when the caller's connection is gone, or None.

    Used only to record a run as failed after its connection was closed under it:
    the short-lived connection is closed at once, so it never keeps the instance
    (and its Python UDFs, which crash DuckDB 2.0 when their registering connection
    is closed) alive.
    """
    with cursor() as c:
        row = c.execute("SELECT path FROM duckdb_databases() WHERE database_name = "
                        "current_database()").fetchall()
        storage = c.execute("SELECT current_setting('storage_compatibility_version')"
                            ).fetchall()[0][0]
    path = row[0][0] if row else None
    if not path or path == ":memory:":
        return None

    def reopen() -> duckdb.DuckDBPyConnection:
        for cfg in ({"storage_compatibility_version": storage}, {}):
            try:
                return duckdb.connect(path, config=cfg)
            except duckdb.ConnectionException as exc:
                if "different configuration" not in str(exc):
                    raise
        return duckdb.connect(path)

    return reopen


def cancel_all(reason: str) -> list[str]:
    """Cancel every queued and running background run of this process."""
    out: list[str] = []
    for runner in list(_RUNNERS):
        out += runner.cancel(reason)
    return out


def active_runs() -> list[str]:
    """Run ids queued or running in this process."""
    return [r for runner in list(_RUNNERS) for r in runner.active()]
