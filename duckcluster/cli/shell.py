"""``duckcluster shell``: an interactive SQL shell over one connection.

    D SELECT cluster_id, count(*) FROM docs
    · CLUSTER BY EMBEDDING(embedding) USING kmeans(n_clusters = 8)
    · GROUP BY ALL;

Input becomes :class:`Command` objects through :class:`InputSplitter`: SQL up to a
``;`` that ends the text (found with the same sqlglot tokenizer the CLUSTER BY
EMBEDDING rewrite uses, so a ``;`` inside a string or comment ends nothing), and dot
commands on a line of their own between statements. SQL goes to the CLI's
``run_script``, which rewrites the clause, runs each statement under the progress
display and prints result tables and errors; dot commands are the
:data:`DOT_COMMANDS` registry.

On a terminal the prompt is prompt_toolkit's, with history in
``~/.duckcluster_history`` (or ``$DUCKCLUSTER_HISTORY``): Enter runs the input once
it ends in ``;`` (or is a dot command) and otherwise starts a continuation line,
Alt-Enter runs it as it is, Ctrl-C drops the input or interrupts the running
statement, Ctrl-D exits. Piped stdin is read line by line without prompts; every
command runs, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from .._version import __version__
from ..functions import cancel_requested, clear_cancel, request_cancel
from .display import MODE_NAMES, Settings, is_interrupt

RunScript = Callable[..., bool]

HISTORY_ENV = "DUCKCLUSTER_HISTORY"
HISTORY_FILE = "~/.duckcluster_history"
PROMPT = "D "
CONTINUATION = "· "
CATALOG_SCHEMA = "duckcluster"

_DUCKDB = DuckDB()


# ---------------------------------------------------------------------------
# Splitting input into commands.


@dataclass(frozen=True)
class Command:
    """One unit of input: SQL text (ending in ``;`` unless cut off by EOF) or a dot-command line."""

    text: str
    dot: bool = False


def _tokens(text: str) -> list[Token] | None:
    """The tokens of ``text``; None while a string, quoted name or comment is still open."""
    try:
        return _DUCKDB.tokenize(text)
    except TokenError:
        return None


def is_blank(text: str) -> bool:
    """Whether ``text`` holds only whitespace and closed comments."""
    return not text.strip() or _tokens(text) == []


def is_complete(text: str) -> bool:
    """Whether SQL ``text`` ends with a statement-ending ``;`` (comments may follow it).

    >>> is_complete("SELECT 1; -- done"), is_complete("SELECT ';"), is_complete("SELECT 1")
    (True, False, False)
    """
    tokens = _tokens(text)
    return bool(tokens) and tokens[-1].token_type is TokenType.SEMICOLON


@dataclass
class InputSplitter:
    """Cut a stream of lines into commands, the way the DuckDB CLI reads its input.

    A line starting with ``.`` is a dot command when no statement is pending; other
    lines gather until the SQL ends with ``;``.

    >>> s = InputSplitter()
    >>> s.feed("SELECT 1 +\\n"), s.feed("1;\\n"), s.feed(".tables\\n")
    ([], [Command(text='SELECT 1 +\\n1;\\n', dot=False)], [Command(text='.tables', dot=True)])
    """

    _lines: list[str] = field(default_factory=list)
    # Only a line holding ';' can end a statement: skip tokenizing until one has come.
    _semicolon: bool = False

    @property
    def rest(self) -> str:
        """The pending, incomplete SQL."""
        return "".join(self._lines)

    def feed(self, line: str) -> list[Command]:
        """Take one line (with or without its newline); return the commands it completes."""
        if line.lstrip().startswith(".") and is_blank(self.rest):
            self.clear()
            return [Command(line.strip(), dot=True)]
        self._lines.append(line)
        self._semicolon = self._semicolon or ";" in line
        if self._semicolon and is_complete(self.rest):
            text = self.rest
            self.clear()
            return [Command(text)]
        return []

    def clear(self) -> None:
        self._lines.clear()
        self._semicolon = False


def split_input(text: str) -> tuple[list[Command], str]:
    """The complete commands of ``text`` and the incomplete SQL left after them.

    >>> split_input(".tables\\nSELECT 1;\\nSELECT")
    ([Command(text='.tables', dot=True), Command(text='SELECT 1;\\n', dot=False)], 'SELECT')
    """
    splitter = InputSplitter()
    commands = [c for line in text.splitlines(keepends=True) for c in splitter.feed(line)]
    return commands, splitter.rest


# ---------------------------------------------------------------------------
# Running commands.


@dataclass
class Shell:
    """One connection, the consoles, and what happened so far."""

    con: duckdb.DuckDBPyConnection
    run_script: RunScript
    out: Console
    err: Console
    progress: bool = True
    interruptible: bool = False
    settings: Settings = field(default_factory=Settings)
    timer: bool = False
    failed: bool = False
    done: bool = False
    interrupted: bool = False  # Ctrl-C stopped the last statement
    _reading: list[str] = field(default_factory=list)

    def error(self, message: str) -> bool:
        self.err.print(f"[red]Error:[/red] {escape(message)}")
        return False

    def run(self, command: Command) -> bool:
        """Run one command; False (and ``failed`` set) if it failed."""
        ok = run_dot(self, command.text) if command.dot else self._sql(command.text)
        self.failed = self.failed or not ok
        return ok

    def _sql(self, text: str) -> bool:
        if is_blank(text):
            return True
        with interrupt_on_sigint(self.con, self.interruptible) as seen:
            ok = self.run_script(self.con, text, progress=self.progress,
                                 settings=self.settings, timer=self.timer, out=self.out,
                                 err=self.err)
            self.interrupted = bool(seen)
            return ok

    def run_lines(self, lines: Iterable[str], stop_on_error: bool) -> bool:
        """Run every command in ``lines``, SQL left without ``;`` at the end included."""
        splitter, ok = InputSplitter(), True
        for line in lines:
            for command in splitter.feed(line):
                ok = self.run(command) and ok
                if self.done or (stop_on_error and not ok):
                    return ok
        if not is_blank(splitter.rest) and not self.interrupted:
            ok = self.run(Command(splitter.rest)) and ok
        return ok


@contextmanager
def interrupt_on_sigint(con: duckdb.DuckDBPyConnection, enabled: bool
                         ) -> Iterator[list[bool]]:
    """Make Ctrl-C stop the running statement with ``con.interrupt()``.

    duckdb checks for SIGINT only now and then while a query runs (in tests a
    cross join ignored it for more than 30 s), so a thread woken through the signal
    module's wakeup fd interrupts the connection at once; Python's own handler stays.
    A run the statement executes, or waits for (``cluster_wait`` on a background run of
    this process), stops at its next progress report and is recorded 'cancelled'. Yields
    a list that holds True once Ctrl-C was pressed.
    """
    seen: list[bool] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield seen
        return
    receiver, sender = socket.socketpair()
    sender.setblocking(False)

    def watch() -> None:
        while data := receiver.recv(64):
            if signal.SIGINT in data:
                seen[:] = [True]
                request_cancel()  # a run stops at its next progress report: 'cancelled'
                con.interrupt()

    clear_cancel()
    previous = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="duckcluster-sigint", daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        signal.set_wakeup_fd(previous)
        sender.close()  # ends watch()
        watcher.join()
        receiver.close()
        clear_cancel()


# ---------------------------------------------------------------------------
# Dot commands: a registry; each handler gets the shell and its arguments.


@dataclass(frozen=True)
class DotCommand:
    usage: str
    help: str
    run: Callable[[Shell, list[str]], bool]
    max_args: int = 0
    min_args: int = 0


def _quit(shell: Shell, args: list[str]) -> bool:
    shell.done = True
    return True


def _help(shell: Shell, args: list[str]) -> bool:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    for cmd in sorted(set(DOT_COMMANDS.values()), key=lambda c: c.usage):
        table.add_row(escape(cmd.usage), cmd.help)
    shell.out.print(table)
    shell.out.print(
        "SQL statements end with ';' and may span lines; they can use every duckcluster "
        "function and CLUSTER BY EMBEDDING(col) USING algorithm(...).\n"
        "Alt-Enter runs unfinished input as it is, Ctrl-C drops the input (or stops a "
        "running statement), Ctrl-D exits.", highlight=False)
    return True


_OBJECTS_SQL = """
SELECT t.database_name, t.schema_name, t.table_name, 'table' AS kind, t.estimated_size,
       t.table_oid AS oid
FROM duckdb_tables() t WHERE NOT t.internal
UNION ALL
SELECT v.database_name, v.schema_name, v.view_name, 'view', NULL, v.view_oid
FROM duckdb_views() v WHERE NOT v.internal
ORDER BY kind, oid
"""
_COLUMNS_SQL = """
SELECT database_name, schema_name, table_name, column_name, data_type
FROM duckdb_columns() WHERE NOT internal ORDER BY table_oid, column_index
"""


def _like(pattern: str, text: str) -> bool:
    """SQL LIKE (% and _), case-sensitive as DuckDB's."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, flags=re.DOTALL) is not None


def _matches(pattern: str | None, schema: str, name: str) -> bool:
    return pattern is None or _like(pattern, name) or _like(pattern, f"{schema}.{name}")


def _tables(shell: Shell, args: list[str]) -> bool:
    """The DuckDB CLI's .tables: per database and schema, a box per table or view with its
    columns and row count. duckcluster's catalog schema is summarized in one line unless
    the pattern asks for it."""
    from rich import box
    from rich.console import Group
    from rich.panel import Panel
    from rich.rule import Rule
    from rich.text import Text

    pattern = args[0] if args else None
    try:
        [(current,)] = shell.con.sql("SELECT current_database()").fetchall()
        objects = shell.con.sql(_OBJECTS_SQL).fetchall()
        columns: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        for db, sch, tbl, col, typ in shell.con.sql(_COLUMNS_SQL).fetchall():
            columns.setdefault((db, sch, tbl), []).append((col, typ))
    except duckdb.Error as exc:
        return shell.error(str(exc))
    groups: dict[tuple[str, str], list[tuple[str, str, int | None]]] = {}
    catalog = 0
    for db, sch, name, kind, size, _oid in objects:
        if not _matches(pattern, sch, name):
            continue
        if pattern is None and sch == CATALOG_SCHEMA:
            catalog += 1
            continue
        groups.setdefault((db, sch), []).append((name, kind, size))
    order = sorted(groups, key=lambda k: (k[0] == "temp", k[0] != current, k[0],
                                          k[1] == CATALOG_SCHEMA, k[1] != "main", k[1]))
    if not groups:
        shell.out.print("(no tables)" if pattern is None else f"(no tables match {pattern!r})",
                        style="dim", markup=False)
    last_db = None
    for db, sch in order:
        if db != last_db:
            shell.out.print(Rule(Text(db, style="bold #d78700"), style="#d78700"))
            last_db = db
        shell.out.print(Rule(Text(sch, style="bold #00afff"), style="#00afff"))
        boxes = []
        for name, kind, size in groups[(db, sch)]:
            cols = columns.get((db, sch, name), [])
            grid = Table.grid(padding=(0, 1))
            per_row = 2 if len(cols) > 20 else 1
            for _ in range(per_row):
                grid.add_column(no_wrap=True)
                grid.add_column(no_wrap=True, style="dim")
            half = (len(cols) + per_row - 1) // per_row
            for r in range(half):
                cells = []
                for part in range(per_row):
                    i = r + part * half
                    cells += [cols[i][0], cols[i][1].lower()] if i < len(cols) else ["", ""]
                grid.add_row(*cells)
            parts = [Text(name, style="bold", justify="center"), Text(""), grid]
            if kind == "table":
                parts += [Text(""), Text(f"{size:,} rows", style="dim", justify="center")]
            boxes.append(Panel(Group(*parts), box=box.SQUARE, expand=False, padding=(0, 1)))
        shell.out.print(Columns(boxes, padding=(0, 0)))
    if catalog:
        shell.out.print(f"duckcluster catalog: {catalog} tables in schema {CATALOG_SCHEMA} "
                        f"(.tables {CATALOG_SCHEMA}.% shows them; .clusters lists the "
                        "definitions)", style="dim", markup=False, highlight=False)
    return True


_SCHEMA_SQL = """
SELECT sql, table_name AS name, table_name AS tbl, schema_name FROM duckdb_tables()
WHERE NOT internal AND sql IS NOT NULL
UNION ALL
SELECT sql, view_name, view_name, schema_name FROM duckdb_views()
WHERE NOT internal AND sql IS NOT NULL
UNION ALL
SELECT sql, index_name, table_name, schema_name FROM duckdb_indexes() WHERE sql IS NOT NULL
"""


def _indent(sql: str) -> str:
    """``CREATE TABLE t(a INT, b INT);`` with one column per line (``.schema --indent``)."""
    head, sep, body = sql.partition("(")
    if not sep or not sql.startswith("CREATE TABLE") or not body.endswith(");"):
        return sql
    parts, depth, cur = [], 0, ""
    for ch in body[:-2]:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += 1 if ch in "([" else -1 if ch in ")]" else 0
        cur += ch
    parts.append(cur.strip())
    return head + "(\n" + ",\n".join("  " + p for p in parts) + "\n);"


def _schema(shell: Shell, args: list[str]) -> bool:
    """The DuckDB CLI's .schema: the CREATE statements of tables, views and indexes, by name."""
    indent = "--indent" in args
    rest = [a for a in args if a != "--indent"]
    if len(rest) > 1:
        return shell.error("Usage: .schema ?--indent? ?PATTERN?")
    pattern = rest[0] if rest else None
    try:
        rows = shell.con.sql(_SCHEMA_SQL).fetchall()
    except duckdb.Error as exc:
        return shell.error(str(exc))
    picked = sorted((name, sql) for sql, name, tbl, sch in rows
                    if pattern is None or _matches(pattern, sch, name)
                    or _matches(pattern, sch, tbl))
    text = "".join((_indent(sql) if indent else sql) + "\n" for _, sql in picked)
    shell.out.file.write(text)
    shell.out.file.flush()
    return True


def _mode(shell: Shell, args: list[str]) -> bool:
    if not args:
        shell.out.file.write(f"current output mode: {shell.settings.mode}\n")
        shell.out.file.flush()
        return True
    mode = args[0].lower()
    if mode not in MODE_NAMES:
        return shell.error(f"mode should be one of: {' '.join(MODE_NAMES)}")
    shell.settings.mode = mode
    shell.settings.csv_crlf = mode == "csv"  # the DuckDB CLI's .mode csv ends rows in CRLF
    return True


def _on_off(shell: Shell, value: str, what: str) -> bool | None:
    value = value.lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    shell.error(f"{what}: expected on or off, got {value!r}")
    return None


def _timer(shell: Shell, args: list[str]) -> bool:
    on = _on_off(shell, args[0], ".timer")
    if on is None:
        return False
    shell.timer = on
    return True


def _headers(shell: Shell, args: list[str]) -> bool:
    on = _on_off(shell, args[0], ".headers")
    if on is None:
        return False
    shell.settings.headers = on
    return True


def _number(shell: Shell, args: list[str], what: str) -> int | None:
    try:
        value = int(args[0])
    except ValueError:
        value = -1
    if value < 0:
        shell.error(f"{what}: expected a number of 0 or more, got {args[0]!r}")
        return None
    return value


def _maxrows(shell: Shell, args: list[str]) -> bool:
    value = _number(shell, args, ".maxrows")
    if value is not None:
        shell.settings.max_rows = value
    return value is not None


def _maxwidth(shell: Shell, args: list[str]) -> bool:
    value = _number(shell, args, ".maxwidth")
    if value is not None:
        shell.settings.max_width = value
    return value is not None


def _nullvalue(shell: Shell, args: list[str]) -> bool:
    shell.settings.null = args[0]
    return True


def _read(shell: Shell, args: list[str]) -> bool:
    path = os.path.expanduser(args[0])
    real = os.path.realpath(path)
    if real in shell._reading:
        return shell.error(f".read {args[0]}: the file is already being read (it reads itself)")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        return shell.error(f".read {args[0]}: {exc}")
    shell._reading.append(real)
    try:
        return shell.run_lines(text.splitlines(keepends=True), stop_on_error=True)
    finally:
        shell._reading.pop()


def _clusters(shell: Shell, args: list[str]) -> bool:
    return shell._sql("SELECT * FROM cluster_list();")


_QUIT = DotCommand(".quit", "exit the shell (also .exit, Ctrl-D)", _quit)

DOT_COMMANDS: dict[str, DotCommand] = {
    ".clusters": DotCommand(".clusters", "list cluster definitions with their latest run",
                            _clusters),
    ".exit": _QUIT,
    ".headers": DotCommand(".headers on|off", "column names in csv, list, tabs... output",
                           _headers, min_args=1, max_args=1),
    ".help": DotCommand(".help", "show this help", _help),
    ".maxrows": DotCommand(".maxrows COUNT", "rows the duckbox mode shows (default 40; 0: all)",
                           _maxrows, min_args=1, max_args=1),
    ".maxwidth": DotCommand(".maxwidth COUNT",
                            "width of duckbox tables (default 0: the terminal's)",
                            _maxwidth, min_args=1, max_args=1),
    ".mode": DotCommand(".mode MODE", "output mode: " + " ".join(MODE_NAMES), _mode,
                        max_args=1),
    ".nullvalue": DotCommand(".nullvalue TEXT", "text shown for NULL (default NULL)",
                             _nullvalue, min_args=1, max_args=1),
    ".quit": _QUIT,
    ".read": DotCommand(".read FILE",
                        "run the SQL and dot commands in FILE; stops at its first error",
                        _read, min_args=1, max_args=1),
    ".schema": DotCommand(".schema ?--indent? ?PATTERN?",
                          "CREATE statements of tables, views and indexes (LIKE pattern)",
                          _schema, max_args=2),
    ".tables": DotCommand(".tables ?PATTERN?",
                          "tables and views with their columns (LIKE pattern), catalog apart",
                          _tables, max_args=1),
    ".timer": DotCommand(".timer on|off", "print the run time of each statement", _timer,
                         min_args=1, max_args=1),
}


def run_dot(shell: Shell, line: str) -> bool:
    """Run a dot-command line such as ``.read 'my file.sql'``."""
    try:
        words = shlex.split(line.rstrip(";"))
    except ValueError as exc:
        return shell.error(f"{line}: {exc}")
    name, args = words[0].lower(), words[1:]
    cmd = DOT_COMMANDS.get(name)
    if cmd is None:
        close = difflib.get_close_matches(name, DOT_COMMANDS, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        return shell.error(f"Unknown command {name!r}.{hint} Commands: "
                           f"{', '.join(sorted(DOT_COMMANDS))} (.help describes them).")
    if not cmd.min_args <= len(args) <= cmd.max_args:
        return shell.error(f"Usage: {cmd.usage} (got {len(args)} argument(s)).")
    return cmd.run(shell, args)


# ---------------------------------------------------------------------------
# The two front ends.


def history_path() -> str:
    return os.path.expanduser(os.environ.get(HISTORY_ENV) or HISTORY_FILE)


def _history(err: Console):
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    path = history_path()
    try:
        open(path, "ab").close()
    except OSError as exc:
        err.print(f"[yellow]History is not saved: cannot write {escape(path)} "
                  f"({escape(str(exc))}). Set {HISTORY_ENV} to a writable file.[/yellow]")
        return InMemoryHistory()
    return FileHistory(path)


# ---------------------------------------------------------------------------
# Tab completion: dot commands, modes, files, tables, columns, functions, keywords.


_CATALOG_SQL = """
SELECT 'table', schema_name, table_name, NULL FROM duckdb_tables() WHERE NOT internal
UNION ALL SELECT 'table', schema_name, view_name, NULL FROM duckdb_views() WHERE NOT internal
UNION ALL SELECT 'column', schema_name, table_name, column_name FROM duckdb_columns()
          WHERE NOT internal
UNION ALL SELECT DISTINCT CASE WHEN database_name = 'temp' THEN 'ours' ELSE 'function' END,
          NULL, function_name, function_type FROM duckdb_functions()
          WHERE NOT starts_with(function_name, '_')
UNION ALL SELECT 'keyword', NULL, keyword_name, NULL FROM duckdb_keywords()
"""
# After these keywords a table name (or a table function) comes next.
_TABLE_CONTEXT = {"FROM", "JOIN", "INTO", "UPDATE", "TABLE", "DESCRIBE", "SUMMARIZE"}
_WORD = re.compile(r"[\w.\"]*$")


class Completer:
    """prompt_toolkit completer over the connection's catalog, refreshed after each command.

    Table names after FROM/JOIN/INTO..., ``t.`` completes the columns of ``t``; elsewhere
    the columns of tables named in the input, duckcluster's functions (the TEMP macros
    :func:`duckcluster.install` creates), DuckDB's functions and keywords.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.tables: dict[str, str] = {}  # name -> schema
        self.columns: dict[str, list[str]] = {}  # table (and schema.table) -> columns
        self.functions: dict[str, str] = {}  # name -> 'duckcluster' | 'table function'...
        self.keywords: list[str] = []
        self.refresh()

    def refresh(self) -> None:
        try:
            rows = self.con.sql(_CATALOG_SQL).fetchall()
        except duckdb.Error:
            return
        tables: dict[str, str] = {}
        columns: dict[str, list[str]] = {}
        functions: dict[str, str] = {}
        keywords = []
        for kind, schema, name, extra in rows:
            if kind == "table":
                tables.setdefault(name, schema)
            elif kind == "column":
                columns.setdefault(name, []).append(extra)
                columns.setdefault(f"{schema}.{name}", []).append(extra)
            elif kind == "ours":
                functions[name] = "duckcluster " + ("table function" if "table" in extra
                                                    else "function")
            elif kind == "function":
                functions.setdefault(name, "table function" if extra == "table" else "function")
            else:
                keywords.append(name.upper())
        self.tables, self.columns, self.functions, self.keywords = \
            tables, columns, functions, keywords

    def candidates(self, text: str) -> list[tuple[str, str, int]]:
        """(completion, meta, start offset) for the input ``text`` before the cursor."""
        word = _WORD.search(text).group(0)
        before = text[: len(text) - len(word)]
        stripped = before.lstrip()
        if stripped == "" and text.lstrip().startswith("."):  # a dot command name
            return [(n, DOT_COMMANDS[n].help, -len(word)) for n in sorted(DOT_COMMANDS)
                    if n.startswith(word.lower())]
        if stripped.startswith(".mode") and stripped.strip() == ".mode":
            return [(m, "output mode", -len(word)) for m in MODE_NAMES if m.startswith(word)]
        if stripped.startswith((".tables", ".schema")):
            return self._names(word, self.tables, "table")
        if "." in word and not word.startswith("."):
            owner, _, part = word.rpartition(".")
            cols = self.columns.get(owner.strip('"')) or self.columns.get(self._alias(text, owner))
            if cols:
                return [(c, f"column of {owner}", -len(part)) for c in cols
                        if c.lower().startswith(part.lower())]
            return [(t, f"table in {owner}", -len(part)) for t, sch in sorted(self.tables.items())
                    if sch == owner and t.lower().startswith(part.lower())]
        previous = re.findall(r"[A-Za-z_]+", before)
        if previous and previous[-1].upper() in _TABLE_CONTEXT:
            tables = self._names(word, self.tables, "table")
            funcs = [(f, m, -len(word)) for f, m in sorted(self.functions.items())
                     if "table" in m and f.lower().startswith(word.lower())]
            return tables + sorted(funcs, key=lambda c: not c[1].startswith("duckcluster"))
        if not word:
            return []
        mentioned = [t for t in self.tables if re.search(rf"\b{re.escape(t)}\b", text + " ")]
        out: list[tuple[str, str, int]] = []
        seen: set[str] = set()
        for t in mentioned + [t for t in self.tables if t not in mentioned]:
            for c in self.columns.get(t, []):
                if c.lower().startswith(word.lower()) and c not in seen:
                    seen.add(c)
                    out.append((c, f"column of {t}", -len(word)))
        ours = sorted((f, m) for f, m in self.functions.items() if m.startswith("duckcluster"))
        rest = sorted((f, m) for f, m in self.functions.items() if not m.startswith("duckcluster"))
        out += [(f, m, -len(word)) for f, m in ours + rest if f.lower().startswith(word.lower())]
        out += self._names(word, self.tables, "table")
        upper = word[:1].isupper()
        out += [(k if upper else k.lower(), "keyword", -len(word)) for k in self.keywords
                if k.startswith(word.upper())]
        return out

    def _alias(self, text: str, alias: str) -> str:
        """The table behind ``alias`` in ``FROM docs d`` / ``JOIN docs AS d``."""
        for m in re.finditer(rf"\b([\w.]+)\s+(?:AS\s+)?{re.escape(alias)}\b", text,
                             flags=re.IGNORECASE):
            if m.group(1) in self.columns:
                return m.group(1)
        return alias

    @staticmethod
    def _names(word: str, names: dict[str, str], meta: str) -> list[tuple[str, str, int]]:
        """Tables of the main schema by name; other schemas by their name (``duckcluster.``
        then completes their tables)."""
        low = word.lower()
        out = [(n, meta, -len(word)) for n, sch in sorted(names.items())
               if sch == "main" and n.lower().startswith(low)]
        schemas = sorted({sch for sch in names.values() if sch != "main"})
        return out + [(f"{sch}.", "schema", -len(word)) for sch in schemas
                      if sch.lower().startswith(low)]

    # prompt_toolkit's Completer protocol
    def get_completions(self, document, complete_event):
        from prompt_toolkit.completion import Completion

        text = document.text_before_cursor
        line = text.rsplit("\n", 1)[-1]
        if line.lstrip().startswith(".read "):
            yield from self._paths(line.lstrip()[6:])
            return
        for value, meta, start in self.candidates(text if not line.lstrip().startswith(".")
                                                  else line):
            yield Completion(value, start_position=start, display_meta=meta)

    async def get_completions_async(self, document, complete_event):
        for c in self.get_completions(document, complete_event):
            yield c

    @staticmethod
    def _paths(partial: str):
        from prompt_toolkit.completion import Completion

        head, _, tail = partial.rpartition("/")
        folder = os.path.expanduser(head or ".")
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for name in names:
            if name.startswith(tail) and (tail.startswith(".") or not name.startswith(".")):
                full = os.path.join(folder, name)
                yield Completion(name + ("/" if os.path.isdir(full) else ""),
                                 start_position=-len(tail))


def _session(err: Console, completer: Completer | None = None):
    from prompt_toolkit import PromptSession
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer

    keys = KeyBindings()

    @keys.add("enter")
    def _enter(event) -> None:
        buf = event.current_buffer
        if is_blank(split_input(buf.text)[1]):
            buf.validate_and_handle()
        else:
            buf.insert_text("\n")

    @keys.add("escape", "enter")
    def _force(event) -> None:
        event.current_buffer.validate_and_handle()

    return PromptSession(
        PROMPT, multiline=True, key_bindings=keys, history=_history(err),
        prompt_continuation=lambda width, line, soft: CONTINUATION.rjust(width),
        lexer=PygmentsLexer(SqlLexer), enable_history_search=False,
        completer=_PromptCompleter(completer) if completer is not None else None,
        complete_while_typing=False,
    )


def _PromptCompleter(completer: Completer):
    """``completer`` as a prompt_toolkit Completer subclass (imported lazily)."""
    from prompt_toolkit.completion import Completer as Base

    class Adapter(Base):
        def get_completions(self, document, complete_event):
            return completer.get_completions(document, complete_event)

    return Adapter()


def _interactive(shell: Shell, db_label: str) -> int:
    completer = Completer(shell.con)
    session = _session(shell.err, completer)
    shell.out.print(f"duckcluster {__version__} shell on [bold]{escape(db_label)}[/bold]. "
                    "End statements with ';'. Enter .help for commands, Ctrl-D to exit.",
                    highlight=False, soft_wrap=True)
    while not shell.done:
        try:
            text = session.prompt()
        except KeyboardInterrupt:  # Ctrl-C: drop the input line
            continue
        except EOFError:  # Ctrl-D
            break
        try:
            shell.run_lines(text.splitlines(keepends=True), stop_on_error=False)
        # A bug must not end the session and lose its state: report it, go on.
        except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001
            if _interrupted(exc):
                shell.err.print("Interrupted", style="yellow", markup=False)
            else:
                shell.err.print_exception(max_frames=4)
                shell.err.print("[red]Internal error[/red] (above); the shell keeps running.")
        completer.refresh()  # tables and macros the input created or dropped
    return 0


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C: KeyboardInterrupt, duckdb's interrupt error, or a run it cancelled."""
    return is_interrupt(exc)


def _piped(shell: Shell, stream: Iterable[str]) -> int:
    """Run piped input; Ctrl-C stops it (exit 130) and cancels this process's background
    runs, which the exit would otherwise wait for (recorded 'cancelled')."""
    try:
        shell.run_lines(_until_interrupted(shell, stream), stop_on_error=False)
    except (KeyboardInterrupt, RuntimeError, duckdb.Error) as exc:
        if not _interrupted(exc):
            raise
        shell.err.print("Interrupted", style="yellow", markup=False)
        shell.interrupted = True
    if shell.interrupted or cancel_requested():
        cancel_background("the shell was interrupted (Ctrl-C)")
        return 130
    return 1 if shell.failed else 0


def _until_interrupted(shell: Shell, stream: Iterable[str]) -> Iterator[str]:
    """The lines of ``stream`` until a statement was interrupted."""
    for line in stream:
        if shell.interrupted:
            return
        yield line


def cancel_background(reason: str, grace_s: float = 60.0) -> list[str]:
    """Cancel this process's background runs and wait (``grace_s`` at most) until each has
    recorded itself 'cancelled'."""
    from ..ops import background

    hit = background.cancel_all(reason)
    for runner in list(background._RUNNERS):
        runner.join(grace_s)
    return hit


def run_shell(con: duckdb.DuckDBPyConnection, db_label: str, run_script: RunScript) -> int:
    """Run the shell on ``con`` until .quit or end of input; return the exit status.

    ``run_script(con, text, progress=True) -> bool`` runs SQL and prints results.
    """
    interactive = sys.stdin.isatty()
    out = Console() if sys.stdout.isatty() else Console(width=1000)
    err = Console(stderr=True)
    shell = Shell(con, run_script, out, err, progress=interactive or sys.stderr.isatty(),
                  interruptible=True)
    code = _interactive(shell, db_label) if interactive else _piped(shell, sys.stdin)
    return code if code == 130 else _wait_for_background(shell) or code


def _wait_for_background(shell: Shell) -> int:
    """At exit, background runs of this process are waited for, as a script's are; Ctrl-C
    meanwhile cancels them (recorded 'cancelled'). Returns 130 then, else 0."""
    from ..ops import background

    active = background.active_runs()
    if not active:
        return 0
    shell.err.print(f"Waiting for {len(active)} background run(s) to finish "
                    f"({', '.join(active)}); Ctrl-C cancels them.", markup=False)
    with interrupt_on_sigint(shell.con, True) as seen:
        try:
            while background.active_runs() and not seen:
                for runner in list(background._RUNNERS):
                    runner.join(0.1)
        except KeyboardInterrupt:
            seen[:] = [True]
    if not seen:
        return 0
    shell.err.print("Interrupted", style="yellow", markup=False)
    cancel_background("the shell was interrupted (Ctrl-C) while waiting for it")
    return 130
