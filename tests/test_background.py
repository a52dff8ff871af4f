"""Background runs: cluster_submit / cluster_status / cluster_wait, refusal, cancel, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import duckcluster
from conftest import blobs, load_table
from duckcluster.ops import background as _background

SLOW_S = 0.15


def _slow_source(con, name: str = "topics", seconds: float = SLOW_S) -> None:
    """Definition over a view that sleeps ``seconds`` each time it is scanned (per vector)."""
    X, _ = blobs(n_per=20, k=3, d=8)
    load_table(con, "docs", X)

    def slow(ids: pa.ChunkedArray) -> pa.Array:
        time.sleep(seconds)
        return pa.array(np.ones(len(ids), dtype=bool))

    try:
        con.create_function("_test_slow", slow, ["BIGINT"], "BOOLEAN", type="arrow",
                            side_effects=True)
    except duckdb.NotImplementedException:  # already there (same database instance)
        pass
    con.sql("CREATE OR REPLACE VIEW docs_slow AS SELECT * FROM docs WHERE _test_slow(doc_id)"
            ).fetchall()
    con.sql(f"SELECT cluster_create('{name}', source := 'docs_slow', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()


def _status(con, run_id: str) -> dict:
    rel = con.sql(f"SELECT * FROM cluster_status('{run_id}')")
    return dict(zip(rel.columns, rel.fetchall()[0]))


def _submit(con, name="topics", *extra) -> str:
    args = ", ".join([f"'{name}'", *extra])
    return con.sql(f"SELECT cluster_submit({args})").fetchall()[0][0]


def test_submit_returns_at_once_and_progress_is_persisted(con):
    _slow_source(con, seconds=1.5)  # long enough that a busy machine cannot blur the order
    t0 = time.perf_counter()
    run_id = _submit(con)
    assert time.perf_counter() - t0 < 1.5, "cluster_submit waited for the run"
    seen = []
    while True:
        s = _status(con, run_id)
        seen.append((s["status"], s["progress"]))
        if s["status"] not in ("queued", "running"):
            break
        if s["status"] == "running":
            assert s["elapsed_s"] is not None and s["elapsed_s"] >= 0
        time.sleep(0.02)
    assert seen[0][0] in ("queued", "running")
    running = {p for st, p in seen if st == "running"}
    assert running - {"starting", None}, f"no stage persisted while running: {seen}"
    assert all(p != "done" for p in running)
    assert s["status"] == "succeeded" and s["progress"] == "done" and s["error"] is None
    assert s["n_clusters"] == 3 and s["n_members"] == 60
    assert s["submitted_at"] <= s["started_at"] <= s["finished_at"]
    # the status turns 'succeeded' when the run commits; the worker then delivers
    # notifications and closes its cursor: cluster_wait is what waits for all of it
    # (closing the connection before that raced with the worker: a flaky teardown)
    assert con.sql(f"SELECT cluster_wait('{run_id}')").fetchall() == [("succeeded",)]
    runs = con.sql("SELECT run_id, status, mode FROM cluster_runs('topics')").fetchall()
    assert runs == [(run_id, "succeeded", "full")]
    assert con.sql("SELECT count(*) FROM cluster_members('topics')").fetchall() == [(60,)]


def test_second_full_run_is_refused_while_one_is_running(con):
    _slow_source(con)
    run_id = _submit(con)
    with pytest.raises(duckdb.Error) as e:
        _submit(con)
    msg = str(e.value)
    assert "RunInProgressError: Cluster 'topics' already has a full run" in msg
    assert run_id in msg and "A second full run of the same definition is refused" in msg
    assert f"cluster_wait('{run_id}')" in msg and "then submit again" in msg
    with pytest.raises(duckdb.Error) as e:  # nor a synchronous one on the side
        con.sql("SELECT cluster_execute('topics')").fetchall()
    assert "RunInProgressError" in str(e.value) and "then run again" in str(e.value)
    with pytest.raises(duckdb.Error, match="has no successful full run yet"):
        _submit(con, "topics", "mode := 'assign'")  # nothing to assign to yet
    assert con.sql(f"SELECT cluster_wait('{run_id}')").fetchall() == [("succeeded",)]
    a = _submit(con, "topics", "mode := 'assign'", "assignment_threshold := 0.2")
    b = _submit(con)  # the first one is over: allowed again
    for r in (a, b):
        assert con.sql(f"SELECT cluster_wait('{r}')").fetchall() == [("succeeded",)]
    assert con.sql(f"SELECT mode, assignment_threshold FROM cluster_runs('topics') "
                   f"WHERE run_id = '{a}'").fetchall() == [("assign", 0.2)]
    assert con.sql("SELECT count(*) FROM cluster_runs('topics')").fetchall() == [(3,)]


def test_queued_run_whose_definition_is_deleted_is_recorded_failed(con):
    _slow_source(con)
    con.sql("SELECT cluster_create('other', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    first = _submit(con)
    second = _submit(con, "other")  # queued behind the slow one (one worker)
    assert _status(con, second)["status"] == "queued"
    con.sql("SELECT cluster_delete('other')").fetchall()
    assert con.sql(f"SELECT cluster_wait('{second}')").fetchall() == [("failed",)]
    s = _status(con, second)
    assert "UnknownNameError: No cluster definition named 'other'" in s["error"]
    assert con.sql(f"SELECT cluster_wait('{first}')").fetchall() == [("succeeded",)]


def test_cancel_stops_at_the_next_progress_report_and_leaves_nothing(con):
    _slow_source(con, seconds=0.5)
    run_id = _submit(con)
    while _status(con, run_id)["status"] != "running":
        time.sleep(0.01)
    assert _background.cancel_all("test says stop") == [run_id]
    assert con.sql(f"SELECT cluster_wait('{run_id}')").fetchall() == [("cancelled",)]
    s = _status(con, run_id)
    assert s["error"] == "RunCancelledError: cancelled: test says stop"
    for table in ("members", "centroids"):
        assert con.sql(f"SELECT count(*) FROM duckcluster.{table} WHERE run_id = '{run_id}'"
                       ).fetchall() == [(0,)]


def test_status_and_wait_errors(con):
    _slow_source(con, seconds=0.0)
    with pytest.raises(duckdb.Error, match=r"RunNotFoundError: No run with id 'run_nope'"):
        con.sql("SELECT * FROM cluster_status('run_nope')").fetchall()
    with pytest.raises(duckdb.Error, match="No cluster definition named 'nope'"):
        _submit(con, "nope")
    with pytest.raises(duckdb.Error, match="mode must be 'full' or 'assign'. Got 'fast'"):
        _submit(con, "topics", "mode := 'fast'")
    with pytest.raises(duckdb.Error, match=r"range \[0, 1\]"):
        _submit(con, "topics", "mode := 'assign'", "assignment_threshold := 2")
    run_id = _submit(con)
    con.sql(f"SELECT cluster_wait('{run_id}')").fetchall()
    # a definition name gives its latest run
    assert _status(con, "topics")["run_id"] == run_id


def test_wait_with_timeout_returns_the_current_status(con):
    _slow_source(con, seconds=0.4)
    run_id = _submit(con)
    (status,) = con.sql(f"SELECT cluster_wait('{run_id}', timeout := 0.05)").fetchall()[0]
    assert status in ("queued", "running")
    assert con.sql(f"SELECT cluster_wait('{run_id}')").fetchall() == [("succeeded",)]


def test_in_memory_database():
    con = duckcluster.connect()
    try:
        X, _ = blobs(n_per=10, k=2, d=4)
        load_table(con, "docs", X)
        con.sql("SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
        run_id = _submit(con, "t")
        assert con.sql(f"SELECT cluster_wait('{run_id}')").fetchall() == [("succeeded",)]
    finally:
        con.close()


def test_read_only_database_refuses_submit(db_path):
    con = duckcluster.connect(db_path)
    X, _ = blobs(n_per=10, k=2, d=4)
    load_table(con, "docs", X)
    con.sql("SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    con.close()
    ro = duckcluster.connect(db_path, read_only=True)
    try:
        with pytest.raises(duckdb.Error, match="cluster_submit writes to the catalog, but this "
                                               "database is open read-only"):
            _submit(ro, "t")
    finally:
        ro.close()


def test_closing_the_connection_never_leaves_a_run_running(db_path):
    """Closing under a run: DuckDB refuses (busy) or the run fails, recorded either way."""
    con = duckcluster.connect(db_path)
    _slow_source(con, seconds=0.3)
    run_id = _submit(con)
    while _status(con, run_id)["status"] != "running":
        time.sleep(0.01)
    time.sleep(0.05)
    try:
        con.close()
        closed = True
    except duckdb.Error as exc:  # busy: a query of the run is active
        assert "busy" in str(exc)
        closed = False
    deadline = time.monotonic() + 10
    while not closed:  # let it finish, then close
        if _background.active_runs() == []:
            con.close()
            closed = True
        elif time.monotonic() > deadline:
            raise AssertionError("the run did not end")
        time.sleep(0.05)
    for _ in range(100):
        if not _background.active_runs():
            break
        time.sleep(0.05)
    con = duckdb.connect(db_path, read_only=True)
    try:
        status, error = con.execute("SELECT status, error FROM duckcluster.runs WHERE "
                                    "run_id = ?", [run_id]).fetchall()[0]
    finally:
        con.close()
    assert status in ("succeeded", "failed")
    if status == "failed":
        assert "closed" in error


_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np, pyarrow as pa, duckcluster
    con = duckcluster.connect(sys.argv[1])
    def slow(ids):
        time.sleep(float(sys.argv[2]))
        return pa.array(np.ones(len(ids), dtype=bool))
    con.create_function("_test_slow", slow, ["BIGINT"], "BOOLEAN", type="arrow",
                        side_effects=True)
    con.sql("CREATE OR REPLACE VIEW docs_slow AS SELECT * FROM docs WHERE _test_slow(doc_id)")
    run_id = con.sql("SELECT cluster_submit('t')").fetchall()[0][0]
    while con.sql(f"SELECT status FROM cluster_status('{run_id}')").fetchall()[0][0] != "running":
        time.sleep(0.01)
    print(run_id, flush=True)
    # the script ends here: the interpreter waits for the background run at exit
""")


def _child_db(db_path):
    con = duckcluster.connect(db_path)
    X, _ = blobs(n_per=10, k=2, d=4)
    load_table(con, "docs", X)
    con.sql("CREATE VIEW docs_slow AS SELECT * FROM docs").fetchall()
    con.sql("SELECT cluster_create('t', source := 'docs_slow', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    con.close()


def _run_status(db_path, run_id):
    con = duckcluster.connect(db_path)  # read-write: install() marks dead runs abandoned
    try:
        return con.execute("SELECT status, error FROM duckcluster.runs WHERE run_id = ?",
                           [run_id]).fetchall()[0]
    finally:
        con.close()


def test_a_script_that_submits_and_ends_waits_for_its_run(db_path):
    _child_db(db_path)
    out = subprocess.run([sys.executable, "-c", _CHILD, db_path, "0.3"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert _run_status(db_path, out.stdout.strip()) == ("succeeded", None)


def test_a_killed_process_leaves_its_run_abandoned(db_path):
    _child_db(db_path)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, db_path, "30"],
                            stdout=subprocess.PIPE, text=True)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id.startswith("run_")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    status, error = _run_status(db_path, run_id)
    assert status == "abandoned" and "ended before it finished" in error


# -- Ctrl-C (SIGINT) in real processes: recorded 'cancelled', not 'failed' ------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _slow_db(db_path) -> None:
    """A definition whose run takes tens of seconds and reports every UMAP epoch."""
    con = duckcluster.connect(db_path)
    try:
        for sql in ("SELECT setseed(0.25)",
                    "CREATE TABLE pts AS SELECT i AS doc_id, list_transform(range(16), "
                    "lambda j: random())::FLOAT[16] AS embedding FROM range(3000) t(i)",
                    "SELECT cluster_create('slow', 'pts', 'embedding', id := 'doc_id', "
                    "algorithm := 'kmeans', params := {'n_clusters': 4}, preprocessing := "
                    "[{'method': 'umap', 'n_components': 2, 'n_epochs': 2000}])"):
            con.sql(sql).fetchall()
    finally:
        con.close()


def _interrupt_when(proc, marker: str, delay_s: float = 1.0) -> tuple[str, str]:
    """Wait until ``proc`` printed ``marker`` (stdout or stderr), ``delay_s`` more, then send
    SIGINT; returns (stdout, stderr) once it ended."""
    import threading

    texts = {"out": "", "err": ""}

    def pump(stream, key):
        for chunk in iter(lambda: stream.read(1), ""):
            texts[key] += chunk

    pumps = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for t in pumps:
        t.start()
    deadline = time.monotonic() + 300
    while marker not in texts["out"] + texts["err"]:
        assert proc.poll() is None, f"ended before printing {marker!r}: {texts}"
        assert time.monotonic() < deadline, f"no {marker!r} in 300 s: {texts}"
        time.sleep(0.05)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    proc.wait(240)
    for t in pumps:
        t.join(10)
    return texts["out"], texts["err"]


def _cli(db_path, *args, stdin=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [REPO, os.environ.get("PYTHONPATH")])),
        "DUCKCLUSTER_PROGRESS": "1"}  # progress on stderr: the test sees the run going
    # SIGINT as a terminal delivers it: a test run started as a background job (nohup, `&`
    # in a script) ignores SIGINT, and a child inherits that, so Ctrl-C would never arrive
    return subprocess.Popen([sys.executable, "-m", "duckcluster.cli", *args, db_path],
                            stdin=subprocess.PIPE if stdin else None, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _only_run(db_path) -> tuple[str, str, int]:
    con = duckdb.connect(db_path, read_only=True)
    try:
        (status, error, run_id), = con.execute(
            "SELECT status, error, run_id FROM duckcluster.runs").fetchall()
        n = con.execute("SELECT count(*) FROM duckcluster.members WHERE run_id = ?",
                        [run_id]).fetchall()[0][0]
    finally:
        con.close()
    return status, error, n


WAIT = ("SELECT 'submitted ' || cluster_submit('slow') AS r;\n"
        "SELECT cluster_wait((SELECT max(run_id) FROM duckcluster.runs));\n"
        "SELECT 'never reached' AS r;\n")


@pytest.mark.parametrize("how", ["shell", "sql"])
def test_ctrl_c_while_waiting_for_a_background_run_cancels_it(db_path, how):
    """Ctrl-C during cluster_wait in the piped shell and in duckcluster sql -c: the statement
    says Interrupted, the process exits 130 at once, the run is 'cancelled' with nothing
    written, the statements after it do not run, and no traceback is shown."""
    _slow_db(db_path)
    proc = _cli(db_path, "shell", stdin=True) if how == "shell" else \
        _cli(db_path, "sql", "-c", WAIT.replace("\n", " "))
    if how == "shell":
        proc.stdin.write(WAIT)
        proc.stdin.close()
        proc.stdin = None
    out, err = _interrupt_when(proc, "submitted run_")
    assert proc.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err and "never reached" not in out
    status, error, n = _only_run(db_path)
    assert (status, n) == ("cancelled", 0), error
    assert error.startswith("RunCancelledError: cancelled"), error
    assert "interrupted (Ctrl-C)" in error, error


@pytest.mark.parametrize("how", ["shell", "sql"])
def test_ctrl_c_during_a_foreground_run_cancels_it(db_path, how):
    """Piped shell and duckcluster sql -c (no terminal): Ctrl-C stops cluster_execute at its
    next progress report instead of letting it finish and printing Interrupted after."""
    _slow_db(db_path)
    script = "SELECT 'go' AS r;\nSELECT cluster_execute('slow');\n"
    proc = _cli(db_path, "shell", stdin=True) if how == "shell" else \
        _cli(db_path, "sql", "-c", script.replace("\n", " "))
    if how == "shell":
        proc.stdin.write(script)
        proc.stdin.close()
        proc.stdin = None
    t0 = time.monotonic()
    _out, err = _interrupt_when(proc, "UMAP layout epochs")  # the run is under way
    assert proc.returncode == 130 and "Interrupted" in err and "Traceback" not in err, err
    status, error, n = _only_run(db_path)
    assert (status, n) == ("cancelled", 0), error
    assert error == ("RunCancelledError: cancelled: interrupted (Ctrl-C) before it finished; "
                     "nothing was written")
    assert time.monotonic() - t0 < 120  # it did not run its 2,000 epochs to the end


def test_ctrl_c_while_the_shell_waits_for_runs_at_exit(db_path):
    """Input ends with a run in the background: the shell waits for it (as a script does)
    and says so; Ctrl-C then cancels it."""
    _slow_db(db_path)
    proc = _cli(db_path, "shell", stdin=True)
    proc.stdin.write("SELECT 'submitted ' || cluster_submit('slow') AS r;\n")
    proc.stdin.close()
    proc.stdin = None
    _out, err = _interrupt_when(proc, "Waiting for 1 background run(s)")
    assert proc.returncode == 130, err
    assert "Waiting for 1 background run(s)" in err and "Traceback" not in err
    status, error, n = _only_run(db_path)
    assert (status, n) == ("cancelled", 0), error
    assert "interrupted (Ctrl-C) while waiting for it" in error
