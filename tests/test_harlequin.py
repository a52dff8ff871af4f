"""Harlequin: `harlequin -a duckcluster DB` driven in a real terminal (tmux).

Types queries into Harlequin's editor, runs them with ctrl+j and reads the
screen: a Python UDF (assign_cluster), a read-side macro (cluster_members) and
the CLUSTER BY EMBEDDING sugar all work in the IDE.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("harlequin_duckdb", reason="harlequin is not installed")
TMUX = shutil.which("tmux")
HARLEQUIN = Path(sys.executable).with_name("harlequin")
pytestmark = pytest.mark.skipif(TMUX is None or not HARLEQUIN.exists(),
                                reason="needs tmux and the harlequin command")

from conftest import blobs, load_table

import duckcluster


class Terminal:
    """One tmux server on a private socket running one command in a 160x45 pane."""

    def __init__(self, command: str, env: dict[str, str], cwd: Path):
        self.socket = f"duckcluster-test-{os.getpid()}"
        self.env = env
        # keep the pane (and the error) if the command exits early
        self.tmux("new-session", "-d", "-s", "t", "-x", "160", "-y", "45",
                  f"{command}; echo COMMAND-EXITED $?; sleep 600", cwd=cwd)

    def tmux(self, *args: str, cwd: Path | None = None) -> str:
        return subprocess.run([TMUX, "-L", self.socket, "-f", os.devnull, *args], env=self.env,
                              cwd=cwd, capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", "t", *(["-l"] if literal else []), *keys)

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if "COMMAND-EXITED" in screen or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear; the screen shows:\n{screen}")
            time.sleep(0.3)

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], env=self.env,
                       capture_output=True, timeout=30, check=False)


@pytest.fixture
def harlequin(tmp_path):
    db = tmp_path / "analytics.duckdb"
    with duckcluster.connect(str(db)) as con:
        X, _ = blobs(n_per=30, k=3, d=8)
        load_table(con, "docs", X)
        con.sql("SELECT cluster_create('topics', source := 'docs', embedding := 'embedding', "
                "id := 'doc_id', algorithm := 'kmeans', params := {'n_clusters': 3})").fetchall()
        con.sql("SELECT cluster_execute('topics')").fetchall()
    home = tmp_path / "home"  # Harlequin's config, cache and history stay in the test
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_DATA_HOME": str(home / ".local"),
           "TERM": "xterm-256color"}
    env.pop("TMUX", None)
    term = Terminal(f"{shlex.quote(str(HARLEQUIN))} -a duckcluster --locale C --no-init "
                    f"{shlex.quote(db.name)}", env, tmp_path)
    try:
        term.wait_for("Query Editor")
        term.wait_for("Database Connected")
        yield term
    finally:
        term.close()


def test_duckcluster_functions_in_harlequin(harlequin):
    """One query (typing into a fresh editor is the reliable path): a Python UDF, a
    read-side macro and the CLUSTER BY EMBEDDING sugar, each giving a known number."""
    harlequin.keys(
        "with a as (select 4200 + count(*) as udf_check from docs "
        "where assign_cluster(embedding, 'topics') >= 0), "
        "m as (select 7000 + count(*) as macro_check from cluster_members('topics')), "
        "s as (select 100 * count(distinct cluster_id) + count(*) as sugar_check from docs "
        "cluster by embedding(embedding) using kmeans(n_clusters = 3)) "
        "select * from a, m, s", literal=True)
    harlequin.keys("C-j")  # run
    screen = harlequin.wait_for("Query Results (1 Records)")
    results = screen[screen.index("Query Results"):]
    for name, value in (("udf_check", "4290"), ("macro_check", "7090"), ("sugar_check", "390")):
        assert name in results and value in results, results


def test_errors_read_like_duckdb_in_harlequin(harlequin):
    """A duckcluster error is one line in Harlequin's error dialog: what was wrong, with
    its class, no "Python exception occurred while executing the UDF"."""
    harlequin.keys("select cluster_execute('missing')", literal=True)
    harlequin.keys("C-j")
    screen = harlequin.wait_for("UnknownNameError: No cluster definition named 'missing'")
    assert "Python exception" not in screen and "ValueError" not in screen
