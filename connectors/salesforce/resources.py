"""What the Salesforce connector pulls: one SOQL query per stream, and the pager that streams it.

Stream by stream (``connectors.base.STREAMS``):

========== ====================== ========================================================
stream     object                 how
========== ====================== ========================================================
stages     OpportunityStage       whole, every run (small)
currencies CurrencyType           whole; none in a single-currency org
users      User                   incremental on SystemModstamp
accounts   Account                accounts with a churn date; incremental, queryAll
deals      Opportunity            mapped fields, converted amount, stage and close-date
                                  history subqueries; incremental, queryAll (deletions)
activities the demos object       demo types; incremental, queryAll
quotas     ForecastingQuota       whole, every run (small); only with quota_source: crm
========== ====================== ========================================================

Incremental streams filter ``SystemModstamp >= cursor - lookback`` and order by
``SystemModstamp, Id``; the first run (no cursor) has no time filter. Filters that choose a
population (accounts with a churn date, events of a demo type) apply to every pull, so full
and incremental pulls agree on it; the price is that a record leaving the population (a churn
date cleared, an event retyped from Demo) is not seen by incremental pulls, only by the next
full pull (whose sweep drops what it no longer sees).

A page is one API answer; its cursor comes from the shared
:class:`~crm_kpi_worker.connectors.incremental.IncrementalCursor` (the largest
SystemModstamp so far; on the last page the server's time when the query ran, its ``Date``
header, if later), and ``nextRecordsUrl`` is followed by the shared
:class:`~crm_kpi_worker.connectors.paging.NextUrlPaginator`. Records the CRM reports deleted
(``IsDeleted``) are in ``deleted_ids`` as well as in ``records``. Child results a page leaves
unfinished (``done: false``) are completed along their ``nextRecordsUrl`` before the page is
handed out. Records are handed out as the API sends them, ``attributes`` (type and URL
metadata) included: normalization reads fields by name and never looks at it, and walking
every record to delete it cost more than a tenth of the pull.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from crm_kpi_worker.connectors.base import Page, content_digest
from crm_kpi_worker.connectors.errors import RequestRejected
from crm_kpi_worker.connectors.incremental import IncrementalCursor
from crm_kpi_worker.connectors.paging import NextUrlPaginator, follow
from crm_kpi_worker.connectors.salesforce import soql
from crm_kpi_worker.connectors.salesforce.config import SalesforceMapping
from crm_kpi_worker.connectors.salesforce.settings import (
    CONVERTED_AMOUNT,
    CONVERTED_QUOTA_AMOUNT,
    CURRENCY_FIELDS,
    CURSOR_FIELD,
    FIELD_HISTORY,
    FIELD_HISTORY_FIELDS,
    QUOTA_FIELDS,
    QUOTA_PERIOD_FIELDS,
    STAGE_FIELDS,
    STAGE_HISTORY,
    STAGE_HISTORY_FIELDS,
    STAMPS,
    STANDARD_STAGE_FIELD,
    USER_FIELDS,
    SalesforceSettings,
)

__all__ = [
    "OrgFacts",
    "QueryPager",
    "StreamQueries",
    "StreamQuery",
    "format_stamp",
    "parse_stamp",
]

#: One stamp parser for every CRM (connectors.stamps), with Salesforce's errors and form.
parse_stamp = STAMPS.parse
format_stamp = STAMPS.format


@dataclass(frozen=True)
class OrgFacts:
    """What the connector learnt about the org when it connected."""

    multi_currency: bool
    corporate_currency: str | None
    #: The currency convertCurrency() converts into (the integration user's), if known.
    user_currency: str | None
    #: Convert amounts in the query (conversion 'crm' in a multi-currency org).
    convert_in_query: bool


@dataclass(frozen=True)
class StreamQuery:
    stream: str
    soql: str
    include_deleted: bool
    incremental: bool
    #: The worker's own fields the query reads along (their values go to Page.own_values).
    own_fields: tuple[str, ...] = ()
    #: Fields left out of the records' digests besides the own ones (modification stamps);
    #: None: no digests for this stream.
    volatile: tuple[str, ...] | None = None
    #: The user whose last modifications the (incremental deals) pull leaves out.
    skip_modifier: str | None = None


class StreamQueries:
    """Builds each stream's SOQL from the mapping, the settings and the org's facts."""

    def __init__(
        self, mapping: SalesforceMapping, settings: SalesforceSettings, facts: OrgFacts
    ) -> None:
        self.mapping = mapping
        self.settings = settings
        self.facts = facts
        #: object (lower case) -> the worker's own fields the pulls read along.
        self.own_fields: dict[str, tuple[str, ...]] = {}
        # Fail at start-up, not mid-run, on a name that cannot go into a query.
        for stream in ("users", "accounts", "deals", "activities"):
            self.build(stream, None)

    def build(
        self, stream: str, since: str | None, *, skip_modifier: str | None = None
    ) -> StreamQuery | None:
        """The query for ``stream`` (None: nothing to pull for it in this org/config).

        ``skip_modifier``: a user id; the deals whose last modifier is that user are left
        out of an incremental pull (see ``change_events``: the worker's own writes)."""
        if stream == "deals":
            return self._deals(since, skip_modifier=skip_modifier)
        if skip_modifier is not None:
            raise ValueError(f"only the deals leave out a modifier's records, not {stream}")
        builder: Callable[[str | None], StreamQuery | None] = getattr(self, f"_{stream}")
        return builder(since)

    def cursor_for(self, since: str | None) -> IncrementalCursor:
        """The cursor of a pull since ``since`` (a stored cursor; None: everything)."""
        return IncrementalCursor(since, STAMPS, lookback=self.settings.lookback)

    def _window(self, since: str | None, skip_modifier: str | None = None) -> list[str]:
        start = self.cursor_for(since).start
        if start is None:
            return []
        window = [f"{CURSOR_FIELD} >= {soql.datetime_literal(start)}"]
        if skip_modifier is not None:
            window.append(f"LastModifiedById != {soql.string_literal(skip_modifier)}")
        return window

    _ORDER = (CURSOR_FIELD, "Id")

    def _order(self, bulk: bool) -> tuple[str, ...]:
        # Bulk query jobs take no ORDER BY (it would also disable their PK chunking).
        return () if bulk else self._ORDER

    def _stages(self, since: str | None) -> StreamQuery:
        query = soql.Select("OpportunityStage", STAGE_FIELDS, order_by=("SortOrder", "Id"))
        return StreamQuery("stages", query.soql(), include_deleted=False, incremental=False)

    def _currencies(self, since: str | None) -> StreamQuery | None:
        if not self.facts.multi_currency:
            return None
        query = soql.Select("CurrencyType", CURRENCY_FIELDS, order_by=("IsoCode",))
        return StreamQuery("currencies", query.soql(), include_deleted=False, incremental=False)

    def _users(self, since: str | None, *, bulk: bool = False) -> StreamQuery:
        mapping = self.mapping
        fields = list(USER_FIELDS)
        for extra in (
            mapping.team_field,
            mapping.ae_filter.field if mapping.ae_filter else None,
            self.settings.rep_start_date_field,
        ):
            if extra is not None:
                fields.append(soql.field_path(extra))
        own = self.own_fields.get("user", ())
        fields += [name for name in own if name not in fields]
        query = soql.Select("User", fields, where=self._window(since), order_by=self._order(bulk))
        return StreamQuery(
            "users",
            query.soql(),
            include_deleted=False,
            incremental=True,
            own_fields=own,
            volatile=(CURSOR_FIELD, "LastModifiedDate"),
        )

    def account_churn_field(self) -> str | None:
        """The churn date field on Account, when the mapping reads it through the account."""
        churn = self.mapping.account_churn_field()
        return None if churn is None else soql.field_path(churn)

    def _accounts(self, since: str | None, *, bulk: bool = False) -> StreamQuery | None:
        churn = self.account_churn_field()
        if churn is None:
            return None
        where = [f"{churn} != null", *self._window(since)]
        fields = ("Id", "Name", churn, "IsDeleted", CURSOR_FIELD)
        query = soql.Select("Account", fields, where=where, order_by=self._order(bulk))
        return StreamQuery("accounts", query.soql(), include_deleted=True, incremental=True)

    def deal_fields(self) -> list[str]:
        m = self.mapping
        names: list[str | None] = [
            "Id",
            m.is_deleted,
            CURSOR_FIELD,
            m.last_modified,
            m.name,
            m.amount,
            m.close_date,
            m.created_at,
            m.stage,
            m.owner_id,
            m.deal_type,
            m.forecast_category,
            m.probability,
            m.currency if self.facts.multi_currency else None,
            m.account_id,
            m.term_months,
            m.churn_date,
        ]
        fields = [soql.field_path(n) for n in names if n is not None]
        if self.facts.convert_in_query:
            fields.append(soql.Select.converted(m.amount, CONVERTED_AMOUNT))
        return fields

    def deal_subqueries(self) -> list[str]:
        m = self.mapping
        tracked = [m.close_date]
        subqueries = []
        if m.stage == STANDARD_STAGE_FIELD:
            subqueries.append(
                soql.subquery(STAGE_HISTORY, STAGE_HISTORY_FIELDS, order_by=("CreatedDate",))
            )
        else:
            tracked.append(m.stage)  # a custom stage field: its history is field history
        condition = (
            f"Field = {soql.string_literal(tracked[0])}"
            if len(tracked) == 1
            else f"Field IN {soql.in_list(tracked)}"
        )
        subqueries.append(
            soql.subquery(
                FIELD_HISTORY, FIELD_HISTORY_FIELDS, where=(condition,), order_by=("CreatedDate",)
            )
        )
        return subqueries

    def _deals(
        self, since: str | None, *, bulk: bool = False, skip_modifier: str | None = None
    ) -> StreamQuery:
        query = self._deal_query(
            self._window(since, skip_modifier), order_by=self._order(bulk), bulk=bulk
        )
        return dataclasses.replace(query, skip_modifier=skip_modifier)

    def deals_by_id(self, ids: Sequence[str]) -> StreamQuery:
        """The deals with these ids, deleted ones too, whatever their stamps (the ones others'
        change events name)."""
        return self._deal_query([f"Id IN {soql.in_list(ids)}"], order_by=("Id",), bulk=False)

    def _deal_query(
        self, where: Sequence[str], *, order_by: Sequence[str], bulk: bool
    ) -> StreamQuery:
        fields = self.deal_fields()
        own = self.own_fields.get("opportunity", ())
        fields += [name for name in own if name not in fields]
        query = soql.Select(
            "Opportunity",
            fields,
            subqueries=() if bulk else self.deal_subqueries(),
            where=where,
            order_by=order_by,
        )
        return StreamQuery(
            "deals",
            query.soql(),
            include_deleted=True,
            incremental=True,
            own_fields=own,
            volatile=(CURSOR_FIELD, self.mapping.last_modified),
        )

    def bulk(
        self, stream: str, since: str | None, *, skip_modifier: str | None = None
    ) -> BulkQueries | None:
        """The stream's pull as Bulk API 2.0 takes it (None: a stream Bulk is not used for).

        Bulk queries take no parent-to-child subquery and no ORDER BY: the deals' stage and
        close-date history are queries of their own, filtered on the parent's window, joined
        to the deals by the worker (``bulk_pull``)."""
        if stream not in BULK_STREAMS:
            return None
        rest = self.build(stream, since, skip_modifier=skip_modifier)
        if rest is None:
            return None
        if stream == "deals":
            main: StreamQuery | None = self._deals(since, bulk=True, skip_modifier=skip_modifier)
            children = self._deal_children(since, skip_modifier)
        else:
            builder: Callable[..., StreamQuery | None] = getattr(self, f"_{stream}")
            main, children = builder(since, bulk=True), []
        assert main is not None
        return BulkQueries(rest, main.soql, tuple(children))

    def _deal_children(self, since: str | None, skip_modifier: str | None) -> list[ChildQuery]:
        m = self.mapping
        parent_window = [f"Opportunity.{clause}" for clause in self._window(since, skip_modifier)]
        tracked = [m.close_date]
        children = []
        if m.stage == STANDARD_STAGE_FIELD:
            stage_fields = ("OpportunityId", *STAGE_HISTORY_FIELDS)
            query = soql.Select("OpportunityHistory", stage_fields, where=parent_window)
            children.append(
                ChildQuery(STAGE_HISTORY, "OpportunityHistory", query.soql(), STAGE_HISTORY_FIELDS)
            )
        else:
            tracked.append(m.stage)
        condition = (
            f"Field = {soql.string_literal(tracked[0])}"
            if len(tracked) == 1
            else f"Field IN {soql.in_list(tracked)}"
        )
        fields = ("OpportunityId", *FIELD_HISTORY_FIELDS)
        query = soql.Select("OpportunityFieldHistory", fields, where=[condition, *parent_window])
        children.append(
            ChildQuery(FIELD_HISTORY, "OpportunityFieldHistory", query.soql(), FIELD_HISTORY_FIELDS)
        )
        return children

    def read_back(self, object: str, fields: tuple[str, ...], *, bulk: bool = False) -> StreamQuery:
        """Every record of ``object`` with ``fields`` (the verify pass), in Id order; for a
        Bulk query job in no order (see :meth:`_order`: the verify pass needs none)."""
        names = ["Id", *(name for name in fields if name != "Id")]
        order = () if bulk else ("Id",)
        query = soql.Select(soql.api_name(object, "object"), names, order_by=order)
        return StreamQuery("verify", query.soql(), include_deleted=False, incremental=False)

    def _activities(self, since: str | None, *, bulk: bool = False) -> StreamQuery | None:
        demos = self.mapping.demos
        if demos is None:
            return None
        type_field = soql.field_path(demos.type_field)
        fields = [
            "Id",
            "IsDeleted",
            CURSOR_FIELD,
            soql.field_path(demos.owner_field),
            soql.field_path(demos.deal_field),
            type_field,
            soql.field_path(demos.start_field),
        ]
        where = [f"{type_field} IN {soql.in_list(demos.values)}", *self._window(since)]
        query = soql.Select(
            soql.api_name(demos.object, "object"), fields, where=where, order_by=self._order(bulk)
        )
        return StreamQuery("activities", query.soql(), include_deleted=True, incremental=True)

    def _quotas(self, since: str | None, *, with_period: bool = True) -> StreamQuery | None:
        if self.mapping.quota_source.kind != "crm":
            return None
        fields = list(QUOTA_FIELDS)
        if with_period:
            fields += QUOTA_PERIOD_FIELDS
        if self.facts.multi_currency:
            fields.append("CurrencyIsoCode")
        if self.facts.convert_in_query:
            fields.append(soql.Select.converted("QuotaAmount", CONVERTED_QUOTA_AMOUNT))
        query = soql.Select(
            "ForecastingQuota", fields, where=("IsAmount = true",), order_by=("StartDate", "Id")
        )
        return StreamQuery("quotas", query.soql(), include_deleted=False, incremental=False)

    def quotas_without_period(self) -> StreamQuery | None:
        """The quota query without Period fields (an org that hides Period from the user)."""
        return self._quotas(None, with_period=False)


#: The streams a Bulk query job can pull (incremental, possibly large); the others are small
#: and pulled whole by REST every run.
BULK_STREAMS = ("users", "accounts", "deals", "activities")


@dataclass(frozen=True)
class ChildQuery:
    """A child relationship of the deals, read by a Bulk query of its own: ``relationship`` is
    the REST subquery's name (the joined record holds the rows under it, as REST does)."""

    relationship: str
    sobject: str
    soql: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class BulkQueries:
    """A stream's Bulk pull: its REST query (for the road not taken and the read-along), the
    main Bulk SOQL, and the child relationships' queries."""

    rest: StreamQuery
    main: str
    children: tuple[ChildQuery, ...] = ()


Fetch = Callable[[Callable[[], Any]], Any]


class QueryPager:
    """The pages of one query: ``query``, then ``query_more`` along ``nextRecordsUrl``.

    ``fetch(thunk)`` runs one client call (error translation lives with the caller).
    ``cursor`` gives each page its cursor (None: a stream pulled whole, pages without one);
    ``server_time()`` is the server's clock at the latest answer.
    """

    def __init__(
        self,
        client: Any,
        fetch: Fetch,
        query: StreamQuery,
        cursor: IncrementalCursor | None = None,
        server_time: Callable[[], dt.datetime | None] = lambda: None,
    ) -> None:
        self.client = client
        self.fetch = fetch
        self.query = query
        self.cursor = cursor
        self.server_time = server_time
        #: One paginator for the query and its child results: no URL is followed twice.
        self.paginator = NextUrlPaginator()

    def _send(self, url: str | None) -> dict[str, Any]:
        query = self.query
        if url is None:
            first: dict[str, Any] = self.fetch(
                lambda: self.client.query(query.soql, include_deleted=query.include_deleted)
            )
            return first
        more: dict[str, Any] = self.fetch(
            lambda: self.client.query_more(url, identifier_is_url=True)
        )
        return more

    def __iter__(self) -> Iterator[Page]:
        cursor = self.cursor
        started = False
        for result in follow(self._send, self.paginator):
            if not started and cursor is not None:
                cursor.note_server_time(self.server_time())  # its clock when the query ran
            started = True
            records = _records(result)
            for record in records:
                self._complete_children(record)
            deleted = [str(r.get("Id")) for r in records if r.get("IsDeleted") is True]
            page_cursor = None
            if cursor is not None:
                latest = STAMPS.latest(r.get(CURSOR_FIELD) for r in records)
                page_cursor = cursor.advance(latest, last=result.get("done", True) is not False)
            own, digests = self._read_along(records)
            total = result.get("totalSize")
            yield Page(
                self.query.stream,
                records,
                page_cursor,
                deleted,
                own,
                digests,
                total=total if isinstance(total, int) else None,
            )

    def _read_along(
        self, records: list[dict[str, Any]]
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
        return read_along(self.query, records)

    def _complete_children(self, record: dict[str, Any]) -> None:
        results = [
            (name, value)
            for name, value in record.items()
            if isinstance(value, dict) and isinstance(value.get("records"), list)
        ]
        for name, value in results:
            children = _records(value)  # a new list
            chunk = value
            while (url := self.paginator.advance(chunk)) is not None:
                chunk = self._send(url)
                children.extend(_records(chunk))
            record[name] = {
                "totalSize": value.get("totalSize"),
                "done": True,
                "records": children,
            }


def read_along(
    query: StreamQuery, records: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """The own fields' values and the records' digests of a page of ``query``'s REST records
    (see ``connectors.base.Page``; the Bulk road digests its CSV rows, ``bulk_records``)."""
    if query.volatile is None:
        return {}, []
    leave_out = digest_left_out(query)
    digests: list[tuple[str, str]] = []
    for record in records:
        content = [(k, v) for k, v in record.items() if k not in leave_out]
        digests.append((str(record.get("Id")), content_digest(content)))
    return own_values(query, records), digests


def own_values(query: StreamQuery, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The worker's own fields read along, per record id (``Page.own_values``)."""
    own_fields = query.own_fields
    if query.volatile is None or not own_fields:
        return {}
    return {str(r.get("Id")): {name: r.get(name) for name in own_fields} for r in records}


def digest_left_out(query: StreamQuery) -> set[str]:
    """The fields a record's digest leaves out: the worker's own, the modification stamps."""
    return {*query.own_fields, *(query.volatile or ())}


def _records(result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, dict) or not isinstance(result.get("records"), list):
        raise RequestRejected(
            "Salesforce answered a query without a records list", code="UNEXPECTED_RESPONSE"
        )
    return [r for r in result["records"] if isinstance(r, dict)]
