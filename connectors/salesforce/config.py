"""Salesforce's part of the config: the source (``type: salesforce``), its auth methods, the
Opportunity field mapping and the names the worker may write (custom fields and objects only).

Light on purpose (pydantic and the shared config foundations only): the config loader imports
it for every config, also on a worker that never talks to Salesforce.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import InitErrorDetails

from crm_kpi_worker.sync.config.base import (
    AuthBase,
    ConfigModel,
    CrmValue,
    HttpsUrl,
    Secret,
    Setting,
    TaggedUnion,
    error_at,
    matching,
    raise_all,
    rule,
)
from crm_kpi_worker.sync.config.mapping import ForecastCategoryMapping, MappingBase
from crm_kpi_worker.sync.config.source import SourceBase
from crm_kpi_worker.sync.config.targets import TargetNaming
from crm_kpi_worker.sync.model import ForecastCategory

__all__ = [
    "DEFAULT_LAYOUTS",
    "FORECAST_CATEGORY_DEFAULTS",
    "TARGET_NAMING",
    "SalesforceAuth",
    "SalesforceClientCredentials",
    "SalesforceDemoMapping",
    "SalesforceJwt",
    "SalesforceMapping",
    "SalesforceOAuthPassword",
    "SalesforcePassword",
    "SalesforceRefreshToken",
    "SalesforceSession",
    "SalesforceSource",
    "target_name_problem",
]


# Salesforce API names. A segment is a standard name (CloseDate) or a custom one
# (Churn_Date__c, ns__Churn_Date__c); relationship paths join segments with dots.
_SF_SEGMENT = r"[A-Za-z](?:[A-Za-z0-9]|_(?!_))*(?:__[A-Za-z0-9](?:[A-Za-z0-9]|_(?!_))*)*"
_SF_FIELD = re.compile(rf"^{_SF_SEGMENT}$")
_SF_PATH = re.compile(rf"^{_SF_SEGMENT}(?:\.{_SF_SEGMENT})*$")
_SF_CUSTOM = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9]{0,14}__)?([A-Za-z](?:[A-Za-z0-9]|_(?!_)){0,39})__c$"
)


def _sf_field(value: str, *, path: bool) -> str:
    pattern = _SF_PATH if path else _SF_FIELD
    if not pattern.match(value) or value.endswith("_"):
        raise rule(
            "expected a Salesforce field API name such as 'CloseDate' or 'Churn_Date__c' (the"
            " API name, not the label"
            + ("; a related field is written 'Account.Churn_Date__c')" if path else ")")
        )
    return value


SalesforceField = Annotated[str, AfterValidator(lambda v: _sf_field(v, path=False))]
SalesforceFieldPath = Annotated[str, AfterValidator(lambda v: _sf_field(v, path=True))]
SalesforceObject = Annotated[
    str,
    matching(_SF_FIELD.pattern, "expected a Salesforce object API name such as 'Event' or 'Task'"),
]


def target_name_problem(value: str, what: str) -> str | None:
    """Why ``value`` is not a writable Salesforce custom field/object name, or None."""
    if not _SF_CUSTOM.match(value):
        return (
            f"expected a Salesforce custom {what} API name ending in '__c', e.g."
            f" '{'KPI_Win_Rate__c' if what == 'field' else 'KPI_Scorecard__c'}'; the worker"
            " writes only custom fields, never standard ones"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Salesforce auth


class SalesforcePassword(AuthBase):
    """Username-password login (SOAP), as simple-salesforce does by default."""

    method: Literal["password"]
    username: Setting
    password: Secret
    security_token: Secret | None = None
    """Needed unless the worker's IP range is trusted by the org."""
    client_id: Setting | None = None
    """Optional client id / connected app consumer key sent with the login."""
    secret_fields: ClassVar[tuple[str, ...]] = ("password", "security_token")


class SalesforceOAuthPassword(AuthBase):
    """OAuth 2.0 username-password flow through a connected app."""

    method: Literal["oauth_password"]
    client_id: Setting
    client_secret: Secret
    username: Setting
    password: Secret
    security_token: Secret | None = None
    secret_fields: ClassVar[tuple[str, ...]] = ("client_secret", "password", "security_token")


class SalesforceJwt(AuthBase):
    """OAuth 2.0 JWT bearer flow: a connected app's consumer key and the matching private key."""

    method: Literal["jwt"]
    client_id: Setting
    username: Setting
    private_key: Secret
    """The PEM private key, usually {file: /run/secrets/sf-jwt.key}."""
    secret_fields: ClassVar[tuple[str, ...]] = ("private_key",)


class SalesforceClientCredentials(AuthBase):
    """OAuth 2.0 client credentials flow (needs the org's My Domain)."""

    method: Literal["client_credentials"]
    client_id: Setting
    client_secret: Secret
    secret_fields: ClassVar[tuple[str, ...]] = ("client_secret",)


class SalesforceRefreshToken(AuthBase):
    """OAuth 2.0 refresh token flow: a refresh token the integration user granted a connected
    app (through its web server or user-agent flow, once, in a browser); each login and each
    renewal of an expired session trades it for a new access token."""

    method: Literal["refresh_token"]
    client_id: Setting
    client_secret: Secret | None = None
    """Needed unless the connected app turns off "Require Secret for Refresh Token Flow"."""
    refresh_token: Secret
    secret_fields: ClassVar[tuple[str, ...]] = ("client_secret", "refresh_token")


class SalesforceSession(AuthBase):
    """An existing session id (e.g. from an SFDX login) and the instance it belongs to."""

    method: Literal["session"]
    session_id: Secret
    instance_url: HttpsUrl
    secret_fields: ClassVar[tuple[str, ...]] = ("session_id",)


SalesforceAuth = Annotated[
    SalesforcePassword
    | SalesforceOAuthPassword
    | SalesforceJwt
    | SalesforceClientCredentials
    | SalesforceRefreshToken
    | SalesforceSession,
    TaggedUnion(
        "method",
        {
            "password": SalesforcePassword,
            "oauth_password": SalesforceOAuthPassword,
            "jwt": SalesforceJwt,
            "client_credentials": SalesforceClientCredentials,
            "refresh_token": SalesforceRefreshToken,
            "session": SalesforceSession,
        },
        "Salesforce auth method",
    ),
]


#: Salesforce's standard ForecastCategoryName values.
FORECAST_CATEGORY_DEFAULTS = {
    "Pipeline": ForecastCategory.PIPELINE,
    "Best Case": ForecastCategory.BEST_CASE,
    "Commit": ForecastCategory.COMMIT,
    "Closed": ForecastCategory.CLOSED,
    "Omitted": ForecastCategory.OMITTED,
}


class SalesforceDemoMapping(ConfigModel):
    """Which activities are demos: records of ``object`` whose ``type_field`` is in ``values``."""

    object: SalesforceObject = "Event"
    type_field: SalesforceField = "Type"
    values: list[CrmValue] = Field(min_length=1)
    owner_field: SalesforceField = "OwnerId"
    deal_field: SalesforceField = "WhatId"
    start_field: SalesforceField = "StartDateTime"


class SalesforceMapping(MappingBase):
    """Opportunity fields (canonical name -> API name) and value mappings for Salesforce."""

    name: SalesforceField = "Name"
    amount: SalesforceField = "Amount"
    close_date: SalesforceField = "CloseDate"
    created_at: SalesforceField = "CreatedDate"
    stage: SalesforceField = "StageName"
    deal_type: SalesforceField | None = "Type"
    forecast_category: SalesforceField | None = "ForecastCategoryName"
    probability: SalesforceField | None = "Probability"
    currency: SalesforceField | None = "CurrencyIsoCode"
    """null in a single-currency org (deals are then in the org's currency)."""
    owner_id: SalesforceField = "OwnerId"
    account_id: SalesforceField | None = "AccountId"
    is_deleted: SalesforceField = "IsDeleted"
    last_modified: SalesforceField = "SystemModstamp"
    term_months: SalesforceField | None = None
    """Contract term in months (for amount_is: tcv); 12 when unmapped."""
    churn_date: SalesforceFieldPath | None = None
    """The account's churn date, e.g. 'Account.Churn_Date__c' (for retention_90d)."""
    team_field: SalesforceFieldPath | None = None
    """A User field holding the team name (instead of the config's teams section)."""
    forecast_categories: ForecastCategoryMapping = Field(
        default_factory=lambda: ForecastCategoryMapping(values=dict(FORECAST_CATEGORY_DEFAULTS))
    )
    demos: SalesforceDemoMapping | None = None
    """Demo activities; demos_per_week stays empty without it."""

    def account_churn_field(self) -> str | None:
        """The churn date field on Account, when ``churn_date`` reads it through the deal's
        account (``Account.Churn_Date__c`` -> ``Churn_Date__c``): the accounts stream pulls it."""
        churn = self.churn_date
        if churn is None or not churn.startswith("Account."):
            return None
        return churn.removeprefix("Account.")


_SF_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")


def _check_sf_domain(value: str) -> str:
    value = value.lower()
    if "://" in value or "/" in value:
        raise rule(
            "domain is the part before '.salesforce.com', e.g. 'acme.my' for"
            " https://acme.my.salesforce.com ('login' for production, 'test' for sandboxes);"
            " to send logins elsewhere use login_url"
        )
    if value.endswith(".salesforce.com"):
        raise rule(f"drop '.salesforce.com': write domain: {value.removesuffix('.salesforce.com')}")
    if not _SF_DOMAIN.match(value):
        raise rule("expected 'login', 'test' or a My Domain such as 'acme.my'")
    return value


def _api_version(value: Any) -> Any:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{float(value):.1f}"
    return value


def _check_api_version(value: str) -> str:
    if not re.match(r"^[1-9][0-9]\.0$", value):
        hint = " (without 'v')" if value.lower().startswith("v") else ""
        raise rule(f"expected a Salesforce API version such as '59.0'{hint}")
    return value


#: The page layouts ``setup`` places the KPI fields on by default: the standard ones.
DEFAULT_LAYOUTS: dict[str, tuple[str, ...]] = {
    "Opportunity": ("Opportunity Layout",),
    "User": ("User Layout",),
}


class SalesforceBulk(ConfigModel):
    """When the worker uses Bulk API 2.0 instead of REST (Salesforce recommends Bulk above
    about 2,000 records). ``null`` turns a road off."""

    pull_above: Annotated[int, Field(ge=0)] | None = 10_000
    """A stream whose pull matches more records than this (the first REST page's totalSize
    says) is pulled by Bulk query jobs instead: a few calls whatever the size, against one per
    2,000 rows (parents and history rows together) by REST."""
    write_above: Annotated[int, Field(ge=0)] | None = 2_000
    """An object with more records to write than this in a chunk of the run is written by a
    Bulk ingest job instead of sObject Collections (200 records a call)."""


class SalesforceChangeEvents(ConfigModel):
    """Read other people's changes to opportunities from Change Data Capture (the Pub/Sub
    API), so that a run does not read again what the worker itself wrote in the run before.

    ``crm-kpi setup`` creates the custom channel with one member, ``OpportunityChangeEvent``,
    filtered on ``ChangeEventHeader.commitUser != '<the worker's user>'``: only others'
    changes are delivered (and count toward the org's event delivery allocation). An
    incremental pull then asks SOQL only for opportunities someone else modified last
    (``LastModifiedById !=`` the worker) and reads by Id those the events name that the worker
    wrote over since. Use a dedicated integration user: a change made by a person logged in
    as that user is taken for the worker's own. When the events cannot be read (the feed is
    down, the replay position expired after 72 hours), the pull reads every modified record,
    as without change events, and says so once."""

    channel: Annotated[str, Field(pattern=r"^[A-Za-z](?:_?[A-Za-z0-9])*__chn$")] = (
        "CrmKpiWorker__chn"
    )
    """The custom channel's API name (``Name__chn``); its topic is ``/data/<channel>``."""
    endpoint: Annotated[str, Field(pattern=r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$")] = (
        "api.pubsub.salesforce.com:7443"
    )
    """The Pub/Sub API's host:port (TLS)."""
    idle_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    """The events are read until none has come for this long."""


class SalesforceSource(SourceBase):
    """A Salesforce org, reached through simple-salesforce."""

    crm: ClassVar[str] = "salesforce"
    type: Literal["salesforce"]
    auth: SalesforceAuth
    domain: Annotated[str, AfterValidator(_check_sf_domain)] = "login"
    """'login' (production), 'test' (sandboxes) or a My Domain such as 'acme.my'."""
    instance_url: HttpsUrl | None = None
    """Instance to call instead of the one login returns."""
    login_url: HttpsUrl | None = None
    """Where login requests are sent instead of https://{domain}.salesforce.com."""
    api_version: Annotated[
        str, BeforeValidator(_api_version), AfterValidator(_check_api_version)
    ] = "59.0"
    page_size: Annotated[int, Field(ge=200, le=2000)] = 2000
    """Records per query page (Salesforce accepts 200..2000)."""
    mapping: SalesforceMapping
    layouts: dict[SalesforceObject, list[Annotated[str, Field(min_length=1)]]] = Field(
        default_factory=lambda: {name: list(found) for name, found in DEFAULT_LAYOUTS.items()}
    )
    """Page layouts ``setup`` puts a "KPIs" section of the KPI fields on, per object (layout
    names as Setup shows them); an empty list means none of that object's layouts. Layouts
    not named here are never touched."""
    scorecard_tab: bool = True
    """``setup`` gives the scorecard object a tab and a "My scorecards" list view."""
    bulk: SalesforceBulk = SalesforceBulk()
    """When pulls and writes go through Bulk API 2.0 (see :class:`SalesforceBulk`)."""
    change_events: SalesforceChangeEvents | None = None
    """Read others' changes from Change Data Capture (see :class:`SalesforceChangeEvents`);
    null: every run reads every opportunity modified since the last, its own writes too."""

    @property
    def is_my_domain(self) -> bool:
        return self.domain not in ("login", "test")

    @property
    def effective_instance_url(self) -> str | None:
        """The instance to call, when known before login."""
        if self.instance_url is not None:
            return self.instance_url
        auth = self.auth
        return auth.instance_url if isinstance(auth, SalesforceSession) else None

    @property
    def secret_endpoint(self) -> str | None:
        """The URL the source's credentials are sent to (login_url, or the instance)."""
        if isinstance(self.auth, SalesforceSession):
            return self.effective_instance_url
        return self.login_url

    def describe_endpoint(self) -> str:
        where = f"domain {self.domain}"
        if self.login_url is not None:
            where += f", login_url {self.login_url}"
        if self.instance_url is not None:
            where += f", instance_url {self.instance_url}"
        return where + f", API v{self.api_version}"

    @model_validator(mode="after")
    def _cross_checks(self) -> SalesforceSource:
        problems: list[InitErrorDetails] = []
        if isinstance(self.auth, SalesforceClientCredentials) and not self.is_my_domain:
            problems.append(
                error_at(
                    ("auth", "method"),
                    "auth method 'client_credentials' needs the org's My Domain: set domain to"
                    f" e.g. 'acme.my', not '{self.domain}'",
                )
            )
        if (
            isinstance(self.auth, SalesforceSession)
            and self.instance_url is not None
            and self.instance_url != self.auth.instance_url
        ):
            problems.append(
                error_at(
                    ("instance_url",),
                    "instance_url differs from auth.instance_url; a session belongs to one"
                    " instance: give it once, in auth",
                )
            )
        problems += self.default_secret_problems(self.secret_endpoint)
        problems += self.kpi_field_problems()
        raise_all("salesforce source", problems)
        return self

    def with_endpoints(
        self,
        *,
        login_url: str | None = None,
        instance_url: str | None = None,
        ca_bundle: Path | None = None,
    ) -> SalesforceSource:
        """A copy pointed elsewhere (e.g. the demo's sandbox port), re-validated."""
        changes = {"login_url": login_url, "instance_url": instance_url, "ca_bundle": ca_bundle}
        result: SalesforceSource = self.with_changes(
            **{k: v for k, v in changes.items() if v is not None}
        )
        return result


#: How the worker's written fields and objects are named in Salesforce.
TARGET_NAMING = TargetNaming(
    name_problem=target_name_problem,
    scorecard_columns={
        "rep_field": "Rep__c",
        "team_field": "Team__c",
        "period_type_field": "Period_Type__c",
        "period_start_field": "Period_Start__c",
        "period_end_field": "Period_End__c",
        "computed_at_field": "Computed_At__c",
    },
)
