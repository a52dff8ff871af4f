"""Offline labels: c-TF-IDF known answers, a real docstring corpus, hierarchy, errors."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from docstring_corpus import corpus
from label_data import TOPIC_WORDS, cluster, make_docs, topic_of_clusters

import duckcluster
from duckcluster.core.assign import normalize_rows
from duckcluster._errors import SpecError
from duckcluster.core.keywords import ctfidf_keywords, offline_label
from duckcluster.labels.ask import leader_merges
from duckcluster.labels.config import LabelConfig
from duckcluster.labels.keywords import offline_summary

# -- pure core ---------------------------------------------------------------------------

def test_ctfidf_prefers_words_specific_to_a_class():
    """'data' is in every class, so it never outranks a class's own words."""
    docs = [["data about cats", "cats and data"], ["data on dogs", "dogs bark at data"],
            ["data birds", "birds sing data"]]
    kws = ctfidf_keywords(docs, n=2)
    assert [k[0] for k in kws] == ["cats", "dogs", "birds"]
    assert "data" not in kws[1] and "data" not in kws[2]  # each has two own words


def test_ctfidf_no_bigram_across_documents_and_empty_classes():
    kws = ctfidf_keywords([["alpha beta", "gamma delta"], [], ["the and of"]], n=10)
    assert "beta gamma" not in kws[0]
    assert kws[1] == [] and kws[2] == []


def test_offline_label_skips_covered_words_and_stays_unique():
    assert offline_label(["apple", "apple banana", "fruit", "banana"]) == "apple, fruit, banana"
    taken = {"apple, fruit, banana"}
    assert offline_label(["apple", "fruit", "banana", "juice"], taken=taken) == \
        "apple, fruit, banana, juice"
    assert offline_label([]) == ""


def test_offline_summary():
    s = offline_summary(3, ["a", "b"], "  first   doc\ntext ")
    assert s == '3 documents about a, b. Most typical: "first doc text".'


def test_leader_merges_greedy_by_order_and_group():
    E = normalize_rows(np.array([[1, 0], [0.99, 0.1], [0, 1], [0.98, 0.05]]))
    merges = leader_merges(E, order=[0, 1, 2, 3], groups=[0, 0, 0, 1], threshold=0.9)
    assert merges == {1: 0}  # item 3 is similar but in another group (level)


def test_label_options_validated_with_suggestions():
    with pytest.raises(SpecError, match="Did you mean 'max_samples_per_cluster'"):
        LabelConfig.from_dict({"max_sample_per_cluster": 3})
    with pytest.raises(SpecError, match=r"'cache_ttl_seconds' parameter .* range \[0, inf\)"):
        LabelConfig.from_dict({"cache_ttl_seconds": -1})
    with pytest.raises(SpecError, match="Unknown provider 'anthropic'"):
        LabelConfig.from_dict({"provider": "anthropic"})
    with pytest.raises(SpecError, match="needs a 'label'"):
        LabelConfig.from_dict({"response_shape": {"name": "string"}})
    with pytest.raises(SpecError, match="input_key must be one of"):
        LabelConfig.from_dict({"input_mappings": [{"input_key": "txt", "path": "a"}]})
    cfg = LabelConfig.from_dict({"model_name": "m", "enabled": True, "provider": "google",
                                 "labeling_inputs": {"input_mappings": [{"path": "a.b"}]}})
    assert (cfg.provider, cfg.model, cfg.input_mappings[0].input_key) == ("gemini", "m", "text")


# -- a real corpus -----------------------------------------------------------------------------

EXPECTED = {
    "numpy.random": {"distribution", "samples", "random", "drawn", "generator", "bit", "seed"},
    "numpy.linalg": {"matrix", "matrices", "eigenvalues", "singular", "linalg"},
    "numpy.fft": {"fft", "fourier", "transform", "fourier transform"},
    "asyncio": {"loop", "event loop", "coroutine", "task", "future", "transport", "protocol"},
    "http.client": {"http", "server", "response", "request", "header", "headers", "connection"},
    "tarfile": {"tarinfo", "archive", "tar", "member", "tarfile"},
    "unittest": {"test", "tests", "testcase"},
}


@pytest.fixture(scope="module")
def docstrings(tmp_path_factory):
    ids, topics, texts, X = corpus()
    con = duckcluster.connect(str(tmp_path_factory.mktemp("ds") / "ds.duckdb"))
    con.register("t", pa.table({"id": ids, "topic": topics, "body": texts,
                                "embedding": pa.FixedSizeListArray.from_arrays(
                                    pa.array(X.ravel()), X.shape[1])}))
    con.execute(f"CREATE TABLE docstrings AS SELECT id, topic, body, "
                f"CAST(embedding AS FLOAT[{X.shape[1]}]) AS embedding FROM t")
    con.unregister("t")
    cluster(con, "ds", "docstrings", k=len(EXPECTED), id="'id'")
    yield con, dict(zip(ids, topics))
    con.close()


def test_docstring_corpus_labels_name_each_topic(docstrings):
    """Every cluster that is mostly one module gets that module's vocabulary in its top keywords."""
    con, topic_of = docstrings
    msg = con.sql("SELECT cluster_label('ds', text := 'body')").fetchall()[0][0]
    assert msg.startswith("labeled 7 cluster node(s) of run ") and "offline" in msg
    rows = con.sql("SELECT c.cluster_id, c.label, c.keywords, c.summary, l.representative_ids "
                   "FROM cluster_centroids('ds') c JOIN cluster_labels('ds') l USING (node_id)"
                   ).fetchall()
    members = con.sql("SELECT id, cluster_id FROM cluster_members('ds')").fetchall()
    checked = 0
    for cid, label, keywords, summary, reps in rows:
        mods = [topic_of[i] for i, c in members if c == cid]
        major = max(set(mods), key=mods.count)
        assert label and len(keywords) == 10 and summary.startswith(f"{len(mods)} documents")
        assert len(reps) == 5 and all(topic_of[r] for r in reps)
        if mods.count(major) / len(mods) >= 0.55:
            assert EXPECTED[major] & set(keywords), (major, keywords)
            assert EXPECTED[major] & set(label.split(", ")) or \
                EXPECTED[major] & set(keywords[:5]), (major, label)
            checked += 1
    assert checked >= 4  # clusters that are >= 55% one module (4-6 of 7, by k-means seeding)
    assert len({r[1] for r in rows}) == len(rows)  # labels are unique


def test_offline_labels_are_deterministic(docstrings):
    con, _ = docstrings
    con.sql("SELECT cluster_label('ds', text := 'body')").fetchall()
    first = con.sql("SELECT node_id, label, keywords FROM cluster_labels('ds')").fetchall()
    con.sql("SELECT cluster_label('ds', text := 'body')").fetchall()
    assert con.sql("SELECT node_id, label, keywords FROM cluster_labels('ds')").fetchall() == first
    assert con.sql("SELECT count(*) FROM duckcluster.labels").fetchall()[0][0] == len(first)


def test_representatives_are_closest_to_the_centroid(docstrings):
    con, _ = docstrings
    con.sql("SELECT cluster_label('ds', text := 'body', max_samples_per_cluster := 3)").fetchall()
    for node, reps in con.sql("SELECT node_id, representative_ids FROM cluster_labels('ds')"
                              ).fetchall():
        sims = dict(con.sql("SELECT id, cosine_similarity_to_centroid FROM "
                            "cluster_members('ds') WHERE node_id = ?", params=[node]).fetchall())
        best = sorted(sims, key=lambda i: (-sims[i], i))[:3]
        assert [round(sims[r], 5) for r in reps] == [round(sims[b], 5) for b in best]


# -- small synthetic topics ---------------------------------------------------------------------

def test_default_text_is_every_text_column_and_switches(con):
    topics = make_docs(con)
    cluster(con)
    con.sql("SELECT cluster_label('topics', include_summary := false, n_keywords := 4)").fetchall()
    rows = con.sql("SELECT cluster_id, label, summary, keywords FROM cluster_centroids('topics')"
                   ).fetchall()
    by_topic = topic_of_clusters(con, "topics", topics)
    for cid, label, summary, keywords in rows:
        assert summary is None and len(keywords) == 4
        words = " ".join(dict(TOPIC_WORDS)[by_topic[cid]])
        assert any(k in words for k in label.split(", "))
    con.sql("SELECT cluster_label('topics', include_keywords := false)").fetchall()
    assert con.sql("SELECT count(*) FROM cluster_centroids('topics') WHERE keywords IS NULL "
                   "AND summary IS NOT NULL").fetchall()[0][0] == 4


def test_text_expression_and_input_mappings(con):
    make_docs(con)
    cluster(con)
    con.sql("SELECT cluster_label('topics', text := 'upper(topic) || '' '' || body')").fetchall()
    labels = [r[0] for r in con.sql("SELECT label FROM cluster_centroids('topics')").fetchall()]
    for word in ("fruit", "space", "code", "sport"):  # every doc has it: top of its cluster
        assert sum(word in label.split(", ") for label in labels) == 1
    con.sql("SELECT cluster_label('topics', input_mappings := [{'input_key': 'text', "
            "'source_type': 'payload', 'path': 'extra.nested.note'}])").fetchall()
    labels = [r[0] for r in con.sql("SELECT label FROM cluster_centroids('topics')").fetchall()]
    assert {l.split(", ")[0] for l in labels} == {"fruit", "space", "code", "sport"}


def test_definition_labeling_gives_defaults(con):
    make_docs(con)
    cluster(con, labeling="{'text': 'topic', 'n_keywords': 1}")
    con.sql("SELECT cluster_label('topics')").fetchall()
    assert sorted(r[0] for r in con.sql("SELECT keywords[1] FROM cluster_centroids('topics')"
                                        ).fetchall()) == ["code", "fruit", "space", "sport"]
    con.sql("SELECT cluster_label('topics', n_keywords := 2)").fetchall()  # a call overrides
    assert con.sql("SELECT max(len(keywords)) FROM cluster_centroids('topics')").fetchall() \
        == [(1,)]  # 'topic' has one word per cluster


def test_hierarchical_run_labels_every_node_and_parquet_has_labels(con):
    rng = np.random.default_rng(0)
    d = 32
    tops = normalize_rows(rng.normal(size=(2, d)))
    X, texts = [], []
    words = [["fruit apple", "fruit banana"], ["space rocket", "space orbit"]]
    for t in range(2):
        for s in range(2):
            centre = tops[t] + 0.35 * normalize_rows(rng.normal(size=(1, d)))[0]
            X.append(centre + 0.02 * rng.normal(size=(100, d)))
            texts += [f"{words[t][s]} item{i}" for i in range(100)]
    X = normalize_rows(np.vstack(X))
    con.register("t", pa.table({"id": np.arange(400), "body": texts, "embedding":
                                pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), d)}))
    con.execute(f"CREATE TABLE nested AS SELECT id, body, CAST(embedding AS FLOAT[{d}]) AS "
                "embedding FROM t")
    run = cluster(con, "tree", "nested", k=2, hierarchical="true", max_hierarchy_depth=2)
    con.sql("SELECT cluster_label('tree', text := 'body')").fetchall()
    rows = dict(con.sql("SELECT node_id, label FROM cluster_centroids('tree')").fetchall())
    assert len(rows) == 6 and all(rows.values())
    top = {rows["cl_0"].split(", ")[0], rows["cl_1"].split(", ")[0]}
    assert top == {"fruit", "space"}
    for parent in ("cl_0", "cl_1"):
        kids = {rows[f"{parent}_sub_0"].split(", ")[0], rows[f"{parent}_sub_1"].split(", ")[0]}
        assert kids in ({"apple", "banana"}, {"rocket", "orbit"})
    path = con.sql("SELECT artifacts_path FROM duckcluster.runs WHERE run_id = ?",
                   params=[run]).fetchall()[0][0]
    parquet = con.sql(f"SELECT node_id, label FROM '{path}/centroids.parquet'").fetchall()
    assert dict(parquet) == rows


def test_errors_name_the_fix(con):
    make_docs(con)
    with pytest.raises(duckdb.Error, match="No cluster definition named 'nope'"):
        con.sql("SELECT cluster_label('nope')").fetchall()
    con.sql("SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
            "algorithm := 'kmeans', params := {'n_clusters': 4})").fetchall()
    with pytest.raises(duckdb.Error, match=r"no successful run yet. Run SELECT cluster_execute"):
        con.sql("SELECT cluster_label('topics')").fetchall()
    con.sql("SELECT cluster_execute('topics')").fetchall()
    with pytest.raises(duckdb.Error, match="text must be a column name or one SQL expression"):
        con.sql("SELECT cluster_label('topics', text := 'body FROM docs; DROP TABLE docs')"
                ).fetchall()
    with pytest.raises(duckdb.Error, match="No successful run 'run_x' of cluster 'topics'"):
        con.sql("SELECT cluster_label('topics', run_id := 'run_x')").fetchall()
    with pytest.raises(duckdb.Error, match="use_embedding_dedup needs label embeddings"):
        con.sql("SELECT cluster_label('topics', use_embedding_dedup := true)").fetchall()
    assert con.sql("SELECT count(*) FROM docs").fetchall() == [(120,)]
    assert con.sql("SELECT count(*) FROM duckcluster.labels").fetchall() == [(0,)]


def test_sentence_transformers_missing_gives_install_hint(con):
    make_docs(con)
    cluster(con)
    with pytest.raises(duckdb.Error, match=r"pip install 'duckcluster\[local-embeddings\]'"):
        con.sql("SELECT cluster_label('topics', use_embedding_dedup := true, "
                "embedding_provider := 'sentence-transformers')").fetchall()


def test_read_only_database_reads_labels_and_refuses_writes(tmp_path):
    path = str(tmp_path / "ro.duckdb")
    con = duckcluster.connect(path)
    make_docs(con)
    cluster(con)
    con.sql("SELECT cluster_label('topics', text := 'body')").fetchall()
    con.close()
    ro = duckcluster.connect(path, read_only=True)
    try:
        assert ro.sql("SELECT count(*) FROM cluster_labels('topics')").fetchall() == [(4,)]
        with pytest.raises(duckdb.Error, match="cluster_label writes to the catalog, but this "
                                               "database is open read-only"):
            ro.sql("SELECT cluster_label('topics', text := 'body')").fetchall()
    finally:
        ro.close()


def test_labeling_settings_label_every_full_run(tmp_path):
    """A definition with labeling settings is labeled at each full run (offline here);
    a failing provider leaves the run succeeded with a note."""
    import duckcluster
    from conftest import blobs, load_table

    con = duckcluster.connect(str(tmp_path / "a.duckdb"))
    try:
        X, y = blobs(n_per=30, k=2, d=8)
        load_table(con, "docs", X)
        con.sql("ALTER TABLE docs ADD COLUMN body VARCHAR").fetchall()
        con.sql("UPDATE docs SET body = CASE WHEN doc_id < 30 THEN 'apple banana fruit' "
                "ELSE 'engine wheel car' END").fetchall()
        con.sql("SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2}, "
                "labeling := {'text': 'body'})").fetchall()
        con.sql("SELECT cluster_execute('t')").fetchall()
        labels = sorted(r[0] for r in con.sql(
            "SELECT label FROM cluster_centroids('t')").fetchall())
        assert all(labels) and any("apple" in x or "fruit" in x or "banana" in x for x in labels)
        con.sql("SELECT cluster_create('u', source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2}, "
                "labeling := {'provider': 'openai', 'model': 'm', 'base_url': "
                "'http://127.0.0.1:9/v1', 'max_retries': 0, 'api_key_env': 'DC_NO_SUCH_KEY'})"
                ).fetchall()
        con.sql("SELECT cluster_execute('u')").fetchall()
        status, error = con.sql("SELECT status, error FROM cluster_runs('u')").fetchall()[0]
        assert status == "succeeded" and error.startswith("run succeeded; automatic labeling failed")
    finally:
        con.close()
