"""Apache Superset's SQL Lab over a duckcluster database file, with no initial SQL.

Superset (like most BI tools) has no per-connection SQL to load duckcluster's macros, so
this shows what the file itself holds: the views ``duckcluster.latest_*`` and the
persistent macros ``duckcluster.cluster_members(...)`` & co., read by a real Superset
server through duckdb-engine, with ids that join back to the source with no cast.

Superset is heavy and pins its own libraries, so it lives in a venv of its own::

    python3.11 -m venv venv-superset
    venv-superset/bin/pip install apache-superset duckdb-engine "sqlalchemy<2.1" duckdb==2.0.1 \\
        rich cachetools "flask-caching<2.4"
    python examples/superset/sql_lab.py --superset-venv venv-superset

(Superset 6.1.0 needs ``rich`` and ``cachetools`` without declaring them, and fails to
start with Flask-Caching 2.4+.) This script runs in duckcluster's environment: it builds
``superset_demo.duckdb`` from the shipped demo documents (k-means and HDBSCAN, offline
labels),
closes it, sets up a Superset home in a temporary folder (``superset db upgrade``,
``fab create-admin``, ``init``: a few minutes), starts ``superset run`` on 127.0.0.1,
registers the file read-only, runs the queries below through SQL Lab's API
(``/api/v1/sqllab/execute/``) and prints what Superset returned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from importlib import resources
from pathlib import Path

QUERIES = {
    "clusters with names, per definition, noise included": """
        SELECT name, label, count(*) AS docs,
               round(avg(cosine_similarity_to_centroid), 3) AS similarity
        FROM duckcluster.latest_members
        GROUP BY ALL ORDER BY name, docs DESC""",
    "quality of every definition": """
        SELECT name, n_clusters, round(silhouette_score, 3) AS silhouette,
               round(noise_ratio, 3) AS noise_ratio, should_recluster
        FROM duckcluster.latest_quality""",
    "members joined back to the source (typed ids, no cast)": """
        SELECT c.label, count(*) AS docs, mode(d.category) AS main_category,
               round(avg((d.category = mode_cat)::INT), 3) AS purity
        FROM duckcluster.cluster_members('docs') m
        JOIN docs d ON d.id = m.id
        JOIN duckcluster.latest_centroids c USING (run_id, cluster_id)
        JOIN (SELECT m2.cluster_id, mode(d2.category) AS mode_cat
              FROM duckcluster.cluster_members('docs') m2 JOIN docs d2 ON d2.id = m2.id
              GROUP BY m2.cluster_id) USING (cluster_id)
        GROUP BY c.label ORDER BY docs DESC""",
    "the id type Superset sees": """
        SELECT DISTINCT typeof(id) AS id_type FROM duckcluster.cluster_members('docs')""",
}


def build(db: str) -> None:
    """The demo documents (train split): k-means with 8 clusters ('docs') and HDBSCAN
    ('dense', which leaves noise), both with offline labels."""
    import duckcluster

    for f in (db, db + ".wal"):
        if os.path.exists(f):
            os.remove(f)
    parquet = str(resources.files("duckcluster").joinpath("data", "demo_docs.parquet"))
    with duckcluster.connect(db) as con:
        con.execute("CREATE TABLE docs AS SELECT id, category, text, embedding::FLOAT[384] "
                    f"AS embedding FROM read_parquet(?) WHERE split = 'train'", [parquet])
        con.sql("SELECT cluster_create('docs', source := 'docs', embedding := 'embedding', "
                "id := 'id', algorithm := 'kmeans', params := {'n_clusters': 8})").fetchall()
        con.sql("SELECT cluster_create('dense', source := 'docs', embedding := 'embedding', "
                "id := 'id', algorithm := 'hdbscan', params := {'min_cluster_size': 40}, "
                "preprocessing := [{'method': 'umap', 'n_components': 5}])").fetchall()
        for name in ("docs", "dense"):
            con.sql(f"SELECT cluster_execute('{name}')").fetchall()
            con.sql(f"SELECT cluster_label('{name}', text := 'text')").fetchall()


class Superset:
    """A Superset home in ``home`` and its server on 127.0.0.1:``port``."""

    def __init__(self, venv: Path, home: Path, port: int):
        self.bin = venv / "bin" / "superset"
        self.home, self.port = home, port
        self.base = f"http://127.0.0.1:{port}"
        config = home / "superset_config.py"
        config.write_text(f"SECRET_KEY = 'duckcluster-example-{os.getpid()}-not-a-secret'\n"
                          f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{home / 'superset.db'}'\n"
                          "WTF_CSRF_ENABLED = False\n")
        self.env = {**os.environ, "SUPERSET_CONFIG_PATH": str(config), "FLASK_APP": "superset",
                    "SUPERSET_HOME": str(home)}
        self.server: subprocess.Popen | None = None
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def cli(self, *args: str) -> None:
        out = subprocess.run([str(self.bin), *args], env=self.env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"superset {' '.join(args[:2])} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")

    def start(self) -> None:
        self.cli("db", "upgrade")
        self.cli("fab", "create-admin", "--username", "admin", "--firstname", "duck",
                 "--lastname", "cluster", "--email", "admin@example.org", "--password", "admin")
        self.cli("init")
        log = open(self.home / "server.log", "w")
        self.server = subprocess.Popen([str(self.bin), "run", "-h", "127.0.0.1", "-p",
                                        str(self.port), "--without-threads"],
                                       env=self.env, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        else:
            sys.exit(f"Superset did not start; see {self.home / 'server.log'}")
        # a browser's session login (SQL Lab's API did not find the database for a JWT
        # token's user in Superset 6.1.0)
        self.opener.open(f"{self.base}/login/", data=urllib.parse.urlencode(
            {"username": "admin", "password": "admin"}).encode(), timeout=60)

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        try:
            with self.opener.open(req, timeout=300) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            sys.exit(f"{method} {path}: HTTP {exc.code} {exc.read().decode()[:2000]}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=30)


def show(title: str, result: dict) -> None:
    cols = [c["name"] for c in result["columns"]]
    rows = [[str(r[c]) for c in cols] for r in result["data"]]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    print(f"\n-- {title} ({result['query']['db']}, via SQL Lab, {len(rows)} rows)")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--superset-venv", required=True, type=Path)
    ap.add_argument("--db", default="superset_demo.duckdb")
    ap.add_argument("--port", type=int, default=8097)
    args = ap.parse_args()
    db = os.path.abspath(args.db)
    build(db)
    print(f"built {db}")
    with tempfile.TemporaryDirectory(prefix="duckcluster-superset-") as home:
        sup = Superset(args.superset_venv.resolve(), Path(home), args.port)
        try:
            sup.start()
            version = subprocess.run([str(args.superset_venv / "bin" / "pip"), "show",
                                      "apache-superset"], capture_output=True, text=True).stdout
            print(next((l for l in version.splitlines() if l.startswith("Version")), ""))
            database = sup.api("POST", "/api/v1/database/", {
                "database_name": "duckcluster_demo", "sqlalchemy_uri": f"duckdb:///{db}",
                "expose_in_sqllab": True,
                "extra": json.dumps({"engine_params": {"connect_args": {"read_only": True}}})})
            for title, sql in QUERIES.items():
                result = sup.api("POST", "/api/v1/sqllab/execute/", {
                    "database_id": database["id"], "sql": sql.strip(), "runAsync": False})
                show(title, result)
        finally:
            sup.stop()


if __name__ == "__main__":
    main()
