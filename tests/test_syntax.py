"""CLUSTER BY EMBEDDING sugar: rewrite shapes, pass-through, errors, properties.

The rewritten SQL calls ``cluster_embeddings``. These tests define a TEMP stand-in
with the same signature that clusters nothing; it only checks that the rewritten
SQL binds on real DuckDB and keeps the source columns (a *binding check*).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from duckcluster._errors import SpecError
from duckcluster._syntax import has_cluster_syntax, rewrite, split_statements

TPCH = Path(__file__).parent / "tpch"
TPCH_QUERIES = sorted(TPCH.glob("q*.sql"))

# Binding check only: same signature as the real table macro, no clustering.
STAND_IN = """
CREATE TEMP MACRO cluster_embeddings(source, embedding, algorithm := 'hdbscan', params := '{}',
                                     preprocessing := NULL, id := NULL) AS TABLE
SELECT *, 0 AS cluster_id, 1.0 AS cosine_similarity_to_centroid FROM query_table(source)
"""
# Echoes its arguments as DuckDB parsed them.
ECHO = """
CREATE TEMP MACRO cluster_embeddings(source, embedding, algorithm := NULL, params := NULL,
                                     preprocessing := NULL, id := NULL) AS TABLE
SELECT source, embedding, algorithm, params, preprocessing, id
"""
DOCS = """
CREATE TABLE docs (id INTEGER, lang VARCHAR, title VARCHAR, author_id INTEGER,
                   embedding FLOAT[3], title_emb FLOAT[3]);
INSERT INTO docs SELECT i, CASE WHEN i % 3 = 0 THEN 'de' ELSE 'en' END, 'doc ' || i, i % 2,
                        [i, 1, 0]::FLOAT[3], [0, i, 1]::FLOAT[3] FROM range(6) AS r(i);
CREATE TABLE users (user_id INTEGER, name VARCHAR);
INSERT INTO users VALUES (0, 'ann'), (1, 'bob');
CREATE TABLE labels (id INTEGER, cluster_id INTEGER);
"""
DOC_COLUMNS = ["id", "lang", "title", "author_id", "embedding", "title_emb"]
ADDED = ["cluster_id", "cosine_similarity_to_centroid"]


def run_script(con: duckdb.DuckDBPyConnection, script: str) -> None:
    for statement in split_statements(script):
        con.execute(statement)


@pytest.fixture
def docs_con():
    con = duckdb.connect()
    run_script(con, DOCS + STAND_IN)
    yield con
    con.close()


@pytest.fixture(scope="module")
def tpch_con():
    con = duckdb.connect()
    run_script(con, (TPCH / "data.sql").read_text())
    yield con
    con.close()


@pytest.fixture(scope="module")
def echo_con():
    con = duckdb.connect()
    run_script(con, "CREATE TABLE docs (id INTEGER);" + ECHO)
    yield con
    con.close()


# ---------------------------------------------------------------------------
# Rewrite shapes: exact text, then a binding check on DuckDB.

CALL = "cluster_embeddings('__dc_src_1', 'embedding', algorithm := 'kmeans', params := '{\"n_clusters\":2}')"
CTAS = ("CREATE TABLE clustered AS SELECT id, cluster_id FROM docs "
        "CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2)")
INSERT = ("INSERT INTO labels SELECT id, cluster_id FROM docs "
          "CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2)")
SHAPES = [
    pytest.param(
        "SELECT * FROM docs CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2)",
        f"WITH __dc_src_1 AS (SELECT * FROM docs) SELECT * FROM {CALL} AS docs",
        DOC_COLUMNS + ADDED,
        id="table",
    ),
    pytest.param(
        "SELECT d.title, cluster_id FROM docs d WHERE d.lang = 'en' "
        "CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2) ORDER BY d.title",
        "WITH __dc_src_1 AS (SELECT * FROM docs AS d WHERE d.lang = 'en') "
        f"SELECT d.title, cluster_id FROM {CALL} AS d ORDER BY d.title",
        ["title", "cluster_id"],
        id="alias-where",
    ),
    pytest.param(
        "SELECT cluster_id, count(*) AS n FROM (SELECT * FROM docs WHERE lang = 'en') s "
        "CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2) GROUP BY cluster_id",
        "WITH __dc_src_1 AS (SELECT * FROM (SELECT * FROM docs WHERE lang = 'en') AS s) "
        f"SELECT cluster_id, COUNT(*) AS n FROM {CALL} AS s GROUP BY cluster_id",
        ["cluster_id", "n"],
        id="subquery-in-from",
    ),
    pytest.param(
        "WITH c AS (SELECT * FROM docs CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2)) "
        "SELECT cluster_id, count(*) AS n FROM c GROUP BY cluster_id",
        f"WITH c AS (WITH __dc_src_1 AS (SELECT * FROM docs) SELECT * FROM {CALL} AS docs) "
        "SELECT cluster_id, COUNT(*) AS n FROM c GROUP BY cluster_id",
        ["cluster_id", "n"],
        id="inside-cte",
    ),
    pytest.param(
        "SELECT n FROM (SELECT count(*) AS n FROM (SELECT id, cluster_id FROM docs WHERE lang = 'en' "
        "CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2)) AS c GROUP BY cluster_id) AS s",
        "SELECT n FROM (SELECT COUNT(*) AS n FROM (WITH __dc_src_1 AS (SELECT * FROM docs WHERE "
        f"lang = 'en') SELECT id, cluster_id FROM {CALL} AS docs) AS c GROUP BY cluster_id) AS s",
        ["n"],
        id="nested-subquery",
    ),
    pytest.param(
        "SELECT count(*) AS n FROM (SELECT id, embedding FROM docs "
        "CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2)) AS inner_q "
        "CLUSTER BY EMBEDDING(embedding) USING hdbscan(min_cluster_size = 2)",
        "WITH __dc_src_2 AS (SELECT * FROM (WITH __dc_src_1 AS (SELECT * FROM docs) "
        f"SELECT id, embedding FROM {CALL} AS docs) AS inner_q) SELECT COUNT(*) AS n FROM "
        "cluster_embeddings('__dc_src_2', 'embedding', algorithm := 'hdbscan', "
        "params := '{\"min_cluster_size\":2}') AS inner_q",
        ["n"],
        id="two-levels-deepest-first",
    ),
    pytest.param(
        "SELECT title, name, cluster_id FROM docs d JOIN users u ON d.author_id = u.user_id "
        "CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2)",
        "WITH __dc_src_1 AS (SELECT * FROM docs AS d JOIN users AS u ON d.author_id = u.user_id) "
        f"SELECT title, name, cluster_id FROM {CALL} AS d",
        ["title", "name", "cluster_id"],
        id="join-source",
    ),
    pytest.param(
        "SELECT id, -1 AS cluster_id FROM docs WHERE lang = 'de' UNION ALL SELECT id, cluster_id "
        "FROM docs WHERE lang = 'en' CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2) "
        "ORDER BY id",
        "WITH __dc_src_1 AS (SELECT * FROM docs WHERE lang = 'en') SELECT id, -1 AS cluster_id "
        f"FROM docs WHERE lang = 'de' UNION ALL SELECT id, cluster_id FROM {CALL} AS docs ORDER BY id",
        ["id", "cluster_id"],
        id="union-all",
    ),
    pytest.param(
        "SELECT title FROM docs WHERE id IN (SELECT id FROM docs CLUSTER BY EMBEDDING(embedding) "
        "USING kmeans(n_clusters = 2) QUALIFY row_number() OVER (PARTITION BY cluster_id ORDER BY id) = 1)",
        "SELECT title FROM docs WHERE id IN (WITH __dc_src_1 AS (SELECT * FROM docs) SELECT id FROM "
        f"{CALL} AS docs QUALIFY ROW_NUMBER() OVER (PARTITION BY cluster_id ORDER BY id) = 1)",
        ["title"],
        id="in-subquery",
    ),
    pytest.param(
        CTAS,
        "CREATE TABLE clustered AS WITH __dc_src_1 AS (SELECT * FROM docs) "
        f"SELECT id, cluster_id FROM {CALL} AS docs",
        None,
        id="create-table-as",
    ),
    pytest.param(
        INSERT,
        "INSERT INTO labels WITH __dc_src_1 AS (SELECT * FROM docs) "
        f"SELECT id, cluster_id FROM {CALL} AS docs",
        None,
        id="insert-select",
    ),
    pytest.param(
        "SELECT * FROM docs CLUSTER BY EMBEDDING(embedding, title_emb) USING hdbscan(min_cluster_size "
        "=> 5, min_samples := 2, cluster_selection_epsilon = 0.25, allow_single_cluster = true, "
        "max_cluster_size = NULL)",
        "WITH __dc_src_1 AS (SELECT * FROM docs) SELECT * FROM cluster_embeddings('__dc_src_1', "
        "['embedding', 'title_emb'], algorithm := 'hdbscan', params := '{\"allow_single_cluster\":true,"
        "\"cluster_selection_epsilon\":0.25,\"max_cluster_size\":null,\"min_cluster_size\":5,"
        "\"min_samples\":2}') AS docs",
        DOC_COLUMNS + ADDED,
        id="several-params-and-columns",
    ),
    pytest.param(
        "SELECT id FROM docs CLUSTER BY EMBEDDING(\"emb \"\"x\"\"\") USING \"My Algo\"("
        "label = 'it''s; -- not a comment', path = 'C:\\tmp')",
        "WITH __dc_src_1 AS (SELECT * FROM docs) SELECT id FROM cluster_embeddings('__dc_src_1', "
        "'emb \"x\"', algorithm := 'My Algo', params := '{\"label\":\"it''s; -- not a comment\","
        "\"path\":\"C:\\\\tmp\"}') AS docs",
        ["id"],
        id="strings-with-quotes",
    ),
    pytest.param(
        "SELECT id FROM docs CLUSTER BY EMBEDDING(embedding) USING mean_shift("
        "bandwidth = -0.5, seed = -7, tol = -1e-3, eps = +.5)",
        "WITH __dc_src_1 AS (SELECT * FROM docs) SELECT id FROM cluster_embeddings('__dc_src_1', "
        "'embedding', algorithm := 'mean_shift', params := '{\"bandwidth\":-0.5,\"eps\":0.5,"
        "\"seed\":-7,\"tol\":-0.001}') AS docs",
        ["id"],
        id="negative-numbers",
    ),
    pytest.param(
        "select * from docs cluster by embedding(embedding) using KMeans(N_Clusters = 2)",
        f"WITH __dc_src_1 AS (SELECT * FROM docs) SELECT * FROM {CALL} AS docs",
        DOC_COLUMNS + ADDED,
        id="lowercase-keywords",
    ),
    pytest.param(
        "FROM docs CLUSTER BY EMBEDDING(embedding) USING kmeans",
        "WITH __dc_src_1 AS (SELECT * FROM docs) SELECT * FROM cluster_embeddings('__dc_src_1', "
        "'embedding', algorithm := 'kmeans', params := '{}') AS docs",
        DOC_COLUMNS + ADDED,
        id="from-first-no-parens",
    ),
    pytest.param(
        "SELECT id FROM docs CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2) "
        "PREPROCESS whitening(), umap(n_components = 10) ID id",
        "WITH __dc_src_1 AS (SELECT * FROM docs) SELECT id FROM cluster_embeddings('__dc_src_1', "
        "'embedding', algorithm := 'kmeans', params := '{\"n_clusters\":2}', preprocessing := "
        "'[{\"method\":\"whitening\"},{\"method\":\"umap\",\"n_components\":10}]', id := 'id') AS docs",
        ["id"],
        id="preprocess-and-id",
    ),
    pytest.param(
        "WITH en AS (SELECT * FROM docs WHERE lang = 'en') SELECT id FROM en "
        "CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2)",
        "WITH en AS (SELECT * FROM docs WHERE lang = 'en'), __dc_src_1 AS (SELECT * FROM en) "
        f"SELECT id FROM {CALL} AS en",
        ["id"],
        id="appends-to-existing-with",
    ),
    pytest.param(
        "WITH __dc_src_1 AS (SELECT * FROM docs) SELECT id FROM __dc_src_1 "
        "CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 2)",
        "WITH __dc_src_1 AS (SELECT * FROM docs), __dc_src_2 AS (SELECT * FROM __dc_src_1) "
        f"SELECT id FROM {CALL.replace('__dc_src_1', '__dc_src_2')} AS __dc_src_1",
        ["id"],
        id="cte-name-taken",
    ),
]


@pytest.mark.parametrize(("sql", "expected", "columns"), SHAPES)
def test_rewrite_shape(docs_con, sql, expected, columns):
    assert has_cluster_syntax(sql)
    out = rewrite(sql)
    assert out == expected
    result = docs_con.execute(out)  # binding check with the stand-in macro
    if columns is not None:
        assert [d[0] for d in result.description] == columns
        assert result.fetchall()


@pytest.mark.parametrize("prefix", ["EXPLAIN ", "explain analyze ", "DESCRIBE ", "SUMMARIZE "])
def test_explain_and_describe_keep_their_prefix(docs_con, prefix):
    query = "SELECT DISTINCT ON (cluster_id) id FROM docs CLUSTER BY EMBEDDING(embedding) USING kmeans"
    out = rewrite(prefix + query)
    assert out.startswith(prefix + "WITH __dc_src_1 AS (SELECT * FROM docs) SELECT DISTINCT ON (cluster_id) id")
    assert docs_con.execute(out).fetchall()


def test_ctas_and_insert_keep_rows(docs_con):
    docs_con.execute(rewrite(CTAS))
    docs_con.execute(rewrite(INSERT))
    assert docs_con.sql("SELECT count(*) FROM clustered").fetchall() == [(6,)]
    assert docs_con.sql("SELECT count(*) FROM labels").fetchall() == [(6,)]


def test_where_filters_before_clustering(docs_con):
    """WHERE moves into the source CTE: only 'en' rows reach cluster_embeddings."""
    sql = "SELECT lang, count(*) FROM docs WHERE lang = 'en' CLUSTER BY EMBEDDING(embedding) USING kmeans GROUP BY lang"
    assert docs_con.sql(rewrite(sql)).fetchall() == [("en", 4)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'SELECT * FROM docs CLUSTER BY EMBEDDING(embedding) USING kmeans' AS s",
        "SELECT 1 -- FROM docs CLUSTER BY EMBEDDING(embedding) USING kmeans\n",
        "SELECT 1 /* FROM docs CLUSTER BY EMBEDDING(embedding) USING kmeans */",
        'SELECT 1 AS "CLUSTER BY EMBEDDING(embedding) USING kmeans"',
        "SELECT $$ CLUSTER BY EMBEDDING(embedding) USING kmeans $$",
        "SELECT * FROM t CLUSTER BY x",  # Hive's CLUSTER BY is not ours: DuckDB will reject it
    ],
    ids=["string", "line-comment", "block-comment", "quoted-name", "dollar-string", "hive-cluster-by"],
)
def test_clause_text_in_strings_and_comments_is_left_alone(sql):
    assert not has_cluster_syntax(sql)
    assert rewrite(sql) is sql


def test_script_rewrites_only_clause_statements():
    first = "CREATE MACRO m(a, b := 2) AS a + b;"  # sqlglot cannot parse this one
    clause = "SELECT * FROM docs CLUSTER BY EMBEDDING(embedding) USING kmeans"
    script = f"-- setup\n{first}\n/* lead */ {clause} ; -- tail\nSELECT  m(1)::INT ;\n"
    out = rewrite(script)
    expected = rewrite(clause)
    assert out == f"-- setup\n{first}\n/* lead */ {expected} ; -- tail\nSELECT  m(1)::INT ;\n"
    assert has_cluster_syntax(script)


def test_comment_inside_the_statement_is_kept():
    out = rewrite("SELECT * FROM docs -- all of them\nCLUSTER BY EMBEDDING(e) USING kmeans")
    assert "/* all of them */" in out


# ---------------------------------------------------------------------------
# split_statements


@pytest.mark.parametrize(
    ("sql", "chunks"),
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1;SELECT 2;", ["SELECT 1;", "SELECT 2;"]),
        ("SELECT ';'; SELECT 2", ["SELECT ';';", " SELECT 2"]),
        ("SELECT 1 -- ;\n; /* ; */ SELECT \"a;b\";", ["SELECT 1 -- ;\n;", ' /* ; */ SELECT "a;b";']),
        ("SELECT $$;$$; SELECT 2; -- end\n", ["SELECT $$;$$;", " SELECT 2; -- end\n"]),
        (";; SELECT 1;; ;SELECT 2", [";; SELECT 1;; ;", "SELECT 2"]),
        ("EXPLAIN SELECT ';'; CALL f(';')", ["EXPLAIN SELECT ';';", " CALL f(';')"]),
        ("  -- only a comment\n", []),
        ("", []),
    ],
)
def test_split_statements(sql, chunks):
    assert split_statements(sql) == chunks
    if chunks:
        assert "".join(chunks) == sql


def test_split_statements_untokenizable_script_is_one_chunk():
    assert split_statements("SELECT 'unterminated; SELECT 2") == ["SELECT 'unterminated; SELECT 2"]


# ---------------------------------------------------------------------------
# TPC-H corpus: pass-through, byte for byte, with the same results.


def test_tpch_corpus_is_complete():
    assert [p.name for p in TPCH_QUERIES] == [f"q{i:02d}.sql" for i in range(1, 23)]


CLAUSE = "SELECT o_orderkey FROM orders CLUSTER BY EMBEDDING(emb) USING kmeans"


@pytest.mark.parametrize("path", TPCH_QUERIES, ids=lambda p: p.stem)
def test_tpch_query_passes_through(tpch_con, path):
    query = path.read_text()
    out = rewrite(query)
    assert out is query
    assert not has_cluster_syntax(query)
    assert split_statements(query) == [query]
    assert tpch_con.sql(out).fetchall() == tpch_con.sql(query).fetchall()
    # With a clause statement after it, the script takes the tokenize-and-split path.
    assert rewrite(query + CLAUSE) == query + rewrite(CLAUSE)


def test_tpch_data_is_plausible(tpch_con):
    """Most queries return rows, so the same-results check compares something."""
    non_empty = sum(bool(tpch_con.sql(p.read_text()).fetchall()) for p in TPCH_QUERIES)
    assert non_empty >= 20


DUCKDB_STATEMENTS = [
    "CREATE MACRO add_default(a, b := 5) AS a + b",
    "CREATE MACRO top_orders(n := 3) AS TABLE SELECT * FROM orders ORDER BY o_totalprice DESC LIMIT n",
    "SELECT add_default(1), add_default(1, b := 2), count(*) FROM top_orders(n := 2)",
    "FROM orders SELECT o_orderpriority, count(*) AS n GROUP BY ALL ORDER BY ALL",
    "PIVOT (SELECT o_orderstatus, o_orderpriority FROM orders) ON o_orderpriority "
    "USING count(*) GROUP BY o_orderstatus ORDER BY o_orderstatus",
    "SELECT list_transform([1, 2, 3], lambda x: x + 1) AS l, '42'::INTEGER + 1 AS i, {'a': 1}.a AS s",
    "SELECT o_custkey, o_totalprice FROM orders QUALIFY row_number() OVER "
    "(PARTITION BY o_custkey ORDER BY o_totalprice DESC) = 1 ORDER BY o_custkey LIMIT 5",
    "SELECT * EXCLUDE (l_comment) REPLACE (l_quantity::INTEGER AS l_quantity) FROM lineitem "
    "ORDER BY l_orderkey, l_linenumber LIMIT 3",
    "SELECT COLUMNS('l_.*date') FROM lineitem ORDER BY ALL LIMIT 2",
    "SELECT $$semi;colon 'CLUSTER BY EMBEDDING(x) USING kmeans'$$ AS s",
    "SELECT 'it''s' || E'\\n' AS s, 'C:\\tmp' AS p",
]


def test_duckdb_specific_statements_pass_through(tpch_con):
    cur = tpch_con.cursor()
    for statement in DUCKDB_STATEMENTS:
        assert rewrite(statement) is statement
        cur.execute(statement)  # they are real DuckDB, and run
    cur.close()


def test_mixed_script_changes_only_the_clause_statement():
    corpus = [p.read_text() for p in TPCH_QUERIES] + [s + ";\n" for s in DUCKDB_STATEMENTS]
    clause = CLAUSE + ";\n"
    script = "".join(corpus[:11] + [clause] + corpus[11:])
    before, after = split_statements(script), split_statements(rewrite(script))
    assert len(before) == len(after) == len(corpus) + 1
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed == [11]
    body = clause.rstrip(";\n")
    assert after[11] == before[11].replace(body, rewrite(body))


# ---------------------------------------------------------------------------
# Errors point at the clause.

ERRORS = [
    ("SELECT * FROM docs CLUSTER BY EMBEDDING() USING kmeans",
     "EMBEDDING(...) needs at least one column, got ')'", 1, 41),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING USING kmeans",
     "Expected '(' after EMBEDDING, got 'USING'", 1, 41),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e, ) USING kmeans",
     "Expected an embedding column name, got ')'", 1, 44),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING 'kmeans'",
     "Expected an algorithm name after USING, got 'kmeans'", 1, 50),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans(n_clusters 12)",
     "Expected '=', '=>' or ':=' after parameter 'n_clusters', got '12'", 1, 68),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans(n_clusters = )",
     "The value of parameter 'n_clusters' must be a number, a 'string', true, false or NULL, got ')'",
     1, 70),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING hdbscan(method = leaf)",
     "must be a number, a 'string', true, false or NULL (quote text values: 'leaf'), got 'leaf'", 1, 67),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans(n = 1, N = 2)",
     "Parameter 'n' of kmeans is given twice, got 'N'", 1, 64),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans(n = 1 2)",
     "Expected ',' or ')' after the value of parameter 'n', got '2'", 1, 63),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans(n = 1",
     "Expected ',' or ')' after the value of parameter 'n', but the statement ended", 1, 62),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans(n = 1e999)",
     "The value of parameter 'n' must be finite, got '1e999'", 1, 61),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans(n = 1) FOO",
     "Unexpected token after the CLUSTER BY EMBEDDING clause", 1, 64),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans WHERE cluster_id = 1",
     "FROM, JOIN and WHERE must come before CLUSTER BY EMBEDDING", 1, 57),
    ("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans PREPROCESS umap(method = 'x')",
     "A preprocessing step cannot take a parameter named 'method', got 'umap'", 1, 68),
    ("SELECT 1 CLUSTER BY EMBEDDING(e) USING kmeans",
     "CLUSTER BY EMBEDDING needs a FROM clause", 1, 10),
    ("SELECT 1;\n\nSELECT *\n  FROM docs\n  CLUSTER BY EMBEDDING(e) USING",
     "Expected an algorithm name after USING, but the statement ended", 5, 32),
]


@pytest.mark.parametrize(("sql", "message", "line", "column"), ERRORS)
def test_malformed_clause_points_at_it(sql, message, line, column):
    with pytest.raises(SpecError) as info:
        rewrite(sql)
    text = str(info.value)
    assert message in text
    assert f"at line {line}, column {column}:" in text
    assert "Expected: CLUSTER BY EMBEDDING(column[, column ...]) [USING algorithm" in text
    caret = text.splitlines()[2]
    assert caret.index("^") - 2 == column - 1  # the excerpt line is printed with the same indent


def test_error_excerpt_looks_like_this():
    with pytest.raises(SpecError) as info:
        rewrite("SELECT *\nFROM docs CLUSTER BY EMBEDDING(e) USING 'kmeans' GROUP BY 1")
    assert str(info.value).splitlines()[:3] == [
        "Invalid CLUSTER BY EMBEDDING clause: Expected an algorithm name after USING, "
        "got 'kmeans' at line 2, column 41:",
        "  FROM docs CLUSTER BY EMBEDDING(e) USING 'kmeans' GROUP BY 1",
        "                                          ^^^^^^^^",
    ]


def test_without_using_the_default_algorithm_clusters():
    """No USING: cluster_embeddings is called without algorithm, so its default ('auto')
    applies; PREPROCESS and ID may still follow."""
    assert rewrite("SELECT * FROM docs CLUSTER BY EMBEDDING(e) GROUP BY 1") == (
        "WITH __dc_src_1 AS (SELECT * FROM docs) SELECT * FROM "
        "cluster_embeddings('__dc_src_1', 'e') AS docs GROUP BY 1")
    out = rewrite("SELECT * FROM docs CLUSTER BY EMBEDDING(e) ID doc_id")
    assert "cluster_embeddings('__dc_src_1', 'e', id := 'doc_id')" in out


def test_statement_sqlglot_cannot_parse_is_reported_with_its_position():
    sql = "CREATE MACRO m(a, b := 2) AS TABLE SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans"
    with pytest.raises(SpecError, match=r"Cannot parse the statement that uses CLUSTER BY EMBEDDING.*"
                       r"at line 1, column \d+:"):
        rewrite(sql)


@pytest.mark.parametrize(
    ("sql", "message", "column"),
    [
        ("SHOW SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans",
         "CLUSTER BY EMBEDDING cannot be rewritten in this kind of statement", 25),
        ("CALL f((SELECT 1 FROM docs CLUSTER BY EMBEDDING(e) USING kmeans))",
         "Cannot parse the statement that uses CLUSTER BY EMBEDDING", 6),
    ],
    ids=["sqlglot-command-fallback", "call"],
)
def test_statements_sqlglot_keeps_as_text_are_refused(sql, message, column):
    with pytest.raises(SpecError, match=rf"{message}.* at line 1, column {column}:"):
        rewrite(sql)


def test_untokenizable_script_with_the_clause_is_an_error():
    with pytest.raises(SpecError, match="unterminated string"):
        rewrite("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING kmeans WHERE x = 'oops")
    assert rewrite("SELECT 'oops") == "SELECT 'oops"


def test_spec_error_is_a_value_error():
    with pytest.raises(ValueError):
        rewrite("SELECT * FROM docs CLUSTER BY EMBEDDING(e) USING")


# ---------------------------------------------------------------------------
# Properties.

TRAPS = ["CLUSTER BY EMBEDDING(e) USING kmeans", ";", "--", "/*", "*/", "'", '"', "$$", "\n", "\\"]
_chars = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
trap_text = st.lists(st.one_of(st.text(_chars, max_size=8), st.sampled_from(TRAPS)), max_size=4).map("".join)


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_name(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def block_comment(text: str) -> str:
    # Spaces inside the delimiters: DuckDB and sqlglot nest block comments, so no
    # "/*" may form at the edges either.
    return "/* " + text.replace("*/", "* /").replace("/*", "/ *") + " */"


def line_comment(text: str) -> str:
    return "--" + re.sub(r"[\r\n]", " ", text) + "\n"


trivia = st.lists(
    st.one_of(st.sampled_from([" ", "\n", "\t"]), trap_text.map(block_comment), trap_text.map(line_comment)),
    min_size=1, max_size=3,
).map("".join)
scalar = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    trap_text.map(sql_string),
    trap_text.filter(bool).map(sql_name),
    st.sampled_from(["[1, 2]", "'7'::INTEGER", "list_transform([1], lambda x: x + 1)", "{'a': 1}.a",
                     "count(*)", "x -> x", "$$ ; $$", "CAST(1 AS VARCHAR)", "DATE '1995-03-15'"]),
)


@st.composite
def duckdb_statements(draw):
    exprs = draw(st.lists(scalar, min_size=1, max_size=4))
    ws = draw(trivia)
    form = draw(st.sampled_from(["select", "from-first", "macro", "cte"]))
    if form == "select":
        tail = draw(st.sampled_from(["", " WHERE 1 = 1", " GROUP BY ALL", " ORDER BY 1 LIMIT 3",
                                     " CLUSTER BY x", " QUALIFY 1 = 1"]))
        return f"SELECT{ws}{', '.join(exprs)} FROM t{tail}"
    if form == "from-first":
        return f"FROM t{ws}SELECT {', '.join(exprs)}"
    if form == "macro":
        return f"CREATE MACRO m(a, b := {exprs[0]}) AS{ws}a + b"
    return f"WITH c AS (SELECT {exprs[0]} AS v){ws}SELECT * FROM c"


@st.composite
def scripts(draw):
    statements = draw(st.lists(duckdb_statements(), min_size=1, max_size=4))
    seps = draw(st.lists(st.tuples(trivia, trivia), min_size=len(statements), max_size=len(statements)))
    end = draw(st.booleans())
    parts = [f"{a}{s}{b}" for s, (a, b) in zip(statements, seps)]
    return ";".join(parts) + (";" if end else ""), len(statements)


@settings(max_examples=100, deadline=None)
@given(scripts())
def test_property_scripts_without_the_clause_pass_through(case):
    script, n = case
    assert rewrite(script) is script
    assert not has_cluster_syntax(script)
    chunks = split_statements(script)
    assert len(chunks) == n
    assert "".join(chunks) == script


fragments = st.one_of(
    st.text(_chars, max_size=8),
    st.sampled_from(["CLUSTER BY ", "EMBEDDING", "(", ")", "e", "USING ", "kmeans", "n = ", "-", "1",
                     "'", '"', "--", "/*", "*/", ";", "\n", "$$", "SELECT * FROM t ", ", ", "WHERE "]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(fragments, max_size=14).map("".join))
def test_property_any_text_is_returned_as_is_or_refused_with_a_spec_error(text):
    try:
        out = rewrite(text)
    except SpecError:
        assert has_cluster_syntax(text)
        return
    if not has_cluster_syntax(text):
        assert out is text


# Clause arguments: quoted names may hold anything; unquoted ones are plain words.
quoted_name = st.text(_chars, min_size=1, max_size=12)
plain_word = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda w: w.upper() not in {"NULL", "TRUE", "FALSE", "LIMIT", "OFFSET", "WINDOW", "ON", "ID",
                                "PREPROCESS"}
    and [t.token_type.name for t in sqlglot.tokenize(w, read="duckdb")] in (["VAR"], ["IDENTIFIER"])
)
param_value = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), trap_text, st.booleans(), st.none()
)


def name_sql(draw, expected_lower: bool) -> tuple[str, str]:
    """Return (sql text, expected value) for a name, quoted or not."""
    if draw(st.booleans()):
        name = draw(quoted_name)
        return sql_name(name), name
    word = draw(plain_word)
    return word, word.lower() if expected_lower else word


def value_sql(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return sql_string(value)
    return repr(value) if isinstance(value, float) else str(value)


@st.composite
def param_lists(draw):
    sql, values = [], {}
    for _ in range(draw(st.integers(0, 3))):
        text, name = name_sql(draw, expected_lower=True)
        if name in values or name == "method":
            continue
        values[name] = draw(param_value)
        op = draw(st.sampled_from(["=", "=>", ":=", " = "]))
        sql.append(f"{text}{op}{value_sql(values[name])}")
    return "(" + ", ".join(sql) + ")", values


@st.composite
def clauses(draw):
    cols = [name_sql(draw, expected_lower=False) for _ in range(draw(st.integers(1, 3)))]
    algo_sql, algo = name_sql(draw, expected_lower=True)
    params_sql, params = draw(param_lists())
    sql = f"CLUSTER BY EMBEDDING({', '.join(c for c, _ in cols)}) USING {algo_sql}{params_sql}"
    steps = None
    if draw(st.booleans()):
        steps, parts = [], []
        for _ in range(draw(st.integers(1, 2))):
            step_sql, step = name_sql(draw, expected_lower=True)
            step_params_sql, step_params = draw(param_lists())
            parts.append(step_sql + step_params_sql)
            steps.append({"method": step, **step_params})
        sql += " PREPROCESS " + ", ".join(parts)
    id_col = None
    if draw(st.booleans()):
        id_sql, id_col = name_sql(draw, expected_lower=False)
        sql += f" ID {id_sql}"
    names = [c for _, c in cols]
    expected = (names[0] if len(names) == 1 else names, algo, params, steps, id_col)
    return sql, expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clauses())
def test_property_clause_arguments_become_exactly_one_call(echo_con, case):
    clause, (embedding, algorithm, params, steps, id_col) = case
    out = rewrite(f"SELECT * FROM docs {clause} LIMIT 5")

    # One statement holding one cluster_embeddings call, per sqlglot and per DuckDB.
    trees = sqlglot.parse(out, read="duckdb")
    assert len(trees) == 1
    calls = [f for f in trees[0].find_all(exp.Anonymous) if f.name.lower() == "cluster_embeddings"]
    assert len(calls) == 1
    assert len(echo_con.extract_statements(out)) == 1

    # The arguments, as DuckDB itself reads them, equal the inputs.
    source, emb, algo, params_json, steps_json, id_value = echo_con.execute(out).fetchone()
    assert source == "__dc_src_1"
    assert emb == embedding
    assert algo == algorithm
    assert json.loads(params_json) == params
    assert (None if steps_json is None else json.loads(steps_json)) == steps
    assert id_value == id_col
