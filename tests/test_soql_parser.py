"""The sandbox SOQL parser: exact ASTs, literals, precedence and MALFORMED_QUERY errors."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_kpi_worker.connectors.salesforce.soql import quote
from crm_kpi_worker.sandbox.salesforce.date_literals import DATE_LITERALS, N_DATE_LITERALS
from crm_kpi_worker.sandbox.salesforce.soql import SoqlError, like_to_regex, parse
from crm_kpi_worker.sandbox.salesforce.soql_ast import (
    And,
    BoolLit,
    Comparison,
    DateFunctionLit,
    DateLit,
    DateTimeLit,
    FieldRef,
    FuncCall,
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

UTC = dt.UTC
NOT_SUPPORTED = "is not supported by the sandbox Salesforce"
ALL_ROWS = "ALL ROWS is Apex-only; use the queryAll resource (/queryAll/?q=...) instead"


def f(dotted: str) -> FieldRef:
    return FieldRef(tuple(dotted.split(".")))


def sel(*dotted: str) -> tuple[SelectItem, ...]:
    return tuple(SelectItem(f(d)) for d in dotted)


def cmp(field: str, op: str, value: object) -> Comparison:
    return Comparison(f(field), op, value)  # type: ignore[arg-type]


def where(condition_text: str, from_: str = "Account") -> object:
    query = parse(f"SELECT Id FROM {from_} WHERE {condition_text}")
    return query.where


def value_of(literal_text: str) -> object:
    condition = where(f"X = {literal_text}")
    assert isinstance(condition, Comparison)
    return condition.value


def error_of(text: str) -> SoqlError:
    with pytest.raises(SoqlError) as info:
        parse(text)
    assert info.value.code == "MALFORMED_QUERY"
    return info.value


# ---- whole queries --------------------------------------------------------------------------

CONNECTOR_QUERY = (
    "SELECT Id, Name, Amount, CloseDate, StageName, Owner.Email, convertCurrency(Amount) conv, "
    "(SELECT StageName, CreatedDate FROM OpportunityHistories ORDER BY CreatedDate) "
    "FROM Opportunity WHERE SystemModstamp >= 2024-01-01T00:00:00Z AND "
    "(IsDeleted = false OR StageName IN ('Closed Won','Closed Lost')) "
    "ORDER BY SystemModstamp, Id LIMIT 5000"
)


def test_the_connector_query() -> None:
    assert parse(CONNECTOR_QUERY) == Query(
        select=(
            *sel("Id", "Name", "Amount", "CloseDate", "StageName", "Owner.Email"),
            SelectItem(FuncCall("convertcurrency", (f("Amount"),)), "conv"),
            SelectItem(
                SubQuery(
                    Query(
                        select=sel("StageName", "CreatedDate"),
                        from_="OpportunityHistories",
                        order_by=(OrderItem(f("CreatedDate")),),
                    )
                )
            ),
        ),
        from_="Opportunity",
        where=And(
            (
                cmp("SystemModstamp", ">=", DateTimeLit(dt.datetime(2024, 1, 1, tzinfo=UTC))),
                Or(
                    (
                        cmp("IsDeleted", "=", BoolLit(False)),
                        cmp(
                            "StageName",
                            "IN",
                            (StringLit("Closed Won"), StringLit("Closed Lost")),
                        ),
                    )
                ),
            )
        ),
        order_by=(OrderItem(f("SystemModstamp")), OrderItem(f("Id"))),
        limit=5000,
    )


def test_history_and_quota_queries() -> None:
    assert parse(
        "SELECT OpportunityId, StageName, Amount, CloseDate, CreatedDate FROM OpportunityHistory "
        "WHERE CreatedDate >= 2024-01-01T00:00:00.000+0000 AND OpportunityId IN "
        "(SELECT Id FROM Opportunity WHERE IsClosed = true) ORDER BY OpportunityId, CreatedDate"
    ) == Query(
        select=sel("OpportunityId", "StageName", "Amount", "CloseDate", "CreatedDate"),
        from_="OpportunityHistory",
        where=And(
            (
                cmp("CreatedDate", ">=", DateTimeLit(dt.datetime(2024, 1, 1, tzinfo=UTC))),
                cmp(
                    "OpportunityId",
                    "IN",
                    SemiJoin(
                        Query(
                            select=sel("Id"),
                            from_="Opportunity",
                            where=cmp("IsClosed", "=", BoolLit(True)),
                        )
                    ),
                ),
            )
        ),
        order_by=(OrderItem(f("OpportunityId")), OrderItem(f("CreatedDate"))),
    )
    assert parse(
        "SELECT QuotaOwnerId, QuotaAmount, StartDate FROM ForecastingQuota "
        "WHERE StartDate = THIS_FISCAL_YEAR"
    ) == Query(
        select=sel("QuotaOwnerId", "QuotaAmount", "StartDate"),
        from_="ForecastingQuota",
        where=cmp("StartDate", "=", DateFunctionLit("THIS_FISCAL_YEAR")),
    )


def test_minimal_query() -> None:
    assert parse("SELECT Id FROM Account") == Query(select=sel("Id"), from_="Account")


def test_keywords_are_case_insensitive_and_identifiers_keep_their_case() -> None:
    expected = Query(
        select=sel("iD", "owner.EMAIL"),
        from_="opportunity",
        where=And((cmp("isDeleted", "=", BoolLit(False)), cmp("nAme", "!=", NullLit()))),
        order_by=(OrderItem(f("nAme"), descending=True, nulls_last=False),),
        limit=3,
        offset=1,
    )
    text = (
        "select iD, owner.EMAIL from opportunity where isDeleted = FALSE and nAme != Null "
        "order by nAme desc nulls first limit 3 offset 1"
    )
    assert parse(text) == expected
    assert parse(text.upper().replace("OPPORTUNITY", "opportunity")) != expected  # names differ
    assert (
        parse(
            "SeLeCt iD, owner.EMAIL FrOm opportunity WhErE isDeleted = fAlSe AnD nAme != nUlL "
            "OrDeR bY nAme DeSc NuLlS fIrSt LiMiT 3 oFfSeT 1"
        )
        == expected
    )


def test_whitespace_and_newlines_are_free() -> None:
    assert parse("\n  SELECT\tId ,Name\r\n FROM   Account\nWHERE(Name='x')LIMIT 1  ") == Query(
        select=sel("Id", "Name"),
        from_="Account",
        where=cmp("Name", "=", StringLit("x")),
        limit=1,
    )


def test_words_that_are_keywords_elsewhere_are_field_names_in_a_select_list() -> None:
    assert parse("SELECT Order, By, Offset, Limit__c FROM Account ORDER BY Order") == Query(
        select=sel("Order", "By", "Offset", "Limit__c"),
        from_="Account",
        order_by=(OrderItem(f("Order")),),
    )


# ---- select list ----------------------------------------------------------------------------


def test_relationship_paths_and_custom_names() -> None:
    assert parse(
        "SELECT Account.Owner.Name, Owner.Email, ns__Region__r.Code__c FROM Opportunity"
    ).select == sel("Account.Owner.Name", "Owner.Email", "ns__Region__r.Code__c")


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("COUNT()", SelectItem(FuncCall("count", ()))),
        ("count(Id)", SelectItem(FuncCall("count", (f("Id"),)))),
        ("COUNT_DISTINCT(OwnerId)", SelectItem(FuncCall("count_distinct", (f("OwnerId"),)))),
        ("MAX(Amount) biggest", SelectItem(FuncCall("max", (f("Amount"),)), "biggest")),
        ("MIN(CloseDate)", SelectItem(FuncCall("min", (f("CloseDate"),)))),
        ("SUM(Amount) total", SelectItem(FuncCall("sum", (f("Amount"),)), "total")),
        ("AVG(Amount)", SelectItem(FuncCall("avg", (f("Amount"),)))),
        ("convertCurrency(Amount)", SelectItem(FuncCall("convertcurrency", (f("Amount"),)))),
        (
            "CONVERTCURRENCY(Amount) Amt",
            SelectItem(FuncCall("convertcurrency", (f("Amount"),)), "Amt"),
        ),
        ("toLabel(StageName)", SelectItem(FuncCall("tolabel", (f("StageName"),)))),
        (
            "toLabel(Owner.Region__c) r",
            SelectItem(FuncCall("tolabel", (f("Owner.Region__c"),)), "r"),
        ),
        ("FORMAT(Amount)", SelectItem(FuncCall("format", (f("Amount"),)))),
        ("CALENDAR_YEAR(CloseDate)", SelectItem(FuncCall("calendar_year", (f("CloseDate"),)))),
        ("DAY_ONLY(CreatedDate) d", SelectItem(FuncCall("day_only", (f("CreatedDate"),)), "d")),
    ],
)
def test_select_functions(item: str, expected: SelectItem) -> None:
    assert parse(f"SELECT {item} FROM Opportunity").select == (expected,)


def test_count_query() -> None:
    query = parse("SELECT COUNT() FROM Opportunity WHERE IsClosed = true")
    assert query.is_count
    assert not parse("SELECT COUNT(Id) FROM Opportunity").is_count


def test_subquery_with_every_clause() -> None:
    assert parse(
        "SELECT Id, (SELECT Id, StageName FROM OpportunityHistories "
        "WHERE StageName != 'Prospecting' ORDER BY CreatedDate DESC LIMIT 10), "
        "Name FROM Opportunity"
    ) == Query(
        select=(
            *sel("Id"),
            SelectItem(
                SubQuery(
                    Query(
                        select=sel("Id", "StageName"),
                        from_="OpportunityHistories",
                        where=cmp("StageName", "!=", StringLit("Prospecting")),
                        order_by=(OrderItem(f("CreatedDate"), descending=True),),
                        limit=10,
                    )
                )
            ),
            *sel("Name"),
        ),
        from_="Opportunity",
    )


# ---- WHERE: operators -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op_text", "op"),
    [("=", "="), ("!=", "!="), ("<>", "!="), ("<", "<"), ("<=", "<="), (">", ">"), (">=", ">=")],
)
def test_comparison_operators(op_text: str, op: str) -> None:
    assert where(f"Amount {op_text} 10") == cmp("Amount", op, NumberLit(10))
    assert where(f"Amount{op_text}10") == cmp("Amount", op, NumberLit(10))


def test_like_in_includes_excludes() -> None:
    assert where("Name LIKE 'Acme%'") == cmp("Name", "LIKE", StringLit("Acme%"))
    assert where("Name like 'a\\_b\\%'") == cmp("Name", "LIKE", StringLit("a\\_b\\%"))
    assert where("Id IN ('a')") == cmp("Id", "IN", (StringLit("a"),))
    assert where("Amount NOT IN (1, 2.5, null)") == cmp(
        "Amount", "NOT IN", (NumberLit(1), NumberLit(2.5), NullLit())
    )
    assert where("Tags__c INCLUDES ('a;b', 'c')") == cmp(
        "Tags__c", "INCLUDES", (StringLit("a;b"), StringLit("c"))
    )
    assert where("Tags__c excludes ('a')") == cmp("Tags__c", "EXCLUDES", (StringLit("a"),))
    assert where("CloseDate IN (THIS_MONTH, LAST_N_DAYS:3)") == cmp(
        "CloseDate", "IN", (DateFunctionLit("THIS_MONTH"), DateFunctionLit("LAST_N_DAYS", 3))
    )


def test_semi_join_and_anti_join() -> None:
    inner = Query(
        select=sel("OpportunityId"),
        from_="OpportunityHistory",
        where=cmp("StageName", "=", StringLit("Closed Won")),
    )
    assert where(
        "Id IN (SELECT OpportunityId FROM OpportunityHistory WHERE StageName = 'Closed Won')",
        "Opportunity",
    ) == cmp("Id", "IN", SemiJoin(inner))
    assert where(
        "Id NOT IN (select OpportunityId from OpportunityHistory where StageName = 'Closed Won')",
        "Opportunity",
    ) == cmp("Id", "NOT IN", SemiJoin(inner))


def test_functions_on_the_left() -> None:
    assert where("convertCurrency(Amount) > 1000") == Comparison(
        FuncCall("convertcurrency", (f("Amount"),)), ">", NumberLit(1000)
    )
    assert where("CALENDAR_YEAR(CloseDate) = 2024") == Comparison(
        FuncCall("calendar_year", (f("CloseDate"),)), "=", NumberLit(2024)
    )
    for name in ("CALENDAR_MONTH", "CALENDAR_QUARTER", "FISCAL_YEAR", "FISCAL_QUARTER"):
        assert where(f"{name}(CloseDate) IN (1, 2)") == Comparison(
            FuncCall(name.lower(), (f("CloseDate"),)), "IN", (NumberLit(1), NumberLit(2))
        )
    assert where("DAY_ONLY(CreatedDate) = 2024-03-31") == Comparison(
        FuncCall("day_only", (f("CreatedDate"),)), "=", DateLit(dt.date(2024, 3, 31))
    )
    assert where("toLabel(StageName) = 'Gewonnen'") == Comparison(
        FuncCall("tolabel", (f("StageName"),)), "=", StringLit("Gewonnen")
    )


# ---- WHERE: precedence and the AND/OR rule ----------------------------------------------------

A, B, C, D = (cmp(name, "=", NumberLit(1)) for name in "abcd")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a = 1", A),
        ("a = 1 AND b = 1 AND c = 1", And((A, B, C))),
        ("a = 1 OR b = 1 OR c = 1", Or((A, B, C))),
        ("(a = 1 AND b = 1) OR c = 1", Or((And((A, B)), C))),
        ("a = 1 AND (b = 1 OR c = 1)", And((A, Or((B, C))))),
        ("(a = 1 OR b = 1) AND (c = 1 OR d = 1)", And((Or((A, B)), Or((C, D))))),
        ("NOT a = 1", Not(A)),
        ("NOT a = 1 AND b = 1", And((Not(A), B))),
        ("a = 1 OR NOT b = 1", Or((A, Not(B)))),
        ("NOT (a = 1 OR b = 1)", Not(Or((A, B)))),
        ("NOT NOT a = 1", Not(Not(A))),
        ("((a = 1))", A),
        ("(a = 1 AND b = 1) AND c = 1", And((And((A, B)), C))),
        ("a = 1 AND ((b = 1 OR c = 1) AND d = 1)", And((A, And((Or((B, C)), D))))),
    ],
)
def test_precedence(text: str, expected: object) -> None:
    assert where(text) == expected


@pytest.mark.parametrize(
    ("text", "column", "token"),
    [
        ("SELECT Id FROM Account WHERE a = 1 AND b = 1 OR c = 1", 46, "OR"),
        ("SELECT Id FROM Account WHERE a = 1 OR b = 1 AND c = 1", 45, "AND"),
        ("SELECT Id FROM Account WHERE NOT a = 1 AND b = 1 or c = 1", 50, "or"),
        ("SELECT Id FROM Account WHERE (a = 1 OR b = 1 AND c = 1)", 46, "AND"),
    ],
)
def test_mixing_and_with_or_needs_parentheses(text: str, column: int, token: str) -> None:
    error = error_of(text)
    assert (error.row, error.column) == (1, column)
    assert error.reason == f"unexpected token: '{token}'"
    assert text[column - 1 : column - 1 + len(token)] == token


# ---- literals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'plain'", "plain"),
        ("''", ""),
        ("'O\\'Brien'", "O'Brien"),
        ("'back\\\\slash'", "back\\slash"),
        ("'a\\nb\\Nc'", "a\nb\nc"),
        ("'a\\tb\\Tc'", "a\tb\tc"),
        ("'a\\rb\\Rc'", "a\rb\rc"),
        ("'a\\bb\\Bc'", "a\bb\bc"),
        ("'a\\fb\\Fc'", "a\fb\fc"),
        ("'say \\\"hi\\\"'", 'say "hi"'),
        ("'say \"hi\"'", 'say "hi"'),
        ("'under\\_score'", "under\\_score"),  # kept escaped for LIKE
        ("'per\\%cent'", "per\\%cent"),  # kept escaped for LIKE
        ("'two\\\\_'", "two\\_"),  # an escaped backslash, then a plain "_"
        ("'multi\nline'", "multi\nline"),
        ("'unicode: é ✓ 日本'", "unicode: é ✓ 日本"),
        ("'WHERE Name = 1'", "WHERE Name = 1"),
    ],
)
def test_string_literals(text: str, expected: str) -> None:
    assert value_of(text) == StringLit(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("-42", -42),
        ("+7", 7),
        ("1000000000000", 1000000000000),
        ("3.25", 3.25),
        ("-0.5", -0.5),
        ("1.0", 1.0),
    ],
)
def test_number_literals(text: str, expected: float) -> None:
    value = value_of(text)
    assert value == NumberLit(expected)
    assert type(value.value) is type(expected)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", BoolLit(True)),
        ("TRUE", BoolLit(True)),
        ("True", BoolLit(True)),
        ("false", BoolLit(False)),
        ("FALSE", BoolLit(False)),
        ("null", NullLit()),
        ("NULL", NullLit()),
        ("Null", NullLit()),
    ],
)
def test_boolean_and_null_literals(text: str, expected: object) -> None:
    assert value_of(text) == expected


def test_date_literal() -> None:
    assert value_of("2024-03-31") == DateLit(dt.date(2024, 3, 31))
    assert value_of("2024-02-29") == DateLit(dt.date(2024, 2, 29))


PLUS_ONE = dt.timezone(dt.timedelta(hours=1))
MINUS_EIGHT = dt.timezone(dt.timedelta(hours=-8))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-31T17:05:00Z", dt.datetime(2024, 3, 31, 17, 5, tzinfo=UTC)),
        ("2024-03-31t17:05:00z", dt.datetime(2024, 3, 31, 17, 5, tzinfo=UTC)),
        ("2024-03-31T17:05:00.000+0000", dt.datetime(2024, 3, 31, 17, 5, tzinfo=UTC)),
        ("2024-03-31T17:05:00.123Z", dt.datetime(2024, 3, 31, 17, 5, 0, 123000, tzinfo=UTC)),
        ("2024-03-31T17:05:00+01:00", dt.datetime(2024, 3, 31, 17, 5, tzinfo=PLUS_ONE)),
        ("2024-03-31T17:05:00+0100", dt.datetime(2024, 3, 31, 17, 5, tzinfo=PLUS_ONE)),
        ("1999-01-01T23:01:01-08:00", dt.datetime(1999, 1, 1, 23, 1, 1, tzinfo=MINUS_EIGHT)),
    ],
)
def test_datetime_literals(text: str, expected: dt.datetime) -> None:
    value = value_of(text)
    assert isinstance(value, DateTimeLit)
    assert value.value == expected
    assert value.value.utcoffset() == expected.utcoffset()


def test_datetime_literal_keeps_its_instant() -> None:
    value = value_of("2024-03-31T17:05:00+01:00")
    assert value == DateTimeLit(dt.datetime(2024, 3, 31, 16, 5, tzinfo=UTC))


@pytest.mark.parametrize("name", sorted(DATE_LITERALS))
def test_every_plain_date_literal(name: str) -> None:
    assert value_of(name) == DateFunctionLit(name)
    assert value_of(name.lower()) == DateFunctionLit(name)


@pytest.mark.parametrize("name", sorted(N_DATE_LITERALS))
def test_every_n_date_literal(name: str) -> None:
    assert value_of(f"{name}:30") == DateFunctionLit(name, 30)
    assert value_of(f"{name.lower()}:0") == DateFunctionLit(name, 0)


def test_date_literals_in_comparisons() -> None:
    assert where("CreatedDate > LAST_N_DAYS:90 AND CloseDate <= NEXT_FISCAL_QUARTER") == And(
        (
            cmp("CreatedDate", ">", DateFunctionLit("LAST_N_DAYS", 90)),
            cmp("CloseDate", "<=", DateFunctionLit("NEXT_FISCAL_QUARTER")),
        )
    )


# ---- ORDER BY, LIMIT, OFFSET ------------------------------------------------------------------


def test_order_by_variants() -> None:
    query = parse(
        "SELECT Id FROM Opportunity ORDER BY Amount DESC NULLS LAST, CloseDate ASC, "
        "Owner.Name NULLS FIRST, Name asc nulls last, Id"
    )
    assert query.order_by == (
        OrderItem(f("Amount"), descending=True, nulls_last=True),
        OrderItem(f("CloseDate"), descending=False, nulls_last=None),
        OrderItem(f("Owner.Name"), descending=False, nulls_last=False),
        OrderItem(f("Name"), descending=False, nulls_last=True),
        OrderItem(f("Id")),
    )


def test_limit_and_offset() -> None:
    query = parse("SELECT Id FROM Account WHERE Name != null ORDER BY Id LIMIT 200 OFFSET 4000")
    assert (query.limit, query.offset) == (200, 4000)  # the engine checks OFFSET <= 2000
    assert parse("SELECT Id FROM Account OFFSET 10").offset == 10
    assert parse("SELECT Id FROM Account LIMIT 0").limit == 0


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "SELECT Id FORM Account",
            "\nSELECT Id FORM Account\n          ^\nERROR at Row:1:Column:11\n"
            "unexpected token: 'FORM'",
        ),
        (
            "SELECT Id FROM Account WHERE",
            "\nSELECT Id FROM Account WHERE\n                            ^\n"
            "ERROR at Row:1:Column:29\nunexpected token: '<EOF>'",
        ),
        (
            "SELECT Id, FROM Account",
            "\nSELECT Id, FROM Account\n           ^\nERROR at Row:1:Column:12\n"
            "unexpected token: 'FROM'",
        ),
        ("", "\n\n^\nERROR at Row:1:Column:1\nunexpected token: '<EOF>'"),
    ],
)
def test_error_messages_in_salesforce_layout(text: str, message: str) -> None:
    error = error_of(text)
    assert error.message == message
    assert str(error) == f"MALFORMED_QUERY: {message}"
    assert error.as_salesforce_body() == [{"message": message, "errorCode": "MALFORMED_QUERY"}]


@pytest.mark.parametrize(
    ("text", "row", "column", "reason"),
    [
        # syntax
        ("SELECT FROM Account", 1, 8, "unexpected token: 'FROM'"),
        ("SELECT Id FROM", 1, 15, "unexpected token: '<EOF>'"),
        ("SELECT Id FROM Account WHERE Id IN ()", 1, 37, "unexpected token: ')'"),
        ("SELECT Id FROM Account WHERE Name = 'x' 'y'", 1, 41, "unexpected token: ''y''"),
        ('SELECT Id FROM Account WHERE Name = "x"', 1, 37, "unexpected token: '\"'"),
        ("SELECT Id FROM Account WHERE Name = $x", 1, 37, "unexpected token: '$'"),
        ("SELECT Id FROM Account WHERE (Name = 'x'", 1, 41, "unexpected token: '<EOF>'"),
        ("SELECT Id FROM Account WHERE Name = 'x')", 1, 40, "unexpected token: ')'"),
        ("SELECT Id FROM Account WHERE Name LIKE 5", 1, 40, "unexpected token: '5'"),
        ("SELECT Id FROM Account WHERE Name NOT LIKE 'a'", 1, 39, "unexpected token: 'LIKE'"),
        ("SELECT Id FROM Account ORDER Id", 1, 30, "unexpected token: 'Id'"),
        ("SELECT Id FROM Account WHERE Group = 'x'", 1, 30, "unexpected token: 'Group'"),
        ("SELECT Id, Limit FROM Account", 1, 12, "unexpected token: 'Limit'"),
        ("SELECT Id FROM Account WHERE Last = 'x'", 1, 30, "unexpected token: 'Last'"),
        ("SELECT Id FROM Account LIMIT 5 LIMIT 6", 1, 32, "unexpected token: 'LIMIT'"),
        ("SELECT Id FROM Account OFFSET 5 LIMIT 6", 1, 33, "unexpected token: 'LIMIT'"),
        ("SELECT Id FROM Account ORDER BY Id WHERE a = 1", 1, 36, "unexpected token: 'WHERE'"),
        ("SELECT Name n FROM Account", 1, 13, "unexpected token: 'n'"),  # alias needs a func
        ("SELECT Id FROM Account, Contact", 1, 23, "unexpected token: ','"),
        ("SELECT Id FROM Account LIMIT -1", 1, 30, "unexpected token: '-1'"),
        ("SELECT Id FROM Account LIMIT 1.5", 1, 30, "unexpected token: '1.5'"),
        ("SELECT Id FROM Account OFFSET 'x'", 1, 31, "unexpected token: ''x''"),
        ("SELECT Id FROM Account WHERE Amount > 1e3", 1, 40, "unexpected token: 'e3'"),
        ("SELECT Id FROM Account WHERE Amount > .5", 1, 39, "unexpected token: '.'"),
        ("SELECT Id FROM Account WHERE Amount > USD5000", 1, 39, "unexpected token: 'USD5000'"),
        # literals
        (
            "SELECT Id FROM Account WHERE Name = 'x\\y'",
            1,
            39,
            "Invalid string literal 'x\\y'. Illegal character sequence '\\y' in string literal.",
        ),
        (
            "SELECT Id FROM Account WHERE Name = 'x\\u0041'",
            1,
            39,
            "Invalid string literal 'x\\u0041'. Illegal character sequence '\\u' in string "
            "literal.",
        ),
        ("SELECT Id FROM Account WHERE Name = 'open", 1, 37, "unterminated string literal"),
        ("SELECT Id FROM Account WHERE Name = 'a\\'", 1, 37, "unterminated string literal"),
        (
            "SELECT Id FROM Account WHERE CreatedDate > 2024-03-31T17:05:00",
            1,
            44,
            "Invalid datetime: 2024-03-31T17:05:00 (a dateTime literal needs a time zone: Z, "
            "+hh:mm or -hh:mm)",
        ),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > 2020-52-12t12:12:00-05:00",
            1,
            47,
            "Invalid datetime: 2020-52-12t12:12:00-05:00",
        ),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > 2020-12-12t12:12:00-25:00",
            1,
            47,
            "Invalid datetime: 2020-12-12t12:12:00-25:00",
        ),
        ("SELECT Id FROM Account WHERE CloseDate = 2023-02-29", 1, 42, "Invalid date: 2023-02-29"),
        (
            "SELECT Id FROM Account WHERE CloseDate = 2024-03-31T17",
            1,
            52,
            "unexpected token: 'T17'",
        ),
        (
            "SELECT Id FROM Account WHERE CloseDate = LAST_FORTNIGHT",
            1,
            42,
            "unexpected token: 'LAST_FORTNIGHT'",
        ),
        ("SELECT Id FROM Account WHERE CloseDate = TODAY:3", 1, 42, "unexpected token: 'TODAY:3'"),
        (
            "SELECT Id FROM Account WHERE CloseDate = LAST_N_DAYS",
            1,
            42,
            "LAST_N_DAYS needs a number: LAST_N_DAYS:n",
        ),
        ("SELECT Id FROM Account WHERE CloseDate = LAST_N_DAYS:-3", 1, 53, "unexpected token: ':'"),
        (
            "SELECT Id FROM Account WHERE CloseDate = LAST_N_DAYS : 3",
            1,
            54,
            "unexpected token: ':'",
        ),
        ("SELECT Id FROM Account WHERE Name = Owner.Name", 1, 37, "unexpected token: 'Owner.Name'"),
        # functions
        ("SELECT FIELDS(ALL) FROM Account", 1, 8, "Unknown function: FIELDS"),
        ("SELECT Id FROM Account WHERE Foo(Name) = 1", 1, 30, "Unknown function: Foo"),
        (
            "SELECT Id FROM Account WHERE COUNT(Id) > 1",
            1,
            30,
            "COUNT() is not allowed in a WHERE clause (aggregate functions belong in HAVING, "
            "which is not supported)",
        ),
        (
            "SELECT Id FROM Account WHERE FORMAT(Amount) = 1",
            1,
            30,
            "FORMAT() is not allowed in a WHERE clause",
        ),
        ("SELECT MAX() FROM Opportunity", 1, 8, "MAX() takes one field, not 0"),
        (
            "SELECT COUNT(Id, Name) FROM Opportunity",
            1,
            8,
            "COUNT() takes no argument or one field, not 2",
        ),
        ("SELECT FORMAT(convertCurrency(Amount)) FROM Opportunity", 1, 30, "unexpected token: '('"),
        ("SELECT COUNT() FROM Opportunity ORDER BY COUNT()", 1, 47, "unexpected token: '('"),
        # unsupported clauses
        (
            "SELECT Id FROM Account a",
            1,
            24,
            f"an alias after the FROM object ('a') {NOT_SUPPORTED}",
        ),
        (
            "SELECT a.Id FROM Account a WHERE a.Name = 'x'",
            1,
            26,
            f"an alias after the FROM object ('a') {NOT_SUPPORTED}",
        ),
        (
            "SELECT Id, (SELECT Id FROM Contacts c) FROM Account",
            1,
            37,
            f"an alias after the FROM object ('c') {NOT_SUPPORTED}",
        ),
        (
            "SELECT StageName, COUNT(Id) FROM Opportunity GROUP BY StageName",
            1,
            46,
            f"GROUP BY {NOT_SUPPORTED}",
        ),
        (
            "SELECT Id FROM Opportunity WHERE Amount > 5 GROUP BY ROLLUP(Id)",
            1,
            45,
            f"GROUP BY {NOT_SUPPORTED}",
        ),
        ("SELECT Id FROM Opportunity HAVING COUNT(Id) > 1", 1, 28, f"HAVING {NOT_SUPPORTED}"),
        (
            "SELECT Id FROM Account WITH SECURITY_ENFORCED",
            1,
            24,
            "SECURITY_ENFORCED not allowed in this context",
        ),
        (
            "SELECT Id FROM Account WHERE Name = 'x' WITH USER_MODE",
            1,
            41,
            "USER_MODE not allowed in this context",
        ),
        (
            "SELECT Id FROM KnowledgeArticleVersion WITH DATA CATEGORY Geo__c AT usa__c",
            1,
            40,
            f"WITH DATA {NOT_SUPPORTED}",
        ),
        ("SELECT Id FROM Account FOR VIEW", 1, 24, f"FOR VIEW {NOT_SUPPORTED}"),
        ("SELECT Id FROM Account LIMIT 1 FOR REFERENCE", 1, 32, f"FOR REFERENCE {NOT_SUPPORTED}"),
        ("SELECT Id FROM Account for update", 1, 24, f"FOR UPDATE {NOT_SUPPORTED}"),
        ("SELECT Id FROM Account ALL ROWS", 1, 24, ALL_ROWS),
        ("SELECT Id FROM Account WHERE IsDeleted = true ALL ROWS", 1, 47, ALL_ROWS),
        ("SELECT Id FROM Account USING SCOPE Mine", 1, 24, f"USING SCOPE {NOT_SUPPORTED}"),
        (
            "SELECT TYPEOF What WHEN Account THEN Phone END FROM Event",
            1,
            8,
            f"TYPEOF {NOT_SUPPORTED}",
        ),
    ],
)
def test_error_positions_and_reasons(text: str, row: int, column: int, reason: str) -> None:
    error = error_of(text)
    assert (error.reason, error.row, error.column) == (reason, row, column)
    assert error.message.endswith(f"\nERROR at Row:{row}:Column:{column}\n{reason}")


def test_error_on_a_later_row() -> None:
    text = "SELECT Id\nFROM Account\nWHERE Name = 'x' AND Type = 'y' OR Id = 'z'\nLIMIT 5"
    error = error_of(text)
    assert error.message == (
        "\nWHERE Name = 'x' AND Type = 'y' OR Id = 'z'\n"
        "                                ^\n"
        "ERROR at Row:3:Column:33\n"
        "unexpected token: 'OR'"
    )


def test_error_at_end_of_a_multiline_query() -> None:
    error = error_of("SELECT Id\nFROM Account\nWHERE")
    assert (error.row, error.column) == (3, 6)
    assert error.message == "\nWHERE\n     ^\nERROR at Row:3:Column:6\nunexpected token: '<EOF>'"


def test_long_rows_are_cut_to_a_window_of_whole_words() -> None:
    # Salesforce shows about 30 characters either side of the error, widened to whole words.
    text = CONNECTOR_QUERY.replace("ORDER BY SystemModstamp", "ORDER SystemModstamp")
    error = error_of(text)
    column = text.index("SystemModstamp, Id") + 1
    assert (error.row, error.column) == (1, column)
    assert error.message == (
        "\nClosed Won','Closed Lost')) ORDER SystemModstamp, Id LIMIT 5000\n"
        "                                  ^\n"
        f"ERROR at Row:1:Column:{column}\n"
        "unexpected token: 'SystemModstamp'"
    )


def test_soql_error_keeps_code_and_message() -> None:
    error = SoqlError("INVALID_FIELD", "No such column 'Foo' on entity 'Account'.")
    assert (error.code, error.message, error.reason) == (
        "INVALID_FIELD",
        "No such column 'Foo' on entity 'Account'.",
        "No such column 'Foo' on entity 'Account'.",
    )
    assert error.row is None and error.column is None
    assert error.as_salesforce_body() == [
        {"message": "No such column 'Foo' on entity 'Account'.", "errorCode": "INVALID_FIELD"}
    ]


# ---- LIKE -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern_literal", "matches", "misses"),
    [
        ("'Acme%'", ["Acme", "acme corp", "ACME\nnext line"], ["The Acme", "Acm"]),
        ("'%corp'", ["Acme Corp", "corp"], ["Corp Inc"]),
        ("'a_c'", ["abc", "A-C", "a_c"], ["ac", "abbc"]),
        ("'a\\_c'", ["a_c", "A_C"], ["abc"]),
        ("'100\\%'", ["100%"], ["1000", "100"]),
        ("'50\\%%'", ["50%", "50% off"], ["500"]),
        ("'%.*+?[](){}|^$%'", ["x.*+?[](){}|^$y"], ["x.y"]),
        ("'back\\\\slash'", ["back\\slash"], ["backslash"]),
        ("''", [""], ["x"]),
    ],
)
def test_like_to_regex(pattern_literal: str, matches: list[str], misses: list[str]) -> None:
    condition = where(f"Name LIKE {pattern_literal}")
    assert isinstance(condition, Comparison) and isinstance(condition.value, StringLit)
    regex = like_to_regex(condition.value.value)
    for text in matches:
        assert regex.match(text), text
    for text in misses:
        assert not regex.match(text), text


# ---- quote ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", "'plain'"),
        ("O'Brien", "'O\\'Brien'"),
        ("a\\b", "'a\\\\b'"),
        ("line\nbreak\ttab\r\b\f", "'line\\nbreak\\ttab\\r\\b\\f'"),
        ("50%_off", "'50%_off'"),
        ('"quoted"', "'\"quoted\"'"),
    ],
)
def test_quote(value: str, quoted: str) -> None:
    assert quote(value) == quoted


@pytest.mark.parametrize(
    "payload",
    [
        "x' OR Name != '",
        "x\\' OR Name != '",
        "x\\\\' OR Name != '",
        "') OR (Id != '",
        "x' LIMIT 1",
        "\\",
        "'",
    ],
)
def test_quote_keeps_injection_inside_the_literal(payload: str) -> None:
    query = parse(f"SELECT Id FROM Account WHERE Name = {quote(payload)} AND IsDeleted = false")
    assert query.where == And(
        (cmp("Name", "=", StringLit(payload)), cmp("IsDeleted", "=", BoolLit(False)))
    )


@given(st.text())
def test_quote_round_trips(value: str) -> None:
    query = parse(f"SELECT Id FROM Account WHERE Name = {quote(value)}")
    assert query.where == cmp("Name", "=", StringLit(value))
