"""The HubSpot connector: :class:`connectors.base.Connector` over hubspot-api-client.

Stream by stream (``connectors.base.STREAMS``):

========== ========================= =====================================================
stream     HubSpot                   how
========== ========================= =====================================================
stages     deal pipelines            ``GET /crm/v3/pipelines/deals``, whole, every run; one
                                     record per stage (``pipelineId`` added)
currencies (none)                    the CRM API keeps no rates: amount_in_home_currency or
                                     the config's rates convert
users      owners                    ``GET /crm/v3/owners/``, active then archived, whole
accounts   companies                 search (``churn_date`` set), incremental; only when a
                                     churn-date property is mapped
deals      deals                     search, incremental on ``hs_lastmodifieddate``;
                                     archived deals listed with ``archived=True``; stage
                                     history from ``hs_v2_date_entered_<stage id>``;
                                     close-date history by batch read (opt-in)
activities meetings (calls, tasks)   search (type in the demo values), incremental
quotas     goal targets              search, whole, with quota_source: crm
========== ========================= =====================================================

A full pull (no cursor) of accounts, deals or activities may take the list endpoint instead
(``GET /crm/v3/objects/{type}``, 100 a page, 50 with the close-date history in the same
answer, the search filters applied on the client) when that is faster at the paced limits:
:mod:`.roads` says when, and falls back to search when the property list would make the URL
too long.

Incremental streams search ``hs_lastmodifieddate >= cursor - lookback`` in stamp order, 200 a
page (the largest search page), windowed past the 10,000-result cap (:mod:`.search`). A page's
cursor is the largest stamp read so far; the last page's is the server's time when the pull
started if that is later (as for Salesforce), and the lookback (5 minutes) covers HubSpot's
search index lag (new writes show in search after a few seconds).

The list road reads records in id order, not stamp order, so a record changed during the pull
may have been read before the change while a later page holds a newer stamp: its pages carry no
cursor but the last, whose cursor is the server's time before the pull began (never the
largest stamp read), so the next incremental pull re-reads every change made during it. A
list pull that stops midway left no cursor: the next run pulls in full again, and its sweep
runs as the search road's does.

Archiving a deal does not change its ``hs_lastmodifieddate`` and search never returns archived
records, so an incremental deal pull first lists archived deals (``GET
/crm/v3/objects/deals?archived=True``, 100 a page, ids only) and reports those archived since
the cursor as deleted. A full pull does not need to: its sweep drops whatever it no longer
sees.

Property lists travel in POST bodies (search, batch read); only the list road puts them in a
URL, and only when the URL stays short (HubSpot answers 414 to long ones: :mod:`.roads`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from crm_kpi_worker.connectors.base import (
    STREAMS,
    CrmField,
    Page,
    SetupChange,
    SetupSettings,
    TargetField,
    TargetObject,
    WriteResult,
    WritesThroughTargets,
)
from crm_kpi_worker.connectors.budget import CallBudget
from crm_kpi_worker.connectors.errors import RequestRejected
from crm_kpi_worker.connectors.hubspot.client import HubSpotApis
from crm_kpi_worker.connectors.hubspot.config import HubSpotMapping, HubSpotSource
from crm_kpi_worker.connectors.hubspot.readback import (
    property_name,
    values_by_key,
    with_own_values,
)
from crm_kpi_worker.connectors.hubspot.roads import (
    HISTORY_BATCH,
    LIST_PAGE,
    MAX_LIST_REQUEST,
    Keep,
    RoadTimes,
    client_filter,
    list_page,
    list_request_chars,
)
from crm_kpi_worker.connectors.hubspot.search import STAMPS, to_ms, windowed_search
from crm_kpi_worker.connectors.hubspot.settings import DATE_ENTERED_PREFIX as DATE_ENTERED
from crm_kpi_worker.connectors.hubspot.settings import STAMP
from crm_kpi_worker.connectors.hubspot.setup import plan_hubspot_setup
from crm_kpi_worker.connectors.hubspot.transport import Answer, Bucket, HubSpotTransport
from crm_kpi_worker.connectors.hubspot.writes import BatchWriter, TargetManager
from crm_kpi_worker.connectors.incremental import DEFAULT_LOOKBACK, IncrementalCursor
from crm_kpi_worker.connectors.paging import AfterPaginator, answered_properties, follow
from crm_kpi_worker.connectors.retry import RetryPolicy
from crm_kpi_worker.sync.config.money import CurrencySettings

__all__ = ["DEFAULT_LOOKBACK", "HubSpotConnector", "connect_hubspot"]

log = logging.getLogger(__name__)

DEALS = "deals"
COMPANIES = "companies"
GOAL_TARGETS = "goal_targets"
GOAL_PROPERTIES = (
    "hs_goal_name",
    "hs_target_amount",
    "hs_start_datetime",
    "hs_end_datetime",
    "hubspot_owner_id",
    "hs_assignee_user_id",
)
#: Owners have no properties API: their fields are the PublicOwner schema's, fixed.
OWNER_FIELDS = (
    "id",
    "email",
    "firstName",
    "lastName",
    "userId",
    "userIdIncludingInactive",
    "createdAt",
    "updatedAt",
    "archived",
    "teams",
    "type",
)
OWNERS = "owners"


class HubSpotConnector(WritesThroughTargets):
    """One HubSpot portal. Build it with :func:`connect_hubspot`."""

    def __init__(
        self,
        source: HubSpotSource,
        currency: CurrencySettings,
        *,
        retry_policy: RetryPolicy | None = None,
        environ: Mapping[str, str] | None = None,
        lookback: dt.timedelta = DEFAULT_LOOKBACK,
    ) -> None:
        self.name = source.name
        self.source = source
        self.mapping: HubSpotMapping = source.mapping
        self.currency = currency
        self.lookback = lookback
        self.page_size = source.page_size
        policy = retry_policy or RetryPolicy()
        self.apis = HubSpotApis(source, environ)
        self.transport = HubSpotTransport(
            policy,
            search_per_second=source.rate_limits.search_per_second,
            per_10_seconds=source.rate_limits.per_10_seconds,
            renew=self.apis.renew if self.apis.can_renew else None,
            source=source.name,
        )
        self._stage_ids: list[str] | None = None
        #: The pipelines answer read by describe_fields, kept for the next stages pull (one
        #: call, not two, when a run checks the config before pulling).
        self._pipelines_read: list[Any] | None = None
        self.writer = BatchWriter(self.apis, self._call)
        self.targets = TargetManager(self.apis, self._call)
        #: The worker's own deal properties, read along the deal search (read_along).
        self._own_deal_fields: tuple[str, ...] = ()

    # ---- Connector --------------------------------------------------------------------------

    @property
    def api_calls(self) -> int:
        return self.transport.calls

    def pull(self, stream: str, since: str | None) -> Iterator[Page]:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; streams: {', '.join(STREAMS)}")
        cursor = IncrementalCursor(since, STAMPS, lookback=self.lookback)  # ValueError now
        if stream == "stages":
            return self._stages()
        if stream == "users":
            return self._owners()
        if stream == "accounts":
            if self.mapping.churn_date is None:
                return iter(())
            filters: list[dict[str, Any]] = [
                {"propertyName": self.mapping.churn_date, "operator": "HAS_PROPERTY"}
            ]
            properties = ["name", "createdate", self.mapping.churn_date]
            return self._records(COMPANIES, properties, filters, cursor, "accounts")
        if stream == "deals":
            return self._deals(cursor)
        if stream == "activities":
            demos = self.mapping.demos
            if demos is None:
                return iter(())
            filters = [
                {"propertyName": demos.type_field, "operator": "IN", "values": list(demos.values)}
            ]
            properties = [demos.type_field, demos.owner_field, demos.start_field]
            return self._records(demos.object, properties, filters, cursor, "activities")
        if stream == "quotas":
            return self._quotas()
        return iter(())  # currencies: see the module doc

    def describe_fields(self, object: str) -> dict[str, CrmField] | None:
        """Properties of ``object``; on deals, the stage and pipeline properties list the
        ids of every pipeline's stages and of the pipelines (the pipelines API's)."""
        if object == OWNERS:
            return {name: CrmField(name) for name in OWNER_FIELDS}
        try:
            properties = self.targets.properties_of(self.targets.object_type(object))
        except RequestRejected as error:
            if error.status in (400, 404):
                return None
            raise
        fields = {str(p.get("name")): CrmField(str(p.get("name"))) for p in properties}
        if object == DEALS:
            pipelines = self._all_pipelines()
            self._pipelines_read = pipelines
            stages = [s for p in pipelines for s in p.get("stages") or () if isinstance(s, dict)]
            for name, values in (
                (self.mapping.stage, [s.get("id") for s in stages]),
                (self.mapping.pipeline, [p.get("id") for p in pipelines]),
            ):
                if name in fields:
                    fields[name] = CrmField(name, tuple(str(v) for v in values if v is not None))
        return fields

    def plan_setup(
        self,
        objects: Sequence[TargetObject],
        fields: Sequence[TargetField],
        settings: SetupSettings,
    ) -> list[SetupChange]:
        """Labels of the worker's properties and group, the scorecard object's display
        properties and labels: see :mod:`.setup`."""
        return plan_hubspot_setup(self.targets, objects, fields, settings)

    def upsert(
        self, object: str, external_id: str, records: Mapping[str, Mapping[str, Any]]
    ) -> list[WriteResult]:
        return self.writer.upsert(
            self.targets.object_type(object),
            external_id,
            records,
            name_required=self.targets.requires_name(object),
        )

    def read_along(self, fields: Mapping[str, Sequence[str]]) -> None:
        """The deal search asks for the worker's own deal properties too (owners have none)."""
        self._own_deal_fields = tuple(fields.get(DEALS, ()))

    def read_back(
        self, object: str, fields: Sequence[str], key_field: str | None = None
    ) -> Iterator[dict[str, dict[str, Any]]]:
        """List pages (100 records a call) of every record of ``object``."""
        object_type = self.targets.object_type(object) if object != DEALS else DEALS
        names = [property_name(name) for name in fields]
        properties = list(dict.fromkeys([*((key_field,) if key_field else ()), *names]))
        bodies = self._list(
            f"GET /crm/v3/objects/{object_type}",
            self.apis.objects_basic.get_page,
            object_type,
            limit=LIST_PAGE,
            properties=properties,
        )
        return values_by_key(bodies, fields, key_field)

    def use_budget(self, budget: CallBudget) -> None:
        budget.note(self.transport.usage)
        self.transport.budget = budget

    # ---- calls ------------------------------------------------------------------------------

    def _call(
        self,
        bucket: Bucket,
        what: str,
        method: Any,
        *args: Any,
        statuses: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> Answer:
        timeout = self.source.timeout_seconds
        return self.transport.call(
            bucket,
            what,
            lambda: method(*args, _preload_content=False, _request_timeout=timeout, **kwargs),
            statuses=statuses,
        )

    def _search(self, object_type: str) -> Any:
        api = self.apis.objects_search
        what = f"POST /crm/v3/objects/{object_type}/search"

        def search(body: dict[str, Any]) -> dict[str, Any]:
            answer = self._call("search", what, api.do_search, object_type, body)
            return answer.body if isinstance(answer.body, dict) else {}

        return search

    # ---- streams ----------------------------------------------------------------------------

    def _all_pipelines(self) -> list[dict[str, Any]]:
        answer = self._call(
            "api", "GET /crm/v3/pipelines/deals", self.apis.pipelines.get_all, DEALS
        )
        body = answer.body if isinstance(answer.body, dict) else {}
        return [p for p in body.get("results") or () if isinstance(p, dict)]

    def _pipelines(self) -> list[dict[str, Any]]:
        read, self._pipelines_read = self._pipelines_read, None
        pipelines = read if read is not None else self._all_pipelines()
        wanted = set(self.mapping.pipelines) if self.mapping.pipelines else None
        stages: list[dict[str, Any]] = []
        for pipeline in pipelines:
            if wanted is not None and pipeline.get("id") not in wanted:
                continue
            for stage in pipeline.get("stages") or ():
                if isinstance(stage, dict):
                    stages.append({**stage, "pipelineId": pipeline.get("id")})
        self._stage_ids = [s["id"] for s in stages if isinstance(s.get("id"), str)]
        return stages

    def _stages(self) -> Iterator[Page]:
        yield Page("stages", self._pipelines(), None)

    def _list(self, what: str, method: Any, *args: Any, **options: Any) -> Iterator[dict[str, Any]]:
        """The answers of a list endpoint, page after page along ``paging.next.after``."""

        def send(after: str | None) -> dict[str, Any]:
            extra: dict[str, Any] = {"after": after} if after is not None else {}
            answer = self._call("api", what, method, *args, **options, **extra)
            return answer.body if isinstance(answer.body, dict) else {}

        return follow(send, AfterPaginator())

    def _owners(self) -> Iterator[Page]:
        for archived in (False, True):
            owners = self.apis.owners.get_page
            for body in self._list(
                "GET /crm/v3/owners/", owners, limit=LIST_PAGE, archived=archived
            ):
                records = [r for r in body.get("results") or () if isinstance(r, dict)]
                for record in records:
                    record.setdefault("archived", archived)
                yield Page("users", records, None)

    def _records(
        self,
        object_type: str,
        properties: Sequence[str],
        filters: Sequence[dict[str, Any]],
        cursor: IncrementalCursor,
        stream: str,
        *,
        history: Sequence[str] = (),
    ) -> Iterator[Page]:
        """The pages of a searched stream: the list road for a full pull when
        :meth:`_list_road` takes it, else search (``history``: properties whose history each
        record carries, by batch read on the search road)."""
        if cursor.start is None:
            # The properties search answers (the stamp and id included), asked of the list too.
            answered = answered_properties(properties, STAMP)
            road = self._list_road(object_type, answered, filters, stream, history)
            if road is not None:
                keep, limit, total = road
                yield from self._listed(
                    object_type, answered, keep, cursor, stream, history, limit, total
                )
                return
        enrich = functools.partial(self._with_history, object_type, history) if history else None
        yield from self._incremental(object_type, properties, filters, cursor, stream, enrich)

    def _list_road(
        self,
        object_type: str,
        properties: Sequence[str],
        filters: Sequence[dict[str, Any]],
        stream: str,
        history: Sequence[str],
    ) -> tuple[Keep, int, int] | None:
        """(client filter, page size, expected total) when a full pull of ``object_type``
        takes the list road (``full_pull`` and :mod:`.roads`), None when it searches."""
        setting = self.source.full_pull
        keep = client_filter(filters) if setting != "search" else None
        if keep is None:
            return None
        limit = list_page(self.page_size, history=bool(history))
        chars = list_request_chars(self.source.base_url, object_type, properties, history, limit)
        if chars > MAX_LIST_REQUEST:
            log.info(
                "%s: %s: the full pull searches: the list endpoint's URL would hold %d"
                " characters (%d properties), more than the %d HubSpot is sure to take",
                self.name,
                stream,
                chars,
                len(properties),
                MAX_LIST_REQUEST,
            )
            return None
        windows = self.transport.windows
        times = RoadTimes.at(
            search_per_second=windows["search"].rate,
            api_per_second=windows["api"].rate,
            search_page=self.page_size,
            list_page=limit,
            history=bool(history),
        )
        if setting == "auto" and not times.list_can_win:
            return None
        matching = self._count(object_type, filters)
        everything = self._count(object_type, ()) if filters else matching
        if setting == "auto" and times.faster(matching, everything) == "search":
            return None
        log.info(
            "%s: %s: the full pull lists all %d %s (%d match): %.2f s, against %.2f s by"
            " search, at the paced limits",
            self.name,
            stream,
            everything,
            object_type,
            matching,
            times.list * everything / 1000,
            times.search * matching / 1000,
        )
        return keep, limit, matching

    def _count(self, object_type: str, filters: Sequence[dict[str, Any]]) -> int:
        """How many records ``filters`` match (search's ``total``; one search of one record)."""
        body = {
            "filterGroups": [{"filters": list(filters)}] if filters else [],
            "properties": ["hs_object_id"],
            "limit": 1,
        }
        total = self._search(object_type)(body).get("total")
        return total if isinstance(total, int) else 0

    def _listed(
        self,
        object_type: str,
        properties: Sequence[str],
        keep: Keep,
        cursor: IncrementalCursor,
        stream: str,
        history: Sequence[str],
        limit: int,
        total: int,
    ) -> Iterator[Page]:
        """A full pull through the list endpoint, the records search would have answered
        (``keep``); only the last page carries a cursor (see the module doc)."""
        options: dict[str, Any] = {"limit": limit, "properties": list(properties)}
        if history:
            options["properties_with_history"] = list(history)
        cursor.note_server_time(self.transport.server_time)
        bodies = self._list(
            f"GET /crm/v3/objects/{object_type}",
            self.apis.objects_basic.get_page,
            object_type,
            archived=False,
            **options,
        )
        body: dict[str, Any] | None = next(bodies)
        cursor.note_server_time(self.transport.server_time)
        while body is not None:
            following = next(bodies, None)
            last = following is None
            # Every page, even one the filter empties: a page is a call (the run's budget).
            records = [r for r in body.get("results") or () if isinstance(r, dict) and keep(r)]
            yield Page(stream, records, cursor.advance(None, last=last), total=total)
            body = following

    def _incremental(
        self,
        object_type: str,
        properties: Sequence[str],
        filters: Sequence[dict[str, Any]],
        cursor: IncrementalCursor,
        stream: str,
        enrich: Any = None,
    ) -> Iterator[Page]:
        # The server's clock before the first search (the latest answer's), else the first
        # search's own.
        cursor.note_server_time(self.transport.server_time)
        pages = windowed_search(
            self._search(object_type),
            properties=properties,
            filters=filters,
            stamp_property=STAMP,
            since_ms=to_ms(cursor.start) if cursor.start is not None else None,
            page_size=self.page_size,
        )
        page: list[dict[str, Any]] | None = next(pages, None)
        cursor.note_server_time(self.transport.server_time)
        if page is None:
            # Nothing changed: one empty page, so the cursor still moves to the server's time.
            yield Page(stream, [], cursor.advance(None, last=True))
            return
        while page is not None:
            following = next(pages, None)
            latest = STAMPS.latest(_stamp_text(record) for record in page)
            value = cursor.advance(latest, last=following is None)
            records = enrich(page) if enrich is not None else page
            yield Page(stream, records, value, total=pages.total)
            page = following

    def deal_properties(self) -> list[str]:
        """The deal properties a pull asks for: the mapped ones and the date each stage of
        the pulled pipelines was entered."""
        mapping = self.mapping
        if self._stage_ids is None:
            self._pipelines()
        properties = [
            name
            for name in (
                mapping.name,
                mapping.amount,
                mapping.amount_in_home_currency if self.currency.conversion == "crm" else None,
                mapping.close_date,
                mapping.created_at,
                mapping.stage,
                mapping.pipeline,
                mapping.deal_type,
                mapping.forecast_category,
                mapping.probability,
                mapping.currency,
                mapping.owner_id,
                mapping.last_modified,
                mapping.term_months,
                mapping.company_id,
            )
            if name
        ]
        properties += [f"{DATE_ENTERED}{stage_id}" for stage_id in self._stage_ids or ()]
        return properties + [name for name in self._own_deal_fields if name not in properties]

    def _deals(self, cursor: IncrementalCursor) -> Iterator[Page]:
        mapping = self.mapping
        properties = self.deal_properties()
        filters: list[dict[str, Any]] = []
        if mapping.pipelines:
            filters.append(
                {"propertyName": mapping.pipeline, "operator": "IN", "values": mapping.pipelines}
            )
        if cursor.start is not None:
            archived = self._archived(DEALS, cursor.start)
            if archived:
                yield Page("deals", [], None, deleted_ids=archived)
        history = (mapping.close_date,) if mapping.close_date_history else ()
        volatile = (STAMP, mapping.last_modified)
        for page in self._records(DEALS, properties, filters, cursor, "deals", history=history):
            yield with_own_values(page, self._own_deal_fields, volatile)

    def _archived(self, object_type: str, since: dt.datetime) -> list[str]:
        """Ids of records archived at or after ``since`` (the list answers all archived
        records: HubSpot cannot filter it by time)."""
        ids: list[str] = []
        for body in self._list(
            f"GET /crm/v3/objects/{object_type}",
            self.apis.objects_basic.get_page,
            object_type,
            limit=LIST_PAGE,
            archived=True,
            properties=["hs_object_id"],
        ):
            for record in body.get("results") or ():
                if not isinstance(record, dict) or record.get("id") is None:
                    continue
                when = record.get("archivedAt") or record.get("updatedAt")
                try:
                    archived_at = STAMPS.parse(when) if when else None
                except ValueError:
                    archived_at = None
                if archived_at is None or archived_at >= since:
                    ids.append(str(record["id"]))
        return ids

    def _with_history(
        self, object_type: str, names: Sequence[str], page: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The page's records with ``propertiesWithHistory`` of ``names`` (batch read, 50 ids
        a call)."""
        by_id = {str(r.get("id")): r for r in page}
        ids = list(by_id)
        what = f"POST /crm/v3/objects/{object_type}/batch/read"
        for start in range(0, len(ids), HISTORY_BATCH):
            body = {
                "inputs": [{"id": i} for i in ids[start : start + HISTORY_BATCH]],
                "properties": list(names),
                "propertiesWithHistory": list(names),
            }
            answer = self._call(
                "api",
                what,
                self.apis.objects_batch.read,
                object_type,
                body,
                archived=False,
                statuses=(200, 207),
            )
            result = answer.body if isinstance(answer.body, dict) else {}
            for record in result.get("results") or ():
                if isinstance(record, dict) and str(record.get("id")) in by_id:
                    history = record.get("propertiesWithHistory")
                    if isinstance(history, dict):
                        by_id[str(record["id"])]["propertiesWithHistory"] = history
        return page

    def _quotas(self) -> Iterator[Page]:
        if self.mapping.quota_source.kind != "crm":
            return
        filters: list[dict[str, Any]] = []
        if self.mapping.quota_goals:
            filters.append(
                {
                    "propertyName": "hs_goal_name",
                    "operator": "IN",
                    "values": self.mapping.quota_goals,
                }
            )
        pages = windowed_search(
            self._search(GOAL_TARGETS),
            properties=GOAL_PROPERTIES,
            filters=filters,
            stamp_property=STAMP,
            page_size=self.page_size,
        )
        for page in pages:
            yield Page("quotas", page, None, total=pages.total)


def connect_hubspot(
    source: HubSpotSource,
    currency: CurrencySettings,
    *,
    retry_policy: RetryPolicy | None = None,
    environ: Mapping[str, str] | None = None,
    **_options: Any,
) -> HubSpotConnector:
    """The connector for one run of ``source`` (``environ`` resolves secrets; default
    ``os.environ``). Options meant for other CRMs (``rep_start_date_field``) are ignored."""
    return HubSpotConnector(source, currency, retry_policy=retry_policy, environ=environ)


def _stamp_text(record: dict[str, Any]) -> Any:
    """A search result's modification stamp as sent (its ``updatedAt`` if the property is
    missing), as the windowed search reads it."""
    return (record.get("properties") or {}).get(STAMP) or record.get("updatedAt")
