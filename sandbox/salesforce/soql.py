"""SOQL parser for the sandbox Salesforce: ``parse(text) -> Query`` (see ``soql_ast``).

The grammar lives in ``soql.lark`` next to this module (package data). One LALR parser with a
contextual lexer and an inline transformer is built at import time and shared; ``parse`` is
thread-safe.

Errors are :class:`SoqlError` with ``code="MALFORMED_QUERY"`` and a message laid out the way
Salesforce lays out its own (a leading newline, the query row, a caret line,
``ERROR at Row:r:Column:c`` and a reason such as ``unexpected token: 'FORM'``). As in the
messages Salesforce returns (inferred from published examples, not from a live org), the row
shown is cut to about 30 characters on each side of the error, widened to whole words.

String literals: the escapes ``\\' \\" \\\\ \\n \\r \\t \\b \\f`` (letters in either case) are
resolved. ``\\_`` and ``\\%`` keep their backslash in ``StringLit.value`` so that LIKE can tell
an escaped ``_``/``%`` from a wildcard; :func:`like_to_regex` reads them that way. Any other
backslash sequence is a MALFORMED_QUERY, as in Salesforce. :func:`quote` builds a safe literal.
"""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from crm_kpi_worker.sandbox.salesforce.date_literals import DATE_LITERALS, N_DATE_LITERALS
from crm_kpi_worker.sandbox.salesforce.soql_ast import (
    And,
    BoolLit,
    Comparison,
    Condition,
    DateFunctionLit,
    DateLit,
    DateTimeLit,
    FieldRef,
    FuncCall,
    Literal,
    Not,
    NullLit,
    NumberLit,
    Or,
    OrderItem,
    Query,
    SelectItem,
    SemiJoin,
    StringLit,
    SubQuery,
)

__all__ = ["SoqlError", "like_to_regex", "parse"]

MALFORMED_QUERY = "MALFORMED_QUERY"

#: Functions allowed in the select list (lower case).
SELECT_FUNCTIONS: frozenset[str] = frozenset(
    {
        "convertcurrency",
        "tolabel",
        "format",
        "count",
        "count_distinct",
        "max",
        "min",
        "sum",
        "avg",
        "calendar_year",
        "calendar_month",
        "calendar_quarter",
        "day_only",
        "fiscal_year",
        "fiscal_quarter",
    }
)
#: Functions allowed on the left of a WHERE comparison (lower case).
WHERE_FUNCTIONS: frozenset[str] = frozenset(
    {
        "convertcurrency",
        "tolabel",
        "calendar_year",
        "calendar_month",
        "calendar_quarter",
        "day_only",
        "fiscal_year",
        "fiscal_quarter",
    }
)
_AGGREGATES = frozenset({"count", "count_distinct", "max", "min", "sum", "avg"})


class SoqlError(Exception):
    """A query Salesforce would refuse. ``code`` is the REST ``errorCode``.

    ``row``/``column`` (1-based) and ``reason`` (the message's last line) are set for errors
    tied to a position in the query.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        row: int | None = None,
        column: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.row = row
        self.column = column
        self.reason = reason if reason is not None else message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_salesforce_body(self) -> list[dict[str, str]]:
        """The REST error body: ``[{"message": ..., "errorCode": ...}]``."""
        return [{"message": self.message, "errorCode": self.code}]


class _Positioned(Exception):
    """Raised inside the transformer; ``parse`` adds the query text and turns it into a
    SoqlError."""

    def __init__(self, pos: int, reason: str) -> None:
        super().__init__(pos, reason)
        self.pos = pos
        self.reason = reason


# ---- string literals ------------------------------------------------------------------------

_ESCAPES = {
    "'": "'",
    '"': '"',
    "\\": "\\",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
    "_": "\\_",  # kept escaped for LIKE
    "%": "\\%",  # kept escaped for LIKE
}
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(token: Token) -> str:
    raw = token.value[1:-1]
    if "\\" not in raw:
        return raw

    def replace(match: re.Match[str]) -> str:
        char = match.group(1)
        resolved = _ESCAPES.get(char.lower() if char in "NRTBF" else char)
        if resolved is None:
            raise _Positioned(
                token.start_pos + 1 + match.start(),
                f"Invalid string literal {token.value}. "
                f"Illegal character sequence '\\{char}' in string literal.",
            )
        return resolved

    return _ESCAPE_RE.sub(replace, raw)


def like_to_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex equivalent to ``LIKE pattern`` (``pattern`` as found in
    ``StringLit.value``): ``%`` is any run of characters, ``_`` one character, ``\\%`` and
    ``\\_`` the characters themselves; case-insensitive and anchored at both ends, like SOQL.
    """
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "_%":
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
        i += 1
    return re.compile(r"\A(?:" + "".join(parts) + r")\Z", re.IGNORECASE | re.DOTALL)


# ---- date and number literals ---------------------------------------------------------------

_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)


def _datetime(token: Token) -> DateTimeLit:
    match = _DATETIME_RE.fullmatch(token.value)
    assert match is not None  # the lexer only produces matching text
    year, month, day, hour, minute, second, fraction, zulu, sign, tz_h, tz_m = match.groups()
    if zulu is None and sign is None:
        raise _Positioned(
            token.start_pos,
            f"Invalid datetime: {token.value} (a dateTime literal needs a time zone: Z, "
            "+hh:mm or -hh:mm)",
        )
    try:
        if zulu is not None:
            tzinfo = dt.UTC
        else:
            if int(tz_h) > 23 or int(tz_m) > 59:
                raise ValueError("bad offset")
            offset = dt.timedelta(hours=int(tz_h), minutes=int(tz_m))
            tzinfo = dt.timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        value = dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micro,
            tzinfo=tzinfo,
        )
    except ValueError:
        raise _Positioned(token.start_pos, f"Invalid datetime: {token.value}") from None
    return DateTimeLit(value)


def _date(token: Token) -> DateLit:
    try:
        return DateLit(dt.date.fromisoformat(token.value))
    except ValueError:
        raise _Positioned(token.start_pos, f"Invalid date: {token.value}") from None


def _number(token: Token) -> int | float:
    text = token.value
    return float(text) if "." in text else int(text)


def _unexpected(token: Token) -> _Positioned:
    return _Positioned(token.start_pos, f"unexpected token: '{token.value}'")


# ---- tree -> AST ----------------------------------------------------------------------------


class _ToAst(Transformer):
    """Inline transformer: called by the LALR parser as rules are reduced."""

    # -- query --
    def start(self, children: list) -> Query:
        return children[0]

    def query(self, children: list) -> Query:
        select, from_ = children[0], children[1].value
        where = None
        order_by: tuple[OrderItem, ...] = ()
        limit = offset = None
        for child in children[2:]:
            kind, value = child
            if kind == "where":
                where = value
            elif kind == "order":
                order_by = value
            elif kind == "limit":
                limit = value
            else:
                offset = value
        return Query(
            select=select,
            from_=from_,
            where=where,
            order_by=order_by,
            limit=limit,
            offset=offset,
        )

    def where_clause(self, children: list) -> tuple[str, Condition]:
        return ("where", children[0])

    def order_clause(self, children: list) -> tuple[str, tuple[OrderItem, ...]]:
        return ("order", tuple(children))

    def limit_clause(self, children: list) -> tuple[str, int]:
        return ("limit", self._count(children[0]))

    def offset_clause(self, children: list) -> tuple[str, int]:
        return ("offset", self._count(children[0]))

    @staticmethod
    def _count(token: Token) -> int:
        value = _number(token)
        if not isinstance(value, int) or value < 0:
            raise _unexpected(token)
        return value

    # -- select list --
    def select_list(self, children: list) -> tuple[SelectItem, ...]:
        return tuple(children)

    def select_field(self, children: list) -> SelectItem:
        return SelectItem(children[0])

    def select_func(self, children: list) -> SelectItem:
        call: FuncCall = children[0]
        alias = children[1].value if len(children) > 1 else None
        return SelectItem(call, alias)

    def select_subquery(self, children: list) -> SelectItem:
        return SelectItem(SubQuery(children[0]))

    def select_call(self, children: list) -> FuncCall:
        return self._call(children, SELECT_FUNCTIONS, "the select list")

    def where_call(self, children: list) -> FuncCall:
        return self._call(children, WHERE_FUNCTIONS, "a WHERE clause")

    @staticmethod
    def _call(children: list, allowed: frozenset[str], where: str) -> FuncCall:
        name_token: Token = children[0]
        name = name_token.value.lower()
        args: tuple[FieldRef, ...] = children[1] if len(children) > 1 else ()
        if name not in allowed:
            if name in SELECT_FUNCTIONS:
                reason = f"{name_token.value}() is not allowed in {where}"
                if name in _AGGREGATES:
                    reason += " (aggregate functions belong in HAVING, which is not supported)"
            else:
                reason = f"Unknown function: {name_token.value}"
            raise _Positioned(name_token.start_pos, reason)
        if not (len(args) == 1 or (name == "count" and not args)):
            expected = "no argument or one field" if name == "count" else "one field"
            raise _Positioned(
                name_token.start_pos,
                f"{name_token.value}() takes {expected}, not {len(args)}",
            )
        return FuncCall(name, args)

    def call_args(self, children: list) -> tuple[FieldRef, ...]:
        return tuple(children)

    def field_path(self, children: list) -> FieldRef:
        return FieldRef(tuple(token.value for token in children))

    # -- conditions --
    def and_chain(self, children: list) -> And:
        return And(tuple(children))

    def or_chain(self, children: list) -> Or:
        return Or(tuple(children))

    def not_condition(self, children: list) -> Not:
        return Not(children[0])

    def compare(self, children: list) -> Comparison:
        left, op, value = children
        op = "!=" if op.value == "<>" else op.value
        return Comparison(left, op, value)

    def like(self, children: list) -> Comparison:
        return Comparison(children[0], "LIKE", StringLit(_unescape(children[1])))

    def in_(self, children: list) -> Comparison:
        return Comparison(children[0], "IN", children[1])

    def not_in(self, children: list) -> Comparison:
        return Comparison(children[0], "NOT IN", children[1])

    def includes(self, children: list) -> Comparison:
        return Comparison(children[0], "INCLUDES", children[1])

    def excludes(self, children: list) -> Comparison:
        return Comparison(children[0], "EXCLUDES", children[1])

    def semi_join(self, children: list) -> SemiJoin:
        return SemiJoin(children[0])

    def value_list(self, children: list) -> tuple[Literal, ...]:
        return tuple(children)

    # -- literals --
    def string(self, children: list) -> StringLit:
        return StringLit(_unescape(children[0]))

    def number(self, children: list) -> NumberLit:
        return NumberLit(_number(children[0]))

    def datetime(self, children: list) -> DateTimeLit:
        return _datetime(children[0])

    def date(self, children: list) -> DateLit:
        return _date(children[0])

    def true(self, children: list) -> BoolLit:
        return BoolLit(True)

    def false(self, children: list) -> BoolLit:
        return BoolLit(False)

    def null(self, children: list) -> NullLit:
        return NullLit()

    def n_date_literal(self, children: list) -> DateFunctionLit:
        token: Token = children[0]
        name, _, n = token.value.partition(":")
        if name.upper() not in N_DATE_LITERALS:
            raise _unexpected(token)
        return DateFunctionLit(name.upper(), int(n))

    def bare_name(self, children: list) -> DateFunctionLit:
        token: Token = children[0]
        name = token.value.upper()
        if name not in DATE_LITERALS:
            if name in N_DATE_LITERALS:
                raise _Positioned(token.start_pos, f"{token.value} needs a number: {name}:n")
            raise _unexpected(token)
        return DateFunctionLit(name)

    def bare_path(self, children: list) -> Literal:
        first: Token = children[0]
        text = ".".join(token.value for token in children)
        raise _Positioned(first.start_pos, f"unexpected token: '{text}'")

    # -- ORDER BY --
    def order_item(self, children: list) -> OrderItem:
        field: FieldRef = children[0]
        descending = False
        nulls_last = None
        for child in children[1:]:
            if child[0] == "direction":
                descending = child[1]
            else:
                nulls_last = child[1]
        return OrderItem(field, descending, nulls_last)

    def order_direction(self, children: list) -> tuple[str, bool]:
        return ("direction", children[0].type == "DESC")

    def order_nulls(self, children: list) -> tuple[str, bool]:
        return ("nulls", children[0].type == "LAST")


def _load_grammar() -> str:
    return (
        resources.files("crm_kpi_worker.sandbox.salesforce")
        .joinpath("soql.lark")
        .read_text(encoding="utf-8")
    )


# SOQL's reserved words can never be names. The contextual lexer only turns a word into a
# keyword where the grammar accepts that keyword, so "SELECT Id, FROM Account" would otherwise
# read FROM as a field; this callback makes such a word a keyword token everywhere (the parser
# then stops at it: "unexpected token: 'FROM'"). GROUP, HAVING and WITH are reserved but not in
# the grammar: they become RESERVED tokens, which no parser state accepts.
_RESERVED_WORDS = frozenset(
    {
        "AND", "ASC", "DESC", "EXCLUDES", "FIRST", "FROM", "GROUP", "HAVING", "IN", "INCLUDES",
        "LAST", "LIKE", "LIMIT", "NOT", "NULL", "NULLS", "OR", "SELECT", "WHERE", "WITH",
    }
)  # fmt: skip
_RESERVED_NOT_IN_GRAMMAR = frozenset({"GROUP", "HAVING", "WITH"})


def _reserved_word(token: Token) -> Token:
    upper = token.value.upper()
    if upper in _RESERVED_WORDS:
        token.type = "RESERVED" if upper in _RESERVED_NOT_IN_GRAMMAR else upper
    return token


_PARSER = Lark(
    _load_grammar(),
    parser="lalr",
    lexer="contextual",
    transformer=_ToAst(),
    lexer_callbacks={"NAME": _reserved_word},
    propagate_positions=False,
    maybe_placeholders=False,
)


# ---- errors ---------------------------------------------------------------------------------

_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_WINDOW = 30
_PREV_WORD_RE = re.compile(r"([A-Za-z][A-Za-z0-9_]*)\s*\Z")
_NEXT_WORD_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)")
_FROM_OBJECT_RE = re.compile(r"\bFROM\s+[A-Za-z][A-Za-z0-9_]*\s+\Z", re.IGNORECASE)
_CLAUSE_KEYWORDS = frozenset(
    {"WHERE", "ORDER", "LIMIT", "OFFSET", "GROUP", "HAVING", "WITH", "FOR", "ALL", "USING"}
)
_UNSUPPORTED = "is not supported by the sandbox Salesforce"


def _malformed(text: str, pos: int, reason: str) -> SoqlError:
    """A MALFORMED_QUERY error at offset ``pos`` (``len(text)`` for the end of the query)."""
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    if line_end == -1:
        line_end = len(text)
    line = text[line_start:line_end].rstrip("\r")
    row = text.count("\n", 0, pos) + 1
    index = pos - line_start
    column = index + 1

    start = max(0, index - _WINDOW)
    while 0 < start < len(line) and line[start - 1] in _WORD_CHARS and line[start] in _WORD_CHARS:
        start -= 1
    end = min(len(line), index + _WINDOW + 1)
    while 0 < end < len(line) and line[end - 1] in _WORD_CHARS and line[end] in _WORD_CHARS:
        end += 1
    snippet = line[start:end]
    caret = " " * (index - start) + "^"
    message = f"\n{snippet}\n{caret}\nERROR at Row:{row}:Column:{column}\n{reason}"
    return SoqlError(MALFORMED_QUERY, message, row=row, column=column, reason=reason)


def _unsupported_reason(text: str, pos: int, word: str) -> tuple[int, str] | None:
    """A clearer reason when the unexpected ``word`` at ``pos`` starts a feature the sandbox
    does not support. Returns ``(pos, reason)`` or None."""
    upper = word.upper()
    next_match = _NEXT_WORD_RE.match(text, pos + len(word))
    following = next_match.group(1).upper() if next_match else ""
    if upper == "GROUP" and following == "BY":
        return pos, f"GROUP BY {_UNSUPPORTED}"
    if upper == "HAVING":
        return pos, f"HAVING {_UNSUPPORTED}"
    if upper == "WITH":
        if following in {"SECURITY_ENFORCED", "USER_MODE", "SYSTEM_MODE"}:
            # Apex-only clauses; Salesforce refuses them over the API.
            return pos, f"{following} not allowed in this context"
        return pos, f"WITH {following} {_UNSUPPORTED}".replace("  ", " ")
    if upper == "FOR" and following in {"VIEW", "REFERENCE", "UPDATE"}:
        return pos, f"FOR {following} {_UNSUPPORTED}"
    if upper == "ALL" and following == "ROWS":
        return pos, "ALL ROWS is Apex-only; use the queryAll resource (/queryAll/?q=...) instead"
    if upper == "USING" and following == "SCOPE":
        return pos, f"USING SCOPE {_UNSUPPORTED}"
    previous = _PREV_WORD_RE.search(text, 0, pos)
    if previous and previous.group(1).upper() == "TYPEOF":
        return previous.start(1), f"TYPEOF {_UNSUPPORTED}"
    if upper not in _CLAUSE_KEYWORDS and _FROM_OBJECT_RE.search(text, 0, pos):
        return pos, f"an alias after the FROM object ('{word}') {_UNSUPPORTED}"
    return None


def _from_lark(text: str, error: UnexpectedInput) -> SoqlError:
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            return _malformed(text, len(text), "unexpected token: '<EOF>'")
        pos = token.start_pos
        if token.value.isidentifier():
            special = _unsupported_reason(text, pos, token.value)
            if special is not None:
                return _malformed(text, *special)
        return _malformed(text, pos, f"unexpected token: '{token.value}'")
    if isinstance(error, UnexpectedCharacters):
        pos = error.pos_in_stream
        char = text[pos]
        if char == "'":
            return _malformed(text, pos, "unterminated string literal")
        return _malformed(text, pos, f"unexpected token: '{char}'")
    return _malformed(text, len(text), "unexpected token: '<EOF>'")  # pragma: no cover


# ---- entry point ----------------------------------------------------------------------------


def parse(text: str) -> Query:
    """Parse a SOQL query into a :class:`Query`; raises :class:`SoqlError` (MALFORMED_QUERY)."""
    try:
        return _PARSER.parse(text)
    except _Positioned as error:
        raise _malformed(text, error.pos, error.reason) from None
    except UnexpectedInput as error:
        raise _from_lark(text, error) from None
