"""Bad input: each case asserts the message and that nothing was half-written."""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pytest

import duckcluster
from duckcluster.engine import execute as _execute
from duckcluster.engine import tables as _tables

CREATE = ("SELECT cluster_create('t', source := {source}, embedding := {emb}, id := 'doc_id', "
          "algorithm := {algo}, params := {params}{extra})")


def snapshot(con):
    return {t: con.sql(f"SELECT * FROM duckcluster.{t} ORDER BY ALL").fetchall()
            for t in ("definitions", "runs", "centroids", "members")}


def create(con, source="'docs'", emb="'embedding'", algo="'kmeans'",
           params="{'n_clusters': 5}", extra=""):
    return con.sql(CREATE.format(source=source, emb=emb, algo=algo, params=params,
                                 extra=extra)).fetchall()


# (case, create kwargs, expected message fragment)
CREATE_CASES = [
    ("unknown algorithm", dict(algo="'kmean'"),
     "Unknown algorithm 'kmean'. Did you mean 'kmeans'? Valid values: 'agglomerative'"),
    ("unknown param", dict(params="{'n_cluster': 5}"),
     "Unknown parameter 'n_cluster' for kmeans. Did you mean 'n_clusters'?"),
    ("param of the wrong type", dict(params="{'n_clusters': 'five'}"),
     "The 'n_clusters' parameter of kmeans must be an int in the range [1, inf) or 'auto'. Got 'five' instead."),
    ("param out of range", dict(algo="'hdbscan'", params="{'min_cluster_size': 1}"),
     "The 'min_cluster_size' parameter of hdbscan must be an int in the range [2, inf). Got 1 instead."),
    ("params not JSON", dict(params="'{n_clusters: 5'"),
     "'params' must be a STRUCT literal like {'k': 1} or a JSON string."),
    ("unknown preprocessing", dict(extra=", preprocessing := [{'method': 'umpa'}]"),
     "Unknown preprocessing method 'umpa'. Did you mean 'umap'?"),
    ("bad preprocessing param", dict(extra=", preprocessing := [{'method': 'umap', 'n_components': 0}]"),
     "The 'n_components' parameter of umap"),
    ("dimensions out of range", dict(extra=", dimensions := 4"),
     "The 'dimensions' parameter of the cluster definition must be an int in the range [2, 3]. Got 4 instead."),
    ("missing source", dict(source="'dcos'"),
     "Source 'dcos' is not a table or view in this database. Did you mean 'docs'?"),
    ("missing column", dict(emb="'embeding'"),
     "The embedding column 'embeding' does not exist in source 'docs'. Did you mean 'embedding'?"),
    ("hostile source", dict(source="'docs; DROP TABLE docs'"),
     "is not a table or view in this database"),
    ("param not finite", dict(algo="'dbscan'", params="{'eps': 'inf'::DOUBLE}"),
     "The 'eps' parameter of dbscan must be a float in the range (0, inf). Got inf instead."),
    ("id column not scalar", dict(source="'(SELECT [doc_id] AS doc_id, embedding FROM docs)'"),
     "has type BIGINT[], but an id must be one scalar value per row"),
    ("missing partition column", dict(extra=", partition_by := 'topc'"),
     "The partition_by column 'topc' does not exist in source 'docs'. Did you mean 'topic'?"),
    ("partition not per row", dict(extra=", partition_by := 'max(topic)'"),
     "partition_by 'max(topic)' of source 'docs' is not a column or a per-row expression"),
]


@pytest.mark.parametrize("case,kwargs,message", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_create_rejects(con, docs, case, kwargs, message):
    before = snapshot(con)
    with pytest.raises(duckdb.Error) as err:
        create(con, **kwargs)
    assert message in str(err.value)
    assert snapshot(con) == before
    assert con.sql("SELECT count(*) FROM docs").fetchall() == [(500,)]


def test_duplicate_name_and_replace(con, docs):
    create(con)
    with pytest.raises(duckdb.Error, match="A cluster definition named 't' already exists"):
        create(con)
    create(con, params="{'n_clusters': 4}", extra=", \"replace\" := true")
    assert '"n_clusters": 4' in con.sql("SELECT spec FROM duckcluster.definitions").fetchall()[0][0]


def _data_case(con, setup_sql, params="{'n_clusters': 2}", emb="'embedding'"):
    con.sql(setup_sql).fetchall()
    create(con, source="'bad'", params=params, emb=emb)
    before = snapshot(con)
    with pytest.raises(duckdb.Error) as err:
        con.sql("SELECT cluster_execute('t')").fetchall()
    after = snapshot(con)
    # only change: one failed run with the error, no centroids or members
    assert after["centroids"] == before["centroids"] and after["members"] == before["members"]
    (run,) = con.sql("SELECT status, error FROM duckcluster.runs").fetchall()
    assert run[0] == "failed"
    return str(err.value), run[1]


DATA_CASES = [
    ("NaN", "CREATE TABLE bad AS SELECT i AS doc_id, [CASE WHEN i = 7 THEN 'nan'::FLOAT ELSE i END, 1]::FLOAT[2] AS embedding FROM range(20) t(i)",
     "{'n_clusters': 2}", "has NaN or Inf in the embedding of row id '7'"),
    ("Inf", "CREATE TABLE bad AS SELECT i AS doc_id, [CASE WHEN i = 3 THEN 'inf'::FLOAT ELSE i END, 1]::FLOAT[2] AS embedding FROM range(20) t(i)",
     "{'n_clusters': 2}", "has NaN or Inf in the embedding of row id '3'"),
    ("mixed dimensions", "CREATE TABLE bad AS SELECT i AS doc_id, CASE WHEN i = 5 THEN [1.0, 2.0, 3.0] ELSE [1.0, i] END::FLOAT[] AS embedding FROM range(20) t(i)",
     "{'n_clusters': 2}", "mixes dimensions: row id '5' has 3 values, but row id '0' has 2"),
    ("zero vector", "CREATE TABLE bad AS SELECT i AS doc_id, [i, 0]::FLOAT[2] AS embedding FROM range(20) t(i)",
     "{'n_clusters': 2}", "has a zero vector at row id '0'"),
    ("all NULL", "CREATE TABLE bad AS SELECT i AS doc_id, NULL::FLOAT[2] AS embedding FROM range(20) t(i)",
     "{'n_clusters': 2}", "has a NULL embedding"),
    ("empty source", "CREATE TABLE bad (doc_id INTEGER, embedding FLOAT[2])",
     "{'n_clusters': 2}", "Source 'bad' is empty"),
    ("fewer rows than clusters", "CREATE TABLE bad AS SELECT i AS doc_id, [i + 1, 1]::FLOAT[2] AS embedding FROM range(3) t(i)",
     "{'n_clusters': 5}", "kmeans with these params needs at least 5 rows with an embedding; the source has 3"),
    ("not an embedding", "CREATE TABLE bad AS SELECT i AS doc_id, 'x' || i AS embedding FROM range(20) t(i)",
     "{'n_clusters': 2}", "has type string, which is not an embedding"),
    ("single row", "CREATE TABLE bad AS SELECT 1 AS doc_id, [1, 2]::FLOAT[2] AS embedding",
     "{'n_clusters': 2}", "kmeans with these params needs at least 2 rows with an embedding; the source has 1"),
    ("all rows identical", "CREATE TABLE bad AS SELECT i AS doc_id, [1, 2]::FLOAT[2] AS embedding FROM range(20) t(i)",
     "{'n_clusters': 3}", "The source has only 1 distinct embedding(s) among 20 rows, so kmeans cannot make 3 clusters. Lower n_clusters to at most 1"),
    ("empty vector", "CREATE TABLE bad AS SELECT i AS doc_id, CASE WHEN i = 4 THEN []::FLOAT[] ELSE [1.0, i] END AS embedding FROM range(20) t(i)",
     "{'n_clusters': 2}", "row id '4' has 0 values"),
    ("duplicate ids", "CREATE TABLE bad AS SELECT i % 10 AS doc_id, [i + 1, 1]::FLOAT[2] AS embedding FROM range(20) t(i)",
     "{'n_clusters': 2}", "The id column 'doc_id' is not unique: '0' appears more than once"),
]


@pytest.mark.parametrize("case,setup,params,message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_execute_data_errors_record_failed_run(con, case, setup, params, message):
    raised, recorded = _data_case(con, setup, params)
    assert message in raised and message in recorded


def test_execute_argument_errors_change_nothing(con, docs):
    create(con)
    before = snapshot(con)
    for sql, message in [
        ("SELECT cluster_execute('nope')", "No cluster definition named 'nope'. Existing definitions: 't'"),
        ("SELECT cluster_execute('t', mode := 'incremental')", "mode must be 'full' or 'assign'. Got 'incremental'"),
        ("SELECT cluster_execute('t', mode := 'assign', assignment_threshold := 1.5)",
         "assignment_threshold must be a float in the range [0, 1]. Got 1.5 instead."),
        ("SELECT cluster_execute('t', mode := 'assign')",
         "Cluster 't' has no successful full run yet. Run SELECT cluster_execute('t') first."),
        ("SELECT * FROM cluster_members('t')", "Cluster 't' has no successful run yet."),
        ("SELECT * FROM cluster_members('t', run_id := 'run_x')", "No successful run 'run_x' of cluster 't'"),
        ("SELECT * FROM cluster_members('nope')",
         "No cluster definition named 'nope'. List them with SELECT * FROM cluster_list()."),
        ("SELECT assign_cluster(embedding, 't') FROM docs", "Cluster 't' has no successful full run yet."),
    ]:
        with pytest.raises(duckdb.Error) as err:
            con.sql(sql).fetchall()
        assert message in str(err.value), sql
    assert snapshot(con) == before


def test_error_matrix_is_published():
    """docs/errors.md lists every case of this file with its message."""
    import pathlib

    doc = (pathlib.Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    for case, _kwargs, message in CREATE_CASES:
        assert case in doc and message in doc, case
    for case, _setup, _params, message in DATA_CASES:
        assert case in doc and message in doc, case
    for case, message in ROUND_2_CASES:
        assert case in doc and message in doc, case


def test_no_obvious_key(con):
    con.sql("CREATE TABLE nokey AS SELECT i AS k, [i + 1, 1]::FLOAT[2] AS e FROM range(10) t(i)").fetchall()
    with pytest.raises(duckdb.Error, match="has no obvious key"):
        con.sql("SELECT cluster_create('t', source := 'nokey', embedding := 'e', algorithm := 'kmeans', "
                "params := {'n_clusters': 2})").fetchall()
    con.sql("CREATE TABLE pk (k INTEGER PRIMARY KEY, e FLOAT[2])").fetchall()
    con.sql("INSERT INTO pk SELECT i, [i + 1, 1] FROM range(10) t(i)").fetchall()
    con.sql("SELECT cluster_create('t', source := 'pk', embedding := 'e', algorithm := 'kmeans', "
            "params := {'n_clusters': 2})").fetchall()
    assert '"id": "k"' in con.sql("SELECT spec FROM duckcluster.definitions").fetchall()[0][0]


def test_failure_midway_leaves_nothing_partial(con, docs, monkeypatch):
    """Make the run fail inside its commit transaction, after the Parquet files and
    the centroid rows were written: everything is undone, the run is 'failed'."""
    create(con)
    ok_run = con.sql("SELECT cluster_execute('t')").fetchall()[0][0]
    before = snapshot(con)
    real = _tables.full_tables

    def broken(*args, **kwargs):
        centroids, members = real(*args, **kwargs)
        ids = members.column("id").to_pylist()
        ids[len(ids) // 2] = None  # violates members.id NOT NULL at INSERT time
        return centroids, members.set_column(members.schema.get_field_index("id"), "id",
                                             pa.array(ids, type=pa.string()))

    monkeypatch.setattr(_tables, "full_tables", broken)
    with pytest.raises(duckdb.Error, match="NOT NULL constraint failed"):
        con.sql("SELECT cluster_execute('t')").fetchall()
    after = snapshot(con)
    assert after["centroids"] == before["centroids"]
    assert after["members"] == before["members"]
    runs = con.sql("SELECT run_id, status, error IS NOT NULL, artifacts_path FROM duckcluster.runs "
                   "ORDER BY run_seq").fetchall()
    assert runs[0][:2] == (ok_run, "succeeded")
    failed_id, status, has_error, path = runs[1]
    assert status == "failed" and has_error and path is None
    run_dirs = os.listdir(os.path.dirname(runs[0][3]))
    assert run_dirs == [ok_run]  # neither <failed>/ nor <failed>.tmp/ left behind
    # and the read side still serves the good run
    assert con.sql("SELECT count(*) FROM cluster_members('t')").fetchall() == [(500,)]


def test_abandoned_run_is_marked_on_open(db_path, docs, con):
    """A run left 'running' by a process that is gone becomes 'abandoned' at the next open."""
    create(con)
    con.sql("INSERT INTO duckcluster.runs (run_id, run_seq, name, mode, status, started_at, pid, "
            "artifacts_path) VALUES ('run_dead', 99, 't', 'full', 'running', now()::TIMESTAMP, -1, NULL)"
            ).fetchall()
    con.close()
    con2 = duckcluster.connect(db_path)
    try:
        assert con2.sql("SELECT status, error FROM duckcluster.runs WHERE run_id = 'run_dead'").fetchall() == [
            ("abandoned", "the process running it ended before it finished")]
    finally:
        con2.close()


# -- issue 14, round 2: each of these failed before (wrong, late or nameless message) ------

#: (case, message fragment) of the round-2 table in docs/errors.md
ROUND_2_CASES = [
    ("source name in other case", "names resolve case-insensitively, as in DuckDB"),
    ("relative file in a query source", ("The query source reads the relative path "
     "'docs.parquet', which each process would resolve against its own working directory")),
    ("stored error of an unexpected failure", "ZeroDivisionError: float division by zero"),
    ("damaged file of a glob", ("The file is damaged or is not a Parquet file: rewrite it, or "
     "move it out of the way, and run again.")),
    ('long non-ASCII name', '(accepted: the artifacts folder is cut and ends in ~<hash of the name>)'),
    ('database file that does not exist', "works on an existing database, and 'analytcs.duckdb' is not a file. Did you mean 'analytics.duckdb'?"),
    ('read-only open while another process writes', 'does not let another process open a file, not even read-only, while one holds it for writing'),
    ('write open while another process reads', 'is open read-only in another process (PID'),
    ('misspelled named argument', "cluster_create has no parameter 'smaple_size'; did you mean 'sample_size'?"),
    ('missing positional argument', 'assign_cluster needs 2 positional arguments (embedding, cluster_name); got 1, so cluster_name is missing.'),
    ('assign_cluster on a zero vector', 'which has no direction, so no nearest centroid by cosine.'),
    ('assign_cluster on NaN or Inf', 'assign_cluster: an embedding has NaN or Inf ([nan, 0, 0, 0, ...], 32 values)'),
    ('assign_cluster threshold out of range', "assign_cluster: threshold must be a cosine similarity in the range [-1, 1] (-1 keeps every assignment), or NULL for the run's own threshold. Got 5 instead."),
    ('rows with a NULL time', 'skipped_null_time (returned with rows_read, rows_added, skipped_null_embedding)'),
    ('whitening covariance too big', 'ResourceError: Whitening 1,200 rows x 1024 dimensions needs 1,024 x 1,024 float64 matrices'),
    ('identical sides, cluster method', '(p-value 1: k-means is fitted on a sample of both sides pooled)'),
]

def test_source_names_resolve_case_insensitively_like_duckdb(con, docs):
    """DuckDB resolves 'DOCS' to table docs; so does a source (was "not a table")."""
    con.sql("CREATE VIEW Docs_View AS SELECT * FROM docs").fetchall()
    for source in ("DOCS", "MAIN.Docs", "docs_view"):
        con.sql(f"SELECT cluster_create('t', source := '{source}', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 5}, "
                "\"replace\" := true)").fetchall()
        run = con.sql("SELECT cluster_execute('t')").fetchall()[0][0]
        assert con.sql(f"SELECT count(*) FROM cluster_members('t', run_id := '{run}')"
                       ).fetchall() == [(500,)], source


def test_stored_errors_carry_no_traceback(con, docs, monkeypatch):
    """An unexpected failure is stored as 'Class: message', never a Python traceback."""
    create(con)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(_execute, "fit", broken)
    with pytest.raises(duckdb.Error, match="float division by zero"):
        con.sql("SELECT cluster_execute('t')").fetchall()
    assert con.sql("SELECT status, error FROM duckcluster.runs").fetchall() == [
        ("failed", "ZeroDivisionError: float division by zero")]


def _break_footer(path, seed=0):
    """Overwrite the middle of a Parquet file's Thrift footer: DuckDB then fails with
    'TProtocolException: ...' or "don't know what type", without the file's name."""
    import struct

    import numpy as np

    with open(path, "r+b") as f:
        data = f.read()
        (mlen,) = struct.unpack("<I", data[-8:-4])
        f.seek(len(data) - 8 - mlen + mlen // 4)
        f.write(bytes(np.random.default_rng(seed).integers(0, 256, mlen // 2, dtype=np.uint8)))


def test_damaged_parquet_file_of_a_glob_is_named(con, docs, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    con.sql(f"COPY (SELECT * FROM docs WHERE doc_id < 250) TO '{folder}/a.parquet' (FORMAT parquet)")
    con.sql(f"COPY (SELECT * FROM docs WHERE doc_id >= 250) TO '{folder}/b.parquet' (FORMAT parquet)")
    create(con, source=f"'{folder}/*.parquet'")
    _break_footer(folder / "b.parquet")
    with pytest.raises(duckdb.Error) as err:
        con.sql("SELECT cluster_execute('t')").fetchall()
    message = f"Cannot read '{folder}/b.parquet' (one of the 2 files matching '{folder}/*.parquet')"
    assert message in str(err.value) and "The file is damaged or is not a Parquet file" in str(err.value)
    (stored,) = con.sql("SELECT error FROM duckcluster.runs").fetchall()[0]
    assert stored.startswith("DataError: " + message)
    # embedding_drift reads sides the same way
    with pytest.raises(duckdb.Error, match="b.parquet' \\(one of the 2 files"):
        con.sql(f"SELECT * FROM embedding_drift('{folder}/*.parquet', 'docs', 'embedding')").fetchall()


def test_relative_path_inside_a_query_source_is_refused(con, docs, tmp_path, monkeypatch):
    """A query source reading a relative file would read another file from another
    working directory: cluster_create says so and gives the absolute path."""
    monkeypatch.chdir(tmp_path)
    con.sql("COPY docs TO 'docs.parquet' (FORMAT parquet)").fetchall()
    before = snapshot(con)
    with pytest.raises(duckdb.Error) as err:
        create(con, source="'(SELECT * FROM ''docs.parquet'' WHERE doc_id < 400)'")
    assert ("The query source reads the relative path 'docs.parquet', which each process would "
            "resolve against its own working directory") in str(err.value)
    assert f"Write the absolute path instead: '{tmp_path}/docs.parquet'." in str(err.value)
    assert snapshot(con) == before
    create(con, source=f"'(SELECT * FROM ''{tmp_path}/docs.parquet'' WHERE doc_id < 400)'")


@pytest.mark.parametrize("name", ["é" * 128, "/" * 128, "日本語の名前" * 21])
def test_long_non_ascii_names_run(con, docs, name):
    """A valid 128-character name quoted for its artifacts folder exceeded the file system's
    255 bytes: 'File name too long' after the whole fit. The folder is now cut + hashed."""
    con.execute("SELECT cluster_create(?, source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 5})", [name])
    run = con.execute("SELECT cluster_execute(?)", [name]).fetchall()[0][0]
    (path,) = con.execute("SELECT artifacts_path FROM duckcluster.runs WHERE run_id = ?",
                          [run]).fetchall()[0]
    folder = os.path.basename(os.path.dirname(path))
    assert len(folder.encode()) <= 200 and os.path.isfile(os.path.join(path, "members.parquet"))
    assert con.execute("SELECT count(*) FROM cluster_members(?)", [name]).fetchall() == [(500,)]
    other = name[:-1] + "x"  # names sharing the cut prefix get their own folders
    con.execute("SELECT cluster_create(?, source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 5})", [other])
    run2 = con.execute("SELECT cluster_execute(?)", [other]).fetchall()[0][0]
    (path2,) = con.execute("SELECT artifacts_path FROM duckcluster.runs WHERE run_id = ?",
                           [run2]).fetchall()[0]
    assert os.path.dirname(path2) != os.path.dirname(path)


@pytest.mark.parametrize("command", [["scheduler", "--once"], ["exporter", "--once"], ["runs"],
                                     ["report", "drift", "--baseline", "a", "--current", "b"]])
def test_commands_refuse_a_database_that_does_not_exist(tmp_path, command):
    """`duckcluster scheduler typo.duckdb` created an empty database and ran nothing."""
    import subprocess
    import sys

    duckcluster.connect(str(tmp_path / "analytics.duckdb")).close()
    args = command[:1] + (["drift"] if command[0] == "report" else [])
    rest = command[2:] if command[0] == "report" else command[1:]
    r = subprocess.run([sys.executable, "-m", "duckcluster.cli", *args, "analytcs.duckdb", *rest],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    what = " ".join(args)
    assert r.returncode == 1, r.stderr
    assert (f"duckcluster {what} works on an existing database, and 'analytcs.duckdb' is not a "
            "file. Did you mean 'analytics.duckdb'?") in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "analytcs.duckdb").exists()


def test_scheduler_refuses_a_missing_file_from_python_and_sql_still_creates(tmp_path):
    import subprocess
    import sys

    from duckcluster.ops.scheduler import Scheduler

    with pytest.raises(duckcluster.SpecError, match="The scheduler works on an existing database"):
        Scheduler(str(tmp_path / "nope.duckdb"), duckcluster.connect)
    assert not (tmp_path / "nope.duckdb").exists()
    # sql and shell create a new file, as DuckDB's own CLI does
    r = subprocess.run([sys.executable, "-m", "duckcluster.cli", "sql", "new.duckdb", "-c",
                        "SELECT 1"], capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert r.returncode == 0 and (tmp_path / "new.duckdb").exists()


MISSPELLED = "SELECT cluster_create('t', source := 'docs', embedding := 'embedding', smaple_size := 10)"
MISSPELLED_MESSAGE = "cluster_create has no parameter 'smaple_size'; did you mean 'sample_size'?"


def test_misspelled_named_argument_is_named(con, docs):
    """DuckDB says 'Macro cluster_create() does not support the supplied arguments' and lists
    the parameters; duckcluster.sql(), the CLI and the shell say which argument is wrong."""
    with pytest.raises(duckdb.BinderException) as err:
        duckcluster.sql(con, MISSPELLED)
    assert MISSPELLED_MESSAGE in str(err.value) and "Its parameters: name, source := NULL" in str(err.value)
    for sql, message in [
        ("SELECT * FROM cluster_members('t', runid := 'x')",
         "cluster_members has no parameter 'runid'; did you mean 'run_id'?"),
        ("SELECT cluster_execute('t', treshold := 0.3)",
         "cluster_execute has no parameter 'treshold'; did you mean 'assignment_threshold'?"),
        ("SELECT assign_cluster(embedding) FROM docs",
         "assign_cluster needs 2 positional arguments (embedding, cluster_name); got 1, so "
         "cluster_name is missing."),
        ("SELECT assign_cluster(embedding, 't', 0.5, 7, 8) FROM docs",
         "assign_cluster takes 2 positional arguments (embedding, cluster_name); got 5. Pass the "
         "others by name (threshold := NULL, partition := "),
        ("SELECT * FROM cluster_list('t')", "cluster_list takes no arguments; got 1."),
        # strings and comments holding ':=' and commas are not arguments
        ("SELECT cluster_create('t', source := 'docs -- x := 1, y', embedding := 'a,b', "
         "/* fake := 1, */ algoritm := 'kmeans')",
         "cluster_create has no parameter 'algoritm'; did you mean 'algorithm'?"),
    ]:
        with pytest.raises(duckdb.BinderException) as err:
            duckcluster.sql(con, sql)
        assert message in str(err.value), sql


def test_misspelled_named_argument_in_the_cli_and_shell(tmp_path):
    import subprocess
    import sys

    db = str(tmp_path / "a.duckdb")
    duckcluster.connect(db).close()
    r = subprocess.run([sys.executable, "-m", "duckcluster.cli", "sql", db, "-c", MISSPELLED],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1 and MISSPELLED_MESSAGE in " ".join(r.stderr.split())  # rich wraps lines
    r = subprocess.run([sys.executable, "-m", "duckcluster.cli", "shell", db], input=MISSPELLED + ";\n",
                       capture_output=True, text=True, timeout=120, check=False)
    assert MISSPELLED_MESSAGE in " ".join((r.stdout + r.stderr).split())


def test_assign_cluster_refuses_vectors_without_a_direction(con, docs):
    """NaN, Inf and zero vectors returned -1 silently (similarity NaN) with a numpy warning
    on stderr; thresholds of 5, NaN or -1.5 were accepted. Now: errors showing the values."""
    import warnings

    create(con)
    con.sql("SELECT cluster_execute('t')").fetchall()
    zeros = ", ".join(["0.0"] * 32)
    cases = [
        (f"SELECT assign_cluster([{zeros}]::FLOAT[32], 't')",
         "assign_cluster: an embedding is a zero vector ([0, 0, 0, 0, ...], 32 values), which has "
         "no direction, so no nearest centroid by cosine."),
        (f"SELECT assign_cluster(['nan'::FLOAT, {zeros[5:]}]::FLOAT[32], 't')",
         "assign_cluster: an embedding has NaN or Inf ([nan, 0, 0, 0, ...], 32 values)"),
        (f"SELECT assign_cluster_detail(['inf'::FLOAT, {zeros[5:]}]::FLOAT[], 't')",
         "assign_cluster: an embedding has NaN or Inf ([inf, 0, 0, 0, ...], 32 values)"),
        ("SELECT assign_cluster(embedding, 't', threshold := 5) FROM docs",
         "assign_cluster: threshold must be a cosine similarity in the range [-1, 1] (-1 keeps "
         "every assignment), or NULL for the run's own threshold. Got 5 instead."),
        ("SELECT assign_cluster(embedding, 't', threshold := 'nan'::DOUBLE) FROM docs", "Got nan instead."),
        ("SELECT assign_cluster(embedding, 't', threshold := -1.5) FROM docs", "Got -1.5 instead."),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        for sql, message in cases:
            with pytest.raises(duckdb.Error) as err:
                con.sql(sql).fetchall()
            assert message in str(err.value), sql
        # -1 keeps every row; tiny and huge but finite vectors are placed like unit ones
        n = con.sql("SELECT count(*) FROM docs WHERE assign_cluster(embedding, 't', threshold := -1) >= 0")
        assert n.fetchall() == [(500,)]
        same = con.sql("SELECT count(*) FROM docs WHERE assign_cluster(embedding, 't') = "
                       "assign_cluster(CAST(list_transform(embedding, lambda x: x * 1e-25) AS FLOAT[32]), 't') "
                       "AND assign_cluster(embedding, 't') = "
                       "assign_cluster(CAST(list_transform(embedding, lambda x: x * 1e25) AS FLOAT[32]), 't')")
        assert same.fetchall() == [(500,)]
