"""Signed webhooks against real HTTP receivers on 127.0.0.1: signatures, retries, faults, log."""

from __future__ import annotations

import json
import threading

import duckdb
import pytest

from conftest import blobs, load_table
from duckcluster.ops import webhooks
from webhook_servers import Receiver, free_port


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(webhooks, "BACKOFF_S", 0.05)


@pytest.fixture
def topics(con):
    """Definition 'topics': kmeans k=3 on 60 rows x 8-d (small: runs take ~0.1 s)."""
    X, _ = blobs(n_per=20, k=3, d=8)
    load_table(con, "docs", X)
    con.sql("SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
    return "topics"


def _hook(con, url, *extra, name="'topics'"):
    args = ", ".join([f"url := '{url}'", *extra])
    return con.sql(f"SELECT cluster_webhook_create({name}, {args})").fetchall()[0][0]


def _deliveries(con, webhook_id=None):
    rel = con.sql("SELECT * FROM cluster_webhook_deliveries()" if webhook_id is None else
                  f"SELECT * FROM cluster_webhook_deliveries('{webhook_id}')")
    cols = rel.columns
    return [dict(zip(cols, r)) for r in rel.fetchall()]


def _run(con, name="topics"):
    return con.sql(f"SELECT cluster_execute('{name}')").fetchall()[0][0]


def test_signed_delivery_after_a_background_run(con, topics):
    """cluster_submit's run ends -> run.succeeded is POSTed, signed over the raw body."""
    with Receiver(secret="s3cret") as rx:
        wid = _hook(con, rx.url, "secret := 's3cret'")
        run_id = con.sql("SELECT cluster_submit('topics')").fetchall()[0][0]
        assert con.sql(f"SELECT cluster_wait('{run_id}')").fetchall() == [("succeeded",)]
        req = rx.wait_for(1)[0]
    assert req["verified"], "the receiver's own HMAC-SHA256 check of the raw body failed"
    h = req["headers"]
    assert h["content-type"] == "application/json"
    assert h["x-duckcluster-event"] == "run.succeeded"
    assert h["x-duckcluster-attempt"] == "1"
    assert h["user-agent"].startswith("duckcluster/")
    assert webhooks.verify_signature("s3cret", req["raw"], h["x-duckcluster-signature"])
    assert not webhooks.verify_signature("other", req["raw"], h["x-duckcluster-signature"])
    body = req["json"]
    assert body["event"] == "run.succeeded" and body["cluster"] == "topics"
    assert body["delivery_id"] == h["x-duckcluster-delivery"]
    assert body["run"]["run_id"] == run_id and body["run"]["status"] == "succeeded"
    assert body["run"]["n_clusters"] == 3 and body["run"]["n_members"] == 60
    assert body["created_at"].endswith("Z") and body["trigger"] is None
    rows = _deliveries(con, wid)
    assert [(r["event"], r["subject_id"], r["attempt"], r["status"], r["http_status"])
            for r in rows] == [("run.succeeded", run_id, 1, "delivered", 200)]
    assert json.loads(rows[0]["payload"]) == body


def test_receiver_failing_first_is_retried_with_the_same_delivery_id(con, topics):
    with Receiver(secret="k", script=["500", "503", "ok"]) as rx:
        wid = _hook(con, rx.url, "secret := 'k'")
        run_id = _run(con)
        assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("1 delivered",)]
        reqs = rx.wait_for(3)
    assert [r["action"] for r in reqs] == ["500", "503", "ok"]
    assert len({r["headers"]["x-duckcluster-delivery"] for r in reqs}) == 1
    assert [r["headers"]["x-duckcluster-attempt"] for r in reqs] == ["1", "2", "3"]
    assert len({r["raw"] for r in reqs}) == 1 and all(r["verified"] for r in reqs)
    rows = _deliveries(con, wid)
    assert [(r["attempt"], r["status"], r["http_status"]) for r in rows] == [
        (1, "retrying", 500), (2, "retrying", 503), (3, "delivered", 200)]
    assert "answered HTTP 500" in rows[0]["error"] and rows[0]["subject_id"] == run_id
    assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("nothing pending",)]


def test_slow_receiver_times_out_then_gives_up(con, topics):
    with Receiver(secret="k", script=["slow:1.5"]) as rx:
        wid = _hook(con, rx.url, "secret := 'k'", "timeout := 0.3", "max_attempts := 2")
        _run(con)
        assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("1 failed",)]
        assert len(rx.wait_for(2)) == 2
    rows = _deliveries(con, wid)
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "retrying"), (2, "failed")]
    assert "within 0.3 s" in rows[0]["error"]
    assert "gave up after 2 attempts" in rows[1]["error"]
    assert all(0.25 < r["duration_s"] < 1.4 for r in rows)


def test_slow_receiver_within_the_timeout_is_delivered(con, topics):
    with Receiver(secret="k", script=["slow:0.4"]) as rx:
        wid = _hook(con, rx.url, "secret := 'k'", "timeout := 5")
        _run(con)
        assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("1 delivered",)]
    (row,) = _deliveries(con, wid)
    assert row["status"] == "delivered" and row["duration_s"] >= 0.4


@pytest.mark.parametrize("script, attempts, final, fragment", [
    (["400"], 1, "failed", "not retried"),
    (["429", "ok"], 2, "delivered", None),
    (["404"], 1, "failed", "answered HTTP 404"),
])
def test_status_codes(con, topics, script, attempts, final, fragment):
    """4xx fail at once; 429 (with Retry-After) is retried."""
    with Receiver(secret="k", script=script) as rx:
        wid = _hook(con, rx.url, "secret := 'k'")
        _run(con)
        con.sql("SELECT cluster_webhook_deliver()").fetchall()
    rows = _deliveries(con, wid)
    assert len(rows) == attempts and rows[-1]["status"] == final
    if fragment:
        assert fragment in rows[-1]["error"]


def test_unreachable_receiver(con, topics):
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    wid = _hook(con, url, "secret := 'k'", "max_attempts := 3")
    _run(con)
    assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("1 failed",)]
    rows = _deliveries(con, wid)
    assert [r["status"] for r in rows] == ["retrying", "retrying", "failed"]
    assert "cannot reach" in rows[0]["error"] and "gave up after 3 attempts" in rows[-1]["error"]


def test_run_failed_event_and_event_filter(con, topics):
    with Receiver(secret="k") as rx_fail, Receiver(secret="k") as rx_ok:
        _hook(con, rx_fail.url, "secret := 'k'", "events := ['run.failed']")
        _hook(con, rx_ok.url, "secret := 'k'", "events := ['run.succeeded']")
        good = _run(con)
        con.sql("ALTER TABLE docs RENAME TO docs_gone").fetchall()
        with pytest.raises(duckdb.Error):
            _run(con)
        bad = con.sql("SELECT run_id FROM cluster_runs('topics') WHERE status = 'failed'"
                      ).fetchall()[0][0]
        assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("2 delivered",)]
        (f,), (s,) = rx_fail.wait_for(1), rx_ok.wait_for(1)
    assert f["json"]["event"] == "run.failed" and f["json"]["run"]["run_id"] == bad
    assert f["json"]["run"]["status"] == "failed" and f["json"]["run"]["error"]
    assert s["json"]["run"]["run_id"] == good
    assert len(rx_fail.requests) == 1 and len(rx_ok.requests) == 1


def test_only_events_after_creation_and_all_definitions(con, topics):
    """A webhook with name NULL hears every definition, from its creation on."""
    con.sql("SELECT cluster_create('other', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
    _run(con)  # before the webhook: never sent
    with Receiver(secret="k") as rx:
        _hook(con, rx.url, "secret := 'k'", name="NULL")
        a, b = _run(con, "topics"), _run(con, "other")
        con.sql("SELECT cluster_webhook_deliver()").fetchall()
        reqs = rx.wait_for(2)
    assert sorted((r["json"]["cluster"], r["json"]["run"]["run_id"]) for r in reqs) == \
        sorted([("topics", a), ("other", b)])
    (listed,) = con.sql("SELECT name, signing, n_delivered FROM cluster_webhook_list()"
                        ).fetchall()
    assert listed == (None, "secret (stored, hidden)", 2)


def test_secret_from_the_environment(con, topics, monkeypatch):
    with Receiver(secret="from-env") as rx:
        wid = _hook(con, rx.url, "secret_env := 'DC_TEST_HOOK_SECRET'")
        _run(con)
        monkeypatch.delenv("DC_TEST_HOOK_SECRET", raising=False)
        assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("1 failed",)]
        (row,) = _deliveries(con, wid)
        assert "DC_TEST_HOOK_SECRET" in row["error"] and not rx.requests
        monkeypatch.setenv("DC_TEST_HOOK_SECRET", "from-env")
        _run(con)
        assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("1 delivered",)]
        (req,) = rx.wait_for(1)
    assert req["verified"]
    assert con.sql("SELECT count(*) FROM duckcluster.webhooks WHERE secret IS NULL"
                   ).fetchall() == [(1,)]


def test_interrupted_delivery_resumes(con, topics):
    """A shutdown during the backoff leaves the delivery pending; the next sweep resumes it."""
    with Receiver(secret="k", script=["500", "ok"]) as rx:
        wid = _hook(con, rx.url, "secret := 'k'")
        _run(con)
        with con.cursor() as cur:  # as if SIGTERM arrived during the first backoff
            (d,) = webhooks.deliver_pending(cur, stop=_StopDuringBackoff())
        assert d.status == "interrupted" and d.attempts == 1
        assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("1 delivered",)]
        reqs = rx.wait_for(2)
    assert reqs[0]["headers"]["x-duckcluster-delivery"] == reqs[1]["headers"][
        "x-duckcluster-delivery"]
    assert [r["headers"]["x-duckcluster-attempt"] for r in reqs] == ["1", "2"]
    assert [(r["attempt"], r["status"]) for r in _deliveries(con, wid)] == [
        (1, "retrying"), (2, "delivered")]


class _StopDuringBackoff(threading.Event):
    """A stop event that is clear for the first check and set when the backoff waits."""

    def is_set(self) -> bool:
        return False

    def wait(self, timeout=None) -> bool:
        return True


def test_dead_letter_is_not_retried_by_later_sweeps(con, topics):
    with Receiver(secret="k", script=["400", "ok"]) as rx:
        _hook(con, rx.url, "secret := 'k'")
        _run(con)
        assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("1 failed",)]
        assert con.sql("SELECT cluster_webhook_deliver()").fetchall() == [("nothing pending",)]
        assert len(rx.requests) == 1


_CREATE_ERRORS = [
    ("url := 'ftp://x/y', secret := 'k'", "url must be an http:// or https:// URL"),
    ("url := NULL, secret := 'k'", "url must be an http:// or https:// URL"),
    ("url := 'http://127.0.0.1/x'", "needs secret := '...' (or secret_env"),
    ("url := 'http://127.0.0.1/x', secret := 'k', secret_env := 'E'", "not both"),
    ("url := 'http://127.0.0.1/x', secret := 'k', events := ['run.succeded']",
     "Unknown webhook event 'run.succeded'. Did you mean 'run.succeeded'?"),
    ("url := 'http://127.0.0.1/x', secret := 'k', events := []", "at least one"),
    ("url := 'http://127.0.0.1/x', secret := 'k', timeout := 0",
     "The 'timeout' parameter of cluster_webhook_create must be a float in the range (0, 300]. "
     "Got 0 instead."),
    ("url := 'http://127.0.0.1/x', secret := 'k', timeout := 'ten'",
     "The 'timeout' parameter of cluster_webhook_create must be a float in the range (0, 300]. "
     "Got 'ten' instead."),
    ("url := 'http://127.0.0.1/x', secret := 'k', max_attempts := 0",
     "The 'max_attempts' parameter of cluster_webhook_create must be an int in the range "
     "[1, 20]. Got 0 instead."),
    ("url := 'http://127.0.0.1/x', secret := 'k', max_attempts := 2.5", "Got 2.5 instead."),
]


def test_webhook_create_errors(con, topics):
    for args, fragment in _CREATE_ERRORS:
        with pytest.raises(duckdb.Error) as e:
            con.sql(f"SELECT cluster_webhook_create('topics', {args})").fetchall()
        assert fragment in str(e.value), args
    assert con.sql("SELECT count(*) FROM duckcluster.webhooks").fetchall() == [(0,)]


def test_webhook_for_unknown_definition_and_delete(con, topics):
    with pytest.raises(duckdb.Error, match="No cluster definition named 'topix'"):
        con.sql("SELECT cluster_webhook_create('topix', url := 'http://127.0.0.1/x', "
                "secret := 'k')").fetchall()
    wid = _hook(con, "http://127.0.0.1/x", "secret := 'k'")
    assert "deleted webhook" in con.sql(f"SELECT cluster_webhook_delete('{wid}')").fetchall()[0][0]
    with pytest.raises(duckdb.Error, match="No webhook with id"):
        con.sql(f"SELECT cluster_webhook_delete('{wid}')").fetchall()


def test_verify_signature_is_constant_time_hmac():
    body = b'{"a":1}'
    sig = webhooks.sign("k", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert webhooks.verify_signature("k", body, sig)
    assert not webhooks.verify_signature("k", body, None)
    assert not webhooks.verify_signature("k", body, sig[:-1] + ("0" if sig[-1] != "0" else "1"))


def test_redirects_are_not_followed(con, topics):
    """A 3xx is a failure (the signed body is not re-posted somewhere else)."""
    with Receiver(secret="k", script=["302"]) as rx:
        wid = _hook(con, rx.url, "secret := 'k'")
        _run(con)
        con.sql("SELECT cluster_webhook_deliver()").fetchall()
    (row,) = _deliveries(con, wid)
    assert row["status"] == "failed" and row["http_status"] == 302
