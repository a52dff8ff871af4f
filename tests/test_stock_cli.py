"""The read side in the real stock DuckDB CLI (the duckdb-cli wheel, no Python inside it).

A database is built with duckcluster in Python (kmeans, hdbscan and hierarchical
definitions, a full and an assign run, a failed run, a table of unseen rows), closed,
then opened read-only by the CLI, which loads ``sql/duckcluster.sql`` with ``.read``.
Every read-side function must give the Python connection's rows, row for row; for
assign_cluster that compares the pure SQL macros with Python's Arrow UDFs.
"""

from __future__ import annotations

import json
import re
import math
import subprocess
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest

from conftest import blobs, load_table, stock_cli

ROOT = Path(__file__).resolve().parent.parent
READ_SIDE = "sql/duckcluster.sql"  # relative to ROOT, as a user types it in the CLI




def run_cli(db: str, *commands: str, read_only: bool = True,
            reads: tuple[str, ...] = (READ_SIDE,)) -> subprocess.CompletedProcess:
    """Run the CLI in the repo root on ``db``: ``.read`` each of ``reads``, then ``commands``.

    Output is one JSON object per row; the CLI stops at the first error (-bail).
    """
    args = [stock_cli(), "-no-init", "-bail", "-jsonlines", *(["-readonly"] if read_only else []), db]
    for command in [f".read {path}" for path in reads] + list(commands):
        args += ["-c", command]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)


def cli_rows(db: str, query: str) -> list[dict]:
    out = run_cli(db, query)
    assert out.returncode == 0 and not out.stderr, f"{query}\n{out.stderr}"
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def cli_error(db: str, query: str) -> str:
    out = run_cli(db, query)
    assert out.returncode != 0, f"{query} succeeded in the CLI; expected an error"
    return out.stderr.strip().splitlines()[0]


def py_error(con, query: str) -> str:
    with pytest.raises(Exception) as info:
        con.sql(query).fetchall()
    return str(info.value).splitlines()[0]


def same(py, cli) -> bool:
    """A Python-fetched value equals the CLI's JSON rendering of it (floats within 1e-5)."""
    if py is None or cli is None:
        return py is None and cli is None
    if isinstance(py, datetime):
        return py == datetime.fromisoformat(cli)
    if isinstance(py, float):
        return (math.isnan(py) and math.isnan(cli)) or math.isclose(py, cli, rel_tol=1e-5, abs_tol=1e-5)
    if isinstance(py, str) and not isinstance(cli, str):  # a JSON column: the CLI inlines it
        return json.loads(py) == cli
    if isinstance(py, (list, tuple)):
        return isinstance(cli, list) and len(py) == len(cli) and all(map(same, py, cli))
    if isinstance(py, dict):
        return isinstance(cli, dict) and list(py) == list(cli) and all(same(py[k], cli[k]) for k in py)
    return py == cli


def assert_same_rows(con, db: str, query: str) -> list[dict]:
    rel = con.sql(query)
    columns, py = rel.columns, rel.fetchall()
    cli = cli_rows(db, query)
    if cli:
        assert list(cli[0]) == columns, f"{query}: column names differ"
    assert len(py) == len(cli), f"{query}: Python has {len(py)} rows, the CLI {len(cli)}"
    for i, (p, c) in enumerate(zip(py, cli)):
        for name, pv in zip(columns, p):
            assert same(pv, c[name]), f"{query}: row {i}, column {name}: Python {pv!r}, CLI {c[name]!r}"
    return cli


# -- the database ---------------------------------------------------------------------

N_NEW_NEAR = 2100  # new_docs crosses the 2,048-row vector boundary of the Arrow UDF
FAR_IDS = range(100_000, 100_012)
NULL_ID = 200_000


def _far_from_every_centroid(C: np.ndarray, n: int, rng) -> np.ndarray:
    """Rows with cosine ~0.3 to one centroid and clearly less to the others (no near ties)."""
    Q, _ = np.linalg.qr(C.T.astype(np.float64))
    V = rng.normal(size=(n, C.shape[1]))
    V -= (V @ Q) @ Q.T
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    return (V + 0.3 * C[rng.integers(0, len(C), n)]).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(db path, run ids) of a database written by duckcluster and closed."""
    import duckcluster

    db = str(tmp_path_factory.mktemp("stock_cli") / "analytics.duckdb")
    con = duckcluster.connect(db)
    X, y = blobs(n_per=50, k=4, d=16, seed=1)
    rng = np.random.default_rng(7)
    load_table(con, "docs", np.concatenate([X, rng.normal(size=(12, 16)).astype(np.float32)]))

    def one(sql: str):
        return con.sql(sql).fetchall()[0][0]

    common = "source := 'docs', embedding := 'embedding', id := 'doc_id'"
    one(f"SELECT cluster_create('topics', {common}, algorithm := 'kmeans', params := {{'n_clusters': 4}})")
    one(f"SELECT cluster_create('dense', {common}, algorithm := 'hdbscan', params := {{'min_cluster_size': 10}})")
    one(f"SELECT cluster_create('nested', {common}, algorithm := 'kmeans', params := {{'n_clusters': 2}}, "
        "hierarchical := true, max_hierarchy_depth := 2)")
    one(f"SELECT cluster_create('pending', {common}, algorithm := 'kmeans', params := {{'n_clusters': 2}})")
    runs = {"topics_full": one("SELECT cluster_execute('topics')"),
            "dense": one("SELECT cluster_execute('dense')"),
            "nested": one("SELECT cluster_execute('nested')")}
    # rows added after the fit, then an incremental run on the full run's centroids
    con.sql("INSERT INTO docs SELECT doc_id + 1000, embedding FROM docs WHERE doc_id < 10").fetchall()
    runs["topics_assign"] = one("SELECT cluster_execute('topics', mode := 'assign', "
                                "assignment_threshold := 0.9)")
    # a failed run: the source is gone by the time it executes
    con.sql("CREATE TABLE gone AS SELECT * FROM docs").fetchall()
    one("SELECT cluster_create('broken', source := 'gone', embedding := 'embedding', id := 'doc_id', "
        "algorithm := 'kmeans', params := {'n_clusters': 2})")
    con.sql("DROP TABLE gone").fetchall()
    with pytest.raises(Exception, match="not a table or view"):
        con.sql("SELECT cluster_execute('broken')").fetchall()

    C = np.array([r[0] for r in con.sql(
        f"SELECT centroid FROM cluster_centroids('topics', run_id := '{runs['topics_full']}') "
        "WHERE hierarchy_level = 0").fetchall()], dtype=np.float32)
    near = X[rng.integers(0, len(X), N_NEW_NEAR)] + 0.05 * rng.normal(size=(N_NEW_NEAR, 16))
    far = _far_from_every_centroid(C, len(FAR_IDS), rng)
    load_table(con, "new_docs", np.concatenate([near, far]).astype(np.float32))
    con.sql(f"UPDATE new_docs SET doc_id = {FAR_IDS.start} + doc_id - {N_NEW_NEAR} "
            f"WHERE doc_id >= {N_NEW_NEAR}").fetchall()
    con.sql(f"INSERT INTO new_docs VALUES ({NULL_ID}, NULL)").fetchall()
    # rows assign_cluster refuses (no direction), and extreme but valid ones
    zeros, huge = ", ".join(["0.0::FLOAT"] * 16), ", ".join(["3e18::FLOAT"] * 16)
    con.sql(f"CREATE TABLE odd_docs AS SELECT * FROM (VALUES (1, array_value({zeros})), "
            f"(2, array_value('nan'::FLOAT, {zeros[:-len(', 0.0::FLOAT')]})), "
            f"(3, array_value({huge}))) v(doc_id, embedding)").fetchall()
    con.close()
    return db, runs


@pytest.fixture(scope="module")
def py(built):
    """A read-only Python connection on the same file: the UDF-backed versions."""
    import duckcluster

    con = duckcluster.connect(built[0], read_only=True)
    yield con
    con.close()


# -- read-side functions, row for row ---------------------------------------------------

READ_QUERIES = {
    "members_latest_is_assign_run": "SELECT * FROM cluster_members('topics')",
    "members_full_run": "SELECT * FROM cluster_members('topics', run_id := '{topics_full}')",
    "members_hdbscan_noise": "SELECT * FROM cluster_members('dense')",
    "members_hierarchical": "SELECT * FROM cluster_members('nested')",
    "centroids": "SELECT * FROM cluster_centroids('topics')",
    "centroids_full_run": "SELECT * FROM cluster_centroids('topics', run_id := '{topics_full}')",
    "centroids_hdbscan": "SELECT * FROM cluster_centroids('dense')",
    "centroids_hierarchical": "SELECT * FROM cluster_centroids('nested')",
    "quality": "SELECT * FROM cluster_quality('topics')",
    "quality_full_run": "SELECT * FROM cluster_quality('topics', run_id := '{topics_full}')",
    "quality_hdbscan": "SELECT * FROM cluster_quality('dense')",
    "runs": "SELECT * FROM cluster_runs('topics')",
    "runs_failed": "SELECT * FROM cluster_runs('broken')",
    "runs_none": "SELECT * FROM cluster_runs('pending')",
    "list": "SELECT * FROM cluster_list()",
    "group_by_cluster": "SELECT cluster_id, count(*) AS n FROM cluster_members('dense') GROUP BY ALL ORDER BY ALL",
    "drift_latest_vs_previous": "SELECT * FROM cluster_drift('topics')",
    # the pure-SQL listings of the other areas live in sql/duckcluster.sql too
    "label_failures": "SELECT * FROM cluster_label_failures('topics')",
    "enrichments": "SELECT * FROM cluster_enrichments('topics')",
    "taxonomy_list": "SELECT * FROM taxonomy_list()",
    "drift_monitor_list": "SELECT * FROM drift_monitor_list()",
    "drift_monitors_deprecated_alias": "SELECT * FROM drift_monitors()",
    "trigger_history": "SELECT * FROM cluster_trigger_history()",
    "webhook_list": "SELECT * FROM cluster_webhook_list()",
    "webhook_deliveries": "SELECT * FROM cluster_webhook_deliveries('topics')",
}


@pytest.mark.parametrize("key", READ_QUERIES)
def test_read_side_matches_python(built, py, key):
    db, runs = built
    assert_same_rows(py, db, READ_QUERIES[key].format(**runs))


def test_the_database_has_what_the_comparisons_need(built):
    """Guards against vacuous comparisons: noise, hierarchy, both run modes, a failure."""
    db, runs = built
    assert cli_rows(db, "SELECT count(*) AS n FROM cluster_members('dense') WHERE cluster_id = -1")[0]["n"] > 0
    assert cli_rows(db, "SELECT max(hierarchy_level) AS h FROM cluster_centroids('nested')")[0]["h"] == 1
    modes = cli_rows(db, "SELECT mode, status, base_run_id FROM cluster_runs('topics')")
    assert modes == [{"mode": "full", "status": "succeeded", "base_run_id": None},
                     {"mode": "assign", "status": "succeeded", "base_run_id": runs["topics_full"]}]
    broken = cli_rows(db, "SELECT latest_status FROM cluster_list() WHERE name = 'broken'")
    assert broken == [{"latest_status": "failed"}]


# -- assign_cluster: pure SQL macro in the CLI vs Arrow UDF in Python -----------------

ASSIGN_QUERIES = {
    "default": "SELECT doc_id, assign_cluster(embedding, 'topics') AS c FROM new_docs ORDER BY doc_id",
    "threshold_positional": "SELECT doc_id, assign_cluster(embedding, 'topics', 0.97) AS c "
                            "FROM new_docs ORDER BY doc_id",
    "threshold_named": "SELECT doc_id, assign_cluster(embedding, 'topics', threshold := 0.2) AS c "
                       "FROM new_docs ORDER BY doc_id",
    "own_threshold": "SELECT doc_id, assign_cluster(embedding, 'topics', threshold := NULL) AS c "
                    "FROM new_docs ORDER BY doc_id",
    "hdbscan": "SELECT doc_id, assign_cluster(embedding, 'dense') AS c FROM new_docs ORDER BY doc_id",
    "hierarchical_top_level": "SELECT doc_id, assign_cluster(embedding, 'nested') AS c "
                              "FROM new_docs ORDER BY doc_id",
    "detail": "SELECT doc_id, d.cluster_id, d.similarity FROM (SELECT doc_id, "
              "assign_cluster_detail(embedding, 'topics') AS d FROM new_docs) ORDER BY doc_id",
    "detail_threshold": "SELECT doc_id, d.cluster_id, d.similarity FROM (SELECT doc_id, "
                        "assign_cluster_detail(embedding, 'dense', threshold := 0.95) AS d FROM new_docs) "
                        "ORDER BY doc_id",
    "huge_but_finite": "SELECT doc_id, assign_cluster_detail(embedding, 'topics') AS d FROM odd_docs "
                       "WHERE doc_id = 3",
    "join_and_group": "SELECT assign_cluster(n.embedding, 'topics') AS c, count(*) AS n FROM new_docs n "
                      "GROUP BY ALL ORDER BY ALL",
}


@pytest.mark.parametrize("key", ASSIGN_QUERIES)
def test_assign_cluster_sql_macro_matches_python_udf(built, py, key):
    assert_same_rows(py, built[0], ASSIGN_QUERIES[key])


def test_assign_cluster_known_rows(built):
    """Rows far from every centroid are noise; NULL stays NULL."""
    db, _ = built
    rows = {r["doc_id"]: r["d"] for r in cli_rows(
        db, "SELECT doc_id, assign_cluster_detail(embedding, 'topics') AS d FROM new_docs")}
    assert all(rows[i]["cluster_id"] == -1 and 0.2 < rows[i]["similarity"] < 0.5 for i in FAR_IDS)
    assert rows[NULL_ID] is None
    near = [rows[i] for i in range(N_NEW_NEAR)]
    assert all(r["cluster_id"] >= 0 and r["similarity"] > 0.9 for r in near)
    # no threshold given: the full run's own, its members' 10 % similarity quantile capped
    # at 0.5 (these well-separated blobs are far above it)
    (own,) = cli_rows(db, "SELECT assignment_threshold AS t FROM cluster_runs('topics') "
                          "WHERE mode = 'full'")
    assert own["t"] == 0.5


# -- errors, read-only, storage format ------------------------------------------------

MACRO_ERRORS = {
    "unknown_definition": "SELECT * FROM cluster_members('nope')",
    "no_successful_run": "SELECT * FROM cluster_quality('pending')",
    "only_a_failed_run": "SELECT * FROM cluster_centroids('broken')",
    "unknown_run_id": "SELECT * FROM cluster_members('topics', run_id := 'run_does_not_exist')",
    "run_of_another_definition": "SELECT * FROM cluster_centroids('topics', run_id := '{dense}')",
}


@pytest.mark.parametrize("key", MACRO_ERRORS)
def test_macro_errors_have_the_same_text(built, py, key):
    db, runs = built
    query = MACRO_ERRORS[key].format(**runs)
    message = cli_error(db, query)
    assert message.startswith("Invalid Input Error: ")
    assert message == py_error(py, query)


#: Every read function taking a definition (or taxonomy) name, called with one that does
#: not exist: the message names it and says how to list what exists.
UNKNOWN_NAMES = {
    "SELECT * FROM cluster_members('nope')": "definition",
    "SELECT * FROM cluster_members('nope', run_id := 'x')": "definition",
    "SELECT * FROM cluster_centroids('nope')": "definition",
    "SELECT * FROM cluster_quality('nope')": "definition",
    "SELECT * FROM cluster_runs('nope')": "definition",
    "SELECT * FROM cluster_lineage('nope')": "definition",
    "SELECT * FROM cluster_drift('nope')": "definition",
    "SELECT * FROM cluster_labels('nope')": "definition",
    "SELECT * FROM cluster_label_failures('nope')": "definition",
    "SELECT * FROM cluster_enrichments('nope')": "definition",
    "SELECT * FROM cluster_trigger_history('nope')": "definition",
    "SELECT * FROM cluster_webhook_list('nope')": "definition",
    "SELECT * FROM cluster_webhook_deliveries('nope')": "definition",
    "SELECT assign_cluster(embedding, 'nope') FROM new_docs": "definition",
    "SELECT assign_cluster_detail(embedding, 'nope') FROM new_docs": "definition",
    "SELECT * FROM taxonomy_nodes('nope')": "taxonomy",
}


def _unknown_sentence(kind: str, listing: str) -> str:
    if kind == "taxonomy":
        return f"No taxonomy named 'nope'. List them with SELECT * FROM {listing}taxonomy_list()."
    return f"No cluster definition named 'nope'."


@pytest.mark.parametrize("query", UNKNOWN_NAMES)
def test_an_unknown_name_says_so_in_every_world(built, py, query):
    """Python (TEMP macros and UDFs), the stock CLI after .read, and the stock CLI calling the
    persistent duckcluster.<name> macros with nothing loaded: one line naming the name."""
    db, _ = built
    kind = UNKNOWN_NAMES[query]
    for message, listing in ((py_error(py, query), ""), (cli_error(db, query), ""),
                             (_persistent_error(db, query), "duckcluster.")):
        assert message.startswith("Invalid Input Error: "), message
        assert _unknown_sentence(kind, listing) in message, message
        if kind == "definition" and "assign_cluster" not in query:  # the UDF lists them itself
            assert f"List them with SELECT * FROM {listing}cluster_list()." in message, message


def _persistent_error(db: str, query: str) -> str:
    out = run_cli(db, qualified(query), reads=())
    assert out.returncode != 0, f"{qualified(query)} succeeded in the CLI; expected an error"
    return out.stderr.strip().splitlines()[0]


def test_a_null_definition_name(built, py):
    db, _ = built
    query = "SELECT * FROM cluster_members(NULL)"
    sentence = "cluster_members needs a definition name, not NULL."
    assert sentence in py_error(py, query) and sentence in cli_error(db, query)


def test_names_kept_from_a_deleted_definition_still_list(tmp_path):
    """cluster_runs of a deleted definition shows the runs kept from it (no error)."""
    import duckcluster

    db = str(tmp_path / "kept.duckdb")
    with duckcluster.connect(db) as con:
        X, _ = blobs(n_per=20, k=2, d=8, seed=2)
        load_table(con, "docs", X)
        con.sql("SELECT cluster_create('gone', source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 2})").fetchall()
        run = con.sql("SELECT cluster_execute('gone')").fetchall()[0][0]
        con.sql("SELECT cluster_delete('gone')").fetchall()
        assert con.sql("SELECT run_id FROM cluster_runs('gone')").fetchall() == [(run,)]
        with pytest.raises(duckdb.Error, match="No cluster definition named 'gone'"):
            con.sql("SELECT * FROM cluster_members('gone')").fetchall()
    assert cli_rows(db, "SELECT run_id FROM cluster_runs('gone')") == [{"run_id": run}]


ASSIGN_ERRORS = {
    "SELECT assign_cluster(embedding, 'nope') FROM new_docs": "No cluster definition named 'nope'.",
    "SELECT assign_cluster(embedding, 'pending') FROM new_docs":
        "Cluster 'pending' has no successful full run yet. Run SELECT cluster_execute('pending') first.",
    "SELECT assign_cluster([1, 2, 3]::FLOAT[3], 'topics')":
        "assign_cluster: the embedding has 3 dimensions but cluster 'topics' (run {topics_full}) has 16. "
        "Use the same embedding model as the definition's source.",
    "SELECT assign_cluster(embedding, 'topics') FROM odd_docs WHERE doc_id = 1":
        "assign_cluster: an embedding is a zero vector ([0, 0, 0, 0, ...], 16 values), which has no "
        "direction, so no nearest centroid by cosine. Filter such rows (WHERE "
        "list_dot_product(embedding::FLOAT[], embedding::FLOAT[]) > 0) or fix the embedding pipeline "
        "(a zero vector often means an empty input text).",
    "SELECT assign_cluster_detail(embedding, 'dense') FROM odd_docs WHERE doc_id = 2":
        "assign_cluster: an embedding has NaN or Inf ([nan, 0, 0, 0, ...], 16 values), so it has no "
        "nearest centroid. Filter such rows (WHERE NOT list_any(list_transform(embedding::FLOAT[], "
        "lambda x: isnan(x) OR isinf(x)))) or fix the embedding pipeline.",
    "SELECT assign_cluster(embedding, 'topics', threshold := 1.5) FROM new_docs":
        "assign_cluster: threshold must be a cosine similarity in the range [-1, 1] (-1 keeps every "
        "assignment), or NULL for the run's own threshold. Got 1.5 instead.",
    "SELECT assign_cluster(embedding, 'topics', threshold := 'nan'::DOUBLE) FROM new_docs":
        "or NULL for the run's own threshold. Got nan instead.",
}


@pytest.mark.parametrize("query", ASSIGN_ERRORS)
def test_assign_cluster_errors_say_the_same(built, py, query):
    """The UDF's message wraps the sentence in 'Python exception ...'; the sentence is the same."""
    db, runs = built
    sentence = ASSIGN_ERRORS[query].format(**runs)
    assert sentence in cli_error(db, query)
    assert sentence in py_error(py, query)


def test_cli_is_really_read_only(built):
    out = run_cli(built[0], "CREATE TABLE t (i INTEGER)")
    assert out.returncode != 0 and "read-only" in out.stderr


def test_default_file_is_readable_and_latest_storage_is_not(tmp_path):
    """storage_version='latest' is the documented opt-in: smaller files, DuckDB 2.0 only."""
    import duckcluster

    for name, version in (("compat.duckdb", None), ("latest.duckdb", "latest")):
        kw = {"storage_version": version} if version else {}
        con = duckcluster.connect(str(tmp_path / name), **kw)
        con.close()
    assert cli_rows(str(tmp_path / "compat.duckdb"), "SELECT count(*) AS n FROM cluster_list()") == [{"n": 0}]
    out = run_cli(str(tmp_path / "latest.duckdb"), "SELECT 1")
    assert out.returncode != 0
    assert "IO Error" in out.stderr and "version number" in out.stderr, out.stderr


# -- edge cases where the Python UDF diverged (the pure SQL macro is right) -------------

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A hand-written catalog: 'toy' with three 2-d centroids, 'empty' with a run of no clusters."""
    import duckcluster

    db = str(tmp_path_factory.mktemp("toy") / "toy.duckdb")
    con = duckcluster.connect(db)
    for sql in (
        "INSERT INTO duckcluster.definitions SELECT name, json_object('name', name, 'source', 'docs', "
        "'embedding', 'embedding', 'algorithm', 'kmeans'), TIMESTAMP '2024-01-01', "
        "TIMESTAMP '2024-01-01' FROM (VALUES ('toy'), ('empty')) v(name)",
        "INSERT INTO duckcluster.runs (run_id, run_seq, name, mode, status, started_at) VALUES "
        "('r1', 1, 'toy', 'full', 'succeeded', TIMESTAMP '2024-01-01'), "
        "('e1', 2, 'empty', 'full', 'succeeded', TIMESTAMP '2024-01-01')",
        "INSERT INTO duckcluster.centroids (run_id, name, cluster_id, node_id, hierarchy_level, size, "
        "centroid) VALUES ('r1', 'toy', 0, 'cl_0', 0, 1, [1, 0]), ('r1', 'toy', 1, 'cl_1', 0, 1, [0, 1]), "
        "('r1', 'toy', 2, 'cl_2', 0, 1, [-1, 0])",
        "CREATE TABLE nulls_first AS SELECT i, (CASE WHEN i < 3000 THEN NULL "
        "ELSE [cos(i), sin(i)] END)::FLOAT[2] AS e FROM range(5000) r(i)",
        "CREATE TABLE mixed AS SELECT i, (CASE WHEN i = 1 THEN NULL "
        "ELSE [cos(i), sin(i)] END)::FLOAT[2] AS e FROM range(3) r(i)",
    ):
        con.sql(sql).fetchall()
    con.close()
    con = duckcluster.connect(db, read_only=True)
    yield con, db
    con.close()


def test_detail_of_a_null_embedding_is_null(toy):
    assert_same_rows(*toy, "SELECT i, assign_cluster_detail(e, 'toy') IS NULL AS is_null "
                           "FROM mixed ORDER BY i")


def test_a_batch_of_only_null_embeddings(toy):
    """Regression: the UDF read a 2,048-row vector of only NULLs as 0-d embeddings."""
    assert_same_rows(*toy, "SELECT count(assign_cluster(e, 'toy')) AS n FROM nulls_first")


def test_a_run_without_clusters_assigns_noise(toy):
    assert_same_rows(*toy, "SELECT d.cluster_id, d.similarity FROM "
                           "(SELECT assign_cluster_detail([1, 0]::FLOAT[2], 'empty') AS d)")


# -- the persistent read side: no .read, no set-up ----------------------------------------

def qualified(query: str) -> str:
    """``query`` calling the persistent read-side macros (duckcluster.<name>) instead."""
    from duckcluster.catalog.read_side import macro_names, sql_text

    names = [n for n in macro_names(sql_text("duckcluster.sql")) if not n.startswith("_")]
    for name in sorted(names, key=len, reverse=True):
        query = re.sub(rf"(?<![.\w]){name}\(", f"duckcluster.{name}(", query)
    return query


@pytest.mark.parametrize("key", [*READ_QUERIES, *(f"assign:{k}" for k in ASSIGN_QUERIES)])
def test_persistent_macros_in_the_file_match_python_without_read(built, py, key):
    """The stock CLI with nothing loaded calls duckcluster.cluster_members(...) & co., stored
    in the file; they give the rows of the Python connection's (TEMP, UDF-backed) functions."""
    db, runs = built
    query = (ASSIGN_QUERIES[key[7:]] if key.startswith("assign:") else READ_QUERIES[key]).format(**runs)
    rel = py.sql(query)
    columns, want = rel.columns, rel.fetchall()
    out = run_cli(db, qualified(query), reads=())
    assert out.returncode == 0 and not out.stderr, out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(got) == len(want)
    for p, c in zip(want, got):
        assert all(same(pv, c[name]) for name, pv in zip(columns, p)), (p, c)


VIEWS = ("latest_runs", "latest_quality", "latest_centroids", "latest_members")


@pytest.mark.parametrize("view", VIEWS)
def test_latest_views_read_the_same_in_the_stock_cli(built, py, view):
    db, _ = built
    out = run_cli(db, f"SELECT * FROM duckcluster.{view} ORDER BY ALL", reads=())
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert_same_rows(py, db, f"SELECT * FROM duckcluster.{view} ORDER BY ALL")


def test_latest_views_hold_the_latest_run_of_every_definition_and_noise(built, py):
    db, runs = built
    latest = dict(py.sql("SELECT name, run_id FROM duckcluster.latest_runs").fetchall())
    assert latest == {"topics": runs["topics_assign"], "dense": runs["dense"],
                      "nested": runs["nested"]}  # no row for 'pending' nor the failed 'broken'
    for name in latest:
        want = py.sql(f"SELECT cluster_id, count(*) FROM cluster_members('{name}') "
                      "GROUP BY ALL ORDER BY ALL").fetchall()
        assert py.sql(f"SELECT cluster_id, count(*) FROM duckcluster.latest_members WHERE "
                      f"name = '{name}' GROUP BY ALL ORDER BY ALL").fetchall() == want
        # centroid-side rows join every member, noise included (cluster -1, label 'noise')
        sizes = py.sql(f"SELECT cluster_id, size FROM duckcluster.latest_centroids WHERE "
                       f"name = '{name}' AND hierarchy_level = 0 ORDER BY ALL").fetchall()
        assert sizes == want
    noise = py.sql("SELECT label, size FROM duckcluster.latest_centroids WHERE name = 'dense' "
                   "AND cluster_id = -1").fetchall()
    assert noise and noise[0][0] == "noise" and noise[0][1] > 0
    quality = cli_rows(db, "SELECT name, n_clusters FROM duckcluster.latest_quality ORDER BY name")
    assert [q["name"] for q in quality] == ["dense", "nested", "topics"]


def test_which_macro_a_name_reaches_in_each_world(built, py):
    """TEMP objects come first on DuckDB's search path: in Python the unqualified name is the
    UDF-backed TEMP macro (its plan calls the _dc_assign UDF), the qualified one the pure SQL
    macro stored in the file; the stock CLI has no unqualified one until .read adds it."""
    db, _ = built
    query = "SELECT assign_cluster(embedding, 'topics') FROM new_docs"
    assert "_dc_assign" in py.sql(f"EXPLAIN {query}").fetchall()[0][1]
    assert "_dc_assign" not in py.sql(f"EXPLAIN {qualified(query)}").fetchall()[0][1]
    bare = run_cli(db, "SELECT * FROM cluster_quality('topics')", reads=())
    assert bare.returncode != 0 and "cluster_quality does not exist" in bare.stderr
    kinds = cli_rows(db, "SELECT database_name, schema_name FROM duckdb_functions() "
                         "WHERE function_name = 'cluster_quality' ORDER BY ALL")
    assert kinds == [{"database_name": "analytics", "schema_name": "duckcluster"},
                     {"database_name": "temp", "schema_name": "main"}]  # after .read


def test_a_temp_macro_shadows_a_persistent_one_of_the_same_name(tmp_path):
    """DuckDB's rule behind the choice of schema: even a main-qualified name reaches TEMP first."""
    import duckdb

    db = str(tmp_path / "shadow.duckdb")
    with duckdb.connect(db, config={"storage_compatibility_version": "v1.4.0"}) as con:
        con.execute("CREATE MACRO main.probe() AS 'persistent'; CREATE SCHEMA s; "
                    "CREATE MACRO s.probe() AS 'schema s'")
        con.execute("CREATE TEMP MACRO probe() AS 'temp'")
        assert con.sql("SELECT probe(), main.probe(), s.probe()").fetchall() == [
            ("temp", "temp", "schema s")]
    out = run_cli(db, "SELECT probe() AS p", reads=())
    assert out.returncode == 0 and json.loads(out.stdout) == {"p": "persistent"}, out.stderr


def test_sql_path_prints_the_installed_read_side(built, py):
    """`duckcluster sql-path`: the file to .read without a checkout (same as sql/duckcluster.sql)."""
    from click.testing import CliRunner

    from duckcluster.cli import main

    path = CliRunner().invoke(main, ["sql-path"]).output.strip()
    assert Path(path).read_text() == (ROOT / READ_SIDE).read_text()
    catalog = CliRunner().invoke(main, ["sql-path", "--catalog"]).output.strip()
    assert Path(catalog).name == "catalog.sql" and Path(catalog).is_file()
    query = "SELECT * FROM cluster_quality('topics')"
    out = run_cli(built[0], query, reads=(path,))
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert len(out.stdout.splitlines()) == len(py.sql(query).fetchall()) == 1


# -- a file last written by an older duckcluster, opened read-only (issue 18) -------------

def test_read_only_cli_on_a_file_from_before_the_members_dispatch(tmp_path):
    """A file written before duckcluster kept the persistent ``_dc_members_view_of``: the stock
    CLI opens it read-only and ``.read``s sql/duckcluster.sql; cluster_members gives the typed
    ids of each definition, an unknown name the usual error, with nothing written first.
    A definition from before typed ids (no view) reads its ids as stored, text."""
    import duckcluster

    db = str(tmp_path / "old.duckdb")
    con = duckcluster.connect(db)
    load_table(con, "docs", blobs(n_per=40, k=3, d=8)[0])
    for name in ("Topics", "other"):
        con.sql(f"SELECT cluster_create('{name}', source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
        con.sql(f"SELECT cluster_execute('{name}')").fetchall()
    want = con.sql("SELECT id, cluster_id FROM cluster_members('Topics') ORDER BY id").fetchall()
    con.close()
    plain = duckdb.connect(db)  # what an older duckcluster left: no dispatch, no view of 'other'
    plain.sql("DROP MACRO duckcluster._dc_members_view_of").fetchall()
    plain.sql("DELETE FROM duckcluster.meta WHERE key = 'members_dispatch'").fetchall()
    plain.sql("""DROP VIEW duckcluster."members of 'other'\"""").fetchall()
    plain.sql("ALTER TABLE duckcluster.members DROP COLUMN noise_assigned").fetchall()  # later
    plain.close()
    got = cli_rows(db, "SELECT id, cluster_id, typeof(id) AS t, noise_assigned "
                       "FROM cluster_members('Topics') ORDER BY id")
    assert [(r["id"], r["cluster_id"]) for r in got] == [tuple(w) for w in want]
    assert {r["noise_assigned"] for r in got} == {None}
    assert {r["t"] for r in got} == {"BIGINT"}  # the source's type, not text
    other = cli_rows(db, "SELECT count(*) AS n, any_value(typeof(id)) AS t "
                         "FROM cluster_members('other')")
    assert other == [{"n": 120, "t": "VARCHAR"}]
    assert cli_error(db, "SELECT * FROM cluster_members('topics')").startswith(
        "Invalid Input Error: No cluster definition named 'topics'. List them with "
        "SELECT * FROM cluster_list().")
    assert "needs a definition name, not NULL" in cli_error(
        db, "SELECT * FROM cluster_members(NULL)")
    # a read-only Python connection reads it the same way; nothing was written
    ro = duckcluster.connect(db, read_only=True)
    assert ro.sql("SELECT id, cluster_id FROM cluster_members('Topics') ORDER BY id"
                  ).fetchall() == want
    assert ro.sql("SELECT count(*), any_value(typeof(id)) FROM cluster_members('other')"
                  ).fetchall() == [(120, "VARCHAR")]
    ro.close()
    check = duckdb.connect(db, read_only=True)
    assert check.sql("SELECT count(*) FROM duckdb_functions() WHERE schema_name = 'duckcluster' "
                     "AND function_name = '_dc_members_view_of'").fetchall() == [(0,)]
    check.close()


def test_persistent_read_side_uses_the_dispatch_not_a_session_variable():
    """The persistent macros a BI tool calls cannot rely on the variable ``.read`` sets."""
    from duckcluster.catalog.read_side import persistent_sql

    text = persistent_sql()
    assert "SET VARIABLE _dc" not in text and "getvariable('" not in text
    assert "duckcluster._dc_members_view_of(cluster_name" in text
