"""embedding_drift_explain from SQL: the new region is found with its shares, and its
example_ids come back in the id column's own type (issue 18: no cast to join them back)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blobs, load_table
from test_typed_ids import ID_TYPES


@pytest.fixture
def sides(con):
    """base: 4 blobs x 60 rows; cur: 3 of them + a 5th blob (60 rows), topic in ``topic``."""
    X, y = blobs(n_per=60, k=5, d=16, spread=0.2, seed=4)
    base = y < 4
    cur = y != 3
    load_table(con, "raw_base", X[base], topic=y[base].astype(np.int32))
    load_table(con, "raw_cur", X[cur], topic=y[cur].astype(np.int32))
    con.sql("UPDATE raw_cur SET doc_id = doc_id + 1000").fetchall()
    return con


def explain(con, baseline, current, **kw):
    args = "".join(f", {k} := {v}" for k, v in kw.items())
    rel = con.sql(f"SELECT * FROM embedding_drift_explain('{baseline}', '{current}', "
                  f"'embedding'{args})")
    cols = [d[0] for d in rel.description]
    types = dict(zip(cols, (str(t) for t in rel.types)))
    return [dict(zip(cols, r)) for r in rel.fetchall()], types


def test_the_new_blob_is_the_top_new_region(sides):
    out, _ = explain(sides, "raw_base", "raw_cur", id="'doc_id'", text="'topic::VARCHAR'")
    new = [r for r in out if r["kind"] == "new"]
    assert new, out
    assert all(r["n_baseline"] == 0 for r in new)
    assert sum(r["n_current"] for r in new) >= 50  # the 60 rows (a region may split them)
    assert new[0]["p_value_adjusted"] < 0.05
    ids = [i for r in new for i in r["example_ids"]]
    topics = sides.sql("SELECT topic FROM raw_cur WHERE doc_id IN (SELECT unnest(?))",
                       params=[ids]).fetchall()
    assert {t for (t,) in topics} == {4}


@pytest.mark.parametrize("id_type", ID_TYPES)
def test_example_ids_have_the_source_type_and_join_without_a_cast(sides, id_type):
    expr = ID_TYPES[id_type]
    for side in ("base", "cur"):
        sides.sql(f"CREATE TABLE {side}_{id_type} AS SELECT {expr} AS doc_id, topic, embedding "
                  f"FROM raw_{side}").fetchall()
    out, types = explain(sides, f"base_{id_type}", f"cur_{id_type}", id="'doc_id'")
    assert types["example_ids"] == f"{id_type}[]"
    got = [(r["region_id"], i) for r in out for i in r["example_ids"]]
    assert got
    n = sides.sql(f"SELECT count(*) FROM (SELECT unnest(example_ids) AS e FROM "
                  f"embedding_drift_explain('base_{id_type}', 'cur_{id_type}', 'embedding', "
                  f"id := 'doc_id')) x JOIN (SELECT doc_id FROM base_{id_type} UNION ALL "
                  f"SELECT doc_id FROM cur_{id_type}) d ON d.doc_id = x.e").fetchall()[0][0]
    assert n == len(got)


def test_sides_as_queries_parquet_and_the_default_id_column(sides, tmp_path):
    sides.sql("CREATE TABLE b2 AS SELECT CAST(doc_id AS INTEGER) AS id, embedding "
              "FROM raw_base").fetchall()
    path = tmp_path / "cur.parquet"
    sides.sql(f"COPY (SELECT CAST(doc_id AS INTEGER) AS id, embedding FROM raw_cur) TO "
              f"'{path}' (FORMAT parquet)").fetchall()
    out, types = explain(sides, "(SELECT * FROM b2 WHERE id >= 0)", str(path))
    assert types["example_ids"] == "INTEGER[]"
    new = [r for r in out if r["kind"] == "new"][0]
    assert all(i >= 1000 for i in new["example_ids"])  # current rows, ids as stored


def test_sides_without_ids_name_rows_as_text(sides):
    out, types = explain(sides, "(SELECT embedding FROM raw_base)",
                         "(SELECT embedding FROM raw_cur)")
    assert types["example_ids"] == "VARCHAR[]"
    new = [r for r in out if r["kind"] == "new"][0]
    assert all(i.startswith("current row ") for i in new["example_ids"])


def test_an_unknown_side_fails_naming_it(sides):
    import duckdb

    with pytest.raises(duckdb.Error, match="no_such_table"):
        sides.sql("SELECT * FROM embedding_drift_explain('no_such_table', 'raw_cur', "
                  "'embedding')").fetchall()
