"""Hostile identifiers work when legitimate and never run injected SQL."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duckcluster import ClusterSpec, SpecError
from conftest import blobs, load_table

HOSTILE = [
    'docs"; DROP TABLE victim; --',
    "it's; DELETE FROM victim; /* x */",
    "select",
    "Ünïcödé 表 🚀",
    "a.b",
    "-- comment",
]


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ql(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_sources_columns_ids(con, hostile):
    con.sql("CREATE TABLE victim AS SELECT 1 AS x").fetchall()
    X, _ = blobs(n_per=30, k=2, d=4)
    load_table(con, "tmp", X)
    table, column, idcol = hostile, hostile + " emb", hostile + " id"
    con.sql(f"CREATE TABLE {qi(table)} AS SELECT doc_id AS {qi(idcol)}, embedding AS {qi(column)} "
            "FROM tmp").fetchall()
    source = table if "." not in table else qi(table)  # a dotted name must be quoted
    con.sql(f"SELECT cluster_create({ql(hostile)}, source := {ql(source)}, "
            f"embedding := {ql(column)}, id := {ql(idcol)}, algorithm := 'kmeans', "
            "params := {'n_clusters': 2})").fetchall()
    run = con.sql(f"SELECT cluster_execute({ql(hostile)})").fetchall()[0][0]
    assert con.sql(f"SELECT count(*) FROM cluster_members({ql(hostile)})").fetchall() == [(60,)]
    assert con.sql(f"SELECT count(*) FROM cluster_embeddings({ql(source)}, {ql(column)}, "
                   "algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall() == [(60,)]
    assert con.sql(f"SELECT count(*) FROM {qi(table)} WHERE assign_cluster({qi(column)}, "
                   f"{ql(hostile)}) >= 0").fetchall() == [(60,)]
    assert con.sql("SELECT * FROM victim").fetchall() == [(1,)]
    path = con.sql(f"SELECT artifacts_path FROM cluster_runs({ql(hostile)})").fetchall()[0][0]
    assert path.endswith(run) and ".." not in path.split("/")[-2]
    con.sql(f"SELECT cluster_delete({ql(hostile)}, drop_artifacts := true)").fetchall()
    assert con.sql("SELECT * FROM victim").fetchall() == [(1,)]


def test_injection_through_source_is_refused(con):
    con.sql("CREATE TABLE victim AS SELECT 1 AS x").fetchall()
    X, _ = blobs(n_per=30, k=2, d=4)
    load_table(con, "docs", X)
    for source in ["docs; DROP TABLE victim", "docs UNION SELECT 1", "docs --"]:
        with pytest.raises(duckdb.Error, match="is not a table or view"):
            con.sql(f"SELECT cluster_create('t', source := {ql(source)}, embedding := 'embedding', "
                    "id := 'doc_id', algorithm := 'kmeans')").fetchall()
    assert con.sql("SELECT * FROM victim").fetchall() == [(1,)]


_names = st.text(min_size=1, max_size=40)
_values = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=10),
                    st.booleans(), st.none())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(algorithm=st.sampled_from(["kmeans", "hdbscan", "dbscan", "optics", "kmean", "x"]),
       params=st.dictionaries(st.sampled_from(["n_clusters", "min_cluster_size", "eps",
                                               "min_samples", "metric", "bogus"]), _values,
                              max_size=3),
       name=_names, extra=st.dictionaries(st.sampled_from(["sample_size", "dimensions", "seed",
                                                           "hierarchical", "nope"]),
                                          _values, max_size=2))
def test_spec_validation_property(algorithm, params, name, extra):
    """Any input either validates (and round-trips through JSON) or raises SpecError."""
    try:
        spec = ClusterSpec.from_dict({"name": name, "source": "docs", "embedding": "e",
                                      "algorithm": algorithm, "params": params, **extra})
    except SpecError as exc:
        assert str(exc)
        return
    assert ClusterSpec.from_json(spec.to_json()) == spec
    json.loads(spec.to_json())


def test_very_high_dimensions(con):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 4096))
    X = np.concatenate([c + 0.1 * rng.normal(size=(40, 4096)) for c in centers]).astype(np.float32)
    load_table(con, "wide", X)
    con.sql("SELECT cluster_create('w', source := 'wide', embedding := 'embedding', id := 'doc_id', "
            "algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
    con.sql("SELECT cluster_execute('w')").fetchall()
    assert con.sql("SELECT dim, n_clusters FROM cluster_runs('w')").fetchall() == [(4096, 3)]
    assert con.sql("SELECT count(DISTINCT assign_cluster(embedding, 'w')) FROM wide").fetchall() == [(3,)]
