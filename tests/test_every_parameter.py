"""One invalid value for every parameter of every declared SQL function (issue 13 item 5,
issue 14 "find the rest"): the call fails before any work, its message names the parameter
(or echoes the bad value of an identifying argument) and says what is allowed or how to
fix it, carries no Python traceback, and the database and its artifact files are as they
were.

Driven from the registry (``FUNCTIONS`` of every area): the invalid value of a JSON option
comes from the Param table its declaration ``checks``; of a typed argument, from its SQL
type; the rest from :data:`INVALID`. A parameter that gains no invalid value fails
:func:`test_every_declared_parameter_has_an_invalid_value`, and the declared parameters
must be the ones tests/sql_surface.json pins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import blobs, load_table

import duckcluster
from duckcluster.functions import AREAS

SNAPSHOT = Path(__file__).with_name("sql_surface.json")
FUNCTIONS = {f.name: f for area in AREAS for f in getattr(area, "FUNCTIONS", ())}

#: Valid arguments of each function (SQL text); ``{dir}``, ``{run}``, ``{trigger}``,
#: ``{webhook}`` are filled from the world. One parameter at a time is made invalid.
BASE = {
    "cluster_create": dict(name="'fresh'", source="'docs'", embedding="'embedding'",
                           id="'doc_id'", algorithm="'kmeans'", params="{'n_clusters': 2}"),
    "cluster_execute": dict(name="'d'"),
    "cluster_delete": dict(name="'d'"),
    "cluster_label": dict(name="'d'", text="'body'"),
    "cluster_enrich": dict(name="'d'", target="'tgt'"),
    "cluster_promote": dict(name="'d'", taxonomy_name="'t2'"),
    "taxonomy_delete": dict(taxonomy_name="'t'"),
    "assign_taxonomy": dict(embedding="{vec}", taxonomy_name="'t'"),
    "assign_taxonomy_detail": dict(embedding="{vec}", taxonomy_name="'t'"),
    "embed_text": dict(input="'hello'", base_url="'http://127.0.0.1:9/v1'", max_retries="0",
                       timeout="1", api_key_env="'DC_TEST_KEY'"),
    "cluster_submit": dict(name="'d'"),
    "cluster_wait": dict(run_id="'{run}'"),
    "cluster_trigger_create": dict(name="'d'", every="INTERVAL 1 HOUR"),
    "cluster_trigger_delete": dict(trigger_id="'{trigger}'"),
    "cluster_webhook_create": dict(name="'d'", url="'http://127.0.0.1:9/hook'", secret="'s'"),
    "cluster_webhook_delete": dict(webhook_id="'{webhook}'"),
    "cluster_webhook_deliver": dict(),
    "cluster_assign_parquet": dict(name="'d'", source="'{dir}/docs.parquet'",
                                   output="'{dir}/out'", id="'doc_id'"),
    "cluster_sweep": dict(name="'d'", grid="{'n_clusters': [2, 3]}"),
    "embedding_drift": dict(baseline="'docs'", current="'docs'", embedding="'embedding'",
                            method="'mean_shift'"),
    "embedding_drift_explain": dict(baseline="'docs'", current="'docs'",
                                    embedding="'embedding'"),
    "embedding_drift_windows": dict(source="'docs'", embedding="'embedding'",
                                    method="'mean_shift'"),
    "drift_monitor_create": dict(name="'m2'", reference="'d'"),
    "drift_monitor_add": dict(name="'m'", source="'docs'", time_column="'created_at'"),
    "drift_monitor_windows": dict(name="'m'"),
    "drift_monitor_delete": dict(name="'m'"),
}

#: Other valid arguments for some parameters (a trigger's kind follows from what is given).
BASE_FOR = {
    ("cluster_trigger_create", "schedule"): dict(name="'d'"),
    ("cluster_trigger_create", "timezone"): dict(name="'d'", schedule="'0 * * * *'"),
    ("cluster_trigger_create", "cooldown"): dict(name="'d'", when_rows_added="10"),
    ("cluster_trigger_create", "method"): dict(name="'d'", when_drift_above="0.1"),
    ("cluster_trigger_create", "drift_current"): dict(name="'d'", when_drift_above="0.1"),
    ("cluster_trigger_create", "when_drift_above"): dict(name="'d'"),
    ("cluster_trigger_create", "when_rows_added"): dict(name="'d'"),
}

#: Invalid values the Param tables and SQL types do not give: (function, parameter) first,
#: then the parameter alone.
INVALID = {
    ("cluster_create", "name"): "''",
    ("cluster_create", "source"): "'no_such_table'",
    ("cluster_create", "embedding"): "'no_such_column'",
    ("cluster_create", "id"): "'no_such_column'",
    ("cluster_create", "partition_by"): "'no_such_column'",
    ("cluster_promote", "taxonomy_name"): "''",
    ("cluster_assign_parquet", "source"): "'{dir}/missing/*.parquet'",
    ("cluster_assign_parquet", "output"): "''",
    ("cluster_assign_parquet", "embedding"): "'no_such_column'",
    ("cluster_assign_parquet", "id"): "'no_such_column'",
    ("cluster_assign_parquet", "backend"): "'cloud'",
    ("cluster_assign_parquet", "ray_address"): "'not an address'",
    ("embed_text", "provider"): "'nope'",
    ("embed_text", "base_url"): "'not a url'",
    ("cluster_label", "base_url"): "'not a url'",
    ("cluster_label", "embedding_base_url"): "'not a url'",
    ("cluster_enrich", "target"): "''",
    ("embedding_drift", "baseline"): "'no_such_table'",
    ("embedding_drift", "current"): "'no_such_table'",
    ("embedding_drift", "embedding"): "'no_such_column'",
    ("embedding_drift_explain", "baseline"): "'no_such_table'",
    ("embedding_drift_explain", "current"): "'no_such_table'",
    ("embedding_drift_explain", "embedding"): "'no_such_column'",
    ("embedding_drift_windows", "source"): "'no_such_table'",
    ("embedding_drift_windows", "embedding"): "'no_such_column'",
    ("embedding_drift_windows", "time_column"): "'no_such_column'",
    ("embedding_drift_windows", "window_size"): "'ten days'",
    ("embedding_drift_windows", "window"): "'ten days'",
    ("embedding_drift_windows", "baseline"): "'not a window'",
    ("drift_monitor_create", "name"): "''",
    ("drift_monitor_create", "window_size"): "'ten days'",
    ("drift_monitor_add", "source"): "'no_such_table'",
    ("drift_monitor_add", "embedding"): "'no_such_column'",
    ("drift_monitor_add", "time_column"): "'no_such_column'",
    ("drift_monitor_windows", "baseline"): "'not a window'",
    "name": "'no_such_definition'",
    "algorithm": "'nope'",
    "params": "{'n_clusters': 'two'}",
    "preprocessing": "[{'method': 'nope'}]",
    "labeling": "{'provider': 'nope'}",
    "lineage": "{'nope': 1}",
    "run_id": "'run_nope'",
    "mode": "'sideways'",
    "text": "'no_such_column +'",
    "input_mappings": "[{'input_key': 'txt', 'path': 'a'}]",
    "response_shape": "{'name': 'strng'}",
    "target": "'no_such_table'",
    "fields": "['nope']",
    "clusters": "[999]",
    "taxonomy_name": "'no_such_taxonomy'",
    "embedding": "'not a vector'",
    "schedule": "'not a cron'",
    "every": "'ten minutes'",
    "method": "'nope'",
    "timezone": "'Mars/Olympus'",
    "cooldown": "'soon'",
    "url": "'ftp://example.com/hook'",
    "secret": "''",
    "secret_env": "''",
    "events": "['run.done']",
    "trigger_id": "'trg_nope'",
    "webhook_id": "'wh_nope'",
    "grid": "{'n_clusters': 'two'}",
    "backend": "'cloud'",
    "ray_address": "'not an address'",
    "api_key_env": "''",
    "prefix": "'bad prefix;'",
}

#: Parameters with no invalid value, and why.
NO_INVALID_VALUE = {
    ("cluster_promote", "taxonomy"): "deprecated alias: its value reaches cluster_promote "
                                     "only as taxonomy_name, tested there",
    ("embed_text", "input"): "any value is text (it is cast to VARCHAR)",
}

#: Identifying arguments: the message may echo the bad value instead of the parameter name
#: ("No cluster definition named 'no_such_definition'").
BY_VALUE = {"name", "partition_by", "run_id", "baseline", "current", "time_column", "target", "taxonomy_name", "trigger_id", "webhook_id", "source",
            "embedding", "id", "text", "fields", "clusters", "output", "secret", "url"}

#: JSON containers: the message names the key inside them that is wrong.
INNER = {"params": "n_clusters", "labeling": "provider", "lineage": "nope",
         "preprocessing": "nope", "grid": "n_clusters", "input_mappings": "txt",
         "response_shape": "strng"}

#: Words that say what is allowed or how to fix it.
HELP = ("must", "valid", "one of", "list them", "did you mean", "use ", "pass ", "expected",
        "needs", "give ", "set ", "allowed", "like ", "e.g.", "columns:", "not a", "does not")


def _from_param(param) -> str | None:
    """An invalid SQL literal for a Param: outside its range, not its type, not a choice."""
    if param.kind is bool:
        return "'maybe'"
    if param.kind in (int, float):
        if param.high is not None:
            return repr(param.high + 1)
        if param.low is not None:
            return repr(param.low if param.low_open else param.low - 1)
        return "'ten'"
    if param.choices:
        return "'nope'"
    return "12345"


def invalid_value(fn, p) -> str | None:
    if (fn.name, p.name) in INVALID:
        return INVALID[(fn.name, p.name)]
    if fn.checks and p.name in fn.checks:
        return _from_param(fn.checks[p.name])
    if p.to == "arg" and p.sql_type in ("DOUBLE", "FLOAT", "INTEGER", "BIGINT"):
        return "'ten'"
    if p.to == "arg" and p.sql_type == "BOOLEAN":
        return "'maybe'"
    return INVALID.get(p.name)


CASES = [(f.name, p.name) for f in FUNCTIONS.values() for p in f.params
         if (f.name, p.name) not in NO_INVALID_VALUE]


def test_every_declared_parameter_has_an_invalid_value():
    missing = [c for c in CASES if invalid_value(FUNCTIONS[c[0]], _param(*c)) is None]
    assert not missing, f"add an invalid value to INVALID (or a Param to checks): {missing}"
    assert sorted(BASE) == sorted(FUNCTIONS)


def test_the_declarations_are_the_pinned_surface():
    want = json.loads(SNAPSHOT.read_text())
    for f in FUNCTIONS.values():
        pinned = want[f.name]["overloads"]
        assert [p.name for p in f.params] in pinned, f.name


def _param(fn_name, name):
    return next(p for p in FUNCTIONS[fn_name].params if p.name == name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("params")
    con = duckcluster.connect(str(d / "w.duckdb"))
    X, y = blobs(n_per=40, k=3, d=16)
    words = np.array(["apples and pears", "trains and buses", "rivers and lakes"])
    days = np.datetime64("2026-01-01") + (np.arange(len(y)) % 4).astype("timedelta64[D]")
    load_table(con, "docs", X, topic=y.astype(np.int32), body=words[y],
               created_at=days.astype("datetime64[us]"))
    con.sql(f"COPY docs TO '{d}/docs.parquet' (FORMAT parquet)").fetchall()
    con.sql("CREATE TABLE tgt AS SELECT doc_id FROM docs").fetchall()
    con.sql("SELECT cluster_create('d', source := 'docs', embedding := 'embedding', "
            "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
    run = con.sql("SELECT cluster_execute('d')").fetchall()[0][0]
    con.sql("SELECT cluster_promote('d', 't')").fetchall()
    trigger = con.sql("SELECT cluster_trigger_create('d', every := INTERVAL 1 DAY)").fetchall()[0][0]
    webhook = con.sql("SELECT cluster_webhook_create('d', url := 'http://127.0.0.1:9/h', "
                      "secret := 's')").fetchall()[0][0]
    con.sql("SELECT drift_monitor_create('m', reference := 'd')").fetchall()
    con.sql("SELECT drift_monitor_add('m', 'docs', time_column := 'created_at')").fetchall()
    vec = "[" + ", ".join(f"{v:.4f}" for v in X[0]) + "]::FLOAT[16]"
    yield dict(con=con, dir=str(d), run=run, trigger=trigger, webhook=webhook, vec=vec)
    con.close()


def state(con, folder: str):
    """Every table's rows (as a hash) and every file under the world's folder."""
    tables = con.sql("SELECT schema_name, table_name FROM duckdb_tables() "
                     "WHERE database_name = current_database() ORDER BY ALL").fetchall()
    rows = {f"{s}.{t}": con.sql(f'SELECT count(*), sum(hash(x::VARCHAR)) FROM "{s}"."{t}" x')
            .fetchall()[0] for s, t in tables}
    files = sorted(os.path.relpath(os.path.join(r, f), folder)
                   for r, _, fs in os.walk(folder) for f in fs if not f.endswith(".wal"))
    return rows, files


def fill(sql: str, world: dict) -> str:
    for key in ("dir", "run", "trigger", "webhook", "vec"):
        sql = sql.replace("{" + key + "}", world[key])
    return sql


def call(fn, args: dict) -> str:
    f = FUNCTIONS[fn]
    parts = [f'"{k}" := {v}' if k == "window" else f"{k} := {v}" for k, v in args.items()]
    sql = f"{fn}({', '.join(parts)})"
    return f"SELECT * FROM {sql}" if f.kind == "table" else f"SELECT {sql}"


@pytest.mark.parametrize("fn,param", CASES, ids=[f"{f}.{p}" for f, p in CASES])
def test_an_invalid_value_is_refused_clearly(world, fn, param):
    con = world["con"]
    bad = fill(invalid_value(FUNCTIONS[fn], _param(fn, param)), world)
    args = {k: fill(v, world) for k, v in BASE_FOR.get((fn, param), BASE[fn]).items()}
    args[param] = bad
    before = state(con, world["dir"])
    os.environ.pop("DC_TEST_KEY", None)
    with pytest.raises(duckdb.Error) as err:
        con.sql(call(fn, args)).fetchall()
    msg = str(err.value)
    assert "Python exception occurred" not in msg and "Traceback" not in msg, msg
    low = msg.lower()
    shown = bad.strip("'")
    assert (param in low or (param in BY_VALUE and shown and shown in msg)
            or INNER.get(param, "\0") in msg), \
        f"{fn}({param} := {bad}): the message does not name {param!r}: {msg}"
    assert any(h in low for h in HELP), f"{fn}({param} := {bad}) says not what to do: {msg}"
    assert state(con, world["dir"]) == before, f"{fn}({param} := {bad}) changed the database"


#: Messages this test made clear (issue 14's sweep); docs/errors.md lists each.
FIXED = {
    ("cluster_delete", "drop_artifacts"):
        "cluster_delete: drop_artifacts must be true or false; got 'maybe'",
    ("cluster_wait", "timeout"): "cluster_wait: timeout must be a number; got 'ten'",
    ("assign_taxonomy", "embedding"):
        "assign_taxonomy: embedding must be a list of numbers (FLOAT[] or FLOAT[n]); got "
        "'not a vector'",
    ("cluster_label", "base_url"):
        "The 'base_url' parameter of cluster_label must be an http:// or https:// URL of the "
        "API root",
    ("embed_text", "base_url"):
        "The 'base_url' parameter of embed_text must be an http:// or https:// URL",
    ("cluster_webhook_create", "secret_env"):
        "cluster_webhook_create: secret_env must be a non-empty string naming the environment "
        "variable that holds the secret, or NULL",
    ("cluster_promote", "taxonomy_name"):
        "cluster_promote: taxonomy_name must be a non-empty name, like 'topics'",
    ("embedding_drift_windows", "baseline"):
        "baseline must be a time inside the baseline window, like '2026-01-05'",
    ("drift_monitor_windows", "alpha"):
        "The 'alpha' parameter of drift_monitor_windows must be a float in the range (0, 1)",
    ("cluster_sweep", "ray_address"):
        "ray_address must be a Ray address such as 'ray://head:10001' or 'auto' (or host:port)",
}


@pytest.mark.parametrize("fn,param", sorted(FIXED))
def test_the_fixed_messages(world, fn, param):
    bad = fill(invalid_value(FUNCTIONS[fn], _param(fn, param)), world)
    args = {k: fill(v, world) for k, v in BASE_FOR.get((fn, param), BASE[fn]).items()}
    args[param] = bad
    with pytest.raises(duckdb.Error) as err:
        con = world["con"]
        con.sql(call(fn, args)).fetchall()
    assert FIXED[(fn, param)] in str(err.value)


def test_the_fixed_messages_are_published():
    doc = (Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [m for m in FIXED.values() if m not in doc]
    assert not missing, missing
