"""The catalog's own rules: its version is read on open, migrations run in order, and a
catalog written by a newer duckcluster is refused before anything changes."""

from __future__ import annotations

import duckdb
import pytest

import duckcluster
from duckcluster import catalog


def test_a_fresh_catalog_records_the_current_version(tmp_path):
    con = duckcluster.connect(str(tmp_path / "a.duckdb"))
    assert con.sql("SELECT value FROM duckcluster.meta WHERE key = 'catalog_version'"
                   ).fetchall() == [(str(catalog.CATALOG_VERSION),)]
    con.close()


def test_a_newer_catalog_is_refused_and_left_as_it_was(tmp_path):
    path = str(tmp_path / "b.duckdb")
    duckcluster.connect(path).close()
    raw = duckdb.connect(path)
    raw.execute("UPDATE duckcluster.meta SET value = '999' WHERE key = 'catalog_version'")
    raw.close()
    with pytest.raises(duckcluster.DuckclusterError, match="catalog is version 999, written by "
                       "a newer duckcluster; this one understands up to version"):
        duckcluster.connect(path)
    raw = duckdb.connect(path, read_only=True)
    assert raw.sql("SELECT value FROM duckcluster.meta WHERE key = 'catalog_version'"
                   ).fetchall() == [("999",)]
    raw.close()


def test_migrations_run_in_order_above_the_stored_version(tmp_path, monkeypatch):
    path = str(tmp_path / "c.duckdb")
    duckcluster.connect(path).close()
    seen = []
    target = catalog.CATALOG_VERSION + 2
    monkeypatch.setattr(catalog, "CATALOG_VERSION", target)
    monkeypatch.setattr(catalog, "MIGRATIONS", {
        target - 1: lambda cur: seen.append(target - 1),
        target: lambda cur: (seen.append(target),
                             cur.execute("CREATE TABLE duckcluster.migrated AS SELECT 1 AS x"))})
    con = duckcluster.connect(path)
    assert seen == [target - 1, target]
    assert con.sql("SELECT value FROM duckcluster.meta WHERE key = 'catalog_version'"
                   ).fetchall() == [(str(target),)]
    assert con.sql("SELECT x FROM duckcluster.migrated").fetchall() == [(1,)]
    con.close()
    seen.clear()
    duckcluster.connect(path).close()  # already at the target: nothing runs again
    assert seen == []


def test_delete_with_drop_artifacts_empties_every_definition_table(tmp_path):
    con = duckcluster.connect(str(tmp_path / "d.duckdb"))
    tables = {r[0] for r in con.sql(
        "SELECT table_name FROM duckdb_columns() c JOIN duckdb_tables() t "
        "USING (schema_name, table_name) WHERE schema_name = 'duckcluster' "
        "AND column_name = 'name'").fetchall()}  # tables only: the read views have names too
    # every catalog table keyed by a definition name is in the one declared list
    # (definitions itself is deleted first; drift monitors are named by the monitor)
    keyed = tables - {"definitions", "drift_monitors"}
    assert keyed == set(catalog.DEFINITION_TABLES), keyed ^ set(catalog.DEFINITION_TABLES)
    con.close()


def test_read_only_open_of_a_catalog_older_than_its_read_side(tmp_path):
    """A file last written by an older duckcluster lacks columns the read side reads: a
    read-only connection says so and how to upgrade (not a binder error); after one
    read-write open it reads the same rows read-only."""
    from conftest import blobs, load_table

    db = str(tmp_path / "old.duckdb")
    con = duckcluster.connect(db)
    load_table(con, "docs", blobs(n_per=30, k=3, d=8)[0])
    con.sql("SELECT cluster_create('t', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
    con.sql("SELECT cluster_execute('t')").fetchall()
    want = con.sql("SELECT id, cluster_id FROM cluster_members('t') ORDER BY id").fetchall()
    con.close()
    plain = duckdb.connect(db)  # what an older duckcluster left
    for col in ("runs.progress", "runs.choices", "labels.carried_from_run_id"):
        table, column = col.split(".")
        plain.sql(f"ALTER TABLE duckcluster.{table} DROP COLUMN {column}").fetchall()
    plain.close()
    with pytest.raises(duckcluster.DataError) as err:
        duckcluster.connect(db, read_only=True)
    msg = str(err.value)
    assert "older duckcluster" in msg and "Open it read-write once" in msg
    assert all(c in msg for c in ("runs.progress", "runs.choices", "labels.carried_from_run_id"))
    duckcluster.connect(db).close()  # the upgrade
    ro = duckcluster.connect(db, read_only=True)
    assert ro.sql("SELECT id, cluster_id FROM cluster_members('t') ORDER BY id").fetchall() == want
    assert len(ro.sql("SELECT * FROM cluster_centroids('t')").fetchall()) == 3
    ro.close()
