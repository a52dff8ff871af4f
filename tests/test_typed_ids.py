"""Ids come back in the source's own type: cluster_members, assign runs, sampled runs,
Parquet artifacts, cluster_assign_parquet and cluster_enrich, in Python and the stock CLI;
files from before typed ids keep working (text ids read-only, typed once opened read-write).
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

import duckcluster
from conftest import blobs, load_table
from test_stock_cli import run_cli

ID_TYPES = {
    "INTEGER": "CAST(doc_id AS INTEGER)",
    "BIGINT": "doc_id * 1000000000000",
    "UUID": "md5(doc_id::VARCHAR)::UUID",
    "VARCHAR": "'doc-' || doc_id",
    "DATE": "DATE '2024-01-01' + CAST(doc_id AS INTEGER)",
}


def q(con, sql, params=None):
    return con.sql(sql, params=params).fetchall()


@pytest.fixture
def con(tmp_path):
    c = duckcluster.connect(str(tmp_path / "typed.duckdb"))
    X, _ = blobs(n_per=30, k=3, d=8, seed=3)
    load_table(c, "raw", X)
    for t, expr in ID_TYPES.items():
        q(c, f"CREATE TABLE docs_{t.lower()} AS SELECT {expr} AS doc_id, embedding FROM raw")
    yield c
    c.close()


def create(con, name, table, **extra):
    args = ", ".join(f"{k} := {v}" for k, v in extra.items())
    q(con, f"SELECT cluster_create('{name}', source := '{table}', embedding := 'embedding', "
           f"id := 'doc_id', algorithm := 'kmeans', params := {{'n_clusters': 3}}"
           + (f", {args}" if args else "") + ")")
    return q(con, f"SELECT cluster_execute('{name}')")[0][0]


@pytest.mark.parametrize("id_type", ID_TYPES)
def test_members_ids_have_the_source_type_and_join_without_a_cast(con, id_type):
    table = f"docs_{id_type.lower()}"
    run = create(con, "t", table)
    assert q(con, "SELECT DISTINCT typeof(id) FROM cluster_members('t')") == [(id_type,)]
    assert q(con, "SELECT DISTINCT typeof(id) FROM duckcluster.cluster_members('t')") == [(id_type,)]
    n = q(con, f"SELECT count(*) FROM {table}")[0][0]
    assert q(con, f"SELECT count(*) FROM {table} d JOIN cluster_members('t') m "
                  "ON m.id = d.doc_id") == [(n,)]
    assert q(con, f"SELECT count(*) FROM {table} WHERE doc_id IN "
                  "(SELECT id FROM cluster_members('t'))") == [(n,)]
    # ORDER BY id sorts in the id's own order (numbers as numbers)
    ids = [r[0] for r in q(con, "SELECT id FROM cluster_members('t') ORDER BY id")]
    assert ids == [r[0] for r in q(con, f"SELECT doc_id FROM {table} ORDER BY doc_id")]
    path = q(con, "SELECT artifacts_path FROM duckcluster.runs WHERE run_id = ?", [run])[0][0]
    assert q(con, f"SELECT DISTINCT typeof(id) FROM read_parquet('{path}/members.parquet')") \
        == [(id_type,)]
    # the catalog table keeps text, for views that span definitions
    assert q(con, "SELECT DISTINCT typeof(id) FROM duckcluster.latest_members") == [("VARCHAR",)]


def test_assign_and_sampled_runs_keep_the_type(con):
    create(con, "t", "docs_bigint", sample_size=40)
    assert q(con, "SELECT DISTINCT typeof(id), count(*) FROM cluster_members('t') GROUP BY ALL") \
        == [("BIGINT", 90)]
    q(con, "SELECT cluster_execute('t', mode := 'assign')")
    assert q(con, "SELECT DISTINCT typeof(id) FROM cluster_members('t')") == [("BIGINT",)]
    assert q(con, "SELECT max(id) FROM cluster_members('t')") == [(89 * 10**12,)]


def test_enrich_and_assign_parquet_keep_the_source_type(con, tmp_path):
    create(con, "t", "docs_uuid")
    q(con, "SELECT cluster_enrich('t', 'docs_enriched', fields := ['cluster_id'])")
    assert q(con, "SELECT DISTINCT typeof(doc_id) FROM docs_enriched") == [("UUID",)]
    src = tmp_path / "src.parquet"
    q(con, f"COPY docs_uuid TO '{src}' (FORMAT parquet)")
    q(con, f"SELECT * FROM cluster_assign_parquet('t', '{src}', '{tmp_path / 'out'}', "
           "id := 'doc_id')")
    assert q(con, f"SELECT DISTINCT typeof(doc_id) FROM read_parquet('{tmp_path / 'out'}/*.parquet')") \
        == [("UUID",)]


def test_the_view_follows_a_source_whose_id_type_changed(con):
    create(con, "t", "docs_integer")
    q(con, "CREATE OR REPLACE TABLE docs_integer AS SELECT 'doc-' || doc_id AS doc_id, embedding "
           "FROM docs_integer")
    q(con, "SELECT cluster_execute('t')")
    assert q(con, "SELECT DISTINCT typeof(id) FROM cluster_members('t')") == [("VARCHAR",)]


def test_names_that_differ_only_in_case_have_their_own_views(con):
    create(con, "Topics", "docs_integer")
    create(con, "topics", "docs_varchar")
    assert q(con, "SELECT DISTINCT typeof(id) FROM cluster_members('Topics')") == [("INTEGER",)]
    assert q(con, "SELECT DISTINCT typeof(id) FROM cluster_members('topics')") == [("VARCHAR",)]
    q(con, "SELECT cluster_delete('Topics')")
    assert q(con, "SELECT count(*) FROM cluster_members('topics')") == [(90,)]
    with pytest.raises(Exception, match="No cluster definition named 'Topics'"):
        q(con, "SELECT * FROM cluster_members('Topics')")


def test_the_stock_cli_reads_typed_ids(con):
    create(con, "t", "docs_bigint")
    db = q(con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")[0][0]
    con.close()
    for reads, fn in (((), "duckcluster.cluster_members"), (("sql/duckcluster.sql",), "cluster_members")):
        out = run_cli(db, f"SELECT typeof(id) AS t, max(id) AS m FROM {fn}('t') GROUP BY ALL",
                      reads=reads)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"t": "BIGINT", "m": 89 * 10**12}


def _as_before_typed_ids(con) -> str:
    """A file as duckcluster wrote it before typed ids: no views, no persistent read side."""
    for name in [r[0] for r in q(con, "SELECT name FROM duckcluster.definitions")]:
        from duckcluster.catalog.read_side import drop_members_view

        drop_members_view(con, name)
    for r in q(con, "SELECT view_name FROM duckdb_views() WHERE schema_name = 'duckcluster'"):
        q(con, f'DROP VIEW duckcluster."{r[0]}"')
    for r in q(con, "SELECT DISTINCT function_name FROM duckdb_functions() WHERE "
                    "schema_name = 'duckcluster' AND database_name <> 'temp'"):
        q(con, f"DROP MACRO TABLE IF EXISTS duckcluster.{r[0]}")
        q(con, f"DROP MACRO IF EXISTS duckcluster.{r[0]}")
    q(con, "DELETE FROM duckcluster.meta WHERE key = 'read_side'")
    db = q(con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")[0][0]
    con.close()
    return db


def test_a_file_from_before_typed_ids(con):
    create(con, "t", "docs_bigint")
    db = _as_before_typed_ids(con)
    with duckcluster.connect(db, read_only=True) as ro:  # cannot add views: text ids, as before
        assert q(ro, "SELECT DISTINCT typeof(id), count(*) FROM cluster_members('t') GROUP BY ALL") \
            == [("VARCHAR", 90)]
    with duckcluster.connect(db) as rw:  # opened read-write once: views and read side added
        assert q(rw, "SELECT DISTINCT typeof(id) FROM cluster_members('t')") == [("BIGINT",)]
    out = run_cli(db, "SELECT count(*) AS n FROM duckcluster.cluster_members('t')", reads=())
    assert out.returncode == 0 and json.loads(out.stdout) == {"n": 90}, out.stderr
    with duckcluster.connect(db, read_only=True) as ro:
        assert q(ro, "SELECT DISTINCT typeof(id) FROM cluster_members('t')") == [("BIGINT",)]


def test_a_source_that_is_gone_gives_text_ids_after_migration(con):
    create(con, "t", "docs_bigint")
    q(con, "DROP TABLE docs_bigint")
    db = _as_before_typed_ids(con)
    with duckcluster.connect(db) as rw:
        assert q(rw, "SELECT DISTINCT typeof(id), count(*) FROM cluster_members('t') GROUP BY ALL") \
            == [("VARCHAR", 90)]


def test_members_of_a_definition_created_or_deleted_after_install(con):
    """The view a name reads is looked up in a macro duckcluster rewrites whenever the set of
    definitions changes: a definition created on this connection is readable at once, one
    deleted gives the unknown-name error (not DuckDB's missing-table one)."""
    create(con, "later", "docs_integer")
    assert q(con, "SELECT DISTINCT typeof(id) FROM cluster_members('later')") == [("INTEGER",)]
    cur = con.cursor()  # another connection to the same file sees it too
    duckcluster.install(cur)
    assert q(cur, "SELECT count(*) FROM duckcluster.cluster_members('later')") == [(90,)]
    q(con, "SELECT cluster_delete('later')")
    for c in (con, cur):
        with pytest.raises(duckdb.Error, match="No cluster definition named 'later'. List them"):
            q(c, "SELECT * FROM cluster_members('later')")
    cur.close()


def test_a_read_only_file_written_before_the_lookup_macro(con):
    """Typed views but no duckcluster._dc_members_view_of (written by an older duckcluster):
    a read-only open still reads members; a read-write open adds the macro."""
    create(con, "t", "docs_bigint")
    q(con, "DROP MACRO duckcluster._dc_members_view")  # it calls the lookup macro
    q(con, "DROP MACRO duckcluster._dc_members_view_of")
    q(con, "DELETE FROM duckcluster.meta WHERE key = 'read_side'")
    db = q(con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")[0][0]
    con.close()
    with duckcluster.connect(db, read_only=True) as ro:
        assert q(ro, "SELECT DISTINCT typeof(id), count(*) FROM cluster_members('t') GROUP BY ALL") \
            == [("BIGINT", 90)]
    with duckcluster.connect(db) as rw:
        with pytest.raises(duckdb.Error, match="No cluster definition named 'x'"):
            q(rw, "SELECT * FROM cluster_members('x')")
    out = run_cli(db, "SELECT count(*) AS n FROM duckcluster.cluster_members('t')", reads=())
    assert out.returncode == 0 and json.loads(out.stdout) == {"n": 90}, out.stderr
