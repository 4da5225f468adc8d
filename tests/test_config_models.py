"""The config tree's rules (sync/config.py), checked through the loader's problem messages."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from crm_kpi_worker.connectors.hubspot.config import HubSpotSource
from crm_kpi_worker.connectors.salesforce.config import SalesforceSession, SalesforceSource
from crm_kpi_worker.sync.config import (
    DEAL_KPIS,
    SCORECARD_KPIS,
    AppConfig,
    EnvRef,
    FileEnvRef,
    FileRef,
    FiscalCalendar,
    SecretError,
    StoreSettings,
    ValueRef,
    WriteSettings,
    cron_trigger,
    iter_secret_refs,
)
from crm_kpi_worker.sync.config_loader import ConfigError, load_config_text
from crm_kpi_worker.sync.model import DealType, ForecastCategory

STAGES = [
    {"crm": "Prospecting", "stage": "prospecting", "order": 1},
    {"crm": "Qualification", "stage": "qualification", "order": 2},
    {"crm": "Demo", "stage": "demo", "order": 3},
    {"crm": "Closed Won", "stage": "closed_won", "order": 4, "won": True},
    {"crm": "Closed Lost", "stage": "closed_lost", "order": 5, "lost": True},
]
BASE: dict[str, Any] = {
    "sources": [
        {
            "type": "salesforce",
            "name": "prod",
            "auth": {
                "method": "password",
                "username": {"env": "SF_USERNAME"},
                "password": {"env": "SF_PASSWORD"},
            },
            "mapping": {"stages": STAGES, "qualified_stage": "qualification"},
        }
    ],
    "currency": {"reporting": "EUR"},
}
HUBSPOT: dict[str, Any] = {
    "type": "hubspot",
    "name": "hs",
    "auth": {"method": "private_app", "token": {"env": "HS_TOKEN"}},
    "mapping": {"stages": STAGES, "qualified_stage": "qualification"},
}


def config(**sections: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(copy.deepcopy(sections))
    return data


def source(data: dict[str, Any], index: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = data["sources"][index]
    return result


def load(data: dict[str, Any]) -> AppConfig:
    return load_config_text(yaml.safe_dump(data, sort_keys=False), file="c.yaml")


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        load(data)
    return [(p.path, p.message) for p in exc.value.problems]


def only_problem(data: dict[str, Any]) -> tuple[str, str]:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


# --- defaults -------------------------------------------------------------------------------


def test_defaults_of_a_minimal_config() -> None:
    cfg = load(config())
    sf = cfg.sources[0]
    assert isinstance(sf, SalesforceSource)
    assert (sf.domain, sf.api_version, sf.timeout_seconds, sf.page_size) == (
        "login",
        "59.0",
        30.0,
        2000,
    )
    assert (sf.login_url, sf.instance_url, sf.ca_bundle) == (None, None, None)
    m = sf.mapping
    assert (m.amount, m.close_date, m.created_at, m.stage, m.deal_type) == (
        "Amount",
        "CloseDate",
        "CreatedDate",
        "StageName",
        "Type",
    )
    assert (m.forecast_category, m.probability, m.currency, m.owner_id, m.account_id) == (
        "ForecastCategoryName",
        "Probability",
        "CurrencyIsoCode",
        "OwnerId",
        "AccountId",
    )
    assert (m.is_deleted, m.last_modified, m.term_months, m.churn_date) == (
        "IsDeleted",
        "SystemModstamp",
        None,
        None,
    )
    assert (m.amount_is, m.conversion_entry_stage, m.cycle_start_stage) == ("arr", "demo", None)
    assert m.quota_source.kind == "crm"
    assert m.deal_types.quota_credited == [DealType.NEW_BUSINESS, DealType.EXPANSION]
    assert m.forecast_categories.map("Best Case") is ForecastCategory.BEST_CASE
    assert m.forecast_categories.map(None) is ForecastCategory.PIPELINE
    assert cfg.fiscal.year_start_month == 1 and cfg.fiscal.timezone == "UTC"
    assert cfg.fiscal.periods == ["month", "quarter", "year"]
    assert (cfg.fiscal.snapshot_day, cfg.fiscal.trailing_window_days) == (15, 180)
    assert (cfg.currency.conversion, cfg.currency.rates) == ("crm", {})
    assert (cfg.write.batch_size, cfg.write.dry_run, cfg.write.language) == (200, False, "en")
    assert cfg.store.resolve_url({}).get_secret_value() == "sqlite:///crm-kpi.sqlite"
    assert (cfg.schedule, cfg.runtime.as_of, cfg.runtime.log_level) == (None, None, "INFO")
    assert (cfg.variable_pay, cfg.kpi_fields, cfg.teams) == (None, None, {})


def test_kpi_key_lists_follow_kpis_md() -> None:
    assert len(SCORECARD_KPIS) == 22 and len(set(SCORECARD_KPIS)) == 22
    assert DEAL_KPIS == (
        "deal_age_days",
        "days_in_stage",
        "close_date_slips",
        "owner_quota_attainment",
    )


# --- sources and auth ------------------------------------------------------------------------


def test_source_names_must_be_unique() -> None:
    data = config()
    data["sources"].append(copy.deepcopy(source(data)))
    assert only_problem(data) == (
        "sources[1].name",
        "duplicate source name 'prod': already used by item 0 of this list; each source"
        " name must be unique",
    )


def test_unknown_source_type_and_auth_method_suggest_the_right_one() -> None:
    data = config()
    source(data)["type"] = "salesfroce"
    assert only_problem(data) == (
        "sources[0].type",
        "unknown source type 'salesfroce'; expected one of 'salesforce', 'hubspot'; did you"
        " mean 'salesforce'?",
    )
    data = config()
    source(data)["auth"]["method"] = "oauth-password"
    assert only_problem(data)[1].endswith("did you mean 'oauth_password'?")


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (
            {"method": "password", "username": "u"},
            [("sources[0].auth.password", "missing required key 'password'")],
        ),
        (
            {"method": "oauth_password", "username": "u", "password": {"env": "P"}},
            [
                ("sources[0].auth.client_id", "missing required key 'client_id'"),
                ("sources[0].auth.client_secret", "missing required key 'client_secret'"),
            ],
        ),
        (
            {"method": "jwt", "client_id": "c", "username": "u"},
            [
                (
                    "sources[0].auth.private_key",
                    "missing required key 'private_key' (the PEM private key, usually"
                    " {file: /run/secrets/sf-jwt.key})",
                )
            ],
        ),
        (
            {"method": "session", "session_id": {"env": "SID"}},
            [("sources[0].auth.instance_url", "missing required key 'instance_url'")],
        ),
        (
            {"method": "refresh_token", "client_secret": {"env": "S"}},
            [
                ("sources[0].auth.client_id", "missing required key 'client_id'"),
                ("sources[0].auth.refresh_token", "missing required key 'refresh_token'"),
            ],
        ),
    ],
)
def test_each_salesforce_auth_method_requires_its_keys(
    auth: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    data = config()
    source(data)["auth"] = auth
    assert problems(data) == expected


def test_every_salesforce_auth_method_loads() -> None:
    methods = [
        {"method": "password", "username": "u@x.com", "password": {"env": "P"}},
        {
            "method": "oauth_password",
            "client_id": "c",
            "client_secret": {"file": "/run/secrets/s"},
            "username": "u",
            "password": {"env": "P"},
        },
        {"method": "jwt", "client_id": "c", "username": "u", "private_key": {"file": "k.pem"}},
        {"method": "client_credentials", "client_id": "c", "client_secret": {"env": "S"}},
        {
            "method": "refresh_token",
            "client_id": {"env": "C"},
            "client_secret": {"env": "S"},
            "refresh_token": {"file": "/run/secrets/sf-refresh-token"},
        },
        {"method": "refresh_token", "client_id": "c", "refresh_token": {"env": "RT"}},
        {
            "method": "session",
            "session_id": {"env": "SID"},
            "instance_url": "https://acme.my.salesforce.com/",
        },
    ]
    for auth in methods:
        data = config()
        source(data)["auth"] = auth
        source(data)["domain"] = "acme.my"
        loaded = load(data).sources[0]
        assert loaded.auth.method == auth["method"]
    assert isinstance(loaded.auth, SalesforceSession)
    assert loaded.auth.instance_url == "https://acme.my.salesforce.com"
    assert isinstance(loaded, SalesforceSource)
    assert loaded.effective_instance_url == "https://acme.my.salesforce.com"


def test_client_credentials_needs_a_my_domain() -> None:
    data = config()
    source(data)["auth"] = {
        "method": "client_credentials",
        "client_id": "c",
        "client_secret": {"env": "S"},
    }
    source(data)["domain"] = "test"
    assert only_problem(data) == (
        "sources[0].auth.method",
        "auth method 'client_credentials' needs the org's My Domain: set domain to e.g."
        " 'acme.my', not 'test'",
    )


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("https://acme.my.salesforce.com", "domain is the part before '.salesforce.com'"),
        ("acme.my.salesforce.com", "drop '.salesforce.com': write domain: acme.my"),
        ("acme my", "expected 'login', 'test' or a My Domain such as 'acme.my'"),
    ],
)
def test_salesforce_domain(domain: str, message: str) -> None:
    data = config()
    source(data)["domain"] = domain
    path, found = only_problem(data)
    assert path == "sources[0].domain" and found.startswith(message)


def test_domain_is_lowered_and_my_domain_detected() -> None:
    data = config()
    source(data)["domain"] = "Acme.My"
    loaded = load(data).sources[0]
    assert isinstance(loaded, SalesforceSource)
    assert (loaded.domain, loaded.is_my_domain) == ("acme.my", True)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("login_url", "http://login.example.com", "expected an https:// URL"),
        ("login_url", "https://user:pw@proxy.example.com", "credentials never go in a URL"),
        ("login_url", "https://proxy.example.com/?a=1", "the URL must not have a query string"),
        ("instance_url", "acme.my.salesforce.com", "expected an https:// URL"),
        ("instance_url", "https://host:99999", "malformed URL"),
        ("api_version", "v59.0", "expected a Salesforce API version such as '59.0' (without 'v')"),
        ("page_size", 100, "must be greater than or equal to 200"),
        ("page_size", 5000, "must be less than or equal to 2000"),
        ("timeout_seconds", 0, "must be greater than 0"),
    ],
)
def test_salesforce_options(key: str, value: object, message: str) -> None:
    data = config()
    source(data)[key] = value
    path, found = only_problem(data)
    assert path == f"sources[0].{key}"
    assert found.startswith(message), found
    assert "pw@" not in found


def test_api_version_written_as_a_number_is_accepted() -> None:
    data = config()
    source(data)["api_version"] = 60.0
    loaded = load(data).sources[0]
    assert isinstance(loaded, SalesforceSource) and loaded.api_version == "60.0"


def test_hubspot_source_defaults_and_oauth_rules() -> None:
    data = config()
    data["sources"] = [copy.deepcopy(HUBSPOT)]
    loaded = load(data).sources[0]
    assert isinstance(loaded, HubSpotSource)
    assert (loaded.base_url, loaded.page_size, loaded.mapping.amount) == (
        "https://api.hubapi.com",
        200,
        "amount",
    )
    assert loaded.mapping.forecast_categories.map("OMIT") is ForecastCategory.OMITTED
    data["sources"][0]["auth"] = {"method": "oauth"}
    assert only_problem(data) == (
        "sources[0].auth",
        "give access_token, or client_id, client_secret and refresh_token (to refresh the"
        " access token), or both",
    )
    data["sources"][0]["auth"] = {"method": "oauth", "refresh_token": {"env": "R"}}
    assert only_problem(data)[1].endswith("missing: client_id, client_secret")
    data["sources"][0]["auth"] = {"method": "oauth", "access_token": {"env": "A"}}
    assert load(data).sources[0].auth.method == "oauth"
    data["sources"][0]["base_url"] = "http://api.hubapi.com"
    assert only_problem(data)[1].startswith("expected an https:// URL")
    data["sources"][0]["base_url"] = "http://127.0.0.1:8080"
    local = load(data).sources[0]
    assert isinstance(local, HubSpotSource) and local.base_url == "http://127.0.0.1:8080"
    moved = local.with_changes(base_url="https://127.0.0.1:9443/")
    assert isinstance(moved, HubSpotSource) and moved.base_url == "https://127.0.0.1:9443"
    with pytest.raises(ValidationError):
        local.with_changes(base_url="http://api.hubapi.com")


# --- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        (
            "hunter2-secret",
            "a secret is never written in the file: give {env: VAR_NAME}, {file: /path/to/file}"
            " or {file_env: VAR_NAME}",
        ),
        (
            "${SF_PASSWORD}",
            "'${...}' interpolation is not supported; write {env: SF_PASSWORD} to read the"
            " environment variable",
        ),
        (
            {"value": "hunter2-secret"},
            "{value: ...} is only for non-secret settings such as a username; give this secret"
            " as {env: VAR_NAME}, {file: /path/to/file} or {file_env: VAR_NAME}",
        ),
        (
            {"env": "A", "file": "/x"},
            "give exactly one of 'env', 'file'",
        ),
        (
            {"evn": "SF_PASSWORD"},
            "expected {env: VAR_NAME}, {file: /path/to/file} or {file_env: VAR_NAME}; did you"
            " mean 'env'?",
        ),
        (
            {"env": "1BAD-NAME"},
            "expected an environment variable name (letters, digits and '_', not starting with"
            " a digit), e.g. CRM_KPI_SF_PASSWORD",
        ),
    ],
)
def test_secret_forms(password: object, message: str) -> None:
    data = config()
    source(data)["auth"]["password"] = password
    path, found = only_problem(data)
    assert path.startswith("sources[0].auth.password")
    assert found == message
    assert "hunter2-secret" not in found


def test_a_refresh_token_is_a_secret() -> None:
    data = config()
    source(data)["auth"] = {
        "method": "refresh_token",
        "client_id": "c",
        "client_secret": "written-in-the-file",
        "refresh_token": "5Aep861-written-in-the-file",
    }
    found = problems(data)
    assert [path for path, _ in found] == [
        "sources[0].auth.client_secret",
        "sources[0].auth.refresh_token",
    ]
    assert all(m.startswith("a secret is never written in the file") for _, m in found)
    assert "written-in-the-file" not in repr(found)
    source(data)["auth"]["client_secret"] = {"env": "S"}
    source(data)["auth"]["refresh_token"] = {"env": "RT", "default": "5Aep861-default"}
    assert only_problem(data)[0] == "sources[0].auth.refresh_token.default"  # not loopback


def test_a_setting_accepts_text_value_env_and_file() -> None:
    for username, expected in [
        ("svc@example.com", ValueRef(value="svc@example.com")),
        ({"value": "svc@example.com"}, ValueRef(value="svc@example.com")),
        ({"env": "U"}, EnvRef(env="U")),
        ({"file": "/run/u"}, FileRef(file=Path("/run/u"))),
        ({"file_env": "U_FILE"}, FileEnvRef(file_env="U_FILE")),
    ]:
        data = config()
        source(data)["auth"]["username"] = username
        assert load(data).sources[0].auth.username == expected  # type: ignore[union-attr]


def test_a_secret_default_needs_a_loopback_endpoint() -> None:
    data = config()
    source(data)["auth"]["password"] = {"env": "SF_PASSWORD", "default": "hunter2-secret"}
    path, message = only_problem(data)
    assert path == "sources[0].auth.password.default"
    assert message == (
        "a default for a secret is accepted only when the CRM endpoint is a loopback host (the"
        " sandbox CRM); give a real secret through the environment variable SF_PASSWORD or a"
        " file"
    )
    source(data)["login_url"] = "https://sandbox.example.com"
    assert only_problem(data)[0] == "sources[0].auth.password.default"
    for host in ("127.0.0.1", "localhost", "[::1]", "127.0.0.2"):
        source(data)["login_url"] = f"https://{host}:8443"
        auth = load(data).sources[0].auth
        assert auth.password.resolve({}).get_secret_value() == "hunter2-secret"  # type: ignore[union-attr]
        assert "hunter2-secret" not in repr(auth) and "hunter2-secret" not in str(auth)


def test_a_username_default_is_fine_anywhere() -> None:
    data = config()
    source(data)["auth"]["username"] = {"env": "SF_USERNAME", "default": "svc@example.com"}
    auth = load(data).sources[0].auth
    assert auth.username.resolve({}).get_secret_value() == "svc@example.com"  # type: ignore[union-attr]


def test_a_session_default_is_judged_by_the_instance_url() -> None:
    data = config()
    source(data)["auth"] = {
        "method": "session",
        "session_id": {"env": "SID", "default": "abc"},
        "instance_url": "https://localhost:9999",
    }
    assert load(data).sources[0].auth.method == "session"
    source(data)["auth"]["instance_url"] = "https://acme.my.salesforce.com"
    assert only_problem(data)[0] == "sources[0].auth.session_id.default"


def test_env_ref_resolution() -> None:
    ref = EnvRef(env="SF_PASSWORD")
    assert ref.resolve({"SF_PASSWORD": "s3cret"}).get_secret_value() == "s3cret"
    with pytest.raises(SecretError, match=r"^environment variable SF_PASSWORD is not set$"):
        ref.resolve({})
    with pytest.raises(SecretError, match=r"^environment variable SF_PASSWORD is set but empty$"):
        ref.resolve({"SF_PASSWORD": ""})
    with_default = EnvRef(env="SF_PASSWORD", default=SecretStr("demo"))
    assert with_default.resolve({}).get_secret_value() == "demo"
    assert with_default.resolve({"SF_PASSWORD": "real"}).get_secret_value() == "real"


def test_env_ref_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_KPI_TEST_SECRET", "from-env")
    assert EnvRef(env="CRM_KPI_TEST_SECRET").resolve().get_secret_value() == "from-env"


def test_file_refs_resolution(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret\n", encoding="utf-8")
    assert FileRef(file=secret).resolve().get_secret_value() == "s3cret"
    env = {"SECRET_FILE": str(secret)}
    assert FileEnvRef(file_env="SECRET_FILE").resolve(env).get_secret_value() == "s3cret"
    missing = tmp_path / "missing.txt"
    with pytest.raises(SecretError, match=f"^secret file {missing} does not exist$"):
        FileRef(file=missing).resolve()
    with pytest.raises(SecretError, match="is a directory"):
        FileRef(file=tmp_path).resolve()
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(SecretError, match="is empty"):
        FileRef(file=tmp_path / "empty").resolve()
    with pytest.raises(SecretError, match=r"^environment variable SECRET_FILE .* is not set$"):
        FileEnvRef(file_env="SECRET_FILE").resolve({})
    with pytest.raises(SecretError, match=r"missing.txt \(from \$SECRET_FILE\) does not exist"):
        FileEnvRef(file_env="SECRET_FILE").resolve({"SECRET_FILE": str(missing)})


def test_iter_secret_refs_lists_every_reference() -> None:
    data = config(store={"url_env": "STORE_URL"})
    source(data)["auth"]["security_token"] = {"file": "/run/token"}
    refs = {path: ref for path, ref in iter_secret_refs(load(data))}
    assert list(refs) == [
        ("sources", 0, "auth", "username"),
        ("sources", 0, "auth", "password"),
        ("sources", 0, "auth", "security_token"),
    ]


def test_reprs_never_show_a_secret() -> None:
    data = config()
    source(data)["login_url"] = "https://127.0.0.1:0"
    source(data)["auth"]["password"] = {"env": "SF_PASSWORD", "default": "hunter2-secret"}
    cfg = load(data)
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), str(cfg.model_dump())):
        assert "hunter2-secret" not in text
    assert "**********" in repr(cfg)


def test_validation_errors_never_show_inputs() -> None:
    data = config()
    source(data)["auth"]["password"] = "hunter2-secret"
    with pytest.raises(ValidationError) as exc:
        AppConfig.model_validate(data)
    assert "hunter2-secret" not in str(exc.value)


# --- mapping --------------------------------------------------------------------------------


def test_a_stage_cannot_be_won_and_lost() -> None:
    data = config()
    source(data)["mapping"]["stages"][4]["won"] = True
    assert only_problem(data) == (
        "sources[0].mapping.stages[4].won",
        "a stage cannot be both won and lost; set won: true for a Closed Won stage, lost: true"
        " for a Closed Lost stage, neither for open stages",
    )


def test_stage_list_rules() -> None:
    data = config()
    stages = source(data)["mapping"]["stages"]
    stages.append({"crm": "Demo", "stage": "demo", "order": 3})
    stages.append({"crm": "Closed Won - Signed", "stage": "closed_won", "order": 9, "won": True})
    stages.append({"crm": "Proposal", "stage": "proposal", "order": 2})
    assert problems(data) == [
        (
            "sources[0].mapping.stages[5].crm",
            "duplicate CRM stage value 'Demo': already used by item 2 of this list; each CRM"
            " stage value must be unique",
        ),
    ]
    stages.pop(5)
    assert problems(data) == [
        (
            "sources[0].mapping.stages[5].order",
            "stage 'closed_won' is also mapped by stages[3] with a different order; CRM values"
            " sharing a canonical stage must agree",
        ),
        (
            "sources[0].mapping.stages[6].order",
            "order 2 is already the position of stage 'qualification'; each canonical stage"
            " needs its own funnel position",
        ),
    ]


def test_stages_need_a_won_and_a_lost_stage() -> None:
    data = config()
    source(data)["mapping"]["stages"] = STAGES[:3]
    assert problems(data) == [
        (
            "sources[0].mapping.stages",
            "no stage has lost: true; map the CRM's Closed Lost stage(s)",
        ),
        ("sources[0].mapping.stages", "no stage has won: true; map the CRM's Closed Won stage(s)"),
    ]


def test_stage_probability_is_a_fraction() -> None:
    data = config()
    source(data)["mapping"]["stages"][0]["probability"] = 10
    assert only_problem(data) == (
        "sources[0].mapping.stages[0].probability",
        "a probability is a fraction between 0 and 1; for 10% write 0.1",
    )


def test_stage_keys_are_canonical() -> None:
    data = config()
    source(data)["mapping"]["stages"][0]["stage"] = "Prospecting"
    path, message = only_problem(data)
    assert path == "sources[0].mapping.stages[0].stage"
    assert message.startswith("a canonical stage key is lower case letters")


def test_qualified_and_entry_stages_must_be_mapped_open_stages() -> None:
    data = config()
    source(data)["mapping"]["qualified_stage"] = "Qualification"
    source(data)["mapping"]["conversion_entry_stage"] = "closed_won"
    assert problems(data) == [
        (
            "sources[0].mapping.qualified_stage",
            "qualified_stage 'Qualification' is not a mapped stage; expected one of the"
            " canonical stages: 'prospecting', 'qualification', 'demo', 'closed_won',"
            " 'closed_lost'; 'Qualification' is a CRM value: use its canonical key"
            " 'qualification'",
        ),
        (
            "sources[0].mapping.conversion_entry_stage",
            "conversion_entry_stage must be an open stage, not the closed stage 'closed_won'",
        ),
    ]


def test_default_entry_stage_demo_must_exist() -> None:
    data = config()
    source(data)["mapping"]["stages"].pop(2)
    path, message = only_problem(data)
    assert path == "sources[0].mapping.conversion_entry_stage"
    assert message.startswith("conversion_entry_stage 'demo' (the default) is not a mapped stage")


def test_stage_lookup_helpers() -> None:
    mapping = load(config()).sources[0].mapping
    assert mapping.stage_for("Closed Won").won is True  # type: ignore[union-attr]
    assert mapping.stage_for("Legacy Stage") is None
    assert mapping.stage_order("demo") == 3


def test_deal_type_mapping() -> None:
    data = config()
    source(data)["mapping"]["deal_types"] = {
        "values": {"New Customer": "new_business", "Renewal": "renewal"},
        "default": "other",
    }
    types = load(data).sources[0].mapping.deal_types
    assert types.map("New Customer") is DealType.NEW_BUSINESS
    assert types.map("Something") is DealType.OTHER
    assert types.map(None) is DealType.OTHER
    source(data)["mapping"]["deal_types"]["values"]["Up Sell"] = "upsel"
    path, message = only_problem(data)
    assert path == 'sources[0].mapping.deal_types.values["Up Sell"]'
    assert message == (
        "expected one of 'new_business', 'expansion', 'renewal', 'other', got 'upsel'"
    )


def test_numeric_crm_values_are_text() -> None:
    data = config()
    source(data)["mapping"]["stages"][0]["crm"] = 123456
    assert load(data).sources[0].mapping.stages[0].crm == "123456"


def test_quota_source_forms() -> None:
    data = config(quotas={"entries": [{"rep": "a@b.co", "period": "2026-Q3", "amount": 1}]})
    source(data)["mapping"]["quota_source"] = "config"
    assert load(data).sources[0].mapping.quota_source.kind == "config"
    source(data)["mapping"]["quota_source"] = {"csv": "q.csv"}
    data.pop("quotas")
    assert load(data).sources[0].mapping.quota_source.csv == Path("q.csv")
    source(data)["mapping"]["quota_source"] = "crn"
    assert only_problem(data) == (
        "sources[0].mapping.quota_source",
        "unknown quota source 'crn'; expected 'crm', 'config' or {csv: path}; did you mean 'crm'?",
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [("amount", "Close Date"), ("churn_date", "Account Churn Date"), ("amount", "Amount_")],
)
def test_salesforce_field_names_are_api_names(key: str, value: str) -> None:
    data = config()
    source(data)["mapping"][key] = value
    path, message = only_problem(data)
    assert path == f"sources[0].mapping.{key}"
    assert message.startswith("expected a Salesforce field API name such as 'CloseDate'")


def test_relationship_paths_are_allowed_for_churn_date_only() -> None:
    data = config()
    source(data)["mapping"]["churn_date"] = "Account.Churn_Date__c"
    assert load(data).sources[0].mapping.churn_date == "Account.Churn_Date__c"
    source(data)["mapping"]["amount"] = "Account.ARR__c"
    assert only_problem(data)[0] == "sources[0].mapping.amount"


# --- fiscal, currency, teams, quotas, pay ---------------------------------------------------


def test_fiscal_rules() -> None:
    data = config(fiscal={"year_start_month": 13, "timezone": "Europe/Pariss", "periods": []})
    assert problems(data) == [
        ("fiscal.year_start_month", "must be less than or equal to 12"),
        (
            "fiscal.timezone",
            "unknown timezone 'Europe/Pariss'; expected an IANA name such as 'Europe/Paris' or"
            " 'UTC'; did you mean 'Europe/Paris'?",
        ),
        ("fiscal.periods", "must not be empty"),
    ]
    data = config(fiscal={"periods": ["month", "month"], "snapshot_day": 31})
    assert problems(data) == [
        ("fiscal.periods", "each period kind may be listed once"),
        ("fiscal.snapshot_day", "must be less than or equal to 28"),
    ]


@pytest.mark.parametrize(
    ("start_month", "named_by", "label", "bounds"),
    [
        (1, "start", "2026", (dt.date(2026, 1, 1), dt.date(2026, 12, 31))),
        (1, "start", "2026-Q3", (dt.date(2026, 7, 1), dt.date(2026, 9, 30))),
        (1, "start", "2026-02", (dt.date(2026, 2, 1), dt.date(2026, 2, 28))),
        (2, "start", "2026", (dt.date(2026, 2, 1), dt.date(2027, 1, 31))),
        (2, "start", "2026-Q4", (dt.date(2026, 11, 1), dt.date(2027, 1, 31))),
        (2, "end", "2026", (dt.date(2025, 2, 1), dt.date(2026, 1, 31))),
        (10, "end", "2026-Q1", (dt.date(2025, 10, 1), dt.date(2025, 12, 31))),
        (10, "start", "2026-12", (dt.date(2026, 12, 1), dt.date(2026, 12, 31))),
    ],
)
def test_fiscal_period_bounds(
    start_month: int, named_by: str, label: str, bounds: tuple[dt.date, dt.date]
) -> None:
    fiscal = FiscalCalendar(year_start_month=start_month, year_named_by=named_by)
    assert fiscal.period_bounds(label) == bounds


def test_fiscal_timezone_object() -> None:
    assert str(FiscalCalendar(timezone="Europe/Paris").tz) == "Europe/Paris"


@pytest.mark.parametrize(
    ("currency", "expected"),
    [
        (
            {"reporting": "eur"},
            [
                (
                    "currency.reporting",
                    "expected a 3-letter ISO 4217 currency code in upper case, e.g. EUR; did you"
                    " mean 'EUR'?",
                )
            ],
        ),
        (
            {"reporting": "EURO"},
            [
                (
                    "currency.reporting",
                    "expected a 3-letter ISO 4217 currency code in upper case, e.g. EUR",
                )
            ],
        ),
        (
            {"reporting": "EUR", "conversion": "static"},
            [("currency.rates", "conversion 'static' needs rates, e.g. {USD: 1.08}")],
        ),
        (
            {"reporting": "EUR", "rates": {"USD": 1.1}},
            [("currency.rates", "rates are used only with conversion: static; remove them")],
        ),
        (
            {"reporting": "EUR", "conversion": "static", "rates": {"USD": 0, "usd": 1}},
            [
                ("currency.rates.USD", "must be greater than 0"),
                (
                    "currency.rates.usd",
                    "expected a 3-letter ISO 4217 currency code in upper case, e.g. EUR; did you"
                    " mean 'USD'?",
                ),
            ],
        ),
        (
            {"reporting": "EUR", "conversion": "static", "rates": {"EUR": 2}},
            [("currency.rates.EUR", "the reporting currency's own rate must be 1")],
        ),
    ],
)
def test_currency_rules(currency: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert problems(config(currency=currency)) == expected


def test_static_rates_are_decimals() -> None:
    cfg = load(
        config(currency={"reporting": "EUR", "conversion": "static", "rates": {"USD": 1.08}})
    )
    assert cfg.currency.rates == {"USD": Decimal("1.08")}


def test_teams() -> None:
    cfg = load(
        config(teams={"France Nord": ["Alice.Martin@Example.com"], "Sud": ["b@example.com"]})
    )
    assert cfg.teams == {"France Nord": ["alice.martin@example.com"], "Sud": ["b@example.com"]}
    assert cfg.team_of("ALICE.martin@example.com") == "France Nord"
    assert cfg.team_of("nobody@example.com") is None
    data = config(teams={"A": ["x@example.com", "x@example.com"], "B": ["X@example.com"]})
    assert problems(data) == [
        ("teams.A[1]", "x@example.com is listed again in 'A'; a rep belongs to one team"),
        ("teams.B[0]", "x@example.com is listed in 'A' and 'B'; a rep belongs to one team"),
    ]
    assert only_problem(config(teams={"A": ["bad"]})) == (
        "teams.A[0]",
        "expected an email address such as alice.martin@example.com",
    )
    data = config(teams={"A": ["x@example.com"], "B": ["X@example.com"]})
    assert only_problem(data) == (
        "teams.B[0]",
        "x@example.com is listed in 'A' and 'B'; a rep belongs to one team",
    )


def test_teams_and_team_field_are_exclusive() -> None:
    data = config(teams={"A": ["x@example.com"]})
    source(data)["mapping"]["team_field"] = "Department"
    assert only_problem(data) == (
        "sources[0].mapping.team_field",
        "teams are listed in the config and also read from team_field; keep one of them",
    )


def test_quotas() -> None:
    entries = [
        {"rep": "a@example.com", "period": "2026-Q3", "amount": 120000},
        {"rep": "a@example.com", "period": 2026, "amount": 480000},
        {"rep": "b@example.com", "start": "2026-07-15", "end": "2026-09-30", "amount": 5.5},
    ]
    data = config(quotas={"entries": entries, "ramp": {"prorate": True}})
    source(data)["mapping"]["quota_source"] = "config"
    cfg = load(data)
    fiscal = cfg.fiscal
    assert [e.bounds(fiscal) for e in cfg.quotas.entries] == [
        (dt.date(2026, 7, 1), dt.date(2026, 9, 30)),
        (dt.date(2026, 1, 1), dt.date(2026, 12, 31)),
        (dt.date(2026, 7, 15), dt.date(2026, 9, 30)),
    ]
    assert cfg.quotas.entries[2].amount == Decimal("5.5")
    assert cfg.quotas.ramp.prorate is True


def test_quota_entry_rules() -> None:
    entries = [
        {"rep": "a@example.com", "period": "2026-Q5", "amount": 1},
        {"rep": "a@example.com", "period": dt.date(2026, 7, 1), "amount": 1},
        {"rep": "a@example.com", "period": "2026-Q3", "start": dt.date(2026, 7, 1), "amount": 1},
        {"rep": "a@example.com", "start": dt.date(2026, 7, 1), "amount": 1},
        {"rep": "a@example.com", "start": dt.date(2026, 7, 1), "end": "2026-06-30", "amount": 1},
        {"rep": "a@example.com", "period": "2026-07", "amount": -1},
    ]
    data = config(quotas={"entries": entries})
    source(data)["mapping"]["quota_source"] = "config"
    assert problems(data) == [
        (
            "quotas.entries[0].period",
            "expected a period such as 2026 (fiscal year), 2026-Q3 (fiscal quarter) or 2026-07"
            " (month)",
        ),
        (
            "quotas.entries[1].period",
            "a period is written 2026 (fiscal year), 2026-Q3 (fiscal quarter) or 2026-07 (month);"
            " for explicit dates use start and end",
        ),
        ("quotas.entries[2]", "give either period or start and end, not both"),
        ("quotas.entries[3]", "give period (e.g. 2026-Q3) or both start and end dates"),
        ("quotas.entries[4].end", "end is before start (end is the last day)"),
        ("quotas.entries[5].amount", "must be greater than or equal to 0"),
    ]


def test_duplicate_quotas_and_unused_or_missing_quotas() -> None:
    entries = [
        {"rep": "a@example.com", "period": "2026-Q3", "amount": 1},
        {"rep": "A@example.com", "start": "2026-07-01", "end": "2026-09-30", "amount": 2},
    ]
    data = config(quotas={"entries": entries})
    assert problems(data) == [
        ("quotas", "the quotas section is unused: no source has quota_source: config"),
        (
            "quotas.entries[1]",
            "a@example.com already has a quota for 2026-07-01..2026-09-30 (entries[0])",
        ),
    ]
    data = config()
    source(data)["mapping"]["quota_source"] = "config"
    assert only_problem(data) == (
        "sources[0].mapping.quota_source",
        "quota_source is 'config' but the quotas section has no entries and no csv",
    )


def test_variable_pay() -> None:
    cfg = load(config(variable_pay={"target": 30000, "targets": {"Alice@Example.com": 35000}}))
    pay = cfg.variable_pay
    assert pay is not None
    assert (pay.curve.accelerator_from, pay.curve.accelerator, pay.curve.cap) == (
        Decimal("1.0"),
        Decimal("1.5"),
        Decimal("2.0"),
    )
    assert pay.target_for("alice@example.com") == Decimal("35000")
    assert pay.target_for("bob@example.com") == Decimal("30000")
    assert only_problem(config(variable_pay={"targets": {}})) == (
        "variable_pay",
        "give a default target, per-rep targets, or both",
    )
    assert only_problem(config(variable_pay={"target": 1, "curve": {"cap": 0.5}})) == (
        "variable_pay.curve.cap",
        "cap must be at least accelerator_from (the linear part's end)",
    )


# --- KPI fields -----------------------------------------------------------------------------

SCORECARD = {"object": "KPI_Scorecard__c", "external_id": "Scorecard_Key__c"}


def test_kpi_fields_load_with_scorecard_columns() -> None:
    cfg = load(
        config(
            kpi_fields={
                "scorecard": {
                    **SCORECARD,
                    "rep_field": "Owner__c",
                    "fields": {"win_rate": "Win_Rate__c"},
                },
                "deal": {"fields": {"days_in_stage": "KPI_Days_In_Stage__c"}},
                "rep": {"period": "month", "fields": {"quota_attainment": "KPI_Attainment__c"}},
            }
        )
    )
    fields = cfg.kpi_fields_for(cfg.sources[0])
    assert fields is not None and fields.count() == 3
    assert fields.scorecard is not None
    assert fields.scorecard.columns("salesforce") == {
        "rep_field": "Owner__c",
        "team_field": "Team__c",
        "period_type_field": "Period_Type__c",
        "period_start_field": "Period_Start__c",
        "period_end_field": "Period_End__c",
        "computed_at_field": "Computed_At__c",
    }
    assert fields.scorecard.columns("hubspot")["team_field"] == "kpi_team"


def test_unknown_kpi_keys_list_the_valid_ones() -> None:
    data = config(
        kpi_fields={
            "scorecard": {
                **SCORECARD,
                "fields": {"win_rat": "Win_Rate__c", "days_in_stage": "D__c"},
            },
            "deal": {"fields": {"quota": "Q__c"}},
        }
    )
    assert problems(data) == [
        (
            "kpi_fields.scorecard.fields.win_rat",
            "unknown KPI key 'win_rat' (did you mean 'win_rate'?); valid scorecard KPI keys: "
            + ", ".join(SCORECARD_KPIS),
        ),
        (
            "kpi_fields.scorecard.fields.days_in_stage",
            "'days_in_stage' is not a scorecard KPI; it belongs under kpi_fields.deal",
        ),
        (
            "kpi_fields.deal.fields.quota",
            "'quota' is not a deal KPI; it belongs under kpi_fields.scorecard or .rep",
        ),
    ]


def test_salesforce_kpi_fields_must_be_custom() -> None:
    data = config(
        kpi_fields={
            "scorecard": {
                "object": "Scorecard",
                "external_id": "Key__c",
                "team_field": "Team",
                "fields": {"win_rate": "Amount", "quota": "Key__c"},
            },
            "deal": {"fields": {"deal_age_days": "Age__c", "days_in_stage": "AGE__c"}},
        }
    )
    custom_field = (
        "expected a Salesforce custom field API name ending in '__c', e.g. 'KPI_Win_Rate__c';"
        " the worker writes only custom fields, never standard ones"
    )
    assert problems(data) == [
        (
            "kpi_fields.scorecard.object",
            "expected a Salesforce custom object API name ending in '__c', e.g."
            " 'KPI_Scorecard__c'; the worker writes only custom fields, never standard ones",
        ),
        ("kpi_fields.scorecard.team_field", custom_field),
        ("kpi_fields.scorecard.fields.win_rate", custom_field),
        (
            "kpi_fields.scorecard.fields.quota",
            "field 'Key__c' is already a key column of the scorecard",
        ),
        (
            "kpi_fields.deal.fields.days_in_stage",
            "field 'AGE__c' already receives 'deal_age_days'; one KPI per field",
        ),
    ]


def test_hubspot_kpi_fields() -> None:
    data = config(
        kpi_fields={
            "scorecard": {
                "object": "p_kpi_scorecard",
                "external_id": "kpi_key",
                "fields": {"win_rate": "Win_Rate__c"},
            },
            "rep": {"fields": {"quota": "kpi_quota"}},
        }
    )
    data["sources"] = [copy.deepcopy(HUBSPOT)]
    assert problems(data) == [
        (
            "kpi_fields.scorecard.fields.win_rate",
            "expected a HubSpot property internal name (lower case letters, digits and '_'), e.g."
            " 'kpi_win_rate'",
        ),
        (
            "kpi_fields.rep",
            "HubSpot owners have no custom properties; write per-rep values to the scorecard"
            " object or deal.owner_quota_attainment",
        ),
    ]


def test_mixed_crms_need_per_source_kpi_fields() -> None:
    data = config(kpi_fields={"deal": {"fields": {"days_in_stage": "KPI_Days__c"}}})
    data["sources"].append(copy.deepcopy(HUBSPOT))
    path, message = problems(data)[0]
    assert (path, message) == (
        "kpi_fields",
        "kpi_fields names fields of one CRM but sources of both types use it; give each source"
        " its own kpi_fields",
    )
    data["sources"][1]["kpi_fields"] = {"deal": {"fields": {"days_in_stage": "kpi_days"}}}
    cfg = load(data)
    assert cfg.kpi_fields_for(cfg.sources[1]).deal.fields == {"days_in_stage": "kpi_days"}  # type: ignore[union-attr]
    data["sources"][1]["kpi_fields"] = {"deal": {"fields": {"days_in_stage": "KPI_Days__c"}}}
    assert only_problem(data)[0] == "sources[1].kpi_fields.deal.fields.days_in_stage"


def test_kpi_target_period_must_be_computed() -> None:
    data = config(
        fiscal={"periods": ["month"]},
        kpi_fields={"deal": {"fields": {"owner_quota_attainment": "A__c"}}},
    )
    assert only_problem(data) == (
        "kpi_fields.deal.period",
        "period 'quarter' is not computed; fiscal.periods lists month",
    )


# --- write, store, schedule, runtime --------------------------------------------------------


def test_write_settings() -> None:
    assert problems(config(write={"batch_size": 500, "language": "de"})) == [
        ("write.batch_size", "must be less than or equal to 200"),
        ("write.language", "expected one of 'en', 'fr', got 'de'"),
    ]
    write = WriteSettings(batch_size=150)
    assert (write.batch_size_for("salesforce"), write.batch_size_for("hubspot")) == (150, 100)


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        (
            {"url": "postgres://db/kpi"},
            "expected an SQLAlchemy URL: sqlite:///path/to/file.sqlite or"
            " postgresql://user@host/db (use postgresql://)",
        ),
        (
            {"url": "postgresql://kpi:hunter2-secret@db/kpi"},
            "a password never goes in the file: put the whole URL in an environment variable and"
            " name it with url_env",
        ),
        ({"url": "sqlite:///x.sqlite", "url_env": "X"}, "give url or url_env, not both"),
    ],
)
def test_store_rules(store: dict[str, str], expected: str) -> None:
    path, message = only_problem(config(store=store))
    assert path.startswith("store") and message == expected


def test_store_urls() -> None:
    assert StoreSettings().describe() == "sqlite (crm-kpi.sqlite)"
    assert StoreSettings().backend == "sqlite"
    pg = StoreSettings(url="postgresql+psycopg://kpi@db.internal:5432/kpi")
    assert (pg.backend, pg.describe()) == ("postgresql", "postgresql (db.internal:5432/kpi)")
    from_env = StoreSettings(url_env="STORE_URL")
    assert (from_env.backend, from_env.describe()) == (None, "URL from $STORE_URL")
    url = "postgresql://kpi:hunter2-secret@db/kpi"
    resolved = from_env.resolve_url({"STORE_URL": url})
    assert resolved.get_secret_value() == url and "hunter2" not in repr(resolved)
    with pytest.raises(SecretError, match="STORE_URL does not hold an SQLAlchemy URL"):
        from_env.resolve_url({"STORE_URL": "hunter2-secret"})


def test_schedule_rules() -> None:
    cfg = load(config(schedule={"cron": "0  6 * * 1-5", "timezone": "Europe/Paris"}))
    assert cfg.schedule is not None and cfg.schedule.cron == "0 6 * * 1-5"
    assert cfg.schedule.describe("UTC") == "cron '0 6 * * 1-5' (Europe/Paris)"
    trigger = cfg.schedule.trigger("UTC")
    after = dt.datetime(2026, 6, 6, 12, tzinfo=dt.UTC)  # a Saturday
    assert trigger.get_next_fire_time(None, after) == dt.datetime(2026, 6, 8, 4, tzinfo=dt.UTC)
    every = load(config(schedule={"every_minutes": 30})).schedule
    assert every is not None and every.describe("UTC") == "every 30 minutes"
    assert every.trigger("UTC").interval == dt.timedelta(minutes=30)
    quick = load(config(schedule={"every_seconds": 2}, write={"verify_every": "10s"}))
    assert quick.schedule is not None and quick.schedule.describe("UTC") == "every 2 seconds"
    assert quick.schedule.trigger("UTC").interval == dt.timedelta(seconds=2)
    assert quick.write.verify_every == dt.timedelta(seconds=10)
    assert only_problem(config(schedule={"every_seconds": 2, "every_minutes": 1}))[0] == "schedule"
    assert problems(config(schedule={"cron": "0 25 * * *"})) == [
        (
            "schedule.cron",
            "invalid cron expression: Error validating expression '25': the last value (25) is"
            " higher than the maximum value (23); expected 5 fields 'minute hour day-of-month"
            " month day-of-week', e.g. '0 6 * * 1-5' (06:00 Monday to Friday)",
        )
    ]
    assert only_problem(config(schedule={"cron": "0 6 * *"}))[1].startswith(
        "invalid cron expression: expected 5 fields, got 4"
    )
    assert only_problem(config(schedule={})) == (
        "schedule",
        "give either cron (e.g. '0 6 * * *') or every_minutes (or, for tests, every_seconds),"
        " exactly one",
    )
    assert only_problem(config(schedule={"every_minutes": 5, "timezone": "UTC"})) == (
        "schedule.timezone",
        "timezone applies only to cron schedules",
    )


@pytest.mark.parametrize(
    ("day_of_week", "fires_on"),
    [
        ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("0", ["Sun"]),
        ("7", ["Sun"]),
        ("*/2", ["Sun", "Tue", "Thu", "Sat"]),
        ("sat,sun", ["Sat", "Sun"]),
        ("fri-mon", ["Fri", "Sat", "Sun", "Mon"]),
        ("*", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
    ],
)
def test_cron_day_of_week_follows_crontab(day_of_week: str, fires_on: list[str]) -> None:
    # APScheduler 3 counts days from Monday = 0; crontab from Sunday = 0.
    trigger = cron_trigger(f"0 6 * * {day_of_week}", "Europe/Paris")
    start = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)  # a Monday
    fired, previous, now = set(), None, start
    for _ in range(7):
        now = trigger.get_next_fire_time(previous, now)
        fired.add(now.strftime("%a"))
        previous = now
        now = now + dt.timedelta(minutes=1)
        if now - start > dt.timedelta(days=7):
            break
    assert sorted(fired) == sorted(fires_on)


def test_runtime_settings() -> None:
    cfg = load(config(runtime={"as_of": "2026-06-30T23:59:59+02:00", "log_level": "debug"}))
    assert cfg.runtime.as_of == dt.datetime(2026, 6, 30, 21, 59, 59, tzinfo=dt.UTC)
    assert cfg.runtime.log_level == "DEBUG"
    assert only_problem(config(runtime={"as_of": "2026-06-30T23:59:59"})) == (
        "runtime.as_of",
        "expected a date-time with a timezone offset, e.g. 2026-06-30T23:59:59+02:00",
    )


def test_version_must_be_1() -> None:
    assert only_problem(config(version=2)) == ("version", "expected one of '1', got a number")


# --- helpers for the rest of the worker -----------------------------------------------------


def test_with_endpoints_and_replace_source(tmp_path: Path) -> None:
    data = config()
    source(data)["auth"]["password"] = {"env": "SF_PASSWORD", "default": "demo"}
    source(data)["login_url"] = "https://127.0.0.1:0"
    cfg = load(data)
    sf = cfg.sources[0]
    assert isinstance(sf, SalesforceSource)
    moved = sf.with_endpoints(
        login_url="https://127.0.0.1:8443",
        instance_url="https://127.0.0.1:8443",
        ca_bundle=tmp_path / "ca.pem",
    )
    assert (moved.login_url, moved.instance_url, moved.ca_bundle) == (
        "https://127.0.0.1:8443",
        "https://127.0.0.1:8443",
        tmp_path / "ca.pem",
    )
    assert moved.auth.password.resolve({}).get_secret_value() == "demo"  # type: ignore[union-attr]
    replaced = cfg.replace_source(moved)
    assert replaced.source("prod").login_url == "https://127.0.0.1:8443"  # type: ignore[union-attr]
    assert cfg.source("prod").login_url == "https://127.0.0.1:0"  # type: ignore[union-attr]
    with pytest.raises(ValidationError):
        sf.with_endpoints(login_url="https://login.example.com")  # default no longer loopback
    with pytest.raises(KeyError):
        cfg.source("nope")
