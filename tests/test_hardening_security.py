"""Hardening, round 2 (issue 14): sources are exactly one query, no secret is stored,
webhooks and triggers never stop the scheduler, and the run lifecycle is race-free.

Real DuckDB files, real HTTP servers on 127.0.0.1, real threads and processes.
"""

from __future__ import annotations

import json
import os
import textwrap

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import duckcluster
from duckcluster import _source
from conftest import blobs, load_table


def q(con, sql, params=None):
    return con.execute(sql, params).fetchall() if params is not None else con.sql(sql).fetchall()


def _victim(con) -> list:
    """The victim table's rows, or None when it is gone."""
    try:
        return q(con, "SELECT * FROM victim ORDER BY ALL")
    except duckdb.CatalogException:
        return None


def _world(con) -> dict:
    """Everything a hostile statement could change: tables, databases, one setting."""
    return {
        "victim": _victim(con),
        "tables": q(con, "SELECT database_name, schema_name, table_name FROM duckdb_tables() "
                         "WHERE schema_name <> 'duckcluster' ORDER BY ALL"),
        "databases": q(con, "SELECT database_name FROM duckdb_databases() ORDER BY ALL"),
        "threads": q(con, "SELECT current_setting('threads')"),
        "extensions": q(con, "SELECT extension_name FROM duckdb_extensions() WHERE loaded "
                             "ORDER BY ALL"),
    }


@pytest.fixture
def hostile_db(con, tmp_path, monkeypatch):
    """docs (4 blobs x 30 rows, 8-d, with a text column) and a victim table."""
    X, y = blobs(n_per=30, k=4, d=8)
    load_table(con, "docs", X, topic=y.astype(np.int32),
               title=np.array([f"topic {t} doc {i}" for i, t in enumerate(y)], dtype=object))
    q(con, "CREATE TABLE victim AS SELECT range AS v FROM range(3)")
    monkeypatch.chdir(tmp_path)  # a COPY ... TO 'leak.csv' would land here
    return con


MULTI = "(SELECT * FROM docs); DROP TABLE victim; (SELECT * FROM docs)"
TAIL = "(SELECT * FROM docs); DROP TABLE victim"
MULTI_MSG = "holds more than one statement; a source must be exactly one query"
TAIL_MSG = "starts with '(' but does not end with ')'"

# each entry point that takes a source, as (id, SQL with {src})
SOURCE_CALLS = [
    ("cluster_create", "SELECT cluster_create('x', source := {src}, embedding := 'embedding', "
                       "id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': 2}})"),
    ("cluster_embeddings", "SELECT count(*) FROM cluster_embeddings({src}, 'embedding', "
                           "algorithm := 'kmeans', params := {{'n_clusters': 2}})"),
    ("embedding_drift baseline", "SELECT * FROM embedding_drift({src}, 'docs', 'embedding')"),
    ("embedding_drift current", "SELECT * FROM embedding_drift('docs', {src}, 'embedding')"),
    ("embedding_drift_windows", "SELECT * FROM embedding_drift_windows({src}, 'embedding', "
                                "time_column := 'ts')"),
    ("drift_monitor_add", "SELECT drift_monitor_add('m', {src}, embedding := 'embedding')"),
]


@pytest.mark.parametrize("source,message", [(MULTI, MULTI_MSG), (TAIL, TAIL_MSG)],
                         ids=["three statements", "trailing statement"])
@pytest.mark.parametrize("call", [c[1] for c in SOURCE_CALLS], ids=[c[0] for c in SOURCE_CALLS])
def test_a_second_statement_in_a_source_never_runs(hostile_db, call, source, message):
    """Every function that takes a source refuses a second statement before running any."""
    con = hostile_db
    q(con, "SELECT drift_monitor_create('m')")
    before = _world(con)
    with pytest.raises(duckdb.Error) as err:
        q(con, call.format(src=_source.quote_literal(source)))
    assert message in str(err.value)
    assert "SpecError" in str(err.value)
    assert _world(con) == before
    assert q(con, "SELECT count(*) FROM duckcluster.definitions WHERE name = 'x'") == [(0,)]


@pytest.mark.parametrize("source,message", [
    ("(SELECT * FROM docs;)", "ends with ';'. A source is one query inside parentheses, "
                              "not a statement: remove the ';'."),
    ("(SELECT * FROM docs; -- note\n)", "ends with ';'"),
    ("(DROP TABLE victim)", "The query source '(DROP TABLE victim)' is a DROP statement"),
    ("(INSERT INTO victim VALUES (9) RETURNING *)", "is an INSERT statement; a source must be "
                                                    "one SELECT-like query"),
    ("(PRAGMA table_info('victim'))", "is a PRAGMA statement"),
    ("(WITH d AS (DELETE FROM victim RETURNING *) SELECT * FROM d)",
     "holds a data-modifying statement (DELETE) in a WITH clause"),
    ("()", "The query source '()' is empty."),
    ("( -- nothing\n)", "is empty"),
], ids=["trailing ;", "trailing ; and comment", "DROP", "INSERT", "PRAGMA", "DML in a CTE",
        "empty", "only a comment"])
def test_a_source_that_is_not_one_query_is_refused(hostile_db, source, message):
    con = hostile_db
    before = _world(con)
    with pytest.raises(duckdb.Error) as err:
        q(con, SOURCE_CALLS[0][1].format(src=_source.quote_literal(source)))
    assert message in str(err.value)
    assert _world(con) == before


def test_semicolons_in_strings_comments_and_names_are_one_query(hostile_db):
    """';' inside a string, a quoted name or a comment is not a statement separator, and a
    trailing '--' comment cannot swallow the closing parenthesis."""
    con = hostile_db
    q(con, 'CREATE VIEW "odd;name" AS SELECT * FROM docs')
    src = ("(SELECT * FROM \"odd;name\" WHERE title <> 'a; DROP TABLE victim' /* ; */ "
           "-- ; DROP TABLE victim\n AND topic >= 0 -- last line comment)")
    q(con, SOURCE_CALLS[0][1].format(src=_source.quote_literal(src)))
    run = q(con, "SELECT cluster_execute('x')")[0][0]
    assert q(con, f"SELECT n_members FROM duckcluster.runs WHERE run_id = '{run}'") == [(120,)]
    n = q(con, SOURCE_CALLS[1][1].format(src=_source.quote_literal(src)))
    assert n == [(120,)]
    assert _victim(con) == [(0,), (1,), (2,)]


def _store_bad_source(con, name: str, source: str) -> None:
    """Point a stored definition at a hostile source, as an older version could have
    stored it (the catalog row is written directly)."""
    spec = json.loads(q(con, "SELECT spec FROM duckcluster.definitions WHERE name = ?",
                        [name])[0][0])
    spec["source"] = source
    q(con, "UPDATE duckcluster.definitions SET spec = ? WHERE name = ?", [json.dumps(spec), name])
    q(con, "UPDATE duckcluster.runs SET spec = ? WHERE name = ?", [json.dumps(spec), name])


def test_a_stored_multi_statement_source_never_runs(hostile_db, db_path):
    """An old database holds a definition whose source ends in a second statement: every
    path that runs a stored source refuses it, and the scheduler records it and goes on."""
    from duckcluster.ops.scheduler import Scheduler

    con = hostile_db
    q(con, SOURCE_CALLS[0][1].format(src="'docs'").replace("'x'", "'t'"))
    run = q(con, "SELECT cluster_execute('t')")[0][0]
    tid = q(con, "SELECT cluster_trigger_create('t', kind := 'event', when_rows_added := 1)")[0][0]
    _store_bad_source(con, "t", MULTI)
    n_runs = q(con, "SELECT count(*) FROM duckcluster.runs")
    before = _world(con)
    for sql in ["SELECT cluster_execute('t')",
                "SELECT cluster_submit('t')",
                "SELECT cluster_execute('t', mode := 'assign')",
                "SELECT cluster_label('t', text := 'title')",
                "SELECT cluster_enrich('t', 'docs_enriched')",
                f"SELECT * FROM embedding_drift('run:{run}', 'docs', 'embedding')"]:
        with pytest.raises(duckdb.Error) as err:
            q(con, sql)
        assert MULTI_MSG in str(err.value), sql
        assert _world(con) == before, sql
    assert q(con, "SELECT count(*) FROM duckcluster.runs") == n_runs  # not even a failed run
    msgs: list[str] = []
    report = Scheduler(db_path, duckcluster.connect, say=msgs.append).tick()
    assert report.fired == []
    err = q(con, "SELECT last_error FROM duckcluster.triggers WHERE trigger_id = ?", [tid])[0][0]
    assert MULTI_MSG in err
    assert any("could not be evaluated" in m for m in msgs)
    assert _world(con) == before


@pytest.mark.parametrize("text", [
    "title); DROP TABLE victim; SELECT (1",
    "title || (SELECT 'x'; DROP TABLE victim)",
    "1; DROP TABLE victim",
])
def test_a_label_text_expression_cannot_add_a_statement(hostile_db, text):
    con = hostile_db
    q(con, SOURCE_CALLS[0][1].format(src="'docs'").replace("'x'", "'t'"))
    q(con, "SELECT cluster_execute('t')")
    before = _world(con)
    with pytest.raises(duckdb.Error) as err:
        q(con, "SELECT cluster_label('t', text := ?)", [text])
    assert "text must be a column name or one SQL expression" in str(err.value)
    assert _world(con) == before


# -- the property: hostile strings ----------------------------------------------------------

_FRAGMENTS = [
    "SELECT * FROM docs", "FROM docs", "SELECT 1", ";", ";", "'", "''", '"', "--", "\n", "/*",
    "*/", "(", ")", "$$", "E'\\''", " ", "x", "UNION ALL", "WHERE topic > 0",
    "DROP TABLE victim", "INSERT INTO victim VALUES (99)", "DELETE FROM victim",
    "UPDATE victim SET v = 7", "ATTACH ':memory:' AS evil", "COPY victim TO 'leak.csv'",
    "PRAGMA threads=1", "SET threads = 1", "INSTALL httpfs", "LOAD httpfs", "CREATE TABLE evil(a INT)",
    "WITH c AS (SELECT * FROM docs) SELECT * FROM c",
    "WITH c AS (DELETE FROM victim RETURNING *) SELECT * FROM c",
    "CALL pragma_version()", "CHECKPOINT", "EXPLAIN SELECT 1", "VALUES (1)",
]


@st.composite
def hostile(draw) -> tuple[str, bool]:
    """(source, one_query_by_construction): random fragments, or one SELECT that carries
    hostile text only inside a string literal, a quoted name, a block and a line comment."""
    parts = draw(st.lists(st.one_of(st.sampled_from(_FRAGMENTS),
                                    st.text(alphabet="();'\"-*/$ \nxS", max_size=4)),
                          min_size=1, max_size=8))
    body = " ".join(parts) if draw(st.booleans()) else "".join(parts)
    if draw(st.integers(0, 4)) == 0:
        block = body.replace("*/", "").replace("/*", "")  # block comments nest
        line = body.replace("\n", " ")
        return (f"(SELECT *, {_source.quote_literal(body)} AS {_source.quote_ident('c' + body)} "
                f"FROM docs /* {block} */ -- {line}\n)"), True
    return (f"({body})" if draw(st.integers(0, 3)) else body), False


def _parser_says_one_query(inner: str) -> bool:
    """Independent oracle: DuckDB parses the text as one SELECT and it has no ';' token
    (json_serialize_sql accepts SELECT statements only)."""
    if any(k == duckdb.token_type.operator and inner[p] == ";"
           for p, k in duckdb.tokenize(inner)):
        return False
    try:
        tree = json.loads(duckdb.execute("SELECT json_serialize_sql(?)", [inner]).fetchall()[0][0])
    except duckdb.Error:
        return False
    return (not tree.get("error") and len(tree["statements"]) == 1
            and "_QUERY_NODE\"" not in json.dumps(tree).replace("SELECT_NODE", ""))


REFUSALS = ("holds more than one statement", "ends with ';'", "Cannot parse the query source",
            "is empty", "statement; a source must be one SELECT-like query",
            "holds a data-modifying statement", "starts with '(' but does not end with ')'",
            "is not a table or view in this database", "Cannot read the source",
            "cannot contain a NUL character", "Identifiers cannot contain")


def test_hostile_sources_are_one_query_or_refused(hostile_db):
    """Property: for random mixes of ';', quotes, comments and writing statements, the
    victim (and every table, database, setting and extension) survives; a source is either
    proven one query (and DuckDB's parser agrees) or refused with a clear SpecError."""
    con = hostile_db
    before = _world(con)

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(hostile())
    def check(case: tuple[str, bool]) -> None:
        src, one_query = case
        s = src.strip()
        accepted = None
        if _source.is_query(s):
            try:
                _source.check_query(s)
                accepted = True
            except duckcluster.SpecError:
                accepted = False
            if accepted:
                assert _parser_says_one_query(s[1:-1]), s
            if one_query:
                assert accepted, s
        for _name, call in SOURCE_CALLS[:2]:
            try:
                q(con, call.format(src=_source.quote_literal(src))
                  .replace("cluster_create('x'", "cluster_create('x', \"replace\" := true"))
            except duckdb.Error as exc:
                msg = str(exc)
                if accepted is False:  # (names and paths are quoted: DuckDB says what is missing)
                    assert any(r in msg for r in REFUSALS), (src, msg)
                assert "Traceback" not in msg
            else:
                assert accepted is not False, src
            assert _world(con) == before, src

    check()
    assert not os.path.exists("leak.csv")


# -- secrets: an echoed key is never stored ------------------------------------------------

ECHO_KEY = "sk-echo-5b1e9d7c-PLEASE-SCRUB-0042"


def _catalog_dump(con) -> dict[str, str]:
    """Every duckcluster.* table as text."""
    return {t: str(q(con, f"SELECT * FROM duckcluster.{t}")) for (t,) in q(
        con, "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'duckcluster'")}


def _artifact_bytes(con) -> bytes:
    root = q(con, "SELECT value FROM duckcluster.meta WHERE key = 'artifacts_dir'")[0][0]
    out = b""
    for folder, _dirs, files in os.walk(root):
        for f in files:
            with open(os.path.join(folder, f), "rb") as fh:
                out += fh.read()
    return out


@pytest.mark.parametrize("provider,key_from", [("openai", "env"), ("gemini", "env"),
                                               ("openai", "duckdb secret")])
def test_an_echoed_api_key_is_never_stored(tmp_path, monkeypatch, provider, key_from):
    """A provider echoes the key inside a malformed answer, inside a valid label (label,
    summary, keywords, an extra field) and inside an HTTP error: label_failures, centroids,
    labels, label_cache, the centroids Parquet file and the returned message carry ***."""
    from label_data import cluster, make_docs
    from llm_servers import FakeLLM

    for var in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    if key_from == "env":
        monkeypatch.setenv("OPENAI_API_KEY" if provider == "openai" else "GEMINI_API_KEY",
                           ECHO_KEY)
    con = duckcluster.connect(str(tmp_path / "keys.duckdb"),
                              config={"allow_unredacted_secrets": True})
    try:
        make_docs(con)
        cluster(con)
        secret = ""
        if key_from == "duckdb secret":
            q(con, f"CREATE SECRET echo_key (TYPE http, BEARER_TOKEN '{ECHO_KEY}')")
            secret = ", secret := 'echo_key'"
        with FakeLLM(api_key=ECHO_KEY) as srv:
            srv.faults = {"cl_0": ["echo_malformed", "echo_malformed"], "cl_1": ["echo_label"],
                          "cl_2": ["echo_error"]}
            url = srv.openai_url if provider == "openai" else srv.gemini_url
            msg = q(con, f"SELECT cluster_label('topics', provider := '{provider}', "
                         f"base_url := '{url}', model := 'm', retry_backoff := 0.01, "
                         "cache_ttl_seconds := 3600, response_shape := {'label': 'string', "
                         "'summary': 'string', 'keywords': ['string'], "
                         f"'target_audience': 'string'}}{secret})")[0][0]
            assert len(srv.chat_requests()) == 5  # cl_0 asked twice; the key was sent to all
        fails = dict(q(con, "SELECT node_id, error FROM cluster_label_failures('topics')"))
        assert set(fails) == {"cl_0", "cl_2"}
        assert "***" in fails["cl_0"] and "***" in fails["cl_2"]
        lab, summary, kws, attrs = q(con, "SELECT label, summary, keywords, attributes FROM "
                                          "cluster_labels('topics') WHERE node_id = 'cl_1'")[0]
        assert (lab, kws[0]) == ("About ***", "***") and "***" in summary and "***" in attrs
        assert q(con, "SELECT label FROM cluster_centroids('topics') WHERE node_id = 'cl_1'"
                 ) == [("About ***",)]
        assert q(con, "SELECT count(*) FROM duckcluster.label_cache") != [(0,)]
        dump = _catalog_dump(con)
        assert [t for t, text in dump.items() if ECHO_KEY in text] == []
        assert ECHO_KEY.encode() not in _artifact_bytes(con)
        assert ECHO_KEY not in msg
    finally:
        con.close()


def test_a_key_echoed_into_a_run_error_is_scrubbed_from_runs_messages_and_webhooks(
        hostile_db, monkeypatch):
    """A source whose error echoes the key in use: the run error, the SQL error, the
    webhook body the receiver gets and the delivery log hold *** instead."""
    from webhook_servers import Receiver

    con = hostile_db
    monkeypatch.setenv("OPENAI_API_KEY", ECHO_KEY + "-run")
    q(con, "CREATE VIEW upstream AS SELECT * FROM docs WHERE CASE WHEN doc_id = 3 THEN "
           f"error('the upstream rejected token {ECHO_KEY}-run') ELSE true END")
    q(con, SOURCE_CALLS[0][1].format(src="'upstream'").replace("'x'", "'t'"))
    with Receiver(secret="hook-secret-123") as rx:
        q(con, f"SELECT cluster_webhook_create('t', url := '{rx.url}', "
               "secret := 'hook-secret-123', events := ['run.failed'])")
        with pytest.raises(duckdb.Error) as err:
            q(con, "SELECT cluster_execute('t')")
        assert ECHO_KEY not in str(err.value) and "***" in str(err.value)
        q(con, "SELECT cluster_webhook_deliver()")
        assert len(rx.requests) == 1 and rx.requests[0]["verified"]
        assert ECHO_KEY.encode() not in rx.requests[0]["raw"]
        assert "***" in rx.requests[0]["json"]["run"]["error"]
    assert "***" in q(con, "SELECT error FROM duckcluster.runs WHERE name = 't'")[0][0]
    dump = _catalog_dump(con)
    assert [t for t, text in dump.items() if ECHO_KEY in text] == []


# -- webhooks and triggers never stop the scheduler ------------------------------------------

@pytest.mark.parametrize("url,message", [
    ("http://127.0.0.1:9/x\r\nX-Evil: 1", "url must not contain spaces or control characters "
                                          "(CR, LF, tab...); found '\\r' at position 20"),
    ("http://127.0.0.1:9/x\nX-Evil: 1", "found '\\n' at position 20"),
    ("http://hooks.example.com/a b", "found ' ' at position 26. Percent-encode it"),
    ("http://hooks.example.com/\x00", "found '\\x00'"),
    ("http:///path", "has no host"),
    ("http://:8080/path", "has no host"),
    ("ftp://hooks.example.com/x", "url must be an http:// or https:// URL"),
    ("hooks.example.com/x", "url must be an http:// or https:// URL"),
    ("http://hooks.example.com:99999/x", "is not a valid URL (Port out of range 0-65535)"),
    ("http://[::1/x", "is not a valid URL (Invalid IPv6 URL)"),
], ids=["CRLF", "LF", "space", "NUL", "no host", "port only", "ftp", "no scheme", "bad port",
        "bad IPv6"])
def test_a_webhook_url_is_validated_at_create(hostile_db, url, message):
    con = hostile_db
    q(con, SOURCE_CALLS[0][1].format(src="'docs'").replace("'x'", "'t'"))
    with pytest.raises(duckdb.Error) as err:
        q(con, "SELECT cluster_webhook_create('t', url := ?, secret := 's3cret')", [url])
    assert message in str(err.value)
    assert q(con, "SELECT count(*) FROM duckcluster.webhooks") == [(0,)]


def test_a_bad_webhook_or_trigger_never_stops_the_scheduler(hostile_db, db_path):
    """An old database holds a webhook whose URL has CR/LF and a trigger with a broken
    schedule: a real `duckcluster scheduler DB --once` fires the good trigger, delivers the
    good webhook, records both failures and exits 0 without a traceback."""
    import subprocess
    import sys

    from webhook_servers import Receiver

    con = hostile_db
    q(con, SOURCE_CALLS[0][1].format(src="'docs'").replace("'x'", "'t'"))
    good_trigger = q(con, "SELECT cluster_trigger_create('t', kind := 'interval', "
                          "every := 60)")[0][0]
    q(con, "UPDATE duckcluster.triggers SET created_at = created_at - INTERVAL 2 MINUTE")
    bad_trigger = q(con, "SELECT cluster_trigger_create('t', kind := 'cron', "
                         "schedule := '0 3 * * *')")[0][0]
    q(con, "UPDATE duckcluster.triggers SET schedule = 'every tuesday', created_at = "
           "created_at - INTERVAL 2 DAY WHERE trigger_id = ?", [bad_trigger])
    with Receiver(secret="s3cret") as rx:
        good_hook = q(con, f"SELECT cluster_webhook_create('t', url := '{rx.url}', "
                           "secret := 's3cret')")[0][0]
        bad_hook = q(con, f"SELECT cluster_webhook_create('t', url := '{rx.url}', "
                          "secret := 's3cret')")[0][0]
        q(con, "UPDATE duckcluster.webhooks SET url = ? WHERE webhook_id = ?",
          [f"{rx.url}/x\r\nX-Evil: 1", bad_hook])  # as an older version stored it
        con.close()
        proc = subprocess.run([sys.executable, "-m", "duckcluster.cli", "scheduler", db_path,
                               "--once"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(rx.requests) == 1 and rx.requests[0]["verified"]
        assert "x-evil" not in rx.requests[0]["headers"]
    con = duckcluster.connect(db_path)
    try:
        fired = q(con, "SELECT trigger_id, outcome FROM duckcluster.trigger_firings")
        assert fired == [(good_trigger, "submitted")]
        assert q(con, "SELECT status FROM duckcluster.runs") == [("succeeded",)]
        err = q(con, "SELECT last_error FROM duckcluster.triggers WHERE trigger_id = ?",
                [bad_trigger])[0][0]
        assert "schedule" in err and "every tuesday" in err
        rows = q(con, "SELECT webhook_id, status, error FROM duckcluster.webhook_deliveries "
                      "ORDER BY webhook_id = ?", [bad_hook])
        assert [(r[0], r[1]) for r in rows] == [(good_hook, "delivered"), (bad_hook, "failed")]
        assert "the webhook's url is invalid, so nothing was sent" in rows[1][2]
        assert "found '\\r' at position" in rows[1][2]
        assert f"cluster_webhook_delete('{bad_hook}')" in rows[1][2]
        assert "could not be evaluated" in proc.stderr and "failed after 1 attempt" in proc.stderr
    finally:
        con.close()


# -- lifecycle and races ---------------------------------------------------------------------

class Gate:
    """A source that stops a run inside its reading until released: the UDF gate(id) blocks
    its first call until :meth:`open` (or ``timeout``), so the run is really in progress."""

    def __init__(self, con, timeout: float = 60.0):
        import threading

        self.entered = threading.Event()
        self.released = threading.Event()
        self.timeout = timeout

        def gate(_x):
            if not self.released.is_set():
                self.entered.set()
                self.released.wait(self.timeout)
            return True

        con.create_function("gate", gate, ["BIGINT"], "BOOLEAN", side_effects=True)

    def open(self) -> None:
        self.released.set()


def _run_in_thread(con, sql: str) -> tuple:
    import threading

    out: dict = {}

    def work():
        cur = duckcluster.install(con.cursor())
        try:
            out["result"] = cur.execute(sql).fetchall()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out["error"] = exc
        finally:
            cur.close()

    t = threading.Thread(target=work)
    t.start()
    return t, out


@pytest.fixture
def lifecycle(con):
    """docs (4 blobs x 50, 8-d) and definition 't' reading it through a gate."""
    X, _ = blobs(n_per=50, k=4, d=8)
    load_table(con, "docs", X)
    gate = Gate(con)
    q(con, "SELECT cluster_create('t', source := '(SELECT * FROM docs WHERE gate(doc_id))', "
           "embedding := 'embedding', id := 'doc_id', algorithm := 'kmeans', "
           "params := {'n_clusters': 4})")
    return con, gate


def _rows_of(con, run_id: str) -> dict:
    return {t: q(con, f"SELECT count(*) FROM duckcluster.{t} WHERE run_id = ?", [run_id])[0][0]
            for t in ("members", "centroids", "projections", "lineage")}


def _artifacts_root(con) -> str:
    return q(con, "SELECT value FROM duckcluster.meta WHERE key = 'artifacts_dir'")[0][0]


def test_delete_while_a_run_is_in_progress_is_refused_and_leaves_no_orphans(lifecycle):
    """cluster_delete(..., drop_artifacts := true) during a run: refused with the run's id;
    after the run, the delete removes every row and file of it."""
    con, gate = lifecycle
    t, out = _run_in_thread(con, "SELECT cluster_execute('t')")
    try:
        assert gate.entered.wait(60)
        run_id = q(con, "SELECT run_id FROM duckcluster.runs WHERE status = 'running'")[0][0]
        with pytest.raises(duckdb.Error) as err:
            q(con, "SELECT cluster_delete('t', drop_artifacts := true)")
        msg = str(err.value)
        assert "RunInProgressError: Cluster 't' has a full run in progress: " + run_id in msg
        assert "nothing was deleted" in msg and f"cluster_wait('{run_id}')" in msg
        assert q(con, "SELECT count(*) FROM duckcluster.definitions") == [(1,)]
    finally:
        gate.open()
        t.join(120)
    assert out["result"] == [(run_id,)]
    path = q(con, "SELECT artifacts_path FROM duckcluster.runs WHERE run_id = ?", [run_id])[0][0]
    q(con, "SELECT cluster_delete('t', drop_artifacts := true)")
    assert _rows_of(con, run_id) == dict.fromkeys(_rows_of(con, run_id), 0)
    assert q(con, "SELECT count(*) FROM duckcluster.runs") == [(0,)]
    assert not os.path.exists(path) and not os.path.exists(path + ".tmp")


def test_a_run_whose_row_is_gone_commits_nothing(lifecycle):
    """An older version (or a hand-written DELETE) removes the definition and the run row of
    a run in progress: the run does not commit members, centroids, projection, lineage or a
    Parquet folder no run owns."""
    con, gate = lifecycle
    t, out = _run_in_thread(con, "SELECT cluster_execute('t')")
    try:
        assert gate.entered.wait(60)
        run_id = q(con, "SELECT run_id FROM duckcluster.runs WHERE status = 'running'")[0][0]
        q(con, "DELETE FROM duckcluster.runs WHERE run_id = ?", [run_id])
        q(con, "DELETE FROM duckcluster.definitions WHERE name = 't'")
    finally:
        gate.open()
        t.join(120)
    assert "RunFailedError: Run " + run_id + " was not committed: its catalog row was removed" \
        in str(out["error"])
    assert _rows_of(con, run_id) == dict.fromkeys(_rows_of(con, run_id), 0)
    root = _artifacts_root(con)
    left = [os.path.join(d, f) for d, dirs, files in os.walk(root) for f in dirs + files
            if run_id in os.path.join(d, f)]
    assert left == []


def test_a_second_full_run_is_refused_without_a_race_4_threads(lifecycle):
    """4 threads start a full run of one definition at once, 10 times: exactly one runs, the
    others get RunInProgressError; every run_seq is unique."""
    import threading

    con, gate = lifecycle
    for trial in range(10):
        gate.released.clear()
        gate.entered.clear()
        barrier = threading.Barrier(4)
        refused = threading.Semaphore(0)
        results: list = []

        def attempt():
            cur = duckcluster.install(con.cursor())
            barrier.wait()
            try:
                results.append(("ran", cur.execute("SELECT cluster_execute('t')").fetchall()))
            except duckdb.Error as exc:
                results.append(("refused", str(exc)))
                refused.release()
            finally:
                cur.close()

        threads = [threading.Thread(target=attempt) for _ in range(4)]
        for th in threads:
            th.start()
        for _ in range(3):  # the gate opens once three were refused (or after 30 s)
            refused.acquire(timeout=30)
        gate.open()
        for th in threads:
            th.join(120)
        kinds = sorted(k for k, _ in results)
        assert kinds == ["ran", "refused", "refused", "refused"], (trial, results)
        assert all("RunInProgressError: Cluster 't' already has a full run running in this "
                   "process" in m for k, m in results if k == "refused"), results
    seqs = q(con, "SELECT count(*), count(DISTINCT run_seq) FROM duckcluster.runs")[0]
    assert seqs == (10, 10)
    assert q(con, "SELECT count(*) FROM duckcluster.runs WHERE status = 'succeeded'") == [(10,)]


def test_concurrent_runs_get_unique_run_seq(lifecycle):
    """Assign runs may run together (4 threads x 3): every run gets its own run_seq, so the
    latest run is well defined."""
    import threading

    con, gate = lifecycle
    gate.open()
    q(con, "SELECT cluster_execute('t')")
    barrier = threading.Barrier(4)
    errors: list = []

    def attempt():
        cur = duckcluster.install(con.cursor())
        try:
            for _ in range(3):
                barrier.wait()
                cur.execute("SELECT cluster_execute('t', mode := 'assign')").fetchall()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            cur.close()

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert errors == []
    assert q(con, "SELECT count(*), count(DISTINCT run_seq) FROM duckcluster.runs") == [(13, 13)]


CHILD_RUN = textwrap.dedent("""
    import os, sys, time
    import duckcluster
    go = sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        con = duckcluster.connect(sys.argv[1])
    except duckcluster.DatabaseBusyError as exc:
        print("busy:", exc)
        sys.exit(3)
    print(con.sql("SELECT cluster_execute('t')").fetchall()[0][0])
    con.close()
""")


def test_two_processes_start_a_full_run_at_once_and_one_runs(db_path, tmp_path):
    """Two processes open the file and run the same definition at the same instant: DuckDB
    lets one write; the other is told the file is busy; one run, one run_seq."""
    import subprocess
    import sys

    con = duckcluster.connect(db_path)
    X, _ = blobs(n_per=500, k=4, d=32)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})")
    con.close()
    script, go = tmp_path / "child.py", tmp_path / "go"
    script.write_text(CHILD_RUN)
    procs = [subprocess.Popen([sys.executable, str(script), db_path, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    import time

    time.sleep(1.0)  # both are importing / waiting
    go.write_text("go")
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    assert any("is open for writing in another process" in o for o, _ in outs)
    con = duckcluster.connect(db_path)
    try:
        assert q(con, "SELECT count(*), count(DISTINCT run_seq), min(status) FROM "
                      "duckcluster.runs") == [(1, 1, "succeeded")]
    finally:
        con.close()


def _boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        return f.read().strip()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
@pytest.mark.parametrize("reopen", [False, True], ids=["same connection", "reopened"])
def test_a_dead_run_with_a_reused_pid_is_abandoned(con, db_path, reopen):
    """A run row left 'running' by a dead process whose pid this process now has (PID 1 in
    a container, twice): its start time differs, so it is abandoned (its tmp folder removed)
    and a full run goes ahead."""
    from duckcluster.catalog import runs as _runs

    X, _ = blobs(n_per=50, k=4, d=8)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})")
    mine = _runs.process_token()
    assert mine.startswith(f"{_boot_id()}:{os.getpid()}:")
    stale = f"{_boot_id()}:{os.getpid()}:1"  # same boot, same pid, started at tick 1
    tmp = os.path.join(_artifacts_root(con), "t", "run_dead.tmp")
    os.makedirs(tmp)
    with open(os.path.join(tmp, "members.parquet"), "wb") as f:
        f.write(b"half")
    q(con, "INSERT INTO duckcluster.runs (run_id, run_seq, name, mode, status, started_at, pid, "
           "process_token, tmp_path) VALUES ('run_dead', 1, 't', 'full', 'running', "
           "now()::TIMESTAMP, ?, ?, ?)", [os.getpid(), stale, tmp])
    if reopen:
        con.close()
        con = duckcluster.connect(db_path)
        assert q(con, "SELECT status FROM duckcluster.runs WHERE run_id = 'run_dead'") == [
            ("abandoned",)]
    try:
        run = q(con, "SELECT cluster_execute('t')")[0][0]
        assert q(con, "SELECT status FROM duckcluster.runs WHERE run_id = ?", [run]) == [
            ("succeeded",)]
        assert q(con, "SELECT status, error FROM duckcluster.runs WHERE run_id = 'run_dead'") == [
            ("abandoned", "the process running it ended before it finished")]
        assert not os.path.exists(tmp)
    finally:
        if reopen:
            con.close()


def test_a_deleted_definition_is_not_served_and_a_recreated_one_has_no_runs(con, db_path):
    """After cluster_delete('t') (runs kept), assign_cluster fails on this and another
    connection; a re-created 't' that never ran serves no old run (members, centroids,
    quality, assign_cluster, cluster_status, the persistent read side), then serves its own."""
    X, _ = blobs(n_per=50, k=4, d=8)
    load_table(con, "docs", X)
    create = ("SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
              "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})")
    q(con, create)
    old = q(con, "SELECT cluster_execute('t')")[0][0]
    other = con.cursor()
    duckcluster.install(other)
    assign = "SELECT assign_cluster(embedding, 't') FROM docs"
    assert len(q(other, assign)) == 200  # cached on the other connection now
    q(con, "SELECT cluster_delete('t')")
    for c in (con, other):
        with pytest.raises(duckdb.Error, match="No cluster definition named 't'"):
            q(c, assign)
    q(con, create)
    for sql, message in [
            (assign, "Cluster 't' has no successful full run yet"),
            ("SELECT * FROM cluster_members('t')", "Cluster 't' has no successful run yet"),
            ("SELECT * FROM cluster_centroids('t')", "Cluster 't' has no successful run yet"),
            ("SELECT * FROM cluster_quality('t')", "Cluster 't' has no successful run yet"),
            ("SELECT * FROM duckcluster.cluster_members('t')", "has no successful run yet"),
            (f"SELECT * FROM cluster_members('t', run_id := '{old}')",
             f"No successful run '{old}' of cluster 't'"),
            ("SELECT cluster_execute('t', mode := 'assign')", "has no successful full run yet"),
            ("SELECT cluster_label('t')", "has no successful run yet")]:
        for c in (con, other):
            with pytest.raises(duckdb.Error) as err:
                q(c, sql)
            assert message in str(err.value), (sql, str(err.value))
    assert q(con, "SELECT count(*) FROM cluster_runs('t')") == [(0,)]
    assert q(con, "SELECT n_runs, latest_run_id FROM cluster_list()") == [(0, None)]
    assert q(con, "SELECT count(*) FROM duckcluster.latest_runs") == [(0,)]
    with pytest.raises(duckdb.Error, match="No run with id 't'"):
        q(con, "SELECT * FROM cluster_status('t')")
    new = q(con, "SELECT cluster_execute('t')")[0][0]
    assert q(con, "SELECT DISTINCT run_id FROM cluster_members('t')") == [(new,)]
    assert q(other, "SELECT count(*) FROM (" + assign + ") WHERE 1 = 1") == [(200,)]
    other.close()


def test_assign_parquet_never_writes_into_a_run_folder(con, tmp_path):
    """cluster_assign_parquet(..., output := <a run's folder or the artifacts folder>,
    overwrite := true) is refused; the run's Parquet files stay as they were."""
    X, _ = blobs(n_per=50, k=4, d=8)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})")
    run = q(con, "SELECT cluster_execute('t')")[0][0]
    folder = q(con, "SELECT artifacts_path FROM duckcluster.runs WHERE run_id = ?", [run])[0][0]
    root = _artifacts_root(con)
    data = tmp_path / "data"
    data.mkdir()
    q(con, f"COPY (SELECT doc_id, embedding::FLOAT[] AS embedding FROM docs) TO "
           f"'{data}/part.parquet'")
    before = {f: open(os.path.join(folder, f), "rb").read() for f in os.listdir(folder)}
    for output, how in [(folder, f"is the artifacts of run {run}"),
                        (os.path.join(folder, "sub"), f"is inside the artifacts of run {run}"),
                        (root, "is the artifacts folder"),
                        (os.path.join(root, "elsewhere"), "is inside the artifacts folder"),
                        (os.path.dirname(root), "holds the artifacts folder")]:
        with pytest.raises(duckdb.Error) as err:
            q(con, f"SELECT * FROM cluster_assign_parquet('t', '{data}', ?, id := 'doc_id', "
                   "overwrite := true)", [output])
        assert how in str(err.value) and "never writes there, even with overwrite := true" \
            in str(err.value), str(err.value)
    after = {f: open(os.path.join(folder, f), "rb").read() for f in os.listdir(folder)}
    assert after == before
    assert not os.path.exists(os.path.join(root, "elsewhere"))


CHILD_KILL = textwrap.dedent("""
    import os, signal, sys
    import duckcluster
    from duckcluster.catalog import runs as _catalog
    def replace(a, b):  # after the Parquet files are written, before they are renamed
        os.kill(os.getpid(), signal.SIGKILL)
    _catalog.os.replace = replace
    con = duckcluster.connect(sys.argv[1])
    con.sql("SELECT cluster_execute('t')").fetchall()
""")


def test_a_killed_run_reopened_with_another_artifacts_dir_loses_its_tmp_folder(db_path,
                                                                                 tmp_path):
    import signal
    import subprocess
    import sys

    con = duckcluster.connect(db_path)
    X, _ = blobs(n_per=50, k=4, d=8)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})")
    first_root = _artifacts_root(con)
    con.close()
    script = tmp_path / "child.py"
    script.write_text(CHILD_KILL)
    r = subprocess.run([sys.executable, str(script), db_path], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = [d for d in os.listdir(os.path.join(first_root, "t")) if d.endswith(".tmp")]
    assert len(left) == 1 and os.listdir(os.path.join(first_root, "t", left[0]))
    con = duckcluster.connect(db_path, artifacts_dir=str(tmp_path / "elsewhere"))
    try:
        assert q(con, "SELECT status FROM duckcluster.runs") == [("abandoned",)]
        assert os.listdir(os.path.join(first_root, "t")) == []
    finally:
        con.close()


def test_run_lifecycle_calls_on_a_read_only_file_say_so(db_path):
    """A file written by an older version (no claim table) opened read-only: cluster_execute
    and cluster_delete say the database is read-only, not that a table is missing."""
    con = duckcluster.connect(db_path)
    X, _ = blobs(n_per=50, k=4, d=8)
    load_table(con, "docs", X)
    q(con, "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})")
    q(con, "DROP TABLE duckcluster.run_claims")
    con.close()
    con = duckcluster.connect(db_path, read_only=True)
    try:
        for call in ("cluster_execute", "cluster_delete"):
            with pytest.raises(duckdb.Error) as err:
                q(con, f"SELECT {call}('t')")
            assert (f"SpecError: {call} writes to the catalog, but this database is open "
                    "read-only. Reopen it read-write") in str(err.value)
    finally:
        con.close()


# -- incarnations survive wall-clock jumps (issue 14: PID reuse / incarnations) --------------

def _set_clock(monkeypatch, hours: float) -> None:
    """Move duckcluster's wall clock by ``hours`` from now on (an NTP step, a VM resumed)."""
    import datetime as dt

    from duckcluster.catalog import runs as _runs

    real = _runs._dt.datetime
    monkeypatch.setattr(_runs, "now", lambda: (real.now(dt.timezone.utc).replace(tzinfo=None)
                                               + dt.timedelta(hours=hours)))


_CREATE = ("SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 4})")


def test_a_clock_set_back_after_create_hides_no_run(con, db_path, monkeypatch):
    """The clock was an hour ahead at cluster_create and set back before the run: the run
    started 'before' its definition was created. It is still the definition's (runs belong
    to it by run_seq, not by timestamps): members, list, runs, the persistent read side and
    the stock CLI all see it."""
    from test_stock_cli import run_cli

    X, _ = blobs(n_per=50, k=4, d=8)
    load_table(con, "docs", X)
    _set_clock(monkeypatch, +1)
    q(con, _CREATE)
    monkeypatch.undo()
    run = q(con, "SELECT cluster_execute('t')")[0][0]
    assert q(con, "SELECT count(*) FROM cluster_members('t')") == [(200,)]
    assert q(con, "SELECT latest_run_id FROM cluster_list()") == [(run,)]
    assert q(con, "SELECT run_id FROM cluster_runs('t')") == [(run,)]
    assert q(con, "SELECT count(*) FROM duckcluster.latest_members") == [(200,)]
    assert len(q(con, "SELECT assign_cluster(embedding, 't') FROM docs")) == 200
    con.close()
    out = run_cli(db_path, "SELECT count(*) AS n FROM duckcluster.cluster_members('t')", reads=())
    assert out.returncode == 0 and json.loads(out.stdout) == {"n": 200}, out.stderr


def test_a_clock_set_back_before_re_create_serves_no_old_run(con, monkeypatch):
    """A run, cluster_delete (runs kept), the clock set back an hour, cluster_create again:
    the old run 'started after' the new definition was created, yet it is not the new one's."""
    X, _ = blobs(n_per=50, k=4, d=8)
    load_table(con, "docs", X)
    q(con, _CREATE)
    old = q(con, "SELECT cluster_execute('t')")[0][0]
    q(con, "SELECT cluster_delete('t')")
    _set_clock(monkeypatch, -1)
    q(con, _CREATE)
    for sql in ("SELECT * FROM cluster_members('t')", "SELECT * FROM duckcluster.cluster_members('t')",
                "SELECT assign_cluster(embedding, 't') FROM docs"):
        with pytest.raises(duckdb.Error, match="Cluster 't' has no successful"):
            q(con, sql)
    assert q(con, "SELECT n_runs, latest_run_id FROM cluster_list()") == [(0, None)]
    assert q(con, "SELECT count(*) FROM duckcluster.latest_runs") == [(0,)]
    new = q(con, "SELECT cluster_execute('t')")[0][0]
    assert new != old
    assert q(con, "SELECT DISTINCT run_id FROM cluster_members('t')") == [(new,)]


def test_definitions_from_before_incarnation_rows_get_one(con, db_path):
    """A catalog without 'incarnation:<name>' rows (an older duckcluster) gets them on the next
    read-write open, from the timestamps: runs of a deleted definition stay hidden."""
    X, _ = blobs(n_per=50, k=4, d=8)
    load_table(con, "docs", X)
    q(con, _CREATE)
    old = q(con, "SELECT cluster_execute('t')")[0][0]
    q(con, "SELECT cluster_delete('t')")
    q(con, _CREATE)
    new = q(con, "SELECT cluster_execute('t')")[0][0]
    q(con, "DELETE FROM duckcluster.meta WHERE key LIKE 'incarnation:%'")
    assert q(con, "SELECT run_id FROM cluster_runs('t')") == [(new,)]  # the timestamp rule
    con.close()
    with duckcluster.connect(db_path) as again:
        seq = q(again, "SELECT CAST(value AS BIGINT) FROM duckcluster.meta "
                       "WHERE key = 'incarnation:t'")[0][0]
        assert q(again, "SELECT run_seq FROM duckcluster.runs WHERE run_id = ?", [old]) == [(seq,)]
        assert q(again, "SELECT run_id FROM cluster_runs('t')") == [(new,)]
