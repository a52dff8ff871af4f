"""LLM labeling against real HTTP servers on 127.0.0.1 (tests/llm_servers.py): both APIs,
every knob of the seed, and the faults: 429, 5xx, timeouts, malformed and off-shape JSON."""

from __future__ import annotations

import json
import time

import duckdb
import pytest
from label_data import cluster, make_docs
from llm_servers import FakeLLM

import duckcluster

KEY = "sk-test-7f3a9c-DO-NOT-LEAK"


def sql_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return str(v)


def label(con, srv, provider="openai", **kw) -> str:
    """cluster_label('topics', ...) against the fake server; cache off unless asked."""
    args = {"provider": provider,
            "base_url": srv.openai_url if provider == "openai" else srv.gemini_url,
            "model": "test-model", "retry_backoff": 0.01, "cache_ttl_seconds": 0, **kw}
    raw = {k: v for k, v in args.items() if isinstance(v, RawSQL)}
    text = ", ".join(f"{k} := {v.sql if k in raw else sql_value(v)}" for k, v in args.items())
    return con.sql(f"SELECT cluster_label('topics', {text})").fetchall()[0][0]


class RawSQL:
    def __init__(self, sql: str):
        self.sql = sql


@pytest.fixture
def srv(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with FakeLLM(api_key=KEY, slow_seconds=1.0) as s:
        yield s


@pytest.fixture
def topics(con):
    make_docs(con)
    cluster(con)
    return con


def labels(con) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in con.sql(
        "SELECT node_id, label, summary, keywords, source, attributes FROM cluster_labels('topics')"
    ).fetchall()}


def failures(con) -> list[tuple]:
    return con.sql("SELECT node_id, kind, attempts, error FROM cluster_label_failures('topics')"
                   ).fetchall()


# -- happy paths ---------------------------------------------------------------------------

def test_openai_labels_every_cluster_with_key_and_json_mode(topics, srv):
    msg = label(topics, srv)
    assert "4 by openai test-model" in msg
    got = labels(topics)
    assert len(got) == 4
    for node, (lab, summary, keywords, source, attrs) in got.items():
        assert lab.startswith("About ") and summary.startswith("Documents about")
        assert source == "llm" and keywords and attrs is None  # extras dropped by the shape
    reqs = srv.chat_requests()
    assert len(reqs) == 4
    r = reqs[0]
    assert r["path"] == "/v1/chat/completions"
    assert r["headers"]["authorization"] == f"Bearer {KEY}"
    assert r["body"]["model"] == "test-model" and r["body"]["temperature"] == 0
    assert r["body"]["response_format"] == {"type": "json_object"}
    assert r["body"]["messages"][0]["role"] == "system"
    assert "Keywords (class-based TF-IDF" in r["prompt"] and "Document 5:" in r["prompt"]
    assert '"label": "string", "summary": "string", "keywords": ["string"]' in r["prompt"]
    centroid_labels = dict(topics.sql("SELECT node_id, label FROM cluster_centroids('topics')"
                                      ).fetchall())
    assert centroid_labels == {k: v[0] for k, v in got.items()}


def test_gemini_generate_content(topics, srv):
    msg = label(topics, srv, provider="gemini", model="gemini-test")
    assert "4 by gemini gemini-test" in msg
    r = srv.chat_requests()[0]
    assert r["path"] == "/v1beta/models/gemini-test:generateContent"
    assert r["headers"]["x-goog-api-key"] == KEY and "key=" not in r["path"]
    assert r["body"]["generationConfig"]["responseMimeType"] == "application/json"
    assert r["body"]["systemInstruction"]["parts"][0]["text"]
    assert all(v[3] == "llm" for v in labels(topics).values())


def test_google_alias_and_google_api_key(topics, srv, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    assert "4 by gemini" in label(topics, srv, provider="google")


def test_response_shape_custom_prompt_and_attributes(topics, srv):
    shape = RawSQL("{'label': 'string', 'keywords': ['string'], "
                   "'sentiment': 'positive | negative | neutral', 'target_audience': 'string'}")
    label(topics, srv, response_shape=shape,
          custom_prompt="You are a creative strategist. Cluster {cluster_id} has {size} docs. "
                        "Keywords: {keywords}\n{documents}\nReturn JSON shaped {shape}")
    for lab, summary, keywords, source, attrs in labels(topics).values():
        assert json.loads(attrs) == {"sentiment": "neutral", "target_audience": "engineers"}
        assert summary.endswith(".")  # not in the shape: the offline summary stays
    p = srv.chat_requests()[0]["prompt"]
    assert p.startswith("You are a creative strategist. Cluster cl_")
    assert '"sentiment": "positive | negative | neutral"' in p and "{documents}" not in p


def test_input_mappings_payload_blob_literal_and_truncation(topics, srv):
    maps = RawSQL(
        "[{'input_key': 'text', 'source_type': 'payload', 'path': 'meta.headline'}, "
        "{'input_key': 'text', 'source_type': 'payload', 'path': 'extra.nested.note'}, "
        "{'input_key': 'image_url', 'source_type': 'blob', 'path': 'document_blobs.0.url'}, "
        "{'input_key': 'video_url', 'source_type': 'blob', 'path': '0.url'}, "
        "{'input_key': 'text', 'source_type': 'literal', 'override': 'Category: test corpus'}]")
    label(topics, srv, input_mappings=maps, max_samples_per_cluster=2,
          sample_text_max_length=18, concurrency=1)
    r = srv.chat_requests()[0]
    content = r["body"]["messages"][1]["content"]
    texts = [p["text"] for p in content if p["type"] == "text"]
    images = [p["image_url"]["url"] for p in content if p["type"] == "image_url"]
    assert "Category: test corpus" in texts
    docs = [t for t in texts if t.startswith("Document ")]
    assert len(docs) == 2  # max_samples_per_cluster
    head, body = docs[0].split("\n", 1)
    assert body.endswith("…") and len(body) <= 19  # at most 18 characters + the ellipsis
    assert "headline" in body
    assert len(images) == 2 and images[0].startswith("https://example.test/")
    assert any(t.startswith("video_url: https://example.test/") for t in texts)


def test_gemini_multimodal_parts(topics, srv):
    maps = RawSQL("[{'input_key': 'text', 'path': 'body'}, "
                  "{'input_key': 'image_url', 'source_type': 'blob', 'path': '0.url'}]")
    label(topics, srv, provider="gemini", input_mappings=maps, max_samples_per_cluster=1)
    parts = srv.chat_requests()[0]["body"]["contents"][0]["parts"]
    files = [p["fileData"] for p in parts if "fileData" in p]
    assert files and files[0]["mimeType"] == "image/jpeg"


def test_without_mappings_the_payload_is_json_without_embeddings(topics, srv):
    label(topics, srv, max_samples_per_cluster=1)
    doc = [line for line in srv.chat_requests()[0]["prompt"].split("Document 1:\n")[1]
           .split("\n")][0]
    payload = json.loads(doc)
    assert set(payload) == {"id", "topic", "body", "meta", "extra", "document_blobs"}


# -- faults ------------------------------------------------------------------------------------

def test_429_then_ok_is_retried(topics, srv):
    srv.faults["cl_0"] = ["429", "429", "ok"]
    msg = label(topics, srv)
    assert "4 by openai" in msg and "failure" not in msg
    assert len(srv.chat_requests("cl_0")) == 3 and failures(topics) == []


def test_5xx_is_retried_then_recorded_and_the_offline_label_kept(topics, srv):
    srv.faults["cl_1"] = ["500", "503", "500"]
    msg = label(topics, srv, max_retries=2)
    assert "3 by openai" in msg and "1 kept the offline label" in msg
    got = labels(topics)
    assert got["cl_1"][3] == "offline" and not got["cl_1"][0].startswith("About")
    assert all(got[n][3] == "llm" for n in ("cl_0", "cl_2", "cl_3"))
    [(node, kind, attempts, error)] = failures(topics)
    assert (node, kind, attempts) == ("cl_1", "http", 3)
    assert "HTTP 500" in error and "gave up after 3 attempts" in error
    assert len(srv.chat_requests("cl_1")) == 3


def test_timeout_is_retried(topics, srv):
    srv.faults["cl_2"] = ["slow"]
    t = time.monotonic()
    msg = label(topics, srv, timeout=0.3)
    assert "4 by openai" in msg and time.monotonic() - t < 10
    assert len(srv.chat_requests("cl_2")) == 2


def test_timeouts_exhausted_are_recorded(topics, srv):
    srv.faults["cl_2"] = ["slow", "slow"]
    label(topics, srv, timeout=0.2, max_retries=1)
    [(node, kind, attempts, error)] = failures(topics)
    assert (node, kind, attempts) == ("cl_2", "timeout", 2) and "within 0.2 s" in error


def test_malformed_json_retried_once(topics, srv):
    srv.faults["cl_0"] = ["malformed", "ok"]
    srv.faults["cl_3"] = ["fenced"]
    assert "4 by openai" in label(topics, srv)
    assert len(srv.chat_requests("cl_0")) == 2
    second = srv.chat_requests("cl_0")[1]["prompt"]
    assert "Your previous answer was rejected: the answer is not valid JSON" in second


def test_malformed_twice_keeps_offline_label(topics, srv):
    srv.faults["cl_0"] = ["malformed", "malformed"]
    label(topics, srv)
    [(node, kind, attempts, error)] = failures(topics)
    assert (node, kind, attempts) == ("cl_0", "malformed_json", 2)
    assert labels(topics)["cl_0"][3] == "offline"


def test_off_shape_and_bad_enum(topics, srv):
    shape = RawSQL("{'label': 'string', 'sentiment': 'positive | negative | neutral'}")
    srv.faults["cl_0"] = ["offshape", "ok"]
    srv.faults["cl_1"] = ["badenum", "badenum"]
    srv.faults["cl_2"] = ["offshape", "offshape"]
    label(topics, srv, response_shape=shape)
    got = {r[0]: r[1:3] for r in failures(topics)}
    assert set(got) == {"cl_1", "cl_2"}
    assert got["cl_1"] == ("off_shape", 2)
    assert labels(topics)["cl_0"][3] == "llm"
    errs = dict((r[0], r[3]) for r in failures(topics))
    assert "should be one of positive | negative | neutral, got 'ecstatic'" in errs["cl_1"]
    assert "lacks the key 'label'" in errs["cl_2"]


def test_non_json_http_body(topics, srv):
    srv.faults["cl_3"] = ["notjson_body", "notjson_body"]
    label(topics, srv)
    [(node, kind, _, error)] = failures(topics)
    assert (node, kind) == ("cl_3", "malformed_json") and "not JSON" in error


def test_auth_failure_stops_calling_and_keeps_offline_labels(topics, srv, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-123")
    msg = label(topics, srv, concurrency=1)
    assert "0 by openai" in msg and "4 kept the offline label" in msg
    assert len(srv.chat_requests()) == 1  # no point asking again with a bad key
    kinds = {r[1] for r in failures(topics)}
    assert kinds == {"auth"}
    assert "Check the API key" in failures(topics)[0][3]
    assert all(v[3] == "offline" for v in labels(topics).values())


def test_unreachable_server_is_a_recorded_connection_failure(topics):
    msg = topics.sql("SELECT cluster_label('topics', provider := 'openai', base_url := "
                     "'http://127.0.0.1:9/v1', max_retries := 1, retry_backoff := 0.01)"
                     ).fetchall()[0][0]
    assert "4 kept the offline label" in msg
    assert {r[1] for r in failures(topics)} == {"connection"}


def test_missing_key_for_the_public_endpoint_is_a_clear_error(topics, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(duckdb.Error, match="No API key for provider 'openai': set OPENAI_API_KEY"):
        topics.sql("SELECT cluster_label('topics', provider := 'openai')").fetchall()
    assert topics.sql("SELECT count(*) FROM duckcluster.labels").fetchall() == [(0,)]


# -- cache, dedup, keys ---------------------------------------------------------------------------

def test_cache_hits_skip_the_api_and_expire(topics, srv):
    label(topics, srv, cache_ttl_seconds=3600)
    assert len(srv.chat_requests()) == 4
    msg = label(topics, srv, cache_ttl_seconds=3600)
    assert "4 from the label cache" in msg and len(srv.chat_requests()) == 4
    assert {v[3] for v in labels(topics).values()} == {"cache"}
    assert topics.sql("SELECT count(*) FROM duckcluster.label_cache").fetchall() == [(4,)]
    topics.execute("UPDATE duckcluster.label_cache SET expires_at = now()::TIMESTAMP - "
                   "INTERVAL 1 SECOND")
    label(topics, srv, cache_ttl_seconds=3600)
    assert len(srv.chat_requests()) == 8
    label(topics, srv, cache_ttl_seconds=0)  # 0 disables reading too
    assert len(srv.chat_requests()) == 12
    assert topics.sql("SELECT count(*) FROM duckcluster.label_cache").fetchall() == [(4,)]


def test_cache_key_changes_with_the_prompt(topics, srv):
    label(topics, srv, cache_ttl_seconds=3600)
    label(topics, srv, cache_ttl_seconds=3600, max_samples_per_cluster=2)
    assert len(srv.chat_requests()) == 8


def test_embedding_dedup_merges_similar_labels(topics, srv):
    srv.labels = {"cl_0": {"label": "Space exploration missions", "summary": "s", "keywords": []},
                  "cl_1": {"label": "space exploration missions!", "summary": "s", "keywords": []},
                  "cl_2": {"label": "Python compilers", "summary": "s", "keywords": []},
                  "cl_3": {"label": "Football leagues", "summary": "s", "keywords": []}}
    msg = label(topics, srv, use_embedding_dedup=True, embedding_similarity_threshold=0.8)
    assert "1 label(s) merged" in msg
    rows = {r[0]: r[1:] for r in topics.sql(
        "SELECT node_id, label, merged_into, attributes, l.size FROM cluster_labels('topics') "
        "JOIN (SELECT node_id, size FROM cluster_centroids('topics')) l USING (node_id)"
    ).fetchall()}
    merged = [n for n, v in rows.items() if v[1] is not None]
    assert len(merged) == 1
    (loser,) = merged
    winner = rows[loser][1]
    assert rows[loser][0] == rows[winner][0] and rows[winner][1] is None
    assert json.loads(rows[loser][2])["original_label"] in (
        "Space exploration missions", "space exploration missions!")
    emb = [r for r in srv.requests if r["kind"] == "embeddings"]
    assert len(emb) == 1 and emb[0]["path"] == "/v1/embeddings" and len(emb[0]["body"]["input"]) == 4


def test_dedup_embedding_failure_is_recorded_not_fatal(topics, srv):
    srv.faults["embeddings"] = ["500", "500"]
    msg = label(topics, srv, use_embedding_dedup=True, max_retries=1)
    assert "label dedup skipped" in msg
    assert [r[:2] for r in failures(topics)] == [(None, "http")]
    assert all(v[3] == "llm" for v in labels(topics).values())


def test_keys_never_reach_the_catalog_or_messages(topics, srv):
    srv.faults["cl_0"] = ["401"]
    label(topics, srv, cache_ttl_seconds=3600)
    label(topics, srv, provider="gemini", cache_ttl_seconds=3600)
    for (tbl,) in topics.sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = "
                             "'duckcluster'").fetchall():
        dump = str(topics.sql(f"SELECT * FROM duckcluster.{tbl}").fetchall())
        assert KEY not in dump, tbl
    assert KEY not in str(failures(topics))


def test_key_from_a_duckdb_secret(tmp_path, srv, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    con = duckcluster.connect(str(tmp_path / "s.duckdb"),
                              config={"allow_unredacted_secrets": True})
    try:
        make_docs(con)
        cluster(con)
        con.execute(f"CREATE SECRET llm_key (TYPE http, BEARER_TOKEN '{KEY}')")
        assert "4 by openai" in label(con, srv, secret="llm_key")
        assert srv.chat_requests()[0]["headers"]["authorization"] == f"Bearer {KEY}"
        with pytest.raises(duckdb.Error, match="DuckDB secret 'nope' was not found"):
            label(con, srv, secret="nope")
    finally:
        con.close()


def test_secret_hidden_without_unredacted_config(topics, srv):
    topics.execute(f"CREATE SECRET llm_key2 (TYPE http, BEARER_TOKEN '{KEY}')")
    with pytest.raises(duckdb.Error, match="allow_unredacted_secrets"):
        label(topics, srv, secret="llm_key2")


# -- embed_text --------------------------------------------------------------------------------

def test_embed_text_openai_and_gemini(con, srv):
    rows = con.sql(f"SELECT embed_text(t, base_url := '{srv.openai_url}', model := 'emb', "
                   "retry_backoff := 0.01) AS e FROM (VALUES ('space rocket'), (NULL), "
                   "('space rocket')) v(t)").fetchall()
    assert rows[1][0] is None and rows[0][0] == rows[2][0] and len(rows[0][0]) == 64
    body = [r for r in srv.requests if r["kind"] == "embeddings"][0]["body"]
    assert body == {"model": "emb", "input": ["space rocket", "space rocket"]}
    g = con.sql(f"SELECT embed_text('space rocket', provider := 'gemini', "
                f"base_url := '{srv.gemini_url}')").fetchall()[0][0]
    assert g == pytest.approx(rows[0][0], abs=1e-6)
    assert srv.requests[-1]["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"


def test_embed_text_retries_and_many_rows(con, srv):
    srv.faults["embeddings"] = ["429"]
    n = con.sql(f"SELECT count(embed_text('doc ' || i, base_url := '{srv.openai_url}', "
                "retry_backoff := 0.01)) FROM range(2100) r(i)").fetchall()[0][0]
    assert n == 2100  # two DuckDB vectors, batches of 256 per request
    emb = [r for r in srv.requests if r["kind"] == "embeddings"]
    assert max(len(r["body"]["input"]) for r in emb) == 256
