"""The Salesforce connector: :class:`connectors.base.Connector` over simple-salesforce.

Connecting logs in (any of the config's auth methods) and checks, before anything is
pulled, that the configured currency conversion can work: with ``conversion: crm`` in a
multi-currency org, ``convertCurrency()`` converts into the integration user's currency,
which must be the reporting currency. That check costs one or two API calls (CurrencyType,
and the user's currency when the auth method names a user); the CurrencyType answer is
reused as the first ``currencies`` page, so a run spends no call twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import jwt
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
)

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
from crm_kpi_worker.connectors.budget import CallBudget, parse_limit_info
from crm_kpi_worker.connectors.errors import (
    AuthenticationFailed,
    ConnectorError,
    CurrencyCheckFailed,
    RequestRejected,
    SessionExpired,
    error_details,
)
from crm_kpi_worker.connectors.incremental import IncrementalCursor
from crm_kpi_worker.connectors.retry import RetryPolicy
from crm_kpi_worker.connectors.salesforce import soql
from crm_kpi_worker.connectors.salesforce.access import AccessPlanner
from crm_kpi_worker.connectors.salesforce.bulk import (
    RESULT_PAGES_PER_PAGE,
    BulkApi,
    BulkUnavailable,
)
from crm_kpi_worker.connectors.salesforce.bulk_pull import (
    PAGES_PER_PAGE,
    BulkPosition,
    BulkPuller,
    job_records,
    since_of,
)
from crm_kpi_worker.connectors.salesforce.bulk_write import CALLS_PER_JOB, IngestWriter
from crm_kpi_worker.connectors.salesforce.change_events import ChangeFeed, FeedSession
from crm_kpi_worker.connectors.salesforce.channel_setup import ChannelPlanner
from crm_kpi_worker.connectors.salesforce.client import open_client, username_of
from crm_kpi_worker.connectors.salesforce.config import (
    SalesforceJwt,
    SalesforceRefreshToken,
    SalesforceSession,
    SalesforceSource,
)
from crm_kpi_worker.connectors.salesforce.deals_feed import DealsByEvents, ReplayCursor
from crm_kpi_worker.connectors.salesforce.placement import MetadataClient, PlacementPlanner
from crm_kpi_worker.connectors.salesforce.resources import (
    BULK_STREAMS,
    OrgFacts,
    QueryPager,
    StreamQueries,
    StreamQuery,
)
from crm_kpi_worker.connectors.salesforce.settings import (
    CURRENCY_FIELDS,
    STANDARD_STAGE_FIELD,
    SalesforceSettings,
)
from crm_kpi_worker.connectors.salesforce.writes import CollectionWriter, TargetManager
from crm_kpi_worker.sync.config.money import CurrencySettings

__all__ = ["SalesforceConnector", "connect_salesforce"]

log = logging.getLogger(__name__)
T = TypeVar("T")
#: The object each Bulk-pulled stream reads (activities: the mapping's demo object).
_STREAM_OBJECTS = {"users": "User", "accounts": "Account", "deals": "Opportunity"}


class SalesforceConnector(WritesThroughTargets):
    """One Salesforce source. Build it with :func:`connect_salesforce`."""

    def __init__(
        self,
        source: SalesforceSource,
        currency: CurrencySettings,
        *,
        retry_policy: RetryPolicy | None = None,
        environ: Mapping[str, str] | None = None,
        settings: SalesforceSettings | None = None,
    ) -> None:
        self.name = source.name
        self.source = source
        self.currency = currency
        self.settings = settings or SalesforceSettings.from_source(source)
        try:
            self.client, self._transport = open_client(
                source, retry_policy or RetryPolicy(), environ
            )
        except SalesforceAuthenticationFailed as exc:
            raise AuthenticationFailed(
                f"source '{source.name}': login with auth method '{source.auth.method}' was"
                f" refused: {exc.code}: {exc.auth_message}{_refusal_hint(source, exc.code)}",
                code=str(exc.code) if exc.code else None,
            ) from None
        except AuthenticationFailed as exc:
            raise AuthenticationFailed(
                f"source '{source.name}': login with auth method '{source.auth.method}' was"
                f" refused: {_refusal(exc)}{_refusal_hint(source, exc.code)}",
                status=exc.status,
                code=exc.code,
            ) from None
        except (jwt.PyJWTError, ValueError) as exc:
            if not isinstance(source.auth, SalesforceJwt):
                raise
            # The key never appears: only the kind of failure.
            raise AuthenticationFailed(
                f"source '{source.name}': auth.private_key cannot sign the JWT"
                f" ({type(exc).__name__}); expected the connected app's RSA private key in PEM"
                " form (-----BEGIN PRIVATE KEY-----)"
            ) from None
        self._transport.usage_of = lambda response: parse_limit_info(
            response.headers.get("Sforce-Limit-Info")
        )
        self._currency_page: dict[str, Any] | None = None
        #: The OpportunityStage answer read by describe_fields, reused by the stages pull.
        self._stage_page: dict[str, Any] | None = None
        self._environ = environ
        self.facts = self._check_org(environ)
        self.queries = StreamQueries(source.mapping, self.settings, self.facts)
        self.writer = CollectionWriter(self.client, self._fetch, self.settings.write_batch_size)
        self.bulk = BulkApi(
            self.client, self._fetch, max_records=RESULT_PAGES_PER_PAGE * self.settings.page_size
        )
        self.ingest = IngestWriter(self.bulk)
        #: False once the org refused Bulk API 2.0 in this run (REST from then on).
        self._bulk_ok = True
        self.targets = TargetManager(self.client, self._fetch)
        #: The worker's user id and its org's (``/services/oauth2/userinfo``), once asked.
        self._identity: tuple[str, str] | None = None
        self.deals_by_events: DealsByEvents | None = None
        if source.change_events is not None:
            self.deals_by_events = DealsByEvents(
                source=self.name,
                feed=self._change_feed,
                pull=lambda since, skip: self._pull("deals", since, skip),
                by_id=self._deals_by_id,
                window_start=lambda since: self.queries.cursor_for(since_of(since)).start,
                me=lambda: self.identity()[0],
                started=lambda: dt.datetime.now(dt.UTC) - self.settings.lookback,
            )

    # ---- Connector --------------------------------------------------------------------------

    @property
    def api_calls(self) -> int:
        """HTTP calls made to the API, retries included; logins are not counted (they use
        no API request allowance)."""
        return self._transport.calls

    def pull(self, stream: str, since: str | None) -> Iterator[Page]:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; streams: {', '.join(STREAMS)}")
        # A stored cursor is a stamp, or the position of a Bulk pull that stopped midway, with
        # the change feed's position beside it (deals, with change events): a clear ValueError
        # now, not a bad query later.
        stored = ReplayCursor.decode(since)
        BulkPosition.decode(stored.inner)
        if stream == "deals" and self.deals_by_events is not None:
            return self.deals_by_events(since)
        return self._pull(stream, stored.inner)

    def _pull(
        self, stream: str, since: str | None, skip_modifier: str | None = None
    ) -> Iterator[Page]:
        position, stamp = BulkPosition.decode(since), since_of(since)
        cursor = self.queries.cursor_for(stamp)
        query = self.queries.build(stream, stamp, skip_modifier=skip_modifier)
        if query is None:
            return iter(())
        if position is not None and self._bulk_pulls:
            return self._bulk_or_rest(query, cursor, stamp, position)
        if query.incremental and self._bulk_pulls and stream in BULK_STREAMS:
            return self._rest_unless_big(query, cursor, stamp)
        return self._pages(query, cursor if query.incremental else None)

    # ---- the two roads of a pull (REST query pages, Bulk query jobs) -------------------------

    @property
    def _bulk_pulls(self) -> bool:
        return self.settings.bulk_pull_above is not None and self._bulk_ok

    def _rest_unless_big(
        self, query: StreamQuery, cursor: IncrementalCursor, since: str | None
    ) -> Iterator[Page]:
        """The first REST page says how many records the pull matches (``totalSize``): above
        ``bulk.pull_above``, and more pages to come, the pull goes by Bulk instead (that one
        page is the only call the REST road cost)."""
        first = self._first_page(query)
        if self._big(first):
            yield from self._bulk_or_rest(query, cursor, since, None)
            return
        yield from QueryPager(
            self.client,
            self._fetch_after(first),
            query,
            cursor,
            server_time=lambda: self._transport.server_time,
        )

    def _first_page(self, query: StreamQuery) -> Any:
        return self._fetch(
            lambda: self.client.query(query.soql, include_deleted=query.include_deleted)
        )

    def _big(self, first: Any) -> bool:
        """Whether a query's first REST page says Bulk: ``totalSize`` above
        ``bulk.pull_above``, and more pages to come."""
        total = first.get("totalSize") if isinstance(first, dict) else None
        limit = self.settings.bulk_pull_above
        big = isinstance(total, int) and limit is not None and total > limit
        return big and isinstance(first, dict) and first.get("done") is False

    def _fetch_after(self, first: Any) -> Callable[[Callable[[], Any]], Any]:
        """A fetch whose first call answers ``first`` (the first page, already read)."""
        answers = iter([first])

        def fetch(thunk: Callable[[], Any]) -> Any:
            answer = next(answers, None)
            return answer if answer is not None else self._fetch(thunk)

        return fetch

    def _bulk_or_rest(
        self,
        query: StreamQuery,
        cursor: IncrementalCursor,
        since: str | None,
        position: BulkPosition | None,
    ) -> Iterator[Page]:
        """The stream by Bulk query jobs; by REST when the org refuses Bulk (said once)."""
        bulk = self.queries.bulk(query.stream, since, skip_modifier=query.skip_modifier)
        assert bulk is not None
        puller = BulkPuller(
            self.bulk,
            bulk,
            _STREAM_OBJECTS.get(query.stream) or self._demo_object(),
            self.targets.describe,
            since,
            position=position,
            lookback=self.settings.lookback,
            page_records=PAGES_PER_PAGE * self.settings.page_size,
        )
        try:
            yield from puller
        except BulkUnavailable as error:
            self._bulk_unavailable(error)
            yield from self._pages(query, cursor)

    def _bulk_unavailable(self, error: BulkUnavailable) -> None:
        self._bulk_ok = False
        log.warning(
            "source %s: Bulk API 2.0 refused (%s): pulling and writing by REST for this run",
            self.name,
            error.detail,
        )

    def _demo_object(self) -> str:
        demos = self.source.mapping.demos
        assert demos is not None
        return demos.object

    def _pages(self, query: StreamQuery, cursor: IncrementalCursor | None) -> Iterator[Page]:
        if query.stream == "currencies" and self._currency_page is not None:
            answer, self._currency_page = self._currency_page, None
            yield from QueryPager(self.client, lambda thunk: answer, query)
            return
        if query.stream == "stages" and self._stage_page is not None:
            stages, self._stage_page = self._stage_page, None
            yield from QueryPager(self.client, lambda thunk: stages, query)
            return
        try:
            yield from QueryPager(
                self.client,
                self._fetch,
                query,
                cursor,
                server_time=lambda: self._transport.server_time,
            )
        except RequestRejected as error:
            if query.stream == "quotas" and error.code == "INVALID_TYPE":
                log.warning("source %s: ForecastingQuota is not available: no quotas", self.name)
                return
            if query.stream == "quotas" and error.code == "INVALID_FIELD":
                fallback = self.queries.quotas_without_period()
                if fallback is not None:
                    yield from QueryPager(self.client, self._fetch, fallback)
                    return
            raise

    # ---- change events (see deals_feed) -----------------------------------------------------

    def identity(self) -> tuple[str, str]:
        """(the worker's user id, its org id), from ``/services/oauth2/userinfo`` once."""
        if self._identity is None:
            answer = self._fetch(lambda: self.client.oauth2("userinfo"))
            user, org = (answer or {}).get("user_id"), (answer or {}).get("organization_id")
            if not isinstance(user, str) or not isinstance(org, str):
                raise RequestRejected(
                    f"source {self.name}: /services/oauth2/userinfo did not say user_id and"
                    " organization_id"
                )
            self._identity = (user, org)
        return self._identity

    def _change_feed(self) -> ChangeFeed | str:
        """The feed of others' opportunity changes (or why there is none this run)."""
        settings = self.source.change_events
        assert settings is not None
        try:
            _, org = self.identity()
        except ConnectorError as error:
            return f"the worker's user could not be told: {error}"
        session = FeedSession(self.client.session_id, f"https://{self.client.sf_instance}", org)
        ca_bundle = self.source.ca_bundle
        return ChangeFeed(
            settings.endpoint,
            f"/data/{settings.channel}",
            "Opportunity",
            session,
            ca_bundle=str(ca_bundle) if ca_bundle is not None else None,
            idle_seconds=settings.idle_seconds,
        )

    def change_events(self) -> dict[str, Any]:
        return self.deals_by_events.report() if self.deals_by_events is not None else {}

    def _deals_by_id(self, ids: Sequence[str]) -> Iterator[Page]:
        return iter(QueryPager(self.client, self._fetch, self.queries.deals_by_id(ids)))

    def write_batch_size(self, count: int, configured: int) -> int:
        """A chunk of more than ``bulk.write_above`` records is one Bulk ingest job."""
        return count if self._by_ingest(count) else configured

    def write_calls(self, count: int, configured: int) -> int:
        """One ingest job above ``bulk.write_above``, else a Collections call per batch."""
        if self._by_ingest(count):
            return CALLS_PER_JOB
        return super().write_calls(count, configured)

    def update(self, object: str, records: Mapping[str, Mapping[str, Any]]) -> list[WriteResult]:
        if self._by_ingest(len(records)):
            try:
                return self.ingest.update(object, records)
            except BulkUnavailable as error:
                self._bulk_unavailable(error)
        return self.writer.update(object, records)

    def upsert(
        self, object: str, external_id: str, records: Mapping[str, Mapping[str, Any]]
    ) -> list[WriteResult]:
        if self._by_ingest(len(records)):
            try:
                return self.ingest.upsert(object, external_id, records)
            except BulkUnavailable as error:
                self._bulk_unavailable(error)
        return self.writer.upsert(object, external_id, records)

    def _by_ingest(self, count: int) -> bool:
        limit = self.settings.bulk_write_above
        return limit is not None and self._bulk_ok and count > limit

    def read_along(self, fields: Mapping[str, Sequence[str]]) -> None:
        """The deals query reads the Opportunity fields along, the users query the User ones."""
        self.queries.own_fields = {obj.lower(): tuple(names) for obj, names in fields.items()}

    def read_back(
        self, object: str, fields: Sequence[str], key_field: str | None = None
    ) -> Iterator[dict[str, dict[str, Any]]]:
        """One SOQL query over every record of ``object``: by REST (2,000 records a call), or
        above ``bulk.pull_above`` by one Bulk query job (:meth:`_read_back_records`)."""
        names = tuple(dict.fromkeys([*((key_field,) if key_field else ()), *fields]))
        for records in self._read_back_records(object, names):
            values: dict[str, dict[str, Any]] = {}
            for record in records:
                key = record.get(key_field) if key_field else record.get("Id")
                if key is not None:
                    values[str(key)] = {name: record.get(name) for name in fields}
            yield values

    def _read_back_records(
        self, object: str, names: tuple[str, ...]
    ) -> Iterator[list[dict[str, Any]]]:
        """The read-back query's records, page by page. The first REST page decides the road,
        as for a pull (:meth:`_big`). On the Bulk road that page is dropped and the job reads
        every record: a REST page and a job's snapshot taken apart never mix (no record is
        counted twice or missed between them), at the cost of that one call. An org that
        refuses Bulk gets the REST pages, that first one included."""
        query = self.queries.read_back(object, names)
        if not self._bulk_pulls:
            yield from (page.records for page in QueryPager(self.client, self._fetch, query))
            return
        first = self._first_page(query)
        if self._big(first):
            bulk = self.queries.read_back(object, names, bulk=True)
            try:
                job = self.bulk.create_query(bulk.soql, include_deleted=False)
            except BulkUnavailable as error:
                self._bulk_unavailable(error)
            else:
                log.info("%s: reading back by Bulk API 2.0 (job %s)", object, job["id"])
                page_records = PAGES_PER_PAGE * self.settings.page_size
                describe = self.targets.describe
                yield from job_records(
                    self.bulk, str(job["id"]), object, describe, page_records=page_records
                )
                return
        pages = QueryPager(self.client, self._fetch_after(first), query)
        yield from (page.records for page in pages)

    def use_budget(self, budget: CallBudget) -> None:
        budget.note(self._transport.usage)
        self._transport.budget = budget

    def plan_setup(
        self,
        objects: Sequence[TargetObject],
        fields: Sequence[TargetField],
        settings: SetupSettings,
    ) -> list[SetupChange]:
        """Access (two permission sets and their assignments, ``access.py``), then placement
        (the KPIs section on the configured page layouts, the scorecard's tab and list view,
        ``placement.py``): only what differs from the org."""
        access = AccessPlanner(self.client, self._fetch, username_of(self.source, self._environ))
        changes = access.plan([o.name for o in objects], fields, settings)
        placement = PlacementPlanner(MetadataClient(self.client, self._fetch))
        scorecard = objects[0].name if objects and self.source.scorecard_tab else None
        layouts = {obj: list(names) for obj, names in self.source.layouts.items()}
        changes += placement.plan(layouts, scorecard, fields, settings.language)
        if self.source.change_events is not None:
            channels = ChannelPlanner(self.client, self._fetch)
            changes += channels.plan(self.source.change_events.channel, self.identity()[0])
        return changes

    def describe_fields(self, object: str) -> dict[str, CrmField] | None:
        """Fields from describe. Describe lists active picklist values only, so StageName's
        values are the OpportunityStage records' (inactive ones included: old deals hold them)."""
        described = self.targets.describe(object)
        if described is None:
            return None
        fields = self._described_fields(described)
        stage = fields.get(STANDARD_STAGE_FIELD)
        if object.lower() == "opportunity" and stage is not None:
            query = self.queries.build("stages", None)
            assert query is not None
            self._stage_page = answer = self._query(query.soql)
            names = [r.get("ApiName") for r in _all_records(answer)]
            values = tuple(str(n) for n in names if n is not None)
            fields[STANDARD_STAGE_FIELD] = dataclasses.replace(stage, values=values or None)
        return fields

    @staticmethod
    def _described_fields(described: list[dict[str, Any]]) -> dict[str, CrmField]:
        fields = {}
        for item in described:
            picklist = [p.get("value") for p in item.get("picklistValues") or ()]
            values = tuple(str(v) for v in picklist if v is not None)
            fields[str(item.get("name"))] = CrmField(
                name=str(item.get("name")),
                values=values or None,
                references=tuple(str(r) for r in item.get("referenceTo") or ()),
                relationship=item.get("relationshipName") or None,
            )
        return fields

    # ---- internals --------------------------------------------------------------------------

    def _fetch(self, thunk: Callable[[], T]) -> T:
        """Run one client call, with simple-salesforce's errors turned into typed ones."""
        try:
            return thunk()
        except SalesforceError as exc:
            raise self._translate(exc) from None
        except SessionExpired:
            raise
        except AuthenticationFailed as exc:
            # The session expired and the login endpoint refused the new login (an OAuth
            # flow: the transport types its answer).
            raise AuthenticationFailed(
                f"source '{self.name}': logging in again was refused:"
                f" {_refusal(exc)}{_refusal_hint(self.source, exc.code)}",
                status=exc.status,
                code=exc.code,
            ) from None

    def _translate(self, exc: SalesforceError) -> ConnectorError:
        content = exc.content
        code, message = error_details(content)
        if isinstance(exc, SalesforceExpiredSession):
            if isinstance(self.source.auth, SalesforceSession):
                text = (
                    f"source '{self.name}': the session id given in auth (method: session) has"
                    " expired or is invalid, and the worker cannot log in by itself; give it a"
                    " fresh session id, or use an auth method it can log in with (jwt is"
                    " recommended for servers)"
                )
            else:
                text = (
                    f"source '{self.name}': the session expired again right after logging in"
                    f" again ({message or code}); check the integration user's session settings"
                )
            return SessionExpired(text, status=exc.status, code=code, url=exc.url, body=content)
        if isinstance(exc, SalesforceAuthenticationFailed):
            return AuthenticationFailed(
                f"source '{self.name}': logging in again was refused: {exc.code}:"
                f" {exc.auth_message}{_refusal_hint(self.source, exc.code)}",
                code=str(exc.code) if exc.code else None,
            )
        return RequestRejected(
            f"Salesforce refused the request: {message or code or 'no message'}",
            status=exc.status,
            code=code,
            url=exc.url,
            body=content,
        )

    def _query(self, text: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._fetch(lambda: self.client.query(text))
        return answer

    def _check_org(self, environ: Mapping[str, str] | None) -> OrgFacts:
        """Learn the org's currencies; refuse a conversion that cannot work (see module doc)."""
        currency_query = self._currency_query()
        try:
            answer = self._query(currency_query)
        except RequestRejected as error:
            if error.code != "INVALID_TYPE":
                raise
            answer = None  # no CurrencyType: a single-currency org
        reporting = self.currency.reporting
        crm_conversion = self.currency.conversion == "crm"
        if answer is None:
            if crm_conversion:
                log.warning(
                    "source %s: single-currency org; its amounts are taken to be in the"
                    " reporting currency %s",
                    self.name,
                    reporting,
                )
            return OrgFacts(False, None, None, convert_in_query=False)
        self._currency_page = answer
        records = [r for r in answer.get("records", []) if isinstance(r, dict)]
        corporate = next((r.get("IsoCode") for r in records if r.get("IsCorporate")), None)
        if not crm_conversion:
            return OrgFacts(True, corporate, None, convert_in_query=False)
        user_currency, whose = self._user_currency(environ), "the integration user's currency"
        if user_currency is None:
            user_currency, whose = corporate, "the org's corporate currency"
        if user_currency != reporting:
            raise CurrencyCheckFailed(
                f"source '{self.name}': currency.conversion is 'crm', and Salesforce's"
                f" convertCurrency() converts into {whose}, which is {user_currency}, but"
                f" currency.reporting is {reporting}. Set the integration user's currency to"
                f" {reporting} in Salesforce (Setup > Users > the user > Currency), or use"
                " currency.conversion: static with rates in the config."
            )
        return OrgFacts(True, corporate, user_currency, convert_in_query=True)

    @staticmethod
    def _currency_query() -> str:
        return soql.Select("CurrencyType", CURRENCY_FIELDS, order_by=("IsoCode",)).soql()

    def _user_currency(self, environ: Mapping[str, str] | None) -> str | None:
        username = username_of(self.source, environ)
        if username is None:
            return None
        query = soql.Select(
            "User",
            ("DefaultCurrencyIsoCode",),
            where=(f"Username = {soql.string_literal(username)}",),
        )
        answer = self._query(query.soql())
        records = answer.get("records") or []
        value = records[0].get("DefaultCurrencyIsoCode") if records else None
        return value if isinstance(value, str) else None


def _refusal(exc: AuthenticationFailed) -> str:
    """The login endpoint's own words (the transport's "login refused: " said already)."""
    return exc.detail.removeprefix("login refused: ")


def _refusal_hint(source: SalesforceSource, code: object) -> str:
    """What to do about a refused login, when the refusal says more than its own words."""
    if isinstance(source.auth, SalesforceRefreshToken) and code == "invalid_grant":
        return (
            "; the refresh token was revoked or has expired: authorize the connected app"
            " again and give the new refresh token in auth.refresh_token"
        )
    return ""


def _all_records(answer: Any) -> list[dict[str, Any]]:
    records = answer.get("records") if isinstance(answer, dict) else None
    return [r for r in records or () if isinstance(r, dict)]


def connect_salesforce(
    source: SalesforceSource,
    currency: CurrencySettings,
    *,
    retry_policy: RetryPolicy | None = None,
    environ: Mapping[str, str] | None = None,
    rep_start_date_field: str | None = None,
) -> SalesforceConnector:
    """Log in to ``source`` and check it; the connector for one run.

    ``environ`` resolves ``{env: ...}`` secrets (default ``os.environ``); ``retry_policy``
    replaces the default one (tests inject a recording sleep); ``rep_start_date_field`` names
    a User date field read as each rep's start date.
    """
    settings = SalesforceSettings.from_source(source, rep_start_date_field=rep_start_date_field)
    return SalesforceConnector(
        source, currency, retry_policy=retry_policy, environ=environ, settings=settings
    )
