"""Triggers: validation, when they are due, each kind firing, history, and the scheduler process."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import duckdb
import httpx
import numpy as np
import pytest

import duckcluster
from conftest import blobs, embedding_table, load_table
from duckcluster.ops import triggers
from duckcluster.ops.scheduler import Scheduler
from webhook_servers import Receiver, free_port


@pytest.fixture
def topics(con):
    """'topics': kmeans k=3 over docs (60 rows x 8-d: first 20 rows of each of 3 blobs)."""
    X, y = blobs(n_per=40, k=3, d=8)
    base = np.concatenate([X[y == c][:20] for c in range(3)])
    load_table(con, "docs", base)
    con.sql("SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
    return X, y


def _add_rows(con, X: np.ndarray, start: int) -> None:
    con.register("__new", embedding_table(X))
    con.sql(f"INSERT INTO docs SELECT doc_id + {start}, CAST(embedding AS FLOAT[8]) "
            "FROM __new").fetchall()
    con.unregister("__new")


def _sched(db_path, **kw) -> Scheduler:
    msgs: list[str] = []
    s = Scheduler(db_path, duckcluster.connect, say=msgs.append, **kw)
    s.msgs = msgs
    return s


def _trigger(con, *args) -> str:
    return con.sql(f"SELECT cluster_trigger_create('topics', {', '.join(args)})").fetchall()[0][0]


def _history(con, key="topics") -> list[dict]:
    rel = con.sql(f"SELECT * FROM cluster_trigger_history('{key}')")
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def _backdate(con, trigger_id: str, seconds: float) -> None:
    """Pretend the trigger was created (and last served) ``seconds`` earlier."""
    con.sql(f"UPDATE duckcluster.triggers SET created_at = created_at - "
            f"to_seconds({seconds}), last_scheduled_at = last_scheduled_at - "
            f"to_seconds({seconds}), last_fired_at = last_fired_at - to_seconds({seconds}) "
            f"WHERE trigger_id = '{trigger_id}'").fetchall()


_CREATE_ERRORS = [
    ("kind := 'cronn', schedule := '0 3 * * *'",
     "Unknown trigger kind 'cronn'. Did you mean 'cron'? Valid kinds: cron, interval, event."),
    ("kind := 'cron'", "A cron trigger needs schedule := '<minute> <hour>"),
    ("kind := 'cron', schedule := '0 3 * *'", "schedule must have 5 fields"),
    ("kind := 'cron', schedule := '61 * * * *'", "is not a valid crontab expression"),
    ("kind := 'cron', schedule := '0 3 * * *', timezone := 'Mars/Base'",
     "Unknown timezone 'Mars/Base'"),
    ("kind := 'cron', schedule := '0 3 * * *', every := 60",
     "A cron trigger does not take every. It takes schedule, timezone."),
    ("kind := 'interval'", "An interval trigger needs every := INTERVAL 6 HOUR"),
    ("kind := 'interval', every := 'soon'", "'every' must be an INTERVAL"),
    ("kind := 'interval', every := INTERVAL 0 SECOND", "'every' must be at least 1 second"),
    ("kind := 'event'", "An event trigger needs when_rows_added := <rows>"),
    ("kind := 'event', when_rows_added := 0",
     "The 'when_rows_added' parameter of cluster_trigger_create must be an int in the range "
     "[1, inf) or None. Got 0 instead."),
    ("kind := 'event', when_drift_above := 'high'",
     "The 'when_drift_above' parameter of cluster_trigger_create must be a float in the range "
     "[0, inf) or None. Got 'high' instead."),
    ("kind := 'event', when_rows_added := 5, assignment_threshold := 2",
     "The 'assignment_threshold' parameter of cluster_trigger_create must be a float in the "
     "range [0, 1] or None. Got 2 instead."),
    ("kind := 'interval', every := 60, enabled := 'yes'",
     "The 'enabled' parameter of cluster_trigger_create must be a bool. Got 'yes' instead."),
    ("kind := 'event', when_drift_above := 0.1, method := 'mmdd'",
     "Unknown drift method 'mmdd'. Did you mean 'mmd'?"),
    ("kind := 'event', when_rows_added := 5, method := 'mmd'",
     "method and drift_current belong to when_drift_above"),
    ("kind := 'event', when_drift_above := 0.1, drift_current := 'all'",
     "The 'drift_current' parameter of cluster_trigger_create must be one of 'new_rows', "
     "'source'. Got 'all' instead."),
    ("kind := 'event', when_rows_added := 5, mode := 'fast'",
     "The 'mode' parameter of cluster_trigger_create must be one of 'full', 'assign'. Got "
     "'fast' instead."),
    ("", "cluster_trigger_create needs kind := 'cron'"),
]


def test_trigger_create_errors(con, topics):
    for args, fragment in _CREATE_ERRORS:
        sql = f"SELECT cluster_trigger_create('topics'{', ' if args else ''}{args})"
        with pytest.raises(duckdb.Error) as e:
            con.sql(sql).fetchall()
        assert fragment in str(e.value), (args, str(e.value))
    with pytest.raises(duckdb.Error, match="No cluster definition named 'topix'"):
        con.sql("SELECT cluster_trigger_create('topix', kind := 'interval', every := 60)"
                ).fetchall()
    assert con.sql("SELECT count(*) FROM duckcluster.triggers").fetchall() == [(0,)]


def test_kind_is_inferred_and_intervals_parse(con, topics):
    for args, kind, every in [("schedule := '@daily'", "cron", None),
                              ("every := INTERVAL 6 HOUR", "interval", 21600.0),
                              ("every := '90 minutes'", "interval", 5400.0),
                              ("every := 45", "interval", 45.0),
                              ("when_rows_added := 10", "event", None)]:
        tid = _trigger(con, args)
        assert con.sql(f"SELECT kind, every_s FROM duckcluster.triggers WHERE trigger_id = "
                       f"'{tid}'").fetchall() == [(kind, every)]


def test_cron_follows_standard_crontab_semantics():
    """0 and 7 are Sunday (APScheduler's from_crontab would say Monday); timezones and DST."""
    wed = dt.datetime(2025, 1, 1)  # a Wednesday, naive UTC
    for expr in ("0 3 * * 0", "0 3 * * 7", "0 3 * * sun"):
        nxt = triggers.next_fire("cron", expr, "UTC", None, wed, None, None)
        assert nxt == dt.datetime(2025, 1, 5, 3, 0), expr
    # 03:00 in Paris is 02:00 UTC in winter, 01:00 UTC in summer
    assert triggers.next_fire("cron", "0 3 * * *", "Europe/Paris", None, wed, None, None) == \
        dt.datetime(2025, 1, 1, 2, 0)
    assert triggers.next_fire("cron", "0 3 * * *", "Europe/Paris", None,
                              dt.datetime(2025, 7, 1), None, None) == dt.datetime(2025, 7, 1, 1)
    # 02:30 does not exist on 30 March 2025 in Paris: fires at the next valid time
    nxt = triggers.next_fire("cron", "30 2 * * *", "Europe/Paris", None,
                             dt.datetime(2025, 3, 29, 12), None, None)
    assert nxt == dt.datetime(2025, 3, 30, 1, 0)
    # after a firing, the next one comes after the time it was served
    served = dt.datetime(2025, 1, 1, 3, 0, 5)
    assert triggers.next_fire("cron", "0 3 * * *", "UTC", None, wed, served, served) == \
        dt.datetime(2025, 1, 2, 3, 0)
    assert triggers.next_fire("interval", None, None, 3600.0, wed, None, None) == \
        dt.datetime(2025, 1, 1, 1, 0)
    assert triggers.next_fire("interval", None, None, 60.0, wed, None, served) == \
        served + dt.timedelta(seconds=60)
    assert triggers.next_fire("event", None, None, None, wed, None, None) is None


def test_interval_trigger_fires_when_due(con, db_path, topics):
    tid = _trigger(con, "kind := 'interval'", "every := 60")
    s = _sched(db_path)
    assert s.tick().fired == []  # created just now: due in a minute
    _backdate(con, tid, 61)
    report = s.tick()
    (fired,) = report.fired
    assert fired[0] == tid and report.runs == {fired[1]: "succeeded"}
    (h,) = _history(con)
    assert h["kind"] == "interval" and h["outcome"] == "submitted"
    assert h["run_id"] == fired[1] and h["run_status"] == "succeeded"
    assert h["reason"].startswith("every 1 minute: due ")
    last, nxt = con.sql(f"SELECT last_fired_at, next_fire_at FROM cluster_trigger_list() "
                        f"WHERE trigger_id = '{tid}'").fetchall()[0]
    assert nxt == last + dt.timedelta(seconds=60)
    assert s.tick().fired == []
    assert any("fired: every 1 minute" in m for m in s.msgs)
    assert any(f"run {fired[1]} succeeded in" in m for m in s.msgs)


def test_interval_trigger_fires_in_real_time(con, db_path, topics):
    _trigger(con, "kind := 'interval'", "every := 1")
    s = _sched(db_path)
    time.sleep(1.05)
    assert len(s.tick().fired) == 1


def test_cron_trigger_catches_up_once(con, db_path, topics):
    """The scheduler was down for 3 minutes of '* * * * *': one firing, not three."""
    tid = _trigger(con, "kind := 'cron'", "schedule := '* * * * *'")
    _backdate(con, tid, 180)
    s = _sched(db_path)
    report = s.tick()
    assert [f[0] for f in report.fired] == [tid]
    assert s.tick().fired == []
    (h,) = _history(con)
    assert h["kind"] == "cron" and h["run_status"] == "succeeded"
    assert "cron '* * * * *' (UTC): due" in h["reason"] and "caught up" in h["reason"]
    assert h["scheduled_for"] is not None
    nxt = con.sql("SELECT next_fire_at FROM cluster_trigger_list()").fetchall()[0][0]
    assert nxt > h["fired_at"] and nxt.second == 0


def test_rows_added_trigger(con, db_path, topics):
    X, y = topics
    con.sql("SELECT cluster_execute('topics')").fetchall()  # baseline: 60 rows
    tid = _trigger(con, "kind := 'event'", "when_rows_added := 15")
    s = _sched(db_path)
    assert s.tick().fired == []
    check = json.loads(con.sql(f"SELECT last_check FROM duckcluster.triggers WHERE "
                               f"trigger_id = '{tid}'").fetchall()[0][0])
    assert check == {"rows": 60, "rows_added": 0, "rows_base": 60}
    _add_rows(con, X[:10], 1000)
    assert s.tick().fired == []
    _add_rows(con, X[10:16], 2000)
    report = s.tick()
    (fired,) = report.fired
    (h,) = _history(con)
    assert h["run_status"] == "succeeded"
    assert h["reason"].startswith("16 rows added since run ") and "(60 -> 76; threshold 15)" \
        in h["reason"]
    assert json.loads(h["observed"])["rows_added"] == 16
    assert con.sql(f"SELECT n_rows FROM cluster_runs('topics') WHERE run_id = "
                   f"'{fired[1]}'").fetchall() == [(76,)]
    assert s.tick().fired == []  # the new run saw them all


def test_failed_firing_cools_down(con, db_path, topics):
    """An assign trigger with no full run to assign to: recorded as an error, then quiet."""
    tid = _trigger(con, "kind := 'event'", "when_rows_added := 1", "mode := 'assign'",
                   "cooldown := INTERVAL 1 HOUR")
    s = _sched(db_path)
    assert s.tick().fired[0][1] is None
    (h,) = _history(con)
    assert h["outcome"] == "error" and h["run_id"] is None
    assert "RunNotFoundError: Cluster 'topics' has no successful full run yet" in h["error"]
    assert s.tick().fired == []
    check = json.loads(con.sql(f"SELECT last_check FROM duckcluster.triggers WHERE "
                               f"trigger_id = '{tid}'").fetchall()[0][0])
    assert "cooldown_until" in check
    con.sql(f"UPDATE duckcluster.triggers SET cooldown_s = 0 WHERE trigger_id = '{tid}'"
            ).fetchall()
    con.sql("SELECT cluster_execute('topics')").fetchall()
    _add_rows(con, topics[0][:1], 5000)
    report = s.tick()
    assert report.runs and list(report.runs.values()) == ["succeeded"]
    assert con.sql(f"SELECT mode FROM cluster_runs('topics') WHERE run_id = "
                   f"'{report.fired[0][1]}'").fetchall() == [("assign",)]


def test_drift_trigger_fires_on_drift_only_and_sends_drift_detected(con, db_path, topics):
    X, y = topics
    base_run = con.sql("SELECT cluster_execute('topics')").fetchall()[0][0]
    tid = _trigger(con, "kind := 'event'", "when_drift_above := 0.1", "method := 'mmd'")
    with Receiver(secret="k") as rx:
        con.sql(f"SELECT cluster_webhook_create('topics', url := '{rx.url}', secret := 'k', "
                "events := ['drift.detected'])").fetchall()
        s = _sched(db_path)
        assert s.tick().fired == []
        check = json.loads(con.sql(f"SELECT last_check FROM duckcluster.triggers WHERE "
                                   f"trigger_id = '{tid}'").fetchall()[0][0])
        assert "mmd needs at least" in check["drift_note"]  # no new rows yet
        same = np.concatenate([X[y == c][20:] for c in range(3)])  # same blobs, new rows
        _add_rows(con, same, 1000)
        assert s.tick().fired == []
        (stat, above), = con.sql("SELECT statistic, above_threshold FROM "
                                 "duckcluster.drift_checks").fetchall()
        assert stat < 0.1 and not above
        assert s.tick().fired == []  # nothing changed: not computed again
        assert con.sql("SELECT count(*) FROM duckcluster.drift_checks").fetchall() == [(1,)]
        shifted, _ = blobs(n_per=20, k=3, d=8, seed=7)
        _add_rows(con, shifted, 2000)
        report = s.tick()
        assert report.fired and report.fired[0][0] == tid
        (req,) = rx.wait_for(1)
    (h,) = _history(con)
    assert h["run_status"] == "succeeded"
    assert "mmd drift " in h["reason"] and f"> 0.1 against run {base_run}" in h["reason"]
    checks = con.sql("SELECT statistic, p_value, drift_detected, above_threshold, n_baseline, "
                     "n_current, baseline_run_id FROM duckcluster.drift_checks ORDER BY "
                     "checked_at").fetchall()
    assert len(checks) == 2
    stat, p, detected, above, nb, nc, b = checks[1]
    assert stat > 0.1 and p < 0.05 and detected and above and (nb, nc) == (60, 120)
    assert b == base_run
    body = req["json"]
    assert req["verified"] and body["event"] == "drift.detected"
    assert body["drift"]["statistic"] == pytest.approx(stat) and body["drift"]["method"] == "mmd"
    assert body["trigger"] == {"trigger_id": tid}


def test_a_knn_drift_trigger_reads_its_threshold_as_a_significance(con, db_path, topics):
    """With method := 'knn' the statistic is -log10 of a p-value (docs/operations.md), so
    when_drift_above := 2 fires on a new blob (p <= 1/501 -> 2.7) and not on more rows of
    the same blobs; the check's statistic is embedding_drift's for the same sides."""
    X, y = topics
    con.sql("SELECT cluster_execute('topics')").fetchall()
    _trigger(con, "kind := 'event'", "when_drift_above := 2", "method := 'knn'")
    s = _sched(db_path)
    same = np.concatenate([X[y == c][20:] for c in range(3)])
    _add_rows(con, same, 1000)
    assert s.tick().fired == []
    (stat, p, above), = con.sql("SELECT statistic, p_value, above_threshold FROM "
                                "duckcluster.drift_checks").fetchall()
    assert stat <= 2 and not above
    shifted, _ = blobs(n_per=20, k=3, d=8, seed=7)
    _add_rows(con, shifted, 2000)
    report = s.tick()
    assert report.fired
    stat, p, above = con.sql("SELECT statistic, p_value, above_threshold FROM "
                             "duckcluster.drift_checks ORDER BY checked_at").fetchall()[-1]
    assert stat > 2 and above and p < 0.01
    (h,) = _history(con)
    assert "knn drift " in h["reason"] and "> 2 against run" in h["reason"]


def test_two_triggers_due_together_start_one_run(con, db_path, topics):
    a = _trigger(con, "kind := 'interval'", "every := 60")
    b = _trigger(con, "kind := 'cron'", "schedule := '*/5 * * * *'")
    _backdate(con, a, 120)
    _backdate(con, b, 600)
    report = _sched(db_path).tick()
    hist = _history(con)
    assert {h["trigger_id"] for h in hist} == {a, b}
    assert sorted(h["outcome"] for h in hist) == ["skipped", "submitted"]
    (skipped,) = [h for h in hist if h["outcome"] == "skipped"]
    assert "already has a full run" in skipped["error"] and skipped["run_id"] is None
    assert len(report.runs) == 1


def test_a_broken_trigger_does_not_stop_the_others(con, db_path, topics):
    con.sql("CREATE VIEW v AS SELECT * FROM docs").fetchall()
    con.sql("SELECT cluster_create('other', source := 'v', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    broken = con.sql("SELECT cluster_trigger_create('other', kind := 'event', "
                     "when_rows_added := 1)").fetchall()[0][0]
    con.sql("DROP VIEW v").fetchall()  # its source is gone: evaluation fails
    ok = _trigger(con, "kind := 'interval'", "every := 60")
    _backdate(con, ok, 120)
    s = _sched(db_path)
    report = s.tick()
    assert [f[0] for f in report.fired] == [ok]
    err = con.sql(f"SELECT last_error FROM cluster_trigger_list() WHERE trigger_id = "
                  f"'{broken}'").fetchall()[0][0]
    assert "Source 'v' is not a table or view" in err
    assert any("could not be evaluated" in m for m in s.msgs)


def test_trigger_of_a_deleted_definition_is_disabled(con, db_path, topics):
    con.sql("SELECT cluster_create('other', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    tid = con.sql("SELECT cluster_trigger_create('other', kind := 'interval', every := 60)"
                  ).fetchall()[0][0]
    _backdate(con, tid, 120)
    con.sql("SELECT cluster_delete('other')").fetchall()
    assert _sched(db_path).tick().fired == []
    enabled, err = con.sql(f"SELECT enabled, last_error FROM cluster_trigger_list() WHERE "
                           f"trigger_id = '{tid}'").fetchall()[0]
    assert enabled is False
    assert err == (f"cluster definition 'other' no longer exists: trigger disabled (remove it "
                   f"with SELECT cluster_trigger_delete('{tid}'))")
    assert _history(con, tid) == []


def test_list_delete_and_history_macros(con, db_path, topics):
    tid = _trigger(con, "kind := 'event'", "when_rows_added := 1", "when_drift_above := 0.5",
                   "enabled := false")
    (cond, enabled) = con.sql("SELECT condition, enabled FROM cluster_trigger_list('topics')"
                              ).fetchall()[0]
    assert cond == "rows added >= 1 or mmd drift > 0.5 (new_rows)" and enabled is False
    assert _sched(db_path).tick().fired == []  # disabled
    msg = con.sql(f"SELECT cluster_trigger_delete('{tid}')").fetchall()[0][0]
    assert msg == f"deleted trigger {tid} (event) of 'topics'; its history is kept"
    with pytest.raises(duckdb.Error, match=f"No trigger with id '{tid}'"):
        con.sql(f"SELECT cluster_trigger_delete('{tid}')").fetchall()
    assert con.sql("SELECT count(*) FROM cluster_trigger_list()").fetchall() == [(0,)]
    assert con.sql("SELECT count(*) FROM cluster_trigger_history()").fetchall() == [(0,)]


def test_stop_lets_a_running_run_finish_within_grace(con, db_path, topics):
    con.sql("CREATE OR REPLACE VIEW docs_slow AS SELECT * FROM docs WHERE "
            "(SELECT sum(hash(i)) FROM range(60000000) t(i)) IS NOT NULL").fetchall()
    con.sql("SELECT cluster_create('slow', source := 'docs_slow', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
    tid = con.sql("SELECT cluster_trigger_create('slow', kind := 'interval', every := 60)"
                  ).fetchall()[0][0]
    _backdate(con, tid, 120)
    s = _sched(db_path, grace=30)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", s.tick()))
    t.start()
    while not any(" started" in m for m in s.msgs):
        time.sleep(0.01)
    s.stop.set()  # what SIGTERM does
    t.join(30)
    assert list(out["r"].runs.values()) == ["succeeded"]
    assert any("stopping: waiting up to 30 s" in m for m in s.msgs)


# -- the scheduler process --------------------------------------------------------------

class _Proc:
    """A `duckcluster scheduler` subprocess whose stderr lines are collected."""

    def __init__(self, *args: str):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen([sys.executable, "-m", "duckcluster.cli", "scheduler", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.p.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.p.poll() is not None and not self._t.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines))

    def stop(self, timeout: float = 30.0) -> int:
        self.p.send_signal(signal.SIGTERM)
        code = self.p.wait(timeout)
        self._t.join(5)
        return code


def _write_when_free(db_path: str, fn, timeout: float = 20.0) -> None:
    """Open the file read-write between two scheduler ticks (retrying on its lock)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            con = duckdb.connect(db_path)
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        try:
            fn(con)
        finally:
            con.close()
        return


def test_scheduler_process_leaves_the_file_free_serves_metrics_and_stops_on_sigterm(
        con, db_path, topics):
    X, _ = topics
    con.sql("SELECT cluster_execute('topics')").fetchall()
    _trigger(con, "kind := 'event'", "when_rows_added := 5")
    con.close()
    port = free_port()
    proc = _Proc(db_path, "--poll", "0.3", "--metrics-port", str(port),
                 "--metrics-host", "127.0.0.1")
    try:
        proc.wait_line(r"scheduler on .* poll every 0.3 s")
        time.sleep(0.5)  # a tick or two: nothing to do
        # another writer (an ETL job) appends rows between two ticks
        _write_when_free(db_path, lambda c: _add_rows(c, X[:8], 1000))
        line = proc.wait_line(r"fired: 8 rows added since run")
        run_id = re.search(r"full run (run_\S+)", line).group(1)
        proc.wait_line(rf"run {run_id} succeeded in")
        deadline = time.monotonic() + 10
        while True:  # the snapshot of a tick after the run
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            if 'duckcluster_runs{name="topics",status="succeeded"} 2.0' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert 'duckcluster_up 1.0' in text
        assert 'duckcluster_clusters{mode="full",name="topics"} 3.0' in text
    finally:
        code = proc.stop()
    assert code == 0
    assert proc.lines[-1].endswith("scheduler stopped")
    assert any("SIGTERM: stopping" in line for line in proc.lines)
    ro = duckdb.connect(db_path, read_only=True)
    try:
        assert ro.execute("SELECT status, n_rows FROM duckcluster.runs WHERE run_id = ?",
                          [run_id]).fetchall() == [("succeeded", 68)]
    finally:
        ro.close()


def test_sigterm_during_a_run_cancels_it_after_the_grace_period(con, db_path, topics):
    """grace 0: the run stops at its next progress report, recorded failed, not running."""
    con.sql("CREATE OR REPLACE VIEW docs_slow AS SELECT * FROM docs WHERE "
            "(SELECT sum(hash(i)) FROM range(100000000) t(i)) IS NOT NULL").fetchall()
    con.sql("SELECT cluster_create('slow', source := 'docs_slow', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
    tid = con.sql("SELECT cluster_trigger_create('slow', kind := 'interval', every := 3600)"
                  ).fetchall()[0][0]
    _backdate(con, tid, 7200)
    con.close()
    proc = _Proc(db_path, "--poll", "60", "--grace", "0")
    try:
        line = proc.wait_line(r"run (run_\S+) started")
        run_id = re.search(r"run (run_\S+) started", line).group(1)
    finally:
        code = proc.stop()
    assert code == 0
    assert any("grace period over: cancelling" in line for line in proc.lines)
    ro = duckdb.connect(db_path, read_only=True)
    try:
        status, error, progress = ro.execute(
            "SELECT status, error, progress FROM duckcluster.runs WHERE run_id = ?",
            [run_id]).fetchall()[0]
        assert ro.execute("SELECT count(*) FROM duckcluster.members WHERE run_id = ?",
                          [run_id]).fetchall() == [(0,)]
        firing = ro.execute("SELECT outcome, run_id FROM duckcluster.trigger_firings"
                            ).fetchall()
    finally:
        ro.close()
    assert status == "cancelled", (status, error)
    assert "cancelled: the scheduler was stopped and its grace period of 0 s ended" in error
    assert progress is not None
    assert firing == [("submitted", run_id)]


def test_cli_runs_shows_readable_history(con, db_path, topics):
    from click.testing import CliRunner

    from duckcluster.cli import main

    con.sql("SELECT cluster_execute('topics')").fetchall()
    tid = _trigger(con, "kind := 'interval'", "every := 60")
    _backdate(con, tid, 61)
    _sched(db_path).tick()
    con.sql("CREATE VIEW gone AS SELECT * FROM docs").fetchall()
    con.sql("SELECT cluster_create('broken', source := 'gone', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    con.sql("DROP VIEW gone").fetchall()
    with pytest.raises(duckdb.Error):
        con.sql("SELECT cluster_execute('broken')").fetchall()
    con.close()
    out = CliRunner().invoke(main, ["runs", db_path, "topics"])
    assert out.exit_code == 0, out.output
    lines = [ln for ln in out.output.splitlines() if "│ run_" in ln]
    assert len(lines) == 2
    assert "manual" in lines[0] and "succeeded" in lines[0]
    assert "interval trigger" in lines[1]
    out = CliRunner().invoke(main, ["runs", db_path])
    failed = [ln for ln in out.output.splitlines() if "broken" in ln]
    assert len(failed) == 1 and "failed" in failed[0] and "gone" in failed[0]
    out = CliRunner().invoke(main, ["runs", db_path, "nothing"])
    assert out.exit_code == 0 and "no runs of 'nothing' yet" in out.output


def test_delete_with_drop_artifacts_removes_triggers_and_webhooks(tmp_path):
    import duckcluster
    from conftest import blobs, load_table

    con = duckcluster.connect(str(tmp_path / "d.duckdb"))
    try:
        X, _ = blobs(n_per=20, k=2, d=4)
        load_table(con, "docs", X)
        con.sql("SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
        con.sql("SELECT cluster_trigger_create('t', kind := 'interval', every := INTERVAL 1 HOUR)").fetchall()
        con.sql("SELECT cluster_webhook_create('t', url := 'http://127.0.0.1:9/h', secret := 's')").fetchall()
        con.sql("SELECT cluster_delete('t', drop_artifacts := true)").fetchall()
        assert con.sql("SELECT (SELECT count(*) FROM duckcluster.triggers), "
                       "(SELECT count(*) FROM duckcluster.webhooks)").fetchall() == [(0, 0)]
    finally:
        con.close()
