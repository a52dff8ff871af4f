"""Clusters that keep their identity across runs: stable ids, lineage events, carried
labels, truthful enrichment, assign runs and drift that use the identities.

Known-answer tests of the pure matching (core/lineage.py), then real runs on DuckDB files:
a fixture in which one cluster splits in two and two merge, re-runs on unchanged data,
a new topic, ``stable_ids := false``, hierarchical runs, and the read side in the stock
DuckDB CLI.
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from conftest import load_table
from label_data import make_docs
from test_stock_cli import assert_same_rows, run_cli

from duckcluster._errors import SpecError
from duckcluster.core import lineage


def q(con, sql):
    return con.sql(sql).fetchall()


def rows(con, sql):
    rel = con.sql(sql)
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def error_of(con, sql) -> str:
    with pytest.raises(duckdb.Error) as info:
        con.sql(sql).fetchall()
    return str(info.value)


# -- pure core --------------------------------------------------------------------------

def _unit(rng, k, d=8):
    C = rng.normal(size=(k, d))
    return C / np.linalg.norm(C, axis=1, keepdims=True)


def test_renumbered_clusters_all_continue_and_keep_their_ids():
    C = _unit(np.random.default_rng(0), 4)
    perm = [3, 1, 0, 2]  # new cluster j is old cluster perm[j]
    F = lineage.flow_matrix(4, 4, [(perm[j], j, 25) for j in range(4)])
    r = lineage.link(C, C[perm], F)
    assert r.match.tolist() == perm
    assert [e.event for e in r.events] == ["continued"] * 4
    assert all(e.overlap == 1.0 and e.similarity == pytest.approx(1.0) for e in r.events)
    assert r.keep_label.all()
    ids, nxt = lineage.assign_ids([0, 1, 2, 3], r.match, [10, 11, 12, 13], next_id=14)
    assert ids == [13, 11, 10, 12] and nxt == 14


def test_a_split_and_a_merge_are_exactly_that():
    """Old 0 (100 rows) splits 60/40 into new 0 and 1; old 1 and 2 (50 each) merge into new 2;
    old 3 continues as new 3."""
    C = _unit(np.random.default_rng(1), 6)
    C_old = C[[0, 1, 2, 3]]
    C_new = np.stack([C[0], C[4], (C[1] + C[2]) / 2, C[3]])
    F = lineage.flow_matrix(4, 4, [(0, 0, 60), (0, 1, 40), (1, 2, 50), (2, 2, 50), (3, 3, 30)])
    r = lineage.link(C_old, C_new, F)
    got = [(e.event, e.old, e.new) for e in r.events]
    assert got == [("continued", 3, 3), ("split", 0, 0), ("split", 0, 1),
                   ("merged", 1, 2), ("merged", 2, 2)]
    split = [e for e in r.events if e.event == "split"]
    assert [e.previous_share for e in split] == [0.6, 0.4]
    assert [e.matched for e in split] == [True, False]  # the bigger part kept the id
    assert sum(e.matched for e in r.events if e.event == "merged") == 1
    assert r.keep_label.tolist() == [False, False, False, True]  # only continued keep labels


def test_born_and_died_without_shared_rows_use_centroid_similarity():
    """Disjoint data: a near-identical centroid continues, an unrelated one is born, an old
    cluster with no counterpart dies; born/died rows give the best candidate's similarity."""
    C = _unit(np.random.default_rng(2), 5)
    noisy = C[0] + 0.01 * np.random.default_rng(3).normal(size=C.shape[1])
    F = lineage.flow_matrix(2, 2, [])  # no row in both runs
    r = lineage.link(C[[0, 1]], np.stack([C[4], noisy]), F)
    events = {e.event: e for e in r.events}
    assert sorted(events) == ["born", "continued", "died"]
    assert (events["continued"].old, events["continued"].new) == (0, 1)
    assert events["continued"].overlap is None and events["continued"].similarity > 0.99
    assert events["born"].new == 0 and events["born"].similarity < 0.9
    assert events["died"].old == 1
    ids, nxt = lineage.assign_ids([0, 1], r.match, [5, 6], next_id=9)
    assert ids == [9, 5] and nxt == 10  # the born cluster gets an id never used


def test_a_cluster_that_grew_or_shrank_continues():
    """Old 0 (20 rows) absorbed 80 former noise rows; old 1 (100 rows) lost 70 to noise:
    overlaps 0.2 and 0.3, but most of one side is in the other, so both continue."""
    C = _unit(np.random.default_rng(6), 2)
    F = lineage.flow_matrix(2, 2, [(0, 0, 20), (-1, 0, 80), (1, 1, 30), (1, -1, 70)])
    r = lineage.link(C, C, F)
    assert [(e.event, e.old, e.new) for e in r.events] == [("continued", 0, 0),
                                                           ("continued", 1, 1)]
    assert [round(e.overlap, 2) for e in r.events] == [0.2, 0.3]
    assert not r.keep_label.any()  # both changed beyond label_overlap: labeled again


def test_a_cluster_of_mostly_new_rows_is_born_even_with_a_remnant_of_an_old_one():
    """The bench's failure (docstrings8, auto, a held-out topic added back): the new topic
    became new cluster 1, 300 new rows plus 40 rows of old cluster 0, whose other 360 rows
    are noise now. Over shared rows only, all of new 1's old rows came from old 0 (share
    1.0), so it 'continued' old 0; over all its members (40 / 340) it is born, and old 0
    died. Old 1 -> new 0 continues either way, and growth by new rows still continues."""
    C = _unit(np.random.default_rng(8), 3)
    F = lineage.flow_matrix(2, 2, [(0, 1, 40), (0, -1, 360), (1, 0, 200)])
    C_old, C_new = C[[0, 1]], C[[1, 2]]
    before = lineage.link(C_old, C_new, F)  # no sizes: shared rows decide
    assert before.match.tolist() == [1, 0]
    r = lineage.link(C_old, C_new, F, new_sizes=np.array([200, 340]))
    assert r.match.tolist() == [1, -1]
    assert sorted((e.event, e.old, e.new) for e in r.events) == [
        ("born", -1, 1), ("continued", 1, 0), ("died", 0, -1)]
    grew = lineage.flow_matrix(1, 1, [(0, 0, 100)])
    r = lineage.link(C[[0]], C[[0]], grew, new_sizes=np.array([400]))  # 300 new rows joined
    assert [(e.event, e.old, e.new) for e in r.events] == [("continued", 0, 0)]


def test_the_main_part_of_a_spread_cluster_keeps_its_id_and_a_mostly_new_part_is_born():
    """The bench's miss (packages10, k-means, a held-out topic added back): old 0 (633 rows)
    went 276 to new 1, 204 to new 2, the rest to others. New 1 has 553 members: 276 from
    old 0, 96 never seen, 181 from old 1. No side reaches min_share (276/633, 276/553), so
    old 0 had no match; each is now the other's main counterpart, so 0 continues as new 1
    (a split, matched). New 2 (749 members: 204 of old 0, 269 never seen, 276 from old 1
    which continues as new 0) is mostly new rows: born, and still listed as a part of 0's
    split."""
    C = _unit(np.random.default_rng(9), 3)
    F = lineage.flow_matrix(2, 3, [(0, 1, 276), (0, 2, 204), (0, -1, 153), (1, 1, 181),
                                   (1, 0, 600), (1, 2, 276 - 276)])
    r = lineage.link(C[[0, 1]], C, F, new_sizes=np.array([600, 553, 473]))
    assert r.match.tolist() == [1, 0, -1]
    got = sorted((e.event, e.old, e.new, e.matched) for e in r.events)
    assert got == [("born", -1, 2, False), ("continued", 1, 0, True),
                   ("split", 0, 1, True), ("split", 0, 2, False)]
    # without the rows the previous run never saw, new 2 is old 0's (a split part, not born)
    r = lineage.link(C[[0, 1]], C, F)
    assert ("born", -1, 2) not in [(e.event, e.old, e.new) for e in r.events]


def test_noise_counts_in_the_shares_and_a_dissolved_cluster_dies():
    """An old cluster whose rows became noise is not matched by its centroid when rows are
    shared: overlap decides."""
    C = _unit(np.random.default_rng(4), 2)
    F = lineage.flow_matrix(2, 1, [(0, 0, 40), (1, -1, 40), (-1, 0, 10)])
    r = lineage.link(C, C[[0]], F)
    assert [(e.event, e.old, e.new) for e in r.events] == [("continued", 0, 0), ("died", 1, -1)]
    (cont,) = [e for e in r.events if e.event == "continued"]
    assert cont.share == pytest.approx(0.8) and cont.overlap == pytest.approx(0.8)


def test_options_are_validated_with_suggestions():
    with pytest.raises(SpecError, match="Did you mean 'split_share'"):
        lineage.validate_options({"split_shares": 0.3})
    with pytest.raises(SpecError, match="must be a float in the range"):
        lineage.validate_options({"merge_share": 0})
    assert lineage.validate_options(None)["min_share"] == 0.5


def test_fingerprints_do_not_depend_on_batches_and_see_any_change():
    X = np.random.default_rng(5).normal(size=(50, 7)).astype(np.float32)
    whole = lineage.fingerprints(X)
    assert np.array_equal(whole, np.concatenate([lineage.fingerprints(X[:13]),
                                                 lineage.fingerprints(X[13:])]))
    Y = X.copy()
    Y[7, 6] = np.nextafter(Y[7, 6], np.float32(10))
    changed = lineage.fingerprints(Y) != whole
    assert changed.tolist() == [i == 7 for i in range(50)]


def test_renumbering_rewrites_ids_and_derived_node_ids():
    """Top-level ids 0, 1 become 7, 3: cluster_id columns, node ids, parents and children
    (sub-node ids keep their own numbering); noise stays -1."""
    from duckcluster.engine.lineage import _renumbered

    centroids = pa.table({
        "cluster_id": pa.array([0, 1, 0], pa.int32()),
        "node_id": ["cl_0", "cl_1", "cl_0_sub_1"],
        "parent_cluster_id": pa.array([None, None, "cl_0"], pa.string()),
        "child_cluster_ids": pa.array([["cl_0_sub_1"], [], []], pa.list_(pa.string())),
        "hierarchy_level": pa.array([0, 0, 1], pa.int32())})
    members = pa.table({
        "cluster_id": pa.array([0, 1, -1, 0], pa.int32()),
        "node_id": pa.array(["cl_0_sub_1", "cl_1", None, "cl_0"], pa.string()),
        "parent_cluster_id": pa.array(["cl_0", None, None, None], pa.string())})
    out = _renumbered(centroids, members, np.array([0, 1]), [7, 3], next_id=5)
    c = out.centroids.to_pydict()
    assert c["cluster_id"] == [7, 3, 7] and c["node_id"] == ["cl_7", "cl_3", "cl_7_sub_1"]
    assert c["parent_cluster_id"] == [None, None, "cl_7"]
    assert c["child_cluster_ids"] == [["cl_7_sub_1"], [], []]
    m = out.members.to_pydict()
    assert m["cluster_id"] == [7, 3, -1, 7]
    assert m["node_id"] == ["cl_7_sub_1", "cl_3", None, "cl_7"]
    assert m["parent_cluster_id"] == ["cl_7", None, None, None]
    assert out.next_id == 8


# -- runs on a DuckDB file --------------------------------------------------------------

def _blob(rng, center, n, spread=0.03):
    return center + spread * rng.normal(size=(n, len(center)))


def _split_merge_tables(con):
    """Run 1: A (200 rows), B, C1, C2 (100 each). Run 2, same ids: A's rows move to two
    distant places A1, A2 (half each), C1's and C2's rows to one place C; B stays."""
    rng = np.random.default_rng(7)
    a, b, c1, c2, a1, a2, c = _unit(rng, 7, d=16)
    X1 = np.concatenate([_blob(rng, a, 200), _blob(rng, b, 100), _blob(rng, c1, 100),
                         _blob(rng, c2, 100)])
    X2 = np.concatenate([_blob(rng, a1, 100), _blob(rng, a2, 100), X1[200:300],
                         _blob(rng, c, 200)])
    return X1.astype(np.float32), X2.astype(np.float32)


KMEANS4 = ("SELECT cluster_create('fx', source := 'corpus', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': 4}}{extra})")


def _two_runs(con, extra=""):
    X1, X2 = _split_merge_tables(con)
    load_table(con, "corpus", X1)
    q(con, KMEANS4.format(extra=extra))
    r1 = q(con, "SELECT cluster_execute('fx')")[0][0]
    load_table(con, "corpus", X2)
    r2 = q(con, "SELECT cluster_execute('fx')")[0][0]
    return r1, r2


def _cluster_of(con, run_id, ids):
    got = dict(q(con, f"SELECT CAST(id AS INTEGER), cluster_id FROM cluster_members('fx', "
                      f"run_id := '{run_id}')"))
    return {got[i] for i in ids}


def test_lineage_reports_exactly_the_split_and_the_merge(con):
    r1, r2 = _two_runs(con)
    (a,) = _cluster_of(con, r1, range(200))
    (b,) = _cluster_of(con, r1, range(200, 300))
    (c1,) = _cluster_of(con, r1, range(300, 400))
    (c2,) = _cluster_of(con, r1, range(400, 500))
    (a1,) = _cluster_of(con, r2, range(100))
    (a2,) = _cluster_of(con, r2, range(100, 200))
    (c,) = _cluster_of(con, r2, range(300, 500))
    out = rows(con, "SELECT * FROM cluster_lineage('fx')")
    assert {(r["previous_run_id"], r["run_id"]) for r in out} == {(r1, r2)}
    got = sorted((r["event"], r["previous_cluster_id"], r["cluster_id"]) for r in out)
    assert got == sorted([("continued", b, b), ("split", a, a1), ("split", a, a2),
                          ("merged", c1, c), ("merged", c2, c)])
    assert _cluster_of(con, r2, range(200, 300)) == {b}  # B kept its id
    split = [r for r in out if r["event"] == "split"]
    assert all(r["previous_share"] == pytest.approx(0.5) and r["share"] == 1.0 for r in split)
    # one part of the split kept A's id, the merge one of C1's and C2's; the other part of
    # the split has an id the definition never used
    assert sorted(r["matched"] for r in split) == [False, True]
    old_ids = {a, b, c1, c2}
    assert c in {c1, c2}
    fresh = {a1, a2} - old_ids
    assert len(fresh) == 1 and fresh == {max(old_ids) + 1}
    assert q(con, "SELECT next_cluster_id FROM duckcluster.cluster_id_marks")[0][0] == \
        max(fresh) + 1
    # the run's own rows only; run_id := filters, unknown names fail clearly
    assert rows(con, f"SELECT * FROM cluster_lineage('fx', run_id := '{r2}')") == out
    assert rows(con, f"SELECT * FROM cluster_lineage('fx', run_id := '{r1}')") == []
    assert "No cluster definition named 'fy'" in error_of(con, "SELECT * FROM cluster_lineage('fy')")


def test_drift_between_the_runs_follows_the_lineage(con):
    r1, r2 = _two_runs(con)
    out = rows(con, "SELECT * FROM cluster_drift('fx')")
    assert {r["matched_by"] for r in out} == {"lineage"}
    status = sorted(r["status"] for r in out)
    assert status == ["merged", "merged", "split", "split", "stable"]  # not vanished + new
    assert sum(r["baseline_share"] for r in out) == pytest.approx(1.0)
    assert sum(r["current_share"] for r in out) == pytest.approx(1.0)
    split = [r for r in out if r["status"] == "split"]
    assert [r["baseline_size"] for r in split] == [100, 100]  # A's 200 rows, divided
    assert out[0]["unmatched_share"] == 0.0


def test_stable_ids_false_numbers_clusters_afresh_but_records_lineage(con):
    r1, r2 = _two_runs(con, extra=", stable_ids := false")
    assert sorted(r[0] for r in q(con, f"SELECT cluster_id FROM cluster_centroids('fx', "
                                       f"run_id := '{r2}')")) == [0, 1, 2, 3]
    events = sorted(r[0] for r in q(con, "SELECT event FROM cluster_lineage('fx')"))
    assert events == ["continued", "merged", "merged", "split", "split"]
    spec = q(con, "SELECT spec FROM duckcluster.definitions WHERE name = 'fx'")[0][0]
    assert '"stable_ids": false' in spec


def test_lineage_options_are_validated_at_create(con):
    load_table(con, "corpus", np.eye(4, dtype=np.float32))
    msg = error_of(con, KMEANS4.format(extra=", lineage := {'split_shar': 0.3}"))
    assert "Unknown parameter 'split_shar' for lineage. Did you mean 'split_share'?" in msg


def test_a_failed_run_leaves_no_lineage_and_no_id_mark(con, monkeypatch):
    X1, X2 = _split_merge_tables(con)
    load_table(con, "corpus", X1)
    q(con, KMEANS4.format(extra=""))
    q(con, "SELECT cluster_execute('fx')")
    load_table(con, "corpus", X2)
    from duckcluster.catalog import runs

    written = runs.write_lineage

    def then_fail(*a, **k):  # the lineage is written, then the commit fails
        written(*a, **k)
        raise RuntimeError("disk full")

    monkeypatch.setattr(runs, "write_lineage", then_fail)
    with pytest.raises(duckdb.Error, match="disk full"):
        q(con, "SELECT cluster_execute('fx')")
    monkeypatch.undo()
    assert q(con, "SELECT count(*) FROM duckcluster.lineage")[0][0] == 0
    assert q(con, "SELECT next_cluster_id FROM duckcluster.cluster_id_marks")[0][0] == 4
    assert q(con, "SELECT status FROM cluster_runs('fx') ORDER BY started_at")[-1][0] == "failed"


def test_a_promoted_node_follows_its_cluster_or_says_it_ended(con):
    X1, X2 = _split_merge_tables(con)
    load_table(con, "corpus", X1)
    q(con, KMEANS4.format(extra=""))
    r1 = q(con, "SELECT cluster_execute('fx')")[0][0]
    q(con, "SELECT cluster_promote('fx', taxonomy := 'tax')")
    now = "SELECT source_node_id, current_node_id, lineage_note FROM taxonomy_nodes('tax')"
    assert {(a, b, c) for a, b, c in q(con, now)} == {(f"cl_{i}", f"cl_{i}", "current")
                                                      for i in range(4)}
    load_table(con, "corpus", X2)
    r2 = q(con, "SELECT cluster_execute('fx')")[0][0]
    (a,) = _cluster_of(con, r1, range(200))
    (b,) = _cluster_of(con, r1, range(200, 300))
    c1, c2 = (_cluster_of(con, r1, range(300, 400)).pop(), _cluster_of(con, r1, range(400, 500)).pop())
    (c,) = _cluster_of(con, r2, range(300, 500))
    got = {r[0]: r[1:] for r in q(con, now)}
    assert got[f"cl_{b}"] == (f"cl_{b}", "continued")
    assert got[f"cl_{a}"] == (f"cl_{a}", "continued (split / merged on the way)")
    gone = c2 if c == c1 else c1
    assert got[f"cl_{c}"] == (f"cl_{c}", "continued (split / merged on the way)")
    assert got[f"cl_{gone}"] == (None, f"merged in {r2}")
    assert {r[0] for r in q(con, "SELECT current_run_id FROM taxonomy_nodes('tax')")} == {r2}
    # the promoted nodes still assign: their own centroids, unchanged
    assert q(con, "SELECT count(*) FROM corpus WHERE assign_taxonomy(embedding, 'tax') "
                  "IS NOT NULL")[0][0] > 0


# -- labels carried forward ---------------------------------------------------------------

LABELED = ("SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
           "algorithm := 'kmeans', params := {{'n_clusters': 4}}{extra})")


def test_unchanged_data_keeps_every_id_and_label(con):
    """cluster_label, then cluster_execute again: the new run is labeled (carried), with the
    run the labels came from."""
    make_docs(con, n_per=30)
    q(con, LABELED.format(extra=""))
    r1 = q(con, "SELECT cluster_execute('topics')")[0][0]
    q(con, "SELECT cluster_label('topics')")
    before = q(con, f"SELECT cluster_id, label, summary, keywords FROM cluster_centroids("
                    f"'topics', run_id := '{r1}') ORDER BY cluster_id")
    r2 = q(con, "SELECT cluster_execute('topics')")[0][0]
    after = rows(con, f"SELECT * FROM cluster_centroids('topics', run_id := '{r2}') "
                      "ORDER BY cluster_id")
    assert [(r["cluster_id"], r["label"], r["summary"], r["keywords"]) for r in after] == before
    assert {r["label_source"] for r in after} == {"carried"}
    assert {r["label_note"] for r in after} == {f"carried from {r1}"}
    members = "SELECT id, cluster_id FROM cluster_members('topics', run_id := '{}') ORDER BY id"
    assert q(con, members.format(r1)) == q(con, members.format(r2))
    # carried again: still named after the run whose labeling made them
    r3 = q(con, "SELECT cluster_execute('topics')")[0][0]
    assert {r[0] for r in q(con, f"SELECT label_note FROM cluster_centroids('topics', "
                                 f"run_id := '{r3}')")} == {f"carried from {r1}"}
    details = q(con, f"SELECT DISTINCT source, carried_from_run_id FROM cluster_labels('topics', "
                     f"run_id := '{r3}')")
    assert details == [("carried", r1)]


def test_a_new_topic_is_born_and_labeled_while_the_others_carry_theirs(con):
    make_docs(con, n_per=30)
    q(con, LABELED.format(extra=", labeling := {'n_keywords': 5}"))
    r1 = q(con, "SELECT cluster_execute('topics')")[0][0]
    assert {r[0] for r in q(con, "SELECT label_source FROM cluster_centroids('topics')")} == \
        {"offline"}
    # a fifth topic, far from the others, with its own words
    rng = np.random.default_rng(11)
    center = _unit(rng, 1, d=16)[0]
    Xn = (center + 0.05 * rng.normal(size=(30, 16))).astype(np.float32)
    con.register("__new", pa.table({
        "id": np.arange(1000, 1030), "body": [f"guitar chord melody song {i}" for i in range(30)],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(Xn.ravel()), 16)}))
    con.execute("INSERT INTO docs (id, topic, body, embedding) SELECT id, 'music', body, "
                "CAST(embedding AS FLOAT[16]) FROM __new")
    con.unregister("__new")
    q(con, "SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
           "algorithm := 'kmeans', params := {'n_clusters': 5}, "
           "labeling := {'n_keywords': 5}, \"replace\" := true)")
    r2 = q(con, "SELECT cluster_execute('topics')")[0][0]
    events = rows(con, f"SELECT * FROM cluster_lineage('topics', run_id := '{r2}')")
    assert sorted(e["event"] for e in events) == ["born"] + ["continued"] * 4
    (born,) = [e for e in events if e["event"] == "born"]
    assert born["cluster_id"] == 4 and born["size"] == 30
    cents = {r["cluster_id"]: r for r in rows(con, "SELECT * FROM cluster_centroids('topics')")}
    assert cents[4]["label_source"] == "offline" and "guitar" in cents[4]["keywords"]
    old = dict(q(con, f"SELECT cluster_id, label FROM cluster_centroids('topics', "
                      f"run_id := '{r1}')"))
    for cid, label in old.items():
        assert cents[cid]["label"] == label and cents[cid]["label_source"] == "carried"
    assert cents[4]["label"] not in old.values()


def test_a_changed_cluster_is_labeled_again(con):
    """label_similarity := 1.0 and every centroid moved a little: each continued cluster
    counts as changed, so none carries its label; all are labeled again at the end of the run."""
    make_docs(con, n_per=30)
    q(con, LABELED.format(extra=", lineage := {'label_similarity': 1.0}"))
    q(con, "SELECT cluster_execute('topics')")
    q(con, "SELECT cluster_label('topics')")
    con.execute("UPDATE docs SET embedding = list_transform(embedding, lambda v: v * 1.0 "
                "+ 0.01)::FLOAT[16]")  # every centroid moves a little
    q(con, "SELECT cluster_execute('topics')")
    got = q(con, "SELECT DISTINCT label_source FROM cluster_centroids('topics')")
    assert got == [("offline",)]
    assert q(con, "SELECT count(*) FROM cluster_centroids('topics') WHERE label IS NULL") == [(0,)]


def test_a_failed_automatic_labeling_is_the_reason_shown(con):
    make_docs(con, n_per=30)
    q(con, LABELED.format(extra=", labeling := {'text': 'no_such_column'}"))
    r = q(con, "SELECT cluster_execute('topics')")[0][0]
    notes = {n for (n,) in q(con, "SELECT label_note FROM cluster_centroids('topics')")}
    (note,) = notes
    assert note.startswith("run succeeded; automatic labeling failed:") and r


# -- enrichment tells the truth -----------------------------------------------------------

def test_enrich_refuses_fields_that_are_null_for_the_whole_run(con):
    make_docs(con, n_per=20)
    q(con, LABELED.format(extra=""))
    q(con, "SELECT cluster_execute('topics')")
    msg = error_of(con, "SELECT cluster_enrich('topics', 'docs_e')")
    assert "'label', 'summary', 'keywords' would be NULL for every member of run" in msg
    assert "SELECT cluster_label('topics')" in msg and "fields := ['cluster_id']" in msg
    assert q(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'docs_e'") == [(0,)]
    msg = error_of(con, "SELECT cluster_enrich('topics', 'docs_e', fields := ['cluster_id', 'z'])")
    assert "'z' would be NULL" in msg and "dimensions := 3" in msg
    out = q(con, "SELECT cluster_enrich('topics', 'docs_e', fields := ['cluster_id'])")[0][0]
    assert "enriched with cluster_id" in out
    q(con, "SELECT cluster_label('topics')")
    out = q(con, "SELECT cluster_enrich('topics', 'docs_l')")[0][0]
    assert "enriched with cluster_id, label, summary, keywords" in out and "NULL" not in out


def test_enrich_says_which_members_get_null(con):
    make_docs(con, n_per=20)
    q(con, LABELED.format(extra=""))
    run = q(con, "SELECT cluster_execute('topics')")[0][0]
    q(con, "SELECT cluster_label('topics')")
    con.execute(f"UPDATE duckcluster.centroids SET label = NULL WHERE run_id = '{run}' "
                "AND cluster_id = 0")
    n0 = q(con, "SELECT count(*) FROM cluster_members('topics') WHERE cluster_id = 0")[0][0]
    out = q(con, "SELECT cluster_enrich('topics', 'docs_e', fields := ['cluster_id', 'label'])"
            )[0][0]
    assert out.endswith(f"; label is NULL for {n0} member(s) in clusters without one")


# -- assign runs and drift ------------------------------------------------------------------

def test_an_assign_run_on_unchanged_data_reproduces_its_base_run(con):
    """HDBSCAN leaves noise that nearest-centroid assignment would absorb (every cluster
    'grown'); rows the full run clustered, unchanged, keep its decision instead."""
    rng = np.random.default_rng(3)
    C = _unit(rng, 5, d=16)
    X = np.concatenate([_blob(rng, c, 80, spread=0.12) for c in C] +
                       [rng.normal(size=(60, 16))]).astype(np.float32)
    load_table(con, "corpus", X)
    q(con, "SELECT cluster_create('h', source := 'corpus', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'hdbscan', params := {'min_cluster_size': 15})")
    full = q(con, "SELECT cluster_execute('h')")[0][0]
    assert q(con, "SELECT count(*) FROM cluster_members('h') WHERE cluster_id = -1")[0][0] > 0
    q(con, "SELECT cluster_label('h', text := 'doc_id::VARCHAR')")
    noise = q(con, "SELECT count(*) FROM cluster_members('h') WHERE cluster_id = -1")[0][0]
    out = q(con, "SELECT cluster_enrich('h', 'corpus_e')")[0][0]
    assert out.endswith(f"; label, summary, keywords are NULL for {noise} noise row(s)")
    a = q(con, "SELECT cluster_execute('h', mode := 'assign')")[0][0]
    members = "SELECT id, cluster_id FROM cluster_members('h', run_id := '{}') ORDER BY id"
    assert q(con, members.format(full)) == q(con, members.format(a))
    out = rows(con, f"SELECT * FROM cluster_drift('h', baseline_run := '{full}', "
                    f"current_run := '{a}')")
    assert {r["status"] for r in out} == {"stable"} and {r["matched_by"] for r in out} == {"base run"}
    # the assign run carries its base run's labels
    assert q(con, f"SELECT DISTINCT label_source FROM cluster_centroids('h', run_id := '{a}')") \
        == [("carried",)]
    # new rows still go to the nearest centroid
    con.execute("INSERT INTO corpus SELECT 10000 + doc_id, embedding FROM corpus WHERE doc_id < 10")
    a2 = q(con, "SELECT cluster_execute('h', mode := 'assign')")[0][0]
    new = dict(q(con, f"SELECT CAST(id AS INTEGER) - 10000, cluster_id FROM cluster_members('h', "
                      f"run_id := '{a2}') WHERE CAST(id AS INTEGER) >= 10000"))
    old = dict(q(con, f"SELECT CAST(id AS INTEGER), cluster_id FROM cluster_members('h', "
                      f"run_id := '{full}') WHERE CAST(id AS INTEGER) < 10"))
    assert all(new[i] == old[i] for i in old if old[i] >= 0)


# -- hierarchical runs ------------------------------------------------------------------------

def test_hierarchical_top_level_ids_are_stable_and_node_ids_derived(con):
    rng = np.random.default_rng(5)
    C = _unit(rng, 3, d=16)
    X = np.concatenate([_blob(rng, c, 150, spread=0.1) for c in C]).astype(np.float32)
    load_table(con, "corpus", X)
    q(con, "SELECT cluster_create('t', source := 'corpus', embedding := 'embedding', "
           "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3}, "
           "hierarchical := true, max_hierarchy_depth := 2)")
    r1 = q(con, "SELECT cluster_execute('t')")[0][0]
    perm = np.random.default_rng(9).permutation(len(X))  # another row order, same rows
    load_table(con, "corpus", X[perm])
    con.execute("UPDATE corpus SET doc_id = ?[doc_id + 1]", [perm.tolist()])
    r2 = q(con, "SELECT cluster_execute('t')")[0][0]
    nodes = "SELECT node_id, parent_cluster_id, size FROM cluster_centroids('t', run_id := '{}')"
    top = "SELECT cluster_id, size FROM cluster_centroids('t', run_id := '{}') " \
          "WHERE hierarchy_level = 0 ORDER BY 1"
    assert q(con, top.format(r1)) == q(con, top.format(r2))
    for node_id, parent, _ in q(con, nodes.format(r2)):
        assert parent is None or node_id.startswith(parent + "_sub_")
    members = "SELECT id, cluster_id FROM cluster_members('t', run_id := '{}') ORDER BY id"
    assert q(con, members.format(r1)) == q(con, members.format(r2))


def test_sampled_and_streamed_hierarchical_runs_keep_their_ids(con):
    """Runs that stream their rows (sample_size, with and without a hierarchy) are matched
    the same way; their members carry fingerprints, so assign runs can reuse them."""
    rng = np.random.default_rng(8)
    C = _unit(rng, 4, d=16)
    X = np.concatenate([_blob(rng, c, 300, spread=0.1) for c in C]).astype(np.float32)
    load_table(con, "corpus", X)
    for name, extra in (("s", ""), ("sh", ", hierarchical := true, max_hierarchy_depth := 2")):
        q(con, f"SELECT cluster_create('{name}', source := 'corpus', embedding := 'embedding', "
               f"id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': 4}}, "
               f"sample_size := 500{extra})")
        r1 = q(con, f"SELECT cluster_execute('{name}')")[0][0]
        con.execute("UPDATE corpus SET doc_id = doc_id + 0")  # same rows, rewritten
        r2 = q(con, f"SELECT cluster_execute('{name}')")[0][0]
        members = f"SELECT id, cluster_id, node_id FROM cluster_members('{name}', run_id := '{{}}') " \
                  "ORDER BY id"
        assert q(con, members.format(r1)) == q(con, members.format(r2))
        events = q(con, f"SELECT DISTINCT event FROM cluster_lineage('{name}')")
        assert events == [("continued",)]
        assert q(con, f"SELECT count(*) FROM duckcluster.members WHERE run_id = '{r2}' "
                      "AND fingerprint IS NULL") == [(0,)]


# -- the read side in the stock DuckDB CLI --------------------------------------------------

def test_lineage_centroids_and_drift_in_the_stock_cli_match_python(db_path, con):
    r1, r2 = _two_runs(con)
    q(con, "SELECT cluster_execute('fx', mode := 'assign')")
    queries = ["SELECT * FROM cluster_lineage('fx')",
               f"SELECT * FROM cluster_lineage('fx', run_id := '{r2}')",
               "SELECT * FROM cluster_centroids('fx')",
               f"SELECT * FROM cluster_drift('fx', baseline_run := '{r1}', current_run := '{r2}')",
               "SELECT * FROM cluster_drift('fx')"]
    results = {}
    for sql in queries:
        results[sql] = [tuple(r) for r in con.sql(sql).fetchall()]
    con.close()
    import duckcluster

    ro = duckcluster.connect(db_path, read_only=True)
    try:
        for sql in queries:
            got = assert_same_rows(ro, db_path, sql)
            assert got, sql
    finally:
        ro.close()
    # the persistent macro in the file: no .read at all
    out = run_cli(db_path, "SELECT * FROM duckcluster.cluster_lineage('fx')", reads=())
    assert out.returncode == 0 and not out.stderr, out.stderr
    cli = [tuple(json.loads(line).values()) for line in out.stdout.splitlines() if line.strip()]
    assert [tuple(r[:3]) for r in cli] == [tuple(r[:3]) for r in results[queries[0]]]


def test_a_new_topic_absorbed_by_a_fixed_k_is_split_off_and_born(con):
    """k-means k = 2 on topics A and B; then 60 rows of a topic C arrive (cosine 0.4 to A,
    less than A's members have to A) and k stays 2, so C lands in A. With ``split_new_topics`` the rows the previous run never saw
    that fit none of its clusters (below its own threshold) become a cluster of their own,
    born; A and B continue with their ids. Without it (the default), C stays absorbed."""
    rng = np.random.default_rng(21)
    a, b, u = _unit(rng, 3, d=16)
    u -= (u @ a) * a
    c = 0.4 * a + np.sqrt(1 - 0.4 ** 2) * u / np.linalg.norm(u)  # cosine 0.4 to A: joins it
    X1 = np.concatenate([_blob(rng, a, 100), _blob(rng, b, 100)]).astype(np.float32)
    X2 = np.concatenate([X1, _blob(rng, c, 60).astype(np.float32)])
    runs = {}
    for flag in ("false", "true"):
        load_table(con, "corpus", X1)
        name = f"nt_{flag}"
        q(con, f"SELECT cluster_create('{name}', source := 'corpus', embedding := 'embedding', "
               "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2}"
               + (", lineage := {'split_new_topics': true}" if flag == "true" else "") + ")")
        r1 = q(con, f"SELECT cluster_execute('{name}')")[0][0]
        load_table(con, "corpus", X2)
        r2 = q(con, f"SELECT cluster_execute('{name}')")[0][0]
        runs[flag] = (name, r1, r2)
    name, r1, r2 = runs["true"]
    events = sorted(q(con, f"SELECT event, previous_cluster_id, cluster_id, size FROM "
                           f"cluster_lineage('{name}', run_id := '{r2}')"))
    old_ids = sorted(r[0] for r in q(con, f"SELECT DISTINCT cluster_id FROM cluster_members("
                                          f"'{name}', run_id := '{r1}')"))
    born = [e for e in events if e[0] == "born"]
    assert [e[:3] for e in events if e[0] == "continued"] == [("continued", i, i)
                                                               for i in old_ids]
    assert len(born) == 1 and born[0][3] == 60 and born[0][2] not in old_ids
    got = q(con, f"SELECT DISTINCT cluster_id FROM cluster_members('{name}', run_id := '{r2}') "
                 "WHERE CAST(id AS INTEGER) >= 200")
    assert got == [(born[0][2],)]  # all of C, nothing else
    choices = json.loads(q(con, f"SELECT choices FROM cluster_runs('{name}') "
                                f"WHERE run_id = '{r2}'")[0][0])
    assert [s["rows"] for s in choices["new_topics"]["split_off"]] == [60]
    assert q(con, f"SELECT n_clusters FROM cluster_runs('{name}') WHERE run_id = '{r2}'") == \
        [(3,)]
    name, r1, r2 = runs["false"]
    assert "born" not in {r[0] for r in q(con, f"SELECT event FROM cluster_lineage("
                                              f"'{name}', run_id := '{r2}')")}
    assert q(con, f"SELECT n_clusters FROM cluster_runs('{name}') WHERE run_id = '{r2}'") == \
        [(2,)]


# -- warm start: a re-run starts from the previous run's clusters -------------------------

def test_warm_init_keeps_the_previous_means_and_seeds_new_centres_among_poorly_fitted_rows():
    from duckcluster.core.algorithms.kmeans import warm_init

    rng = np.random.default_rng(4)
    a, b, c = _unit(rng, 3, d=8) * 3
    X = np.concatenate([_blob(rng, a, 50), _blob(rng, b, 40), _blob(rng, c, 20)])
    prev = np.array([7] * 50 + [2] * 40 + [-1] * 20)  # c's rows are new
    C, kept, added = warm_init(X, prev, 3, seed=0)
    assert (kept, added) == (2, 1)
    np.testing.assert_allclose(C[0], X[:50].mean(axis=0))   # the largest first
    np.testing.assert_allclose(C[1], X[50:90].mean(axis=0))
    assert np.linalg.norm(C[2] - c) < 0.1                   # the new rows' centre
    C2, kept, added = warm_init(X, prev, 1, seed=0)          # fewer: the largest kept
    assert (kept, added) == (1, 0)
    np.testing.assert_allclose(C2[0], X[:50].mean(axis=0))
    np.testing.assert_array_equal(warm_init(X, prev, 3, seed=0)[0], C)  # seeded


def _warm_tables(con, name, k, extra=""):
    q(con, f"SELECT cluster_create('{name}', source := 'corpus', embedding := 'embedding', "
           f"id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': {k}}}{extra}, "
           "\"replace\" := true)")
    return q(con, f"SELECT cluster_execute('{name}')")[0][0]


def _choices(con, name, run):
    raw = q(con, f"SELECT choices FROM cluster_runs('{name}') WHERE run_id = '{run}'")[0][0]
    return json.loads(raw) if raw else {}


def test_a_re_run_starts_from_the_previous_clusters_and_says_so(con):
    """k-means k = 3, then the same rows plus a fourth topic and k = 4: the run starts from
    the three previous clusters' means plus one centre among the new rows that fit none;
    the three continue with their ids, the new topic is born whole. A re-run on unchanged
    rows starts from what the run before it started from, so it reproduces it: from scratch
    after a first run, from the same previous run after a warm one."""
    rng = np.random.default_rng(5)
    a, b, c, d = _unit(rng, 4, d=16)
    X1 = np.concatenate([_blob(rng, a, 80), _blob(rng, b, 80), _blob(rng, c, 80)])
    X2 = np.concatenate([X1, _blob(rng, d, 30)]).astype(np.float32)
    load_table(con, "corpus", X1.astype(np.float32))
    r1 = _warm_tables(con, "w", 3)
    assert "warm_start" not in _choices(con, "w", r1)  # a first run has nothing to start from
    r2 = _warm_tables(con, "w", 3)
    assert "warm_start" not in _choices(con, "w", r2)  # as r1 was fitted: from scratch
    members = "SELECT id, cluster_id FROM cluster_members('w', run_id := '{}') ORDER BY id"
    assert q(con, members.format(r1)) == q(con, members.format(r2))
    load_table(con, "corpus", X2)
    r3 = _warm_tables(con, "w", 4)
    warm = _choices(con, "w", r3)["warm_start"]
    assert (warm["from_run"], warm["kept"], warm["added"], warm["used"]) == (r2, 3, 1, True)
    events = sorted(q(con, f"SELECT event, previous_cluster_id, cluster_id, size FROM "
                           f"cluster_lineage('w', run_id := '{r3}')"))
    old = sorted({c for _, c in q(con, members.format(r2))})
    assert [e[:3] for e in events if e[0] == "continued"] == [("continued", i, i) for i in old]
    (born,) = [e for e in events if e[0] == "born"]
    assert born[3] == 30
    assert q(con, f"SELECT DISTINCT cluster_id FROM cluster_members('w', run_id := '{r3}') "
                  "WHERE CAST(id AS INTEGER) >= 240") == [(born[2],)]
    r4 = q(con, "SELECT cluster_execute('w')")[0][0]  # unchanged rows after a warm run
    assert _choices(con, "w", r4)["warm_start"]["from_run"] == r2
    assert q(con, members.format(r4)) == q(con, members.format(r3))


def test_warm_start_off_fits_from_scratch_and_a_moved_structure_wins_over_it(con):
    """``lineage := {'warm_start': false}`` records no warm start. When the rows moved (the
    split and merge fixture), a fresh start fits them much better than the previous
    clusters' means and is used instead (``used`` false)."""
    rng = np.random.default_rng(6)
    X = np.concatenate([_blob(rng, c, 60) for c in _unit(rng, 3, d=16)]).astype(np.float32)
    load_table(con, "corpus", X)
    _warm_tables(con, "off", 3, ", lineage := {'warm_start': false}")
    r = _warm_tables(con, "off", 3, ", lineage := {'warm_start': false}")
    assert "warm_start" not in _choices(con, "off", r)
    _, r2 = _two_runs(con)
    warm = _choices(con, "fx", r2)
    assert warm["warm_start"]["used"] is False
    assert warm["warm_start"]["fresh_inertia"] < 0.95 * warm["warm_start"]["inertia"]


def test_auto_warm_start_sweeps_from_the_previous_clusters_up(con):
    """auto (UMAP, then k-means swept over k): a re-run with a new, separate topic starts
    every candidate from the previous clusters, sweeps k from their number up, and the
    new topic is born while every old cluster continues. Seeded: a second definition
    doing the same gets the same clusters."""
    rng = np.random.default_rng(8)
    centres = _unit(rng, 5, d=48)
    X1 = np.concatenate([_blob(rng, c, 60, 0.05) for c in centres[:4]]).astype(np.float32)
    X2 = np.concatenate([X1, _blob(rng, centres[4], 40, 0.05).astype(np.float32)])
    got = []
    for name in ("a1", "a2"):
        load_table(con, "corpus", X1)
        q(con, f"SELECT cluster_create('{name}', source := 'corpus', embedding := 'embedding', "
               "id := 'doc_id')")
        r1 = q(con, f"SELECT cluster_execute('{name}')")[0][0]
        load_table(con, "corpus", X2)
        r2 = q(con, f"SELECT cluster_execute('{name}')")[0][0]
        got.append(q(con, f"SELECT id, cluster_id FROM cluster_members('{name}', "
                          f"run_id := '{r2}') ORDER BY id"))
    ch1, ch2 = _choices(con, "a2", r1), _choices(con, "a2", r2)
    k1 = ch1["n_clusters"]
    assert ch2["warm_start"]["from_run"] == r1 and ch2["warm_start"]["kept"] == k1
    assert min(c["n_clusters"] for c in ch2["candidates"]) == k1
    assert "warm start" in ch2["criterion"]
    events = q(con, f"SELECT event, size FROM cluster_lineage('a2', run_id := '{r2}')")
    assert sorted(e for e, _ in events) == ["born"] + ["continued"] * k1
    assert [s for e, s in events if e == "born"] == [40]
    assert got[0] == got[1]


def test_auto_warm_start_lets_a_topic_whose_rows_left_die(con):
    """auto re-run after one of four topics lost all but three of its rows: the warm sweep
    starts from the four previous clusters, but the sliver the three rows would make is a
    weak cut of UMAP's graph and is merged, so the topic dies (or merges) instead of living
    on as a cluster of three; the other three continue."""
    rng = np.random.default_rng(9)
    centres = _unit(rng, 4, d=48)
    X1 = np.concatenate([_blob(rng, c, 60, 0.05) for c in centres]).astype(np.float32)
    X2 = X1[:183]  # the fourth topic keeps 3 of its 60 rows
    load_table(con, "corpus", X1)
    q(con, "SELECT cluster_create('gone', source := 'corpus', embedding := 'embedding', "
           "id := 'doc_id')")
    r1 = q(con, "SELECT cluster_execute('gone')")[0][0]
    assert _choices(con, "gone", r1)["n_clusters"] == 4
    load_table(con, "corpus", X2)
    r2 = q(con, "SELECT cluster_execute('gone')")[0][0]
    ch = _choices(con, "gone", r2)
    assert ch["warm_start"]["kept"] == 4 and "then merges of cuts weaker than" in ch["criterion"]
    assert ch["n_clusters"] == 3 and ch["pipeline"][-1]["step"] == "merge"
    sizes = q(con, f"SELECT count(*) FROM cluster_members('gone', run_id := '{r2}') "
                   "GROUP BY cluster_id ORDER BY 1")
    assert [s for (s,) in sizes][0] >= 60
    events = q(con, f"SELECT event FROM cluster_lineage('gone', run_id := '{r2}')")
    kinds = sorted(e for (e,) in events)
    assert kinds.count("continued") >= 2 and ("died" in kinds or "merged" in kinds)
    assert "born" not in kinds
