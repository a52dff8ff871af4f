"""``duckcluster shell``: the real shell in a pseudo-terminal, piped stdin, and input splitting."""

from __future__ import annotations

import codecs
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from duckcluster.cli.shell import Command, InputSplitter, is_complete, split_input

REPO = Path(__file__).resolve().parent.parent
# CSI, OSC, DCS/APC strings, charset selection and the other two-byte escapes.
ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_][^\x1b]*\x1b\\"
    r"|\x1b[()*+][0-9A-Za-z]|\x1b[=>78cDEHMNOZ]"
)
TIMEOUT = 30
ENTER, CTRL_C, CTRL_D, UP, TAB = "\r", "\x03", "\x04", "\x1b[A", "\t"


def shell_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(
        TERM="xterm-256color",
        PROMPT_TOOLKIT_NO_CPR="1",  # nobody answers cursor position requests
        DUCKCLUSTER_HISTORY=str(tmp_path / "history"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    return env


def _controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A child process on a pseudo-terminal: type into it, wait for text on its screen."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path,
                 rows: int = 50, cols: int = 160) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        # A session of its own with the pty as controlling terminal, so Ctrl-C outside
        # raw mode sends SIGINT, as in a real terminal.
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=cwd, start_new_session=True,
                                     preexec_fn=_controlling_tty)  # noqa: PLW1509 - no threads here
        os.close(slave)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.raw = ""
        self.pos = 0  # expect() searches the screen text after this offset

    @property
    def text(self) -> str:
        """Everything written so far, escape codes and carriage returns removed."""
        return ANSI.sub("", self.raw).replace("\r", "")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.raw += self._decoder.decode(data)
        return bool(data)

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.text, self.pos)
            if match:
                self.pos = match.end()
                return match
            if time.monotonic() > deadline or not self._read(0.1):
                raise AssertionError(f"{pattern!r} not on screen after {timeout} s; "
                                     f"screen since last match:\n{self.text[self.pos:]}")

    def ready(self) -> None:
        """Wait for the next prompt: prompt_toolkit switches the terminal to raw mode before
        drawing it, and control keys typed earlier would meet the cooked line discipline."""
        self.expect(r"\nD")

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def line(self, text: str) -> None:
        self.send(text + ENTER)

    def complete(self, text: str) -> None:
        """Type ``text`` and Tab; wait until the completion was inserted (it runs in a
        thread, and a key typed before it lands would be lost in its menu)."""
        self.send(text + TAB)
        deadline = time.monotonic() + TIMEOUT
        seen = len(self.text)
        while time.monotonic() < deadline:
            self._read(0.1)
            if len(self.text) > seen and not self._read(0.3):
                break
            if len(self.text) > seen:
                seen = len(self.text)
                continue
        time.sleep(0.2)

    def wait(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        return self.proc.wait(timeout=1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminal(tmp_path):
    opened: list[Terminal] = []

    def start(db: str = "shell.duckdb", cols: int = 160) -> Terminal:
        term = Terminal([sys.executable, "-m", "duckcluster.cli", "shell", db],
                        shell_env(tmp_path), tmp_path, cols=cols)
        opened.append(term)
        term.expect(r"shell on .*Ctrl-D to exit")
        return term

    yield start
    for term in opened:
        term.close()


def test_interactive_session(terminal, tmp_path):
    """One session through the pty: SQL, errors, dot commands, clustering, keys, history."""
    term = terminal()
    term.line("CREATE TABLE docs AS SELECT 5 AS x;")  # DDL prints nothing, like the DuckDB CLI
    term.line("SELECT count(*) AS n FROM docs;")
    term.expect(r"│ +1 │")

    # Enter on an unfinished statement starts a continuation line instead of running it.
    term.line("SELECT 40 +")
    term.expect(r"·")
    term.line("  2 AS answer;")
    term.expect(r"│ +42 │")

    term.line("SELEC 1;")
    term.expect(r"Error:.*syntax error")
    term.line("SELECT 100 + 23;")
    term.expect(r"│ +123 │")

    term.line("CREATE VIEW docs_view AS SELECT x FROM docs;")
    term.line(".tables")  # a box per table with its columns, as the DuckDB CLI draws them
    term.expect(r"│ +docs +││ +docs_view +│")
    term.expect(r"│ x integer │")
    term.expect(r"1 rows")
    term.expect(r"duckcluster catalog: \d+ tables in schema duckcluster")

    (tmp_path / "script.sql").write_text(
        "-- a file\nCREATE TABLE t2 AS\n  SELECT 7 AS y;\n.tables t%\nSELECT y * 1111 FROM t2;\n")
    term.line(".read script.sql")
    term.expect(r"│ +t2 +│")
    term.expect(r"│ +7777 │")

    term.line(".tabels")
    term.expect(r"Unknown command '\.tabels'\. Did you mean \.tables\?")
    term.line(".help")
    term.expect(r"\.read FILE")

    term.line("SELECT setseed(0.5);")
    term.line("CREATE TABLE pts AS SELECT i AS doc_id, "
              "[random(), random(), random()]::FLOAT[3] AS embedding FROM range(200) t(i);")
    term.line("SELECT cluster_create('topics', 'pts', 'embedding', id := 'doc_id', "
              "algorithm := 'kmeans', params := '{\"n_clusters\": 3}');")
    term.expect(r"│ topics +│")
    term.line("SELECT cluster_execute('topics');")
    term.expect(r"│ run_\w+")
    term.line(".clusters")
    term.expect(r"│ kmeans +│ pts +│")
    term.line("SELECT count(DISTINCT cluster_id) * 1111 AS k FROM pts")
    term.line("CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 3);")
    term.expect(r"│ +3333 │")

    # Tab completes a duckcluster table function, a column and a table name.
    term.ready()
    term.complete("SELECT n_clusters * 111 AS k3 FROM cluster_qual")
    term.line("('topics');")
    term.expect(r"│ +333 │")
    term.ready()
    term.complete("SELECT doc_")
    term.send(" * 10 AS tenfold FROM ")
    term.complete("pt")
    term.line(" WHERE doc_id = 7;")
    term.expect(r"│ +70 │")

    # Ctrl-C drops the line being typed; the shell keeps going.
    term.ready()
    term.send("SELECT 999 * 3")
    term.send(CTRL_C)
    term.line("SELECT 7 * 11;")
    term.expect(r"│ +77 │")
    assert "2997" not in term.text
    # Up recalls the previous statement.
    term.ready()
    term.send(UP)
    term.send(ENTER)
    term.expect(r"│ +77 │")

    term.line(".quit")
    assert term.wait() == 0
    history = (tmp_path / "history").read_text()
    assert "+SELECT 40 +\n+  2 AS answer;" in history
    assert "+.read script.sql" in history


def test_history_persists_and_ctrl_d_exits(terminal, tmp_path):
    term = terminal("hist.duckdb")
    term.line("SELECT 6 * 7 AS first_session;")
    term.expect(r"│ +42 │")
    term.ready()
    term.send(CTRL_D)
    assert term.wait() == 0

    term = terminal("hist.duckdb")
    term.ready()
    term.send(UP)
    term.send(ENTER)
    term.expect(r"first_session.*\n(.*\n)*│ +42 │")
    term.ready()
    term.send(CTRL_D)
    assert term.wait() == 0


def test_ctrl_c_interrupts_a_running_statement(terminal):
    term = terminal()
    term.ready()
    term.line("SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b;")
    term.expect(r"working")  # the progress display: the query runs
    time.sleep(0.3)
    term.send(CTRL_C)
    term.expect(r"Interrupted")
    term.line("SELECT 6 * 7;")
    term.expect(r"│ +42 │")
    term.ready()
    term.send(CTRL_D)
    assert term.wait() == 0
    assert "Traceback" not in term.text


def test_ctrl_c_cancels_a_run(terminal):
    """Ctrl-C during cluster_execute: "Interrupted", the run is recorded 'cancelled' with a
    one-line error, nothing of it is written, and no traceback reaches the screen."""
    term = terminal("cancel.duckdb")
    term.line("SELECT setseed(0.25);")
    term.line("CREATE TABLE pts AS SELECT i AS doc_id, list_transform(range(16), "
              "lambda j: random())::FLOAT[16] AS embedding FROM range(3000) t(i);")
    term.line("SELECT cluster_create('slow', 'pts', 'embedding', id := 'doc_id', "
              "algorithm := 'kmeans', params := {'n_clusters': 4}, preprocessing := "
              "[{'method': 'umap', 'n_components': 2, 'n_epochs': 2000}]);")
    term.expect(r"│ slow +│")
    term.ready()
    term.line("SELECT cluster_execute('slow');")
    term.expect(r"UMAP layout epochs \d+/2,000", timeout=300)  # the progress line counts
    term.send(CTRL_C)
    term.expect(r"Interrupted", timeout=120)
    term.line("SELECT status || ': ' || error AS outcome FROM duckcluster.runs;")
    term.expect(r"cancelled: RunCancelledError: cancelled: interrupted \(Ctrl-C\)")
    term.line("SELECT count(*) * 1001 AS written FROM duckcluster.members;")
    term.expect(r"│ +0 │")
    term.ready()
    term.send(CTRL_D)
    assert term.wait() == 0
    assert "Traceback" not in term.text and "Python exception" not in term.text


def test_narrow_terminal_keeps_the_columns_that_matter(terminal):
    """On a 72-column terminal, embedding_drift's verdict columns stay and the long JSON
    details go (the DuckDB CLI would hide the middle columns)."""
    term = terminal("narrow.duckdb", cols=72)
    term.line("SELECT setseed(0.5);")
    term.line("CREATE TABLE a AS SELECT i AS id, [random(), random(), random()]::FLOAT[3] "
              "AS embedding FROM range(200) t(i);")
    term.line("CREATE TABLE b AS SELECT i AS id, [random() + 1, random(), random()]::FLOAT[3] "
              "AS embedding FROM range(200) t(i);")
    term.line("SELECT * FROM embedding_drift('a', 'b', 'embedding', method := 'mmd');")
    header = term.expect(r"│ method .*│\n").group(0)
    assert "p_value" in header and "drift_detected" in header and "details" not in header
    term.expect(r"│ mmd .*│ true +│")
    term.expect(r"hidden: [^\n]*details")
    table = [ln for ln in term.text.splitlines() if ln[:1] in ("┌", "│", "├", "└")]
    assert table and max(len(ln) for ln in table) <= 72
    term.ready()
    term.send(CTRL_D)
    assert term.wait() == 0


def run_piped(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "duckcluster.cli", "shell", "piped.duckdb"],
                          input=script, capture_output=True, text=True, cwd=tmp_path, check=False,
                          env=shell_env(tmp_path), timeout=TIMEOUT)


def test_piped_stdin_runs_everything_and_fails_nonzero(tmp_path):
    (tmp_path / "more.sql").write_text("SELECT 2 * 3 AS six;")
    result = run_piped(tmp_path, (
        "CREATE TABLE docs AS SELECT 1 AS x;\n"
        "SELECT x + 41\n  AS answer FROM docs;\n"
        "SELEC 1;\n"
        ".tables\n"
        ".read more.sql\n"
        "SELECT 'no semicolon at the end'"
    ))
    assert result.returncode == 1
    assert "syntax error" in result.stderr
    lines = result.stdout.splitlines()
    assert any(re.fullmatch(r"│ +42 │", ln) for ln in lines)
    assert any(re.fullmatch(r"│ +docs +│", ln) for ln in lines)
    assert not any(re.fullmatch(r"│ +definitions +│", ln) for ln in lines)  # catalog apart
    assert any(re.fullmatch(r"│ +6 │", ln) for ln in lines)
    assert "no semicolon at the end" in result.stdout  # a last statement without ';' runs
    assert "D " not in result.stdout and "shell on" not in result.stdout  # no prompts, no banner
    assert not (tmp_path / "history").exists()


SHOWN = """
CREATE TABLE shown AS SELECT * FROM (VALUES
  (1, 'plain', 1.5::DOUBLE, true, [1.0, 2.0]::FLOAT[2], DATE '2024-01-02', NULL::VARCHAR),
  (-22, 'with, comma', -0.25, false, [0.5, 0.25]::FLOAT[2], DATE '1999-12-31', 'q "x"'),
  (NULL, '', 1e20, NULL, NULL, NULL, 'x')
) t(id, name, score, ok, emb, d, note);
CREATE VIEW shown_view AS SELECT id, name FROM shown;
CREATE INDEX shown_id ON shown(id);
CREATE TABLE other(a INTEGER PRIMARY KEY, b VARCHAR);
"""


def test_dot_commands_match_the_duckdb_cli(tmp_path):
    """.mode (each text mode), .schema and .mode with no argument print what the stock
    DuckDB CLI prints for the same script, byte for byte."""
    import duckdb

    from conftest import stock_cli

    db = tmp_path / "same.duckdb"
    with duckdb.connect(str(db), config={"storage_compatibility_version": "v1.4.0"}) as con:
        con.execute(SHOWN)
    query = "SELECT * FROM shown ORDER BY id NULLS LAST;\n"
    script = "".join(f".mode {m}\n{query}" for m in (
        "csv", "json", "jsonlines", "markdown", "line", "list", "tabs", "box", "table",
        "quote")) + ".mode\n.schema\n.schema sh%\n.schema --indent shown\n"
    ours = subprocess.run([sys.executable, "-m", "duckcluster.cli", "shell", "--read-only",
                           str(db)], input=script, capture_output=True, text=True,
                          cwd=tmp_path, env=shell_env(tmp_path), timeout=TIMEOUT * 4)
    stock = subprocess.run([stock_cli(), "-no-init", "-readonly", str(db)], input=script,
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert ours.returncode == 0 and stock.returncode == 0, ours.stderr + stock.stderr
    # the one deliberate difference: DuckDB's --indent ends with ';;'
    assert ours.stdout == stock.stdout.replace(");;\n", ");\n")


def test_timer_and_modes_in_a_piped_shell(tmp_path):
    result = run_piped(tmp_path, ".timer on\n.mode csv\nSELECT 6 * 7 AS answer;\n"
                                 ".timer off\n.mode jsonlines\nSELECT 1 AS one;\n.mode nope\n")
    assert result.returncode == 1  # the unknown mode
    lines = result.stdout.splitlines()
    assert lines[:2] == ["answer", "42"]
    assert re.fullmatch(r"Run Time \(s\): real \d+\.\d{3} user \d+\.\d+ sys \d+\.\d+", lines[2])
    assert lines[3:] == ['{"one":1}']
    assert "Error: mode should be one of: box csv duckbox html" in result.stderr


def test_errors_are_one_line(tmp_path):
    """duckcluster's errors: one line starting with what was wrong; DuckDB's own as the
    DuckDB CLI prints them."""
    result = run_piped(tmp_path, "SELECT cluster_execute('missing');\n"
                                 "SELECT cluster_create('t', 'nope', 'embedding');\n"
                                 "SELECT * FROM nope;\n")
    lines = result.stderr.splitlines()
    assert lines[0] == ("UnknownNameError: No cluster definition named 'missing'. Existing "
                        "definitions: none yet. Create one with SELECT cluster_create("
                        "'missing', source := ..., embedding := ...).")
    assert lines[1].startswith("SpecError: Source 'nope' is not a table or view")
    assert lines[2] == "Catalog Error: Table with name nope does not exist!"
    assert "Python exception" not in result.stderr and "Traceback" not in result.stderr


def test_piped_stdin_success_and_quit(tmp_path):
    result = run_piped(tmp_path, "SELECT 1 + 1 AS two;\n.quit\nSELECT 'after quit';\n")
    assert result.returncode == 0, result.stderr
    assert "two" in result.stdout and "after quit" not in result.stdout


# -- splitting input into commands (no process) ---------------------------------------


@pytest.mark.parametrize("text", [
    "SELECT 1;", "SELECT 1; -- done", "SELECT 1 /* c */ ;\n", "SELECT ';' AS s;",
    "SELECT $$ a; b $$;", "SELECT 1;\n\n", "SELECT 'it''s';",
])
def test_complete(text):
    assert is_complete(text)


@pytest.mark.parametrize("text", [
    "SELECT 1", "SELECT ';", "SELECT 1; /* open", 'SELECT "a;', "SELECT $$ a;", "-- x;", "",
])
def test_incomplete(text):
    assert not is_complete(text)


def test_split_input_dot_commands_only_between_statements():
    commands, rest = split_input(
        "-- comment\n.tables\nSELECT 1 +\n.5 AS x;\n  .help\nSELECT 'a;\n.b';\nSELECT 2"
    )
    assert commands == [
        Command(".tables", dot=True),
        Command("SELECT 1 +\n.5 AS x;\n"),
        Command(".help", dot=True),
        Command("SELECT 'a;\n.b';\n"),
    ]
    assert rest == "SELECT 2"


def test_splitter_closes_a_comment_on_a_line_without_semicolon():
    s = InputSplitter()
    assert s.feed("SELECT 1; /* note\n") == []
    assert s.feed("end */\n") == [Command("SELECT 1; /* note\nend */\n")]
