"""``CLUSTER BY EMBEDDING(...) USING algo(...)``: SQL sugar rewritten to ``cluster_embeddings``.

Accepted by ``duckcluster.sql()``, the shell and ``duckcluster sql``::

    SELECT cluster_id, count(*)
    FROM docs d WHERE d.lang = 'en'
    CLUSTER BY EMBEDDING(embedding) USING hdbscan(min_cluster_size = 20)
    GROUP BY cluster_id

The clause goes after FROM / JOIN / WHERE of any SELECT: top level, CTE, subquery,
set operation, CREATE TABLE/VIEW AS, INSERT ... SELECT, COPY (...) TO, and under
EXPLAIN [ANALYZE], DESCRIBE or SUMMARIZE. Statements that sqlglot keeps as opaque
text (CALL, PREPARE, SHOW ...) are refused with an error. Its grammar::

    CLUSTER BY EMBEDDING(column [, column ...])
    [USING algorithm [( [name {= | => | :=} value [, ...]] )]]
    [PREPROCESS step [( ... )] [, step [( ... )] ...]]
    [PARTITION BY column]                -- one clustering per value (partition_by)
    [ID column]
    [OPTIONS (name = value [, ...])]     -- seed, sample_size, pooling, partition_by, noise

Without USING the algorithm is ``'auto'`` (cluster_embeddings' default). Values are
numbers (negative too), 'strings', true/false and NULL. Unquoted names
are case-insensitive (algorithm, parameter and step names are lowercased); quoted
names are kept as written. The FROM, JOINs and WHERE of that query level become a
CTE ``__dc_src_N`` holding the rows to cluster, and the FROM becomes::

    cluster_embeddings('__dc_src_N', 'embedding', algorithm := 'hdbscan',
                       params := '{"min_cluster_size":20}') AS d

(several columns give a list ``['a', 'b']``; PREPROCESS adds ``preprocessing :=
'[{"method":"umap","n_components":10}]'``, ID adds ``id := 'doc_id'`` and OPTIONS adds
each option as it is, ``pooling := 'max'``). The SELECT
list, GROUP BY, HAVING, QUALIFY, ORDER BY and LIMIT stay, so they see
``cluster_id`` and ``cosine_similarity_to_centroid`` next to the source columns.
Consequences: WHERE filters rows *before* clustering (filter on ``cluster_id`` in
an outer query); the result keeps the alias (or table name) of the first FROM item,
so with JOINs refer to the other tables' columns unqualified; a WHERE that refers
to an outer query (a correlated subquery) cannot move into the CTE.

Design. Statements are found by splitting the script on the tokenizer's SEMICOLON
tokens, which is safe around strings, comments and ``$$`` literals. Only statements
with the token pair CLUSTER BY + EMBEDDING are parsed, by a subclass of sqlglot's
DuckDB parser that turns the clause into a :class:`ClusterEmbedding` node, and
regenerated with sqlglot's DuckDB generator; every other statement, and the
whitespace and comments around a rewritten one, is returned byte for byte,
because sqlglot round trips are lossy (it normalizes FROM-first, ``::`` and
``list()`` and cannot parse ``CREATE MACRO m(a, b := 2)``). The parser route was
chosen over a token-level pre-rewrite because sqlglot then checks the rest of the
statement, finds the query level that owns the clause, and escapes every
identifier and string literal it emits; values are put in the output only as
``exp.Literal`` nodes, never pasted as text, so no clause argument can produce
SQL other than one ``cluster_embeddings`` call. Splicing the original text instead
of regenerating it would keep the user's spelling, but needs token spans for
every SELECT, set operation and WITH, which sqlglot does not record. Two sqlglot
traps are closed here: a stock parser attaches CLUSTER BY after a UNION to the
set operation (``SET_OP_MODIFIERS``), and the DuckDB generator silently drops a
CLUSTER BY it does not know, so the rewrite checks that no clause node survives.

Errors in the clause raise :class:`~duckcluster._errors.SpecError` naming line
and column with a caret excerpt and the expected form.

>>> print(rewrite("SELECT * FROM docs CLUSTER BY EMBEDDING(emb) USING kmeans(n_clusters = 3)"))
WITH __dc_src_1 AS (SELECT * FROM docs) SELECT * FROM cluster_embeddings('__dc_src_1', 'emb', algorithm := 'kmeans', params := '{"n_clusters":3}') AS docs
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError
from sqlglot.parsers.duckdb import DuckDBParser
from sqlglot.tokens import Token, TokenType

from ._errors import DuckclusterError, SpecError

__all__ = ["has_cluster_syntax", "rewrite", "split_statements"]

FUNCTION = "cluster_embeddings"
SOURCE_PREFIX = "__dc_src_"
EXPECTED = (
    "CLUSTER BY EMBEDDING(column[, column ...]) [USING algorithm[(param = value, ...)]] "
    "[PREPROCESS step[(param = value, ...)], ...] [PARTITION BY column] [ID column] "
    "[OPTIONS(name = value, ...)]"
)
#: The options of cluster_embeddings besides algorithm, params, preprocessing and id.
OPTIONS = ("seed", "sample_size", "pooling", "partition_by", "noise")

_DUCKDB = DuckDB()
_T = TokenType
# A script the tokenizer rejects is only an error of ours if it seems to use the clause.
_LOOSE_CLAUSE = re.compile(r"\bCLUSTER\s+BY\s+EMBEDDING\b", re.IGNORECASE)
_ASSIGN = {_T.EQ, _T.FARROW, _T.COLON_EQ}
_COMMANDS = DuckDB.Tokenizer.COMMANDS
_COMMAND_PREFIXES = DuckDB.Tokenizer.COMMAND_PREFIX_TOKENS
# What may follow the clause: the rest of a SELECT, a set operation, or its end.
_FOLLOWERS = {
    _T.GROUP_BY, _T.HAVING, _T.QUALIFY, _T.WINDOW, _T.ORDER_BY, _T.LIMIT, _T.OFFSET,
    _T.FETCH, _T.UNION, _T.INTERSECT, _T.EXCEPT, _T.R_PAREN, _T.SEMICOLON, _T.ON,
    _T.RETURNING,
}
_JOIN_TOKENS = {
    _T.JOIN, _T.COMMA, _T.LEFT, _T.RIGHT, _T.INNER, _T.OUTER, _T.FULL, _T.CROSS,
    _T.NATURAL, _T.SEMI, _T.ANTI, _T.ASOF, _T.POSITIONAL, _T.STRAIGHT_JOIN,
}
# Keywords that sqlglot accepts as identifiers, minus those that read as values or
# as the next clause; they may name columns, algorithms and parameters.
_NAME_TOKENS = {_T.VAR, _T.IDENTIFIER} | (
    DuckDBParser.ID_VAR_TOKENS - _FOLLOWERS - {_T.NULL, _T.TRUE, _T.FALSE}
)
_WORD = re.compile(r"[^\W\d]\w*")


@dataclass(frozen=True)
class Clause:
    """One parsed clause: plain values, JSON already encoded."""

    columns: tuple[str, ...]
    algorithm: str | None  # None: no USING (cluster_embeddings' default)
    params: str | None
    preprocessing: str | None = None
    id: str | None = None
    options: tuple[tuple[str, Any], ...] = ()


class ClusterEmbedding(exp.Expression):
    """The parsed clause, held in the ``cluster`` arg of its SELECT until rewritten."""

    arg_types = {"clause": True}


# ---------------------------------------------------------------------------
# Errors: every one points at a span of the original script.


class _ClauseError(Exception):
    """A malformed clause; not a ParseError, so sqlglot's backtracking cannot hide it."""

    def __init__(self, message: str, start: int, end: int) -> None:
        super().__init__(message)
        self.message, self.start, self.end = message, start, end


class _LocatedParseError(ParseError):
    """sqlglot's ParseError plus the character span of the offending token."""

    def __init__(self, message: str, start: int, end: int) -> None:
        super().__init__(message)
        self.message, self.start, self.end = message, start, end


def _position(sql: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line_start = sql.rfind("\n", 0, offset) + 1
    return sql.count("\n", 0, offset) + 1, offset - line_start + 1


def _excerpt(sql: str, start: int, end: int, width: int = 100) -> str:
    """The line holding ``start``, cropped to ``width``, with carets under [start, end)."""
    line_start = sql.rfind("\n", 0, start) + 1
    line_end = sql.find("\n", start)
    line = sql[line_start : len(sql) if line_end < 0 else line_end]
    col = start - line_start
    span = max(1, min(end, line_start + len(line)) - start)
    left = max(0, min(col - width // 2, len(line) - width))
    shown = line[left : left + width].replace("\t", " ")
    prefix = "..." if left else ""
    suffix = "..." if left + width < len(line) else ""
    caret = " " * (len(prefix) + col - left) + "^" * min(span, width - (col - left))
    return f"  {prefix}{shown}{suffix}\n  {caret}"


def _located(sql: str, message: str, start: int, end: int, hint: str) -> SpecError:
    line, col = _position(sql, start)
    return SpecError(f"{message} at line {line}, column {col}:\n{_excerpt(sql, start, end)}\n{hint}")


# ---------------------------------------------------------------------------
# The parser: stock DuckDB plus the clause.


class _Parser(DuckDBParser):
    QUERY_MODIFIER_PARSERS = {
        **DuckDBParser.QUERY_MODIFIER_PARSERS,
        _T.CLUSTER_BY: lambda self: ("cluster", self._dc_cluster_embedding()),
    }
    # Stock sqlglot moves a trailing CLUSTER BY from the last SELECT of a UNION onto
    # the UNION; ours belongs to that SELECT, like its WHERE.
    SET_OP_MODIFIERS = DuckDBParser.SET_OP_MODIFIERS - {"cluster"}

    def raise_error(self, message: str, token: Token | None = None) -> None:
        token = token or self._curr or self._prev
        if not token:
            super().raise_error(message)
        raise _LocatedParseError(message, token.start, token.end + 1)

    # -- tokens -------------------------------------------------------------

    def _dc_fail(self, message: str, token: Token | None = None) -> NoReturn:
        """Raise at ``token``, or just past the last token when the input ended."""
        if token is None:
            token = self._curr
        if not token:  # sqlglot's end-of-input sentinel token is falsy
            last = self._tokens[-1]
            raise _ClauseError(f"{message}, but the statement ended", last.end + 1, last.end + 2)
        raise _ClauseError(f"{message}, got {token.text!r}", token.start, token.end + 1)

    def _dc_is_word(self, text: str) -> bool:
        return bool(self._curr and self._curr.token_type is _T.VAR and self._curr.text.upper() == text)

    def _dc_expect(self, token_type: TokenType, message: str) -> None:
        if not self._match(token_type):
            self._dc_fail(message)

    def _dc_name(self, what: str, lower: bool) -> str:
        """An identifier; quoted ones verbatim, unquoted ones lowercased if ``lower``."""
        token = self._curr
        if not token or token.token_type not in _NAME_TOKENS:
            self._dc_fail(f"Expected {what}")
        if token.token_type is _T.IDENTIFIER:
            self._advance()
            return token.text
        if not _WORD.fullmatch(token.text):
            self._dc_fail(f"Expected {what}")
        self._advance()
        return token.text.lower() if lower else token.text

    def _dc_column(self, what: str) -> str:
        """A column name; a qualifier (``d.embedding``) is dropped: the CTE has plain names."""
        name = self._dc_name(what, lower=False)
        while self._match(_T.DOT):
            name = self._dc_name(what, lower=False)
        return name

    # -- the clause ----------------------------------------------------------

    def _dc_cluster_embedding(self) -> ClusterEmbedding:
        start = self._curr
        self._advance()  # CLUSTER BY
        if not self._dc_is_word("EMBEDDING"):
            self._dc_fail("Expected EMBEDDING(column, ...) after CLUSTER BY")
        self._advance()
        self._dc_expect(_T.L_PAREN, "Expected '(' after EMBEDDING")
        if self._curr and self._curr.token_type is _T.R_PAREN:
            self._dc_fail("EMBEDDING(...) needs at least one column")
        columns = [self._dc_column("an embedding column name")]
        while self._match(_T.COMMA):
            columns.append(self._dc_column("an embedding column name"))
        self._dc_expect(_T.R_PAREN, "Expected ',' or ')' in EMBEDDING(...)")
        algorithm = params = None  # no USING: cluster_embeddings' default, algorithm 'auto'
        if self._match(_T.USING):
            algorithm = self._dc_name("an algorithm name after USING", lower=True)
            params = self._dc_params(algorithm)
        preprocessing = column = options = partition = None
        while True:
            if preprocessing is None and self._dc_is_word("PREPROCESS"):
                self._advance()
                preprocessing = [self._dc_step()]
                while self._match(_T.COMMA):
                    preprocessing.append(self._dc_step())
            elif partition is None and self._curr and \
                    self._curr.token_type is _T.PARTITION_BY:
                self._advance()
                partition = (self._prev, self._dc_column("a column name after PARTITION BY"))
            elif column is None and self._dc_is_word("ID"):
                self._advance()
                column = self._dc_column("an id column name after ID")
            elif options is None and self._dc_is_word("OPTIONS"):
                self._advance()
                token = self._curr
                options = self._dc_params("OPTIONS")
                for name in options:
                    if name not in OPTIONS:
                        hint = difflib.get_close_matches(name, OPTIONS, n=1)
                        self._dc_fail(f"Unknown option {name!r} in OPTIONS(...)"
                                      + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                      + f"; the options are {', '.join(OPTIONS)}", token)
            else:
                break
        if partition is not None:  # the clause form of OPTIONS(partition_by = 'column')
            if options and "partition_by" in options:
                self._dc_fail("PARTITION BY and OPTIONS(partition_by = ...) both name the "
                              "partition; keep one", partition[0])
            options = {**(options or {}), "partition_by": partition[1]}
        self._dc_check_follower()
        node = ClusterEmbedding(
            clause=Clause(
                columns=tuple(columns),
                algorithm=algorithm,
                params=None if algorithm is None else _to_json(params),
                preprocessing=None if preprocessing is None else _to_json(preprocessing),
                id=column,
                options=tuple((options or {}).items()),
            )
        )
        node.meta["dc_start"] = (start.start, start.end + 1)
        return node

    def _dc_step(self) -> dict[str, Any]:
        name_token = self._curr
        method = self._dc_name("a preprocessing step name such as whitening, umap or pca", lower=True)
        params = self._dc_params(method)
        if "method" in params:
            self._dc_fail("A preprocessing step cannot take a parameter named 'method'", name_token)
        return {"method": method, **params}

    def _dc_params(self, owner: str) -> dict[str, Any]:
        """``( [name = value [, ...]] )``, or nothing at all."""
        params: dict[str, Any] = {}
        if not self._match(_T.L_PAREN):
            return params
        if self._match(_T.R_PAREN):
            return params
        while True:
            token = self._curr
            name = self._dc_name(f"a parameter name in {owner}(...)", lower=True)
            if name in params:
                self._dc_fail(f"Parameter {name!r} of {owner} is given twice", token)
            if not self._match_set(_ASSIGN):
                self._dc_fail(f"Expected '=', '=>' or ':=' after parameter {name!r}")
            params[name] = self._dc_value(name)
            if self._match(_T.R_PAREN):
                return params
            if not self._match(_T.COMMA):
                self._dc_fail(f"Expected ',' or ')' after the value of parameter {name!r}")

    def _dc_value(self, name: str) -> Any:
        token = self._curr
        kind = token.token_type if token else None
        if kind is _T.STRING:
            self._advance()
            return token.text
        if kind in (_T.TRUE, _T.FALSE):
            self._advance()
            return kind is _T.TRUE
        if kind is _T.NULL:
            self._advance()
            return None
        negative = kind is _T.DASH
        if kind in (_T.DASH, _T.PLUS):
            self._advance()
        return self._dc_number(name, negative, signed=kind in (_T.DASH, _T.PLUS))

    def _dc_number(self, name: str, negative: bool, signed: bool) -> int | float:
        token = self._curr
        text = None
        if token and token.token_type is _T.NUMBER:
            text = token.text
        elif (  # .5 is tokenized as DOT NUMBER
            token and token.token_type is _T.DOT and self._next
            and self._next.token_type is _T.NUMBER and self._next.start == token.end + 1
        ):
            self._advance()
            token, text = self._curr, "." + self._curr.text
        if text is None:
            hint = ""
            if token and token.token_type in _NAME_TOKENS and not signed:
                hint = f" (quote text values: '{token.text}')"
            self._dc_fail(
                f"The value of parameter {name!r} must be a number, a 'string', "
                f"true, false or NULL{hint}"
            )
        self._advance()
        value: int | float = int(text) if text.isdigit() else float(text)
        if not math.isfinite(value):
            self._dc_fail(f"The value of parameter {name!r} must be finite", token)
        return -value if negative else value

    def _dc_check_follower(self) -> None:
        token = self._curr
        if not token or token.token_type in _FOLLOWERS:
            return
        if token.token_type in (_T.WHERE, *_JOIN_TOKENS):
            self._dc_fail(
                "FROM, JOIN and WHERE must come before CLUSTER BY EMBEDDING (they choose the "
                "rows to cluster); to filter on cluster_id, wrap the query in a subquery"
            )
        self._dc_fail(
            "Unexpected token after the CLUSTER BY EMBEDDING clause; it may be followed by "
            "GROUP BY, HAVING, QUALIFY, WINDOW, ORDER BY, LIMIT, a set operation or the end"
        )

    def _parse_query_modifiers(self, this: Any) -> Any:
        this = super()._parse_query_modifiers(this)
        node = this.args.get("cluster") if isinstance(this, exp.Expression) else None
        if isinstance(node, ClusterEmbedding):
            start, end = node.meta["dc_start"]
            if not isinstance(this, exp.Select):
                raise _ClauseError(
                    "CLUSTER BY EMBEDDING must follow the FROM (and WHERE) of a SELECT", start, end
                )
            if not this.args.get("from_"):
                raise _ClauseError("CLUSTER BY EMBEDDING needs a FROM clause", start, end)
        return this


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------
# Statements.


@dataclass(frozen=True)
class _Chunk:
    """One statement: ``sql[start:end]`` with its tokens (semicolons included)."""

    start: int
    end: int
    tokens: tuple[Token, ...]

    @property
    def body(self) -> tuple[Token, ...]:
        return tuple(t for t in self.tokens if t.token_type is not _T.SEMICOLON)

    @property
    def has_clause(self) -> bool:
        return any(_clause_tokens(self.tokens))


def _clause_tokens(tokens: tuple[Token, ...] | list[Token]) -> Iterator[Token]:
    """The CLUSTER BY tokens that open a clause: followed by the word EMBEDDING."""
    for a, b in zip(tokens, tokens[1:]):
        if a.token_type is _T.CLUSTER_BY and b.token_type is _T.VAR and b.text.upper() == "EMBEDDING":
            yield a


def _chunks(sql: str, tokens: list[Token]) -> list[_Chunk]:
    """Split after each SEMICOLON; empty statements and trailing trivia join a neighbour.

    The chunks tile ``sql`` exactly and each holds one non-empty statement.
    """
    raw: list[list[Any]] = []
    begin, current = 0, []
    for token in tokens:
        current.append(token)
        if token.token_type is _T.SEMICOLON:
            raw.append([begin, token.end + 1, current])
            begin, current = token.end + 1, []
    raw.append([begin, len(sql), current])
    merged: list[list[Any]] = []
    for chunk in raw:
        empty = all(t.token_type is _T.SEMICOLON for t in chunk[2])
        if merged and (empty or all(t.token_type is _T.SEMICOLON for t in merged[-1][2])):
            merged[-1][1] = chunk[1]
            merged[-1][2] = merged[-1][2] + chunk[2]
        else:
            merged.append(chunk)
    return [_Chunk(s, e, tuple(t)) for s, e, t in merged if any(
        x.token_type is not _T.SEMICOLON for x in t)]


def _tokenize(sql: str, offset: int = 0) -> list[Token]:
    """DuckDB tokens of ``sql``, offsets shifted by ``offset``, commands opened up.

    sqlglot folds the rest of a command (EXPLAIN, CALL, PREPARE...) into one STRING
    token with meaningless offsets; tokenizing that text again finds a clause
    inside EXPLAIN and keeps every offset right. Token lines and columns are not
    shifted: only offsets are used.
    """
    raw = _DUCKDB.tokenize(sql)
    tokens: list[Token] = []
    for i, token in enumerate(raw):
        if (
            token.token_type is _T.STRING
            and i > 0
            and raw[i - 1].token_type in _COMMANDS
            and (i == 1 or raw[i - 2].token_type in _COMMAND_PREFIXES)
        ):
            begin = raw[i - 1].end + 1
            stop = raw[i + 1].start if i + 1 < len(raw) else len(sql)
            tokens += _tokenize(sql[begin:stop], begin)
        else:
            tokens.append(token)
    if offset:
        for token in tokens:
            token.start += offset
            token.end += offset
    return tokens


def split_statements(sql: str) -> list[str]:
    """Split a script into its statements, verbatim.

    Each chunk is one statement with the comments and whitespace before it and its
    ``;``; trailing comments join the last chunk, so ``"".join(chunks) == sql``
    unless the script holds no statement at all (then ``[]``). Semicolons inside
    strings, quoted names and comments do not split.

    >>> split_statements("SELECT 1; -- one\\nSELECT 'a;b';")
    ['SELECT 1;', " -- one\\nSELECT 'a;b';"]
    """
    try:
        tokens = _tokenize(sql)
    except TokenError:
        return [sql] if sql.strip() else []
    return [sql[c.start : c.end] for c in _chunks(sql, tokens)]


def has_cluster_syntax(sql: str) -> bool:
    """Whether some statement of ``sql`` uses ``CLUSTER BY EMBEDDING`` (not in a string or comment).

    >>> has_cluster_syntax("SELECT 'CLUSTER BY EMBEDDING(e)' -- CLUSTER BY EMBEDDING")
    False
    """
    if not _may_have_clause(sql):
        return False
    try:
        tokens = _tokenize(sql)
    except TokenError:
        return bool(_LOOSE_CLAUSE.search(sql))
    return any(c.has_clause for c in _chunks(sql, tokens))


def _may_have_clause(sql: str) -> bool:
    """Cheap exit before tokenizing: a clause has a token whose text.upper() is EMBEDDING."""
    return "EMBEDDING" in sql.upper()


def rewrite(sql: str) -> str:
    """Rewrite every ``CLUSTER BY EMBEDDING`` statement of a script into plain DuckDB SQL.

    Statements without the clause, and the text between statements, are returned
    byte for byte; a script without the clause is returned as is.

    Raises:
        SpecError: the clause is malformed, or sqlglot cannot parse the statement
            that holds it; the message gives line, column and an excerpt.
    """
    if not _may_have_clause(sql):
        return sql
    try:
        tokens = _tokenize(sql)
    except TokenError as exc:
        if _LOOSE_CLAUSE.search(sql):
            raise SpecError(
                f"Cannot split this script into tokens ({exc}); check for an unterminated "
                "string, quoted name or comment."
            ) from exc
        return sql
    chunks = _chunks(sql, tokens)
    if not any(c.has_clause for c in chunks):
        return sql
    parts, at = [], 0
    for chunk in chunks:
        if chunk.has_clause:
            body = _skip_explain(chunk.body)
            start, end = body[0].start, body[-1].end + 1
            parts += [sql[at:start], _rewrite_statement(sql, start, end)]
            at = end
    parts.append(sql[at:])
    return "".join(parts)


def _skip_explain(body: tuple[Token, ...]) -> tuple[Token, ...]:
    """Drop a leading EXPLAIN [ANALYZE]: it stays verbatim, the query after it is rewritten."""
    if body[0].token_type in _COMMANDS and body[0].text.upper() == "EXPLAIN":
        body = body[1:]
        if body and body[0].text.upper() == "ANALYZE":
            body = body[1:]
    return body


def _rewrite_statement(sql: str, start: int, end: int) -> str:
    """Parse ``sql[start:end]`` (one statement), rewrite its clauses, regenerate it."""
    # Tokenizing only the statement keeps comments around it out of the tree (they
    # stay verbatim around it); offsets are shifted back to the whole script, which
    # sqlglot gets as its ``sql`` for slicing.
    try:
        tokens = _tokenize(sql[start:end], start)
        tree = _Parser(dialect=_DUCKDB, error_level=ErrorLevel.IMMEDIATE).parse(tokens, sql)
    except _ClauseError as exc:
        raise _located(sql, f"Invalid CLUSTER BY EMBEDDING clause: {exc.message}",
                       exc.start, exc.end, f"Expected: {EXPECTED}") from None
    except _LocatedParseError as exc:
        raise _located(
            sql, f"Cannot parse the statement that uses CLUSTER BY EMBEDDING: {exc.message}",
            exc.start, exc.end,
            "duckcluster rewrites such statements with sqlglot; move the part it cannot parse "
            "into a view or a separate statement.",
        ) from None
    except SqlglotError as exc:
        raise SpecError(f"Cannot parse the statement that uses CLUSTER BY EMBEDDING: {exc}") from None
    statement = tree[0] if len(tree) == 1 else None
    if statement is None:
        raise DuckclusterError(f"internal error: sqlglot read {len(tree)} statements in one")
    parsed = {n.meta["dc_start"][0] for n in statement.find_all(ClusterEmbedding)}
    for token in _clause_tokens(tokens):
        if token.start not in parsed:  # e.g. inside CALL or PREPARE, which sqlglot keeps as text
            raise _located(
                sql, "CLUSTER BY EMBEDDING cannot be rewritten in this kind of statement",
                token.start, token.end + 1,
                "Use it in a SELECT: top level, CTE, subquery, set operation, CREATE TABLE/VIEW "
                "AS, INSERT ... SELECT, COPY (...) TO, DESCRIBE, SUMMARIZE or EXPLAIN.",
            )
    _rewrite_tree(statement)
    try:
        return statement.sql(
            dialect=_DUCKDB, normalize_functions=False, unsupported_level=ErrorLevel.RAISE
        )
    except SqlglotError as exc:
        raise _located(
            sql, f"Cannot regenerate the statement that uses CLUSTER BY EMBEDDING ({exc})",
            start, end, "Move the unsupported part into a view or a separate statement.",
        ) from None


# ---------------------------------------------------------------------------
# The rewrite.

# Parts of a SELECT that choose its input rows; they move into the source CTE.
_SOURCE_ARGS = ("from_", "joins", "laterals", "where", "sample")


def _rewrite_tree(tree: exp.Expression) -> None:
    """Replace every ClusterEmbedding, deepest first, in place."""
    nodes = list(tree.find_all(ClusterEmbedding, bfs=False))
    nodes.sort(key=lambda n: -sum(1 for _ in _ancestors(n)))  # stable: textual order among equals
    taken = {i.name.lower() for i in tree.find_all(exp.Identifier)}
    for node in nodes:
        _rewrite_select(node.parent, node.args["clause"], _fresh_name(taken))
    if tree.find(ClusterEmbedding):
        # The DuckDB generator would silently drop it, losing the clustering.
        raise DuckclusterError("internal error: a CLUSTER BY EMBEDDING clause was not rewritten")


def _ancestors(node: exp.Expression) -> Iterator[exp.Expression]:
    while node.parent is not None:
        node = node.parent
        yield node


def _fresh_name(taken: set[str]) -> str:
    n = 1
    while f"{SOURCE_PREFIX}{n}" in taken:
        n += 1
    name = f"{SOURCE_PREFIX}{n}"
    taken.add(name)
    return name


def _rewrite_select(select: exp.Select, clause: Clause, name: str) -> None:
    source = exp.Select(expressions=[exp.Star()])
    for key in _SOURCE_ARGS:
        value = select.args.get(key)
        if value:
            select.set(key, None)
            source.set(key, value)
    alias = _result_alias(source.args["from_"].this)
    table = exp.Table(
        this=exp.Anonymous(this=FUNCTION, expressions=_call_args(name, clause)),
        alias=exp.TableAlias(this=alias) if alias else None,
    )
    select.set("cluster", None)
    select.set("from_", exp.From(this=table))
    cte = exp.CTE(this=source, alias=exp.TableAlias(this=exp.to_identifier(name)))
    owner = _cte_owner(select)
    with_ = owner.args.get("with_")
    if with_:
        with_.append("expressions", cte)  # after the user's CTEs, so it can read them
    else:
        owner.set("with_", exp.With(expressions=[cte]))


def _result_alias(source: exp.Expression) -> exp.Identifier | None:
    """The name the query used for its rows: the FROM item's alias, else a table's name."""
    alias = source.args.get("alias")
    if isinstance(alias, exp.TableAlias) and alias.this:
        return alias.this.copy()
    if isinstance(alias, exp.Identifier):
        return alias.copy()
    if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
        return source.this.copy()
    return None


def _call_args(name: str, clause: Clause) -> list[exp.Expression]:
    columns = [exp.Literal.string(c) for c in clause.columns]
    embedding = columns[0] if len(columns) == 1 else exp.Array(expressions=columns)
    named = {"algorithm": clause.algorithm, "params": clause.params,
             "preprocessing": clause.preprocessing, "id": clause.id}
    return [exp.Literal.string(name), embedding] + [
        exp.PropertyEQ(this=exp.to_identifier(k), expression=exp.Literal.string(v))
        for k, v in named.items()
        if v is not None
    ] + [exp.PropertyEQ(this=exp.to_identifier(k), expression=exp.convert(v))
         for k, v in clause.options]


def _cte_owner(select: exp.Select) -> exp.Expression:
    """The query that holds the CTE: the SELECT, or the top of the set operation it is in."""
    node: exp.Expression = select
    while isinstance(node.parent, exp.SetOperation) and node.arg_key in ("this", "expression"):
        node = node.parent
    return node
