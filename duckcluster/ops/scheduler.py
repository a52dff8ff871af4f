"""The scheduler process behind ``duckcluster scheduler DB``: fires triggers until stopped.

DuckDB lets one process at a time open a database file for writing, so the
scheduler does **not** hold the file between ticks. Each tick opens it
read-write, evaluates every enabled trigger, submits the runs that fired to
background workers and waits for them, delivers pending webhooks, refreshes the
metrics snapshot (``--metrics-port``) and closes the file. Between ticks other
writers (the ETL that appends rows, a notebook) can use it. A tick that finds
the file locked retries a few seconds later: cron and interval firings are then
late (and coalesced), never lost, and event triggers compare against stored
counts. While a run executes the file is locked, as for any writer.

Stopping: SIGTERM or SIGINT stops firing, lets running runs finish for up to
``grace`` seconds, then cancels them at their next progress report (recorded
``failed`` with the reason, nothing half-written) and fails runs still queued;
pending webhook deliveries stay in the outbox for the next start. The process
then exits with status 0. A second signal exits at once (status 1); runs it
interrupts are marked ``abandoned`` the next time the database is opened.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import DatabaseBusyError, SpecError
from .._secrets import scrub
from ..catalog import ops as store
from ..catalog import runs as catalog
from . import triggers, webhooks
from .background import Runner

BUSY_RETRY_S = 5.0


def _stderr(msg: str) -> None:
    print(f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M:%S}Z {msg}", file=sys.stderr,
          flush=True)


@dataclass
class TickReport:
    """What one tick did."""

    busy: bool = False
    fired: list[tuple[str, str | None, str]] = field(default_factory=list)  # trigger, run, outcome
    runs: dict[str, str] = field(default_factory=dict)  # run_id -> final status
    deliveries: list[webhooks.Delivery] = field(default_factory=list)
    next_due: _dt.datetime | None = None


def require_database_file(path: str, what: str) -> None:
    """Refuse a database path that is not an existing file: DuckDB would create an empty
    database there (a typo would then run nothing, forever, without a word)."""
    if not isinstance(path, str) or not path or path == ":memory:":
        raise SpecError(f"{what} needs the path of a database file. Got {path!r}.")
    if "://" in path or path.startswith("md:"):
        return
    if not os.path.isfile(path):
        where = os.path.dirname(os.path.abspath(path))
        files = [f for f in os.listdir(where) if f.endswith((".duckdb", ".db"))] \
            if os.path.isdir(where) else []
        stems = {os.path.splitext(f)[0]: f for f in files}  # compare names, not extensions
        match = difflib.get_close_matches(os.path.splitext(os.path.basename(path))[0],
                                          list(stems), n=1, cutoff=0.6)
        near = f" Did you mean {stems[match[0]]!r}?" if match else ""
        raise SpecError(f"{what} works on an existing database, and {path!r} is "
                        f"{'a folder' if os.path.isdir(path) else 'not a file'}.{near} Check the "
                        "path (it is never created here: create a database with duckcluster sql "
                        "FILE -c \"SELECT 1\" or duckcluster.connect(FILE)).")


class Scheduler:
    """Evaluates and fires the triggers of one database file; see the module docstring."""

    def __init__(self, path: str, connect: Callable[..., Any], *, poll: float = 30.0,
                 grace: float = 60.0, artifacts_dir: str | None = None,
                 say: Callable[[str], None] = _stderr,
                 on_snapshot: Callable[[Any], None] | None = None):
        """``connect(path, artifacts_dir=...)`` opens the file with duckcluster installed
        (``duckcluster.connect``; passed in so this layer never imports the package)."""
        require_database_file(path, "The scheduler")
        self.path = path
        self.connect = connect
        self.poll = float(poll)
        self.grace = float(grace)
        self.artifacts_dir = artifacts_dir
        self.say = lambda msg: say(scrub(msg))  # its log never shows a known secret
        self.on_snapshot = on_snapshot
        self.stop = threading.Event()
        self.signals = 0

    # -- one tick ---------------------------------------------------------------------
    def tick(self) -> TickReport:
        report = TickReport()
        if not os.path.exists(self.path):  # removed or moved while running: never re-create it
            self.say(f"{self.path} no longer exists; not creating an empty database in its "
                     f"place. Retrying in {self.poll:g} s")
            report.busy = True
            return report
        try:
            con = self.connect(self.path, artifacts_dir=self.artifacts_dir)
        except DatabaseBusyError:
            self.say(f"{self.path} is locked by another writer; retrying in "
                     f"{min(self.poll, BUSY_RETRY_S):g} s")
            report.busy = True
            return report
        try:
            with con.cursor() as cur:
                settings = catalog.Settings(catalog.resolve_artifacts_dir(cur, self.artifacts_dir))
            runner = Runner(con.cursor, settings)
            with con.cursor() as cur:
                self._evaluate_all(cur, runner, report)
            self._wait_for_runs(con, runner, report)
            with con.cursor() as cur:
                try:
                    report.deliveries = webhooks.deliver_pending(cur, stop=self.stop)
                except Exception as exc:  # noqa: BLE001 - webhooks never stop the scheduler
                    self.say(f"webhook delivery failed: {type(exc).__name__}: {exc}")
                for d in report.deliveries:
                    self.say(f"webhook {d.webhook_id} {d.event} {d.subject_id}: {d.status} "
                             f"after {d.attempts} attempt(s)" + (f" ({d.error})" if d.error else ""))
                if self.on_snapshot is not None:
                    from .exporter import snapshot

                    try:
                        self.on_snapshot(snapshot(cur))
                    except Exception as exc:  # noqa: BLE001 - metrics are best effort
                        self.say(f"metrics snapshot failed: {type(exc).__name__}: {exc}")
                report.next_due = _next_due(cur)
        finally:
            con.close()
        return report

    def _evaluate_all(self, cur, runner: Runner, report: TickReport) -> None:
        for trig in store.triggers(cur, enabled_only=True):
            if self.stop.is_set():
                return
            tid = trig["trigger_id"]
            if not store.definition_exists(cur, trig["name"]):
                err = (f"cluster definition {trig['name']!r} no longer exists: trigger disabled "
                       f"(remove it with SELECT cluster_trigger_delete('{tid}'))")
                store.disable_trigger(cur, tid, err)
                self.say(f"{tid} ({trig['kind']} on {trig['name']!r}): {err}")
                continue
            try:
                decision = triggers.evaluate(cur, trig, catalog.now())
            except Exception as exc:  # one broken trigger never stops the others
                err = f"{type(exc).__name__}: {exc}"
                store.note_check(cur, tid, None, err)
                self.say(f"{tid} ({trig['kind']} on {trig['name']!r}) could not be evaluated: "
                         f"{err}")
                continue
            if decision is None:
                continue
            if trig["kind"] == "event":
                store.note_check(cur, tid, decision.observed, None)
            if not decision.fire:
                continue
            try:
                firing_id, run_id = triggers.fire(cur, runner, trig, decision)
            except Exception as exc:  # noqa: BLE001 - recorded; the other triggers go on
                err = f"{type(exc).__name__}: {exc}"
                store.note_check(cur, tid, decision.observed, f"could not fire: {err}")
                self.say(f"{tid} ({trig['kind']} on {trig['name']!r}) could not fire: {err}")
                continue
            outcome = "submitted" if run_id else \
                cur.execute("SELECT outcome || ': ' || coalesce(error, '') FROM "
                            "duckcluster.trigger_firings WHERE firing_id = ?",
                            [firing_id]).fetchall()[0][0]
            report.fired.append((tid, run_id, outcome))
            self.say(f"{tid} ({trig['kind']} on {trig['name']!r}) fired: {decision.reason} -> "
                     + (f"{trig['mode']} run {run_id}" if run_id else outcome))

    def _wait_for_runs(self, con, runner: Runner, report: TickReport) -> None:
        started: set[str] = set()
        deadline: float | None = None
        cancelled = False
        while True:
            active = runner.active()
            if not active:
                break
            with con.cursor() as cur:
                for run_id in active:
                    if run_id not in started and store.run_status(cur, run_id) == "running":
                        started.add(run_id)
                        self.say(f"run {run_id} started")
            if self.stop.is_set():
                if deadline is None:
                    deadline = time.monotonic() + self.grace
                    self.say(f"stopping: waiting up to {self.grace:g} s for {', '.join(active)}")
                elif not cancelled and time.monotonic() >= deadline:
                    runner.cancel(f"the scheduler was stopped and its grace period of "
                                  f"{self.grace:g} s ended")
                    cancelled = True
                    self.say(f"grace period over: cancelling {', '.join(active)}")
            runner.join(timeout=0.2)
        with con.cursor() as cur:
            for tid, run_id, _ in report.fired:
                if run_id is None:
                    continue
                run = catalog.get_run(cur, run_id)
                report.runs[run_id] = run["status"]
                if run["status"] == "succeeded":
                    self.say(f"run {run_id} succeeded in {run['duration_s']:.2f} s: "
                             f"{run['n_clusters']} clusters, {run['n_members']} members")
                else:
                    self.say(f"run {run_id} {run['status']}: {(run['error'] or '').splitlines()[0]}")

    # -- the loop ---------------------------------------------------------------------
    def request_stop(self, signum: int, _frame: Any = None) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals >= 2:
            self.say(f"{name} again: exiting now; unfinished runs will be marked abandoned "
                     "when the database is next opened")
            os._exit(1)
        self.say(f"{name}: stopping after the current work (grace {self.grace:g} s)")
        self.stop.set()

    def run_forever(self) -> int:
        """Tick until SIGTERM/SIGINT; returns the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        self.say(f"scheduler on {self.path}: poll every {self.poll:g} s, grace {self.grace:g} s")
        while not self.stop.is_set():
            try:
                report = self.tick()
            except Exception as exc:  # noqa: BLE001 - logged; the next tick tries again
                self.say(f"tick failed: {type(exc).__name__}: {exc}; retrying in "
                         f"{self.poll:g} s")
                report = TickReport()
            self.stop.wait(self._sleep_for(report))
        self.say("scheduler stopped")
        return 0

    def _sleep_for(self, report: TickReport) -> float:
        if report.busy:
            return min(self.poll, BUSY_RETRY_S)
        wait = self.poll
        if report.next_due is not None:
            wait = min(wait, (report.next_due - catalog.now()).total_seconds())
        return max(wait, 0.2)


def _next_due(cur) -> _dt.datetime | None:
    dues = []
    for trig in store.triggers(cur, enabled_only=True):
        if trig["kind"] in ("cron", "interval"):
            try:
                dues.append(triggers.next_fire_of(trig))
            except Exception:  # reported when the tick evaluates it
                continue
    return min(dues) if dues else None
