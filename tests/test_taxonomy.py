"""Taxonomies: cluster_promote (flat and tree), assign_taxonomy (vectorized walk), modes, errors."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from label_data import cluster, make_docs

from duckcluster.core.assign import normalize_rows
from duckcluster.labels.taxonomy import walk_tree


def test_walk_tree_known_answers():
    """Roots by cosine; children only while at or above the threshold; ties to the lowest."""
    C = np.array([[1, 0, 0], [0, 1, 0], [1, 0.2, 0], [1, -0.2, 0], [1, 0.2, 0.3]],
                 dtype=np.float32)
    parent = np.array([-1, -1, 0, 0, 2])
    X = np.array([[1, 0.25, 0.35], [1, -0.3, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]],
                 dtype=np.float32)
    node, sim = walk_tree(X, C, parent, threshold=0.5)
    # row 4 ties between children 2 and 3, takes 2, then descends to its child 4 (cos 0.94)
    assert node.tolist() == [4, 3, -1, 1, 4]
    assert np.isnan(sim[2]) and sim[3] == pytest.approx(1.0)
    node, _ = walk_tree(X, C, parent, threshold=0.99)
    assert node.tolist() == [-1, -1, -1, 1, 0]  # row 0 stops: no child reaches 0.99
    node, _ = walk_tree(X, C, parent, threshold=None)
    assert node[2] >= 0


@pytest.fixture
def topics(con):
    make_docs(con)
    cluster(con)
    con.sql("SELECT cluster_label('topics', text := 'body')").fetchall()
    return con


def test_promote_and_assign_agree_with_assign_cluster(topics):
    con = topics
    msg = con.sql("SELECT cluster_promote('topics', taxonomy := 'product_taxonomy')"
                  ).fetchall()[0][0]
    assert msg.startswith("promoted 4 node(s) of run ") and "now has 4 node(s)" in msg
    nodes = con.sql("SELECT node_id, parent_node_id, level, label, size, source_node_id "
                    "FROM taxonomy_nodes('product_taxonomy')").fetchall()
    cents = {r[0]: r[1:] for r in con.sql(
        "SELECT node_id, label, size FROM cluster_centroids('topics')").fetchall()}
    assert [(n[0], n[1], n[2]) for n in nodes] == [(f"cl_{i}", None, 0) for i in range(4)]
    assert all((n[3], n[4]) == cents[n[0]] for n in nodes)
    diff = con.sql("SELECT count(*) FROM docs WHERE assign_taxonomy(embedding, "
                   "'product_taxonomy') IS DISTINCT FROM 'cl_' || assign_cluster(embedding, "
                   "'topics')").fetchall()[0][0]
    assert diff == 0
    detail = con.sql("SELECT assign_taxonomy_detail(embedding, 'product_taxonomy') FROM docs "
                     "WHERE id = 0").fetchall()[0][0]
    assert detail["label"] == cents[detail["node_id"]][0] and detail["path"] == [detail["node_id"]]
    assert detail["similarity"] > 0.9
    assert con.sql("SELECT taxonomy, n_nodes, dim, threshold FROM taxonomy_list()").fetchall() \
        == [("product_taxonomy", 4, 16, 0.5)]


def test_vectorized_across_vectors_with_nulls_and_thresholds(topics):
    con = topics
    con.sql("SELECT cluster_promote('topics', 'tax')").fetchall()
    con.execute("CREATE TABLE many AS SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE d.embedding "
                "END AS embedding FROM range(5000) r(i) JOIN docs d ON d.id = i % 120")
    rows = con.sql("SELECT count(*), count(assign_taxonomy(embedding, 'tax')), "
                   "count(*) FILTER (WHERE embedding IS NULL) FROM many").fetchall()[0]
    assert rows[0] == 5000 and rows[1] == 5000 - rows[2]
    far = "[" + ", ".join(["-1"] + ["0"] * 15) + "]::FLOAT[16]"
    assert con.sql(f"SELECT assign_taxonomy({far}, 'tax')").fetchall() == [(None,)]
    assert con.sql(f"SELECT assign_taxonomy({far}, 'tax', threshold := -1)").fetchall()[0][0] \
        .startswith("cl_")
    assert con.sql("SELECT assign_taxonomy(NULL::FLOAT[16], 'tax')").fetchall() == [(None,)]


def test_choose_clusters_filters_and_modes(topics):
    con = topics
    con.sql("SELECT cluster_promote('topics', 'tax', clusters := [0, 2])").fetchall()
    assert [r[0] for r in con.sql("SELECT node_id FROM taxonomy_nodes('tax')").fetchall()] \
        == ["cl_0", "cl_2"]
    with pytest.raises(duckdb.Error, match="Taxonomy 'tax' already exists. Pass mode := "
                                           "'replace'"):
        con.sql("SELECT cluster_promote('topics', 'tax')").fetchall()
    con.sql("SELECT cluster_promote('topics', 'tax', clusters := [1], mode := 'merge')"
            ).fetchall()
    assert con.sql("SELECT n_nodes FROM taxonomy_list()").fetchall() == [(3,)]
    with pytest.raises(duckdb.Error, match="No cluster of run .* qualifies"):
        con.sql("SELECT cluster_promote('topics', 'tax', mode := 'replace', min_size := 31)"
                ).fetchall()
    assert con.sql("SELECT n_nodes FROM taxonomy_list()").fetchall() == [(3,)]  # untouched
    con.sql("SELECT cluster_promote('topics', 'tax', mode := 'replace')").fetchall()
    assert con.sql("SELECT n_nodes FROM taxonomy_list()").fetchall() == [(4,)]
    with pytest.raises(duckdb.Error, match=r"clusters: 9 is not a cluster of this run"):
        con.sql("SELECT cluster_promote('topics', 'tax2', clusters := [9])").fetchall()
    with pytest.raises(duckdb.Error, match="'mode' parameter of cluster_promote must be one of"):
        con.sql("SELECT cluster_promote('topics', 'tax2', mode := 'upsert')").fetchall()


def test_merge_two_definitions_with_prefixes(topics):
    con = topics
    cluster(con, "topics2", k=2)
    con.sql("SELECT cluster_promote('topics', 'all', prefix := 'a.')").fetchall()
    con.sql("SELECT cluster_promote('topics2', 'all', prefix := 'b.', mode := 'merge')"
            ).fetchall()
    rows = con.sql("SELECT node_id, source_name FROM taxonomy_nodes('all')").fetchall()
    assert len(rows) == 6 and {r[1] for r in rows} == {"topics", "topics2"}


def test_errors_name_the_fix(topics):
    con = topics
    con.sql("SELECT cluster_promote('topics', 'product_taxonomy')").fetchall()
    with pytest.raises(duckdb.Error, match="No taxonomy named 'product_taxonmy'. Did you mean "
                                           "'product_taxonomy'?"):
        con.sql("SELECT assign_taxonomy(embedding, 'product_taxonmy') FROM docs").fetchall()
    with pytest.raises(duckdb.Error, match="the embedding has 3 dimensions but taxonomy "
                                           "'product_taxonomy' has 16"):
        con.sql("SELECT assign_taxonomy([1, 2, 3], 'product_taxonomy')").fetchall()
    assert con.sql("SELECT taxonomy_delete('product_taxonomy')").fetchall() == \
        [("deleted taxonomy 'product_taxonomy'",)]
    with pytest.raises(duckdb.Error, match="No taxonomy named 'product_taxonomy'"):
        con.sql("SELECT assign_taxonomy(embedding, 'product_taxonomy') FROM docs").fetchall()


def test_hierarchical_run_promotes_as_a_tree(con):
    rng = np.random.default_rng(0)
    d = 32
    tops = normalize_rows(rng.normal(size=(2, d)))
    X = []
    for t in range(2):
        for s in range(2):
            centre = tops[t] + 0.35 * normalize_rows(rng.normal(size=(1, d)))[0]
            X.append(centre + 0.02 * rng.normal(size=(100, d)))
    X = normalize_rows(np.vstack(X))
    con.register("t", pa.table({"id": np.arange(400), "embedding":
                                pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), d)}))
    con.execute(f"CREATE TABLE nested AS SELECT id, CAST(embedding AS FLOAT[{d}]) AS embedding "
                "FROM t")
    cluster(con, "tree", "nested", k=2, hierarchical="true", max_hierarchy_depth=2)
    msg = con.sql("SELECT cluster_promote('tree', 'tree_tax', threshold := 0.8)").fetchall()[0][0]
    assert "promoted 6 node(s)" in msg and "(2 level(s))" in msg
    nodes = con.sql("SELECT node_id, parent_node_id, level FROM taxonomy_nodes('tree_tax')"
                    ).fetchall()
    assert nodes == [("cl_0", None, 0), ("cl_1", None, 0), ("cl_0_sub_0", "cl_0", 1),
                     ("cl_0_sub_1", "cl_0", 1), ("cl_1_sub_0", "cl_1", 1),
                     ("cl_1_sub_1", "cl_1", 1)]
    agree = con.sql("SELECT avg((assign_taxonomy_detail(n.embedding, 'tree_tax').path[-1] = "
                    "m.node_id)::INT), min(len(assign_taxonomy_detail(n.embedding, 'tree_tax')"
                    ".path)) FROM nested n JOIN cluster_members('tree') m ON m.id = "
                    "CAST(n.id AS VARCHAR)").fetchall()[0]
    assert agree[0] >= 0.95 and agree[1] == 2
    con.sql("SELECT cluster_promote('tree', 'sub', clusters := ['cl_1'])").fetchall()
    assert con.sql("SELECT node_id, parent_node_id, level FROM taxonomy_nodes('sub')"
                   ).fetchall() == [("cl_1", None, 0), ("cl_1_sub_0", "cl_1", 1),
                                    ("cl_1_sub_1", "cl_1", 1)]
    con.sql("SELECT cluster_promote('tree', 'leaves', clusters := ['cl_0_sub_1'])").fetchall()
    assert con.sql("SELECT node_id, parent_node_id, level FROM taxonomy_nodes('leaves')"
                   ).fetchall() == [("cl_0_sub_1", None, 0)]
