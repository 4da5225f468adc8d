"""The YAML files shipped in config/: they all validate, and the demo matches the sandbox org."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import SecretStr

from crm_kpi_worker.config import names, path_of
from crm_kpi_worker.connectors.hubspot.config import HubSpotPrivateApp, HubSpotSource
from crm_kpi_worker.connectors.salesforce.config import SalesforcePassword, SalesforceSource
from crm_kpi_worker.sync.config import DEAL_KPIS, SCORECARD_KPIS, EnvRef, ValueRef
from crm_kpi_worker.sync.config_loader import load_config, load_mapping
from crm_kpi_worker.sync.model import DealType, ForecastCategory

CONFIGS = [
    "demo-hubspot.yaml",
    "demo-salesforce.yaml",
    "example-hubspot.yaml",
    "example-salesforce.yaml",
]
MAPPINGS = {
    "salesforce-default-mapping.yaml": "salesforce",
    "hubspot-default-mapping.yaml": "hubspot",
}


def test_every_shipped_file_is_covered() -> None:
    assert names() == sorted([*CONFIGS, *MAPPINGS])


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(name: str) -> None:
    load_config(path_of(name), environ={})


@pytest.mark.parametrize(("name", "crm"), MAPPINGS.items())
def test_shipped_mappings_validate(name: str, crm: str) -> None:
    load_mapping(path_of(name), crm)  # type: ignore[arg-type]


def test_path_of_refuses_other_names() -> None:
    with pytest.raises(ValueError, match="bare name"):
        path_of("../pyproject.toml")
    with pytest.raises(FileNotFoundError, match=r"shipped: demo-hubspot\.yaml, demo-sales"):
        path_of("nope.yaml")


def test_salesforce_default_mapping_is_the_standard_org() -> None:
    mapping = load_mapping(path_of("salesforce-default-mapping.yaml"), "salesforce")
    assert [(s.crm, s.probability) for s in mapping.stages] == [
        ("Prospecting", Decimal("0.10")),
        ("Qualification", Decimal("0.10")),
        ("Needs Analysis", Decimal("0.20")),
        ("Value Proposition", Decimal("0.50")),
        ("Id. Decision Makers", Decimal("0.60")),
        ("Perception Analysis", Decimal("0.70")),
        ("Proposal/Price Quote", Decimal("0.75")),
        ("Negotiation/Review", Decimal("0.90")),
        ("Closed Won", Decimal("1.0")),
        ("Closed Lost", Decimal("0.0")),
    ]
    assert [s.crm for s in mapping.stages if s.won] == ["Closed Won"]
    assert [s.crm for s in mapping.stages if s.lost] == ["Closed Lost"]
    assert mapping.deal_types.values == {
        "New Customer": DealType.NEW_BUSINESS,
        "Existing Customer - Upgrade": DealType.EXPANSION,
        "Existing Customer - Replacement": DealType.OTHER,
        "Existing Customer - Downgrade": DealType.OTHER,
    }
    assert list(mapping.forecast_categories.values) == [
        "Pipeline",
        "Best Case",
        "Commit",
        "Closed",
        "Omitted",
    ]


# --- the demo config ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> SalesforceSource:
    config = load_config(path_of("demo-salesforce.yaml"), environ={})
    (source,) = config.sources
    assert isinstance(source, SalesforceSource)
    return source


def test_demo_stages_match_the_sandbox_org(demo: SalesforceSource) -> None:
    stages = [
        (s.crm, s.stage, s.probability, s.forecast_category, s.won, s.lost)
        for s in demo.mapping.stages
    ]
    assert stages == [
        ("Prospecting", "prospecting", Decimal("0.10"), ForecastCategory.PIPELINE, False, False),
        (
            "Qualification",
            "qualification",
            Decimal("0.20"),
            ForecastCategory.PIPELINE,
            False,
            False,
        ),
        ("Demo", "demo", Decimal("0.40"), ForecastCategory.PIPELINE, False, False),
        ("Proposal", "proposal", Decimal("0.60"), ForecastCategory.BEST_CASE, False, False),
        ("Negotiation", "negotiation", Decimal("0.80"), ForecastCategory.COMMIT, False, False),
        ("Closed Won", "closed_won", Decimal("1.0"), ForecastCategory.CLOSED, True, False),
        ("Closed Lost", "closed_lost", Decimal("0.0"), ForecastCategory.OMITTED, False, True),
    ]
    assert demo.mapping.stage_for("Legacy Stage") is None  # the bad-data branch stays unmapped
    assert (demo.mapping.qualified_stage, demo.mapping.conversion_entry_stage) == (
        "qualification",
        "demo",
    )


def test_demo_value_mappings(demo: SalesforceSource) -> None:
    mapping = demo.mapping
    assert mapping.deal_types.values == {
        "New Customer": DealType.NEW_BUSINESS,
        "Existing Customer - Upgrade": DealType.EXPANSION,
        "Renewal": DealType.RENEWAL,
        "Existing Customer - Replacement": DealType.OTHER,
        "Existing Customer - Downgrade": DealType.OTHER,
    }
    assert mapping.demos is not None
    assert (mapping.demos.object, mapping.demos.type_field, mapping.demos.values) == (
        "Event",
        "Type",
        ["Demo"],
    )
    assert mapping.churn_date == "Account.Churn_Date__c"
    assert mapping.quota_source.kind == "crm"


def test_demo_auth_runs_with_zero_setup(demo: SalesforceSource) -> None:
    auth = demo.auth
    assert isinstance(auth, SalesforcePassword)
    assert auth.username == ValueRef(value="demo@sandbox.local")
    assert auth.password == EnvRef(env="CRM_KPI_SF_PASSWORD", default=SecretStr("demo"))
    assert auth.password.resolve({}).get_secret_value() == "demo"
    assert auth.password.resolve({"CRM_KPI_SF_PASSWORD": "x"}).get_secret_value() == "x"
    assert (demo.login_url, demo.instance_url) == ("https://127.0.0.1:0", "https://127.0.0.1:0")
    assert "demo'" not in repr(auth)


def test_demo_settings() -> None:
    config = load_config(path_of("demo-salesforce.yaml"), environ={})
    assert config.currency.reporting == "EUR" and config.currency.conversion == "crm"
    assert (config.fiscal.year_start_month, config.fiscal.timezone) == (1, "Europe/Paris")
    assert config.teams == {
        "France Nord": [
            "alice.martin@sandbox.local",
            "bruno.lefevre@sandbox.local",
            "chloe.dubois@sandbox.local",
        ],
        "France Sud": ["david.moreau@sandbox.local", "emma.laurent@sandbox.local"],
    }
    assert config.variable_pay is not None
    assert config.variable_pay.target_for("alice.martin@sandbox.local") == Decimal("30000")
    assert config.write.language == "fr"
    fields = config.kpi_fields
    assert fields is not None and fields.scorecard is not None and fields.deal is not None
    assert (fields.scorecard.object, fields.scorecard.external_id) == (
        "KPI_Scorecard__c",
        "Scorecard_Key__c",
    )
    assert tuple(fields.scorecard.fields) == SCORECARD_KPIS
    assert tuple(fields.deal.fields) == DEAL_KPIS
    assert fields.deal.fields["days_in_stage"] == "KPI_Stage_Entered_On__c"
    assert fields.deal.daily_ages is False  # ages are written as their anchor dates


def test_demo_password_default_is_refused_off_loopback(demo: SalesforceSource) -> None:
    with pytest.raises(ValueError, match="accepted only when the CRM endpoint is a loopback"):
        demo.with_endpoints(login_url="https://login.salesforce.com")


# --- the HubSpot demo config: the same scenario, the same settings --------------------------


def test_hubspot_demo_matches_the_salesforce_demo(demo: SalesforceSource) -> None:
    config = load_config(path_of("demo-hubspot.yaml"), environ={})
    salesforce = load_config(path_of("demo-salesforce.yaml"), environ={})
    (source,) = config.sources
    assert isinstance(source, HubSpotSource)
    # Every canonical stage, order, probability and category as in the Salesforce demo.
    canonical = [
        (s.stage, s.order, s.probability, s.forecast_category, s.won, s.lost)
        for s in source.mapping.stages
    ]
    assert canonical == [
        (s.stage, s.order, s.probability, s.forecast_category, s.won, s.lost)
        for s in demo.mapping.stages
    ]
    assert [s.crm for s in source.mapping.stages][:3] == [
        "appointmentscheduled",
        "qualifiedtobuy",
        "presentationscheduled",
    ]
    assert source.mapping.stage_for("108765432") is None  # the sandbox's legacy stage
    for name in ("fiscal", "currency", "teams", "variable_pay"):
        assert getattr(config, name) == getattr(salesforce, name), name
    assert config.write.language == "fr"
    assert source.mapping.close_date_history is True
    fields = config.kpi_fields
    assert fields is not None and fields.scorecard is not None and fields.deal is not None
    assert tuple(fields.scorecard.fields) == SCORECARD_KPIS
    assert tuple(fields.deal.fields) == DEAL_KPIS
    auth = source.auth
    assert isinstance(auth, HubSpotPrivateApp)
    assert auth.token.resolve({}).get_secret_value() == "pat-sandbox-demo"
    with pytest.raises(ValueError, match="accepted only when the CRM endpoint is a loopback"):
        source.with_changes(base_url="https://api.hubapi.com")
