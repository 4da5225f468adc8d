"""HubSpot's part of the config: the source (``type: hubspot``), its auth methods, the deal
property mapping and the names the worker may write (properties, custom object types).

Light on purpose (pydantic and the shared config foundations only): the config loader imports
it for every config, also on a worker that never talks to HubSpot.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from crm_kpi_worker.sync.config.base import (
    ApiUrl,
    AuthBase,
    ConfigModel,
    CrmValue,
    NonEmptyText,
    Secret,
    Setting,
    TaggedUnion,
    matching,
    raise_all,
    rule,
)
from crm_kpi_worker.sync.config.mapping import ForecastCategoryMapping, MappingBase
from crm_kpi_worker.sync.config.source import SourceBase
from crm_kpi_worker.sync.config.targets import TargetNaming
from crm_kpi_worker.sync.model import ForecastCategory

__all__ = [
    "FORECAST_CATEGORY_DEFAULTS",
    "TARGET_NAMING",
    "HubSpotAuth",
    "HubSpotDemoMapping",
    "HubSpotMapping",
    "HubSpotOAuth",
    "HubSpotPrivateApp",
    "HubSpotProperty",
    "HubSpotRateLimits",
    "HubSpotSource",
    "target_name_problem",
]

_HS_PROPERTY = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
HubSpotProperty = Annotated[
    str,
    matching(
        _HS_PROPERTY.pattern,
        "expected a HubSpot property internal name (lower case letters, digits and '_'), e.g."
        " 'closedate'",
    ),
]


def target_name_problem(value: str, what: str) -> str | None:
    if what == "object":
        if re.match(r"^(?:2-\d+|p_[a-z0-9_]+|[a-z][a-z0-9_]*)$", value):
            return None
        return (
            "expected a HubSpot custom object type: its id such as '2-1234567' or its"
            " fully qualified name such as 'p_kpi_scorecard'"
        )
    if _HS_PROPERTY.match(value):
        return None
    return (
        "expected a HubSpot property internal name (lower case letters, digits and '_'), e.g."
        " 'kpi_win_rate'"
    )


class HubSpotPrivateApp(AuthBase):
    """A private app's access token."""

    method: Literal["private_app"]
    token: Secret
    secret_fields: ClassVar[tuple[str, ...]] = ("token",)


class HubSpotOAuth(AuthBase):
    """OAuth: an access token, or client id/secret and refresh token to obtain one (or both)."""

    method: Literal["oauth"]
    access_token: Secret | None = None
    client_id: Setting | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    secret_fields: ClassVar[tuple[str, ...]] = ("access_token", "client_secret", "refresh_token")

    @model_validator(mode="after")
    def _check_complete(self) -> HubSpotOAuth:
        refresh = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
        }
        given = [k for k, v in refresh.items() if v is not None]
        if self.access_token is None and not given:
            raise rule(
                "give access_token, or client_id, client_secret and refresh_token (to refresh"
                " the access token), or both"
            )
        if given and len(given) < len(refresh):
            missing = [k for k in refresh if k not in given]
            raise rule(
                f"refreshing the access token needs client_id, client_secret and refresh_token;"
                f" missing: {', '.join(missing)}"
            )
        return self


HubSpotAuth = Annotated[
    HubSpotPrivateApp | HubSpotOAuth,
    TaggedUnion(
        "method",
        {"private_app": HubSpotPrivateApp, "oauth": HubSpotOAuth},
        "HubSpot auth method",
    ),
]


#: HubSpot's hs_forecast_category values.
FORECAST_CATEGORY_DEFAULTS = {
    "PIPELINE": ForecastCategory.PIPELINE,
    "BEST_CASE": ForecastCategory.BEST_CASE,
    "COMMIT": ForecastCategory.COMMIT,
    "CLOSED": ForecastCategory.CLOSED,
    "OMIT": ForecastCategory.OMITTED,
}


class HubSpotDemoMapping(ConfigModel):
    object: Literal["meetings", "calls", "tasks"] = "meetings"
    type_field: HubSpotProperty = "hs_activity_type"
    values: list[CrmValue] = Field(min_length=1)
    owner_field: HubSpotProperty = "hubspot_owner_id"
    start_field: HubSpotProperty = "hs_timestamp"


class HubSpotMapping(MappingBase):
    """Deal properties (canonical name -> internal name) and value mappings for HubSpot.

    A deal's company comes from its primary company association, not from a property.
    """

    name: HubSpotProperty = "dealname"
    amount: HubSpotProperty = "amount"
    amount_in_home_currency: HubSpotProperty | None = "amount_in_home_currency"
    close_date: HubSpotProperty = "closedate"
    created_at: HubSpotProperty = "createdate"
    stage: HubSpotProperty = "dealstage"
    pipeline: HubSpotProperty = "pipeline"
    deal_type: HubSpotProperty | None = "dealtype"
    forecast_category: HubSpotProperty | None = "hs_forecast_category"
    probability: HubSpotProperty | None = "hs_deal_stage_probability"
    currency: HubSpotProperty | None = "deal_currency_code"
    owner_id: HubSpotProperty = "hubspot_owner_id"
    last_modified: HubSpotProperty = "hs_lastmodifieddate"
    term_months: HubSpotProperty | None = None
    churn_date: HubSpotProperty | None = None
    """A company property holding the churn date."""
    team_field: HubSpotProperty | None = None
    pipelines: list[CrmValue] | None = None
    """Pipeline ids to pull (default: all)."""
    company_id: HubSpotProperty | None = "hs_primary_associated_company"
    """Deal property holding the id of the deal's primary company (its account)."""
    close_date_history: bool = False
    """Read each pulled deal's close-date history (for close_date_slips) through batch read
    with propertiesWithHistory. HubSpot answers at most 50 deals a call there, so this costs
    about four calls more per 200 deals pulled; off, slips are 0 (KPIS.md: where none is
    kept). Search cannot return property history."""
    quota_goals: list[NonEmptyText] | None = None
    """Names (hs_goal_name) of the goals whose targets are quotas, with quota_source: crm
    (default: every goal target assigned to an owner)."""
    forecast_categories: ForecastCategoryMapping = Field(
        default_factory=lambda: ForecastCategoryMapping(values=dict(FORECAST_CATEGORY_DEFAULTS))
    )
    demos: HubSpotDemoMapping | None = None


class HubSpotRateLimits(ConfigModel):
    """Client-side pacing, so the worker stays under the portal's limits instead of meeting
    429s. HubSpot's search endpoints take 5 requests a second per portal; other endpoints
    100 (Free/Starter) to 190 (Professional/Enterprise) per 10 seconds, the portal's rate
    headers telling which (the worker follows X-HubSpot-RateLimit-Max when it is lower)."""

    search_per_second: Annotated[float, Field(gt=0, le=100)] = 5.0
    per_10_seconds: Annotated[int, Field(ge=1, le=10_000)] = 100


class HubSpotSource(SourceBase):
    """A HubSpot portal, reached through hubspot-api-client."""

    crm: ClassVar[str] = "hubspot"
    type: Literal["hubspot"]
    auth: HubSpotAuth
    base_url: ApiUrl = "https://api.hubapi.com"
    page_size: Annotated[int, Field(ge=10, le=200)] = 200
    """Records per search page (HubSpot's search answers at most 200). A full pull through the
    list endpoint takes min(page_size, 100), 50 with close_date_history; the owners and
    archived-deals lists take 100."""
    rate_limits: HubSpotRateLimits = Field(default_factory=lambda: HubSpotRateLimits())
    """How fast the worker calls the portal; it also slows down on HubSpot's rate headers and
    429 answers."""
    full_pull: Literal["auto", "search", "list"] = "auto"
    """How a full pull (first run, ``sync --full``) reads deals, churned companies and demo
    activities: ``auto``, through the list endpoint when that is faster at ``rate_limits``
    (100 a call under the general limit, against search's 200 a call at 5 a second; see
    connectors/hubspot/roads.py); ``search`` always; ``list`` whenever the property list fits
    a URL. Incremental pulls always search."""
    mapping: HubSpotMapping

    def describe_endpoint(self) -> str:
        return f"base_url {self.base_url}"

    @model_validator(mode="after")
    def _cross_checks(self) -> HubSpotSource:
        problems = self.default_secret_problems(self.base_url)
        problems += self.kpi_field_problems()
        raise_all("hubspot source", problems)
        return self


#: How the worker's written properties and objects are named in HubSpot.
TARGET_NAMING = TargetNaming(
    name_problem=target_name_problem,
    scorecard_columns={
        "rep_field": "hubspot_owner_id",
        "team_field": "kpi_team",
        "period_type_field": "kpi_period_type",
        "period_start_field": "kpi_period_start",
        "period_end_field": "kpi_period_end",
        "computed_at_field": "kpi_computed_at",
    },
    no_rep_fields=(
        "HubSpot owners have no custom properties; write per-rep values to the"
        " scorecard object or deal.owner_quota_attainment"
    ),
)
