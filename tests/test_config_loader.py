"""The YAML loader: every problem at once, with file, line, column and key path."""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from crm_kpi_worker.connectors.salesforce.config import SalesforceSource
from crm_kpi_worker.sync.config import FiscalCalendar
from crm_kpi_worker.sync.config_loader import (
    ConfigError,
    ConfigFileError,
    ConfigProblem,
    format_path,
    load_config,
    load_config_text,
    read_quota_csv,
    summarize,
)

DATA = Path(__file__).parent / "data" / "config"
MINIMAL = (DATA / "good-minimal.yaml").read_text(encoding="utf-8")


def problems_of(text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, file="c.yaml")
    return list(exc.value.problems)


def where(problems: list[ConfigProblem]) -> list[tuple[int, int, str]]:
    return [(p.line, p.column, p.path) for p in problems]


def test_a_good_file_loads() -> None:
    config = load_config(DATA / "good-minimal.yaml")
    assert [s.name for s in config.sources] == ["prod"]
    assert config.currency.reporting == "EUR"


def test_every_mistake_is_reported_with_its_line() -> None:
    path = DATA / "many-mistakes.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    error = exc.value
    assert error.file == str(path)
    assert [(p.file, p.line, p.column, p.path) for p in error.problems] == [
        (str(path), 9, 5, "sources[0].page_size"),
        (str(path), 11, 7, "sources[0].mapping.amout"),
        (str(path), 16, 60, "sources[0].mapping.stages[3].won"),
        (str(path), 20, 5, "sources[1].name"),
        (str(path), 21, 5, "sources[1].auth.private_key"),
        (str(path), 34, 3, "fiscal.timezone"),
        (str(path), 37, 3, "currency.reporting"),
        (str(path), 45, 7, "kpi_fields.scorecard.fields.win_rat"),
        (str(path), 48, 3, "schedule.cron"),
    ]
    messages = [p.message for p in error.problems]
    assert messages[0] == "expected a whole number, got text"
    assert messages[1] == "unknown key 'amout'; did you mean 'amount'?"
    assert messages[2].startswith("a stage cannot be both won and lost")
    assert messages[3].startswith("duplicate source name 'prod'")
    assert messages[4] == (
        "missing required key 'private_key' (the PEM private key, usually"
        " {file: /run/secrets/sf-jwt.key})"
    )
    assert messages[5].endswith("did you mean 'Europe/Paris'?")
    assert messages[6] == "expected a 3-letter ISO 4217 currency code in upper case, e.g. EUR"
    assert messages[7].startswith("unknown KPI key 'win_rat' (did you mean 'win_rate'?)")
    assert messages[8].startswith("invalid cron expression:")
    assert str(error.problems[1]) == (
        f"{path}:11:7: sources[0].mapping.amout: unknown key 'amout'; did you mean 'amount'?"
    )
    assert str(error).splitlines()[0] == f"{path}: 9 problems"
    assert str(error).splitlines()[1:] == [str(p) for p in error.problems]


def test_yaml_syntax_errors_have_file_line_and_column() -> None:
    path = DATA / "syntax-error.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    (problem,) = exc.value.problems
    assert (problem.file, problem.line, problem.column, problem.path) == (str(path), 6, 24, "")
    assert problem.message == (
        "YAML syntax error: expected ',' or '}', but got ':' (while parsing a flow mapping at"
        " line 5)"
    )
    assert str(problem).startswith(f"{path}:6:24: YAML syntax error:")


def test_tabs_get_a_hint() -> None:
    (problem,) = problems_of("sources:\n\t- type: salesforce\n")
    assert (problem.line, problem.column) == (2, 1)
    assert problem.message.endswith("; YAML indents with spaces, never tabs")


def test_duplicate_keys_are_errors() -> None:
    text = MINIMAL + "currency:\n  reporting: USD\n"
    problems = problems_of(text)
    assert [(p.line, p.message) for p in problems] == [
        (
            18,
            "duplicate key 'currency': it is already set at line 16; YAML would keep only the"
            " last one",
        )
    ]


def test_interpolation_is_refused_everywhere() -> None:
    text = MINIMAL.replace("name: prod", "name: ${SOURCE_NAME}").replace(
        "{env: SF_PASSWORD}", '"${SF_PASSWORD}"'
    )
    problems = problems_of(text)
    assert where(problems) == [(4, 5, "sources[0].name"), (8, 7, "sources[0].auth.password")]
    assert problems[0].message.startswith("'${...}' interpolation is not supported")
    assert problems[1].message == (
        "'${...}' interpolation is not supported; write {env: SF_PASSWORD} to read the"
        " environment variable"
    )
    text = MINIMAL + "teams:\n  ${TEAM}: [a@example.com]\n"
    assert problems_of(text)[0].message.startswith("'${...}' interpolation is not supported")


def test_missing_keys_point_at_the_nearest_parent() -> None:
    text = MINIMAL.replace("  reporting: EUR\n", "  conversion: crm\n")
    problems = problems_of(text)
    assert [(p.line, p.column, p.path, p.message) for p in problems] == [
        (
            16,
            1,
            "currency.reporting",
            "missing required key 'reporting' (currency of every KPI, quota and target, e.g. EUR)",
        )
    ]
    problems = problems_of("currency: {reporting: EUR}\n")
    assert where(problems) == [(1, 1, "sources")]


def test_only_true_and_false_are_booleans() -> None:
    text = MINIMAL.replace("{crm: Open,", "{crm: No,").replace("{crm: Won,", "{crm: on,")
    config = load_config_text(text)
    assert [s.crm for s in config.sources[0].mapping.stages] == ["No", "on", "Lost"]
    assert load_config_text(MINIMAL + "write: {dry_run: True}\n").write.dry_run is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty; expected a mapping of sections (sources:, currency:, ...)"),
        (
            "# only a comment\n",
            "the file is empty; expected a mapping of sections (sources:, currency:, ...)",
        ),
        (
            "- a\n- b\n",
            "the file is a list, not a mapping; expected a mapping of sections (sources:,"
            " currency:, ...)",
        ),
        (
            "stages: []\nqualified_stage: x\n",
            "this is a mapping file (the shape of sources[N].mapping), not a config; paste it"
            " under a source's mapping key (`crm-kpi config show-example` prints a whole config)",
        ),
    ],
)
def test_file_level_problems(text: str, message: str) -> None:
    (problem,) = problems_of(text)
    assert (problem.line, problem.path, problem.message) == (1, "", message)


def test_several_documents_are_refused() -> None:
    (problem,) = problems_of(MINIMAL + "---\nother: 1\n")
    assert problem.line == 18
    assert "expected a single document" in problem.message


def test_unsafe_tags_are_refused() -> None:
    (problem,) = problems_of("x: !!python/object/apply:os.system ['true']\n")
    assert problem.line == 1 and "could not determine a constructor" in problem.message


def test_alias_bombs_are_refused() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]")
    (problem,) = problems_of("\n".join(lines) + "\n")
    assert problem.message.startswith("the file expands to more than 200000 values")


ANCHORS = """\
sources:
  - type: salesforce
    name: eu
    auth: &auth
      method: password
      username: {env: SF_USERNAME}
      password: {env: SF_PASSWORD}
    mapping: &mapping
      stages:
        - {crm: Open, stage: open, order: 1}
        - {crm: Won, stage: won, order: 2, won: true}
        - {crm: Lost, stage: lost, order: 3, lost: true}
      qualified_stage: open
      conversion_entry_stage: open
  - type: salesforce
    name: us
    auth:
      <<: *auth
      password: {env: SF_US_PASSWORD}
    mapping: *mapping
currency: {reporting: EUR}
"""


def test_anchors_and_merge_keys_work() -> None:
    config = load_config_text(ANCHORS)
    eu, us = config.sources
    assert us.auth.password.env == "SF_US_PASSWORD"  # type: ignore[union-attr]
    assert us.auth.username == eu.auth.username  # type: ignore[union-attr]
    assert us.mapping == eu.mapping
    problems = problems_of(
        ANCHORS.replace("      password: {env: SF_US", "      pasword: {env: SF_US")
    )
    assert where(problems) == [(19, 7, "sources[1].auth.pasword")]
    assert problems[0].message == "unknown key 'pasword'; did you mean 'password'?"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as exc:
        load_config(tmp_path / "missing.yaml")
    assert exc.value.problems[0].message == "cannot read the file: No such file or directory"
    with pytest.raises(ConfigFileError):
        load_config(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"sources: []\n# caf\xe9\n")
    with pytest.raises(ConfigError) as error:
        load_config(latin1)
    assert not isinstance(error.value, ConfigFileError)
    assert [(p.line, p.message) for p in error.value.problems] == [
        (2, "the file is not UTF-8 text")
    ]


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path).currency.reporting == "EUR"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    shutil.copy(DATA / "good-secrets.yaml", folder / "c.yaml")
    shutil.copy(DATA / "quotas.csv", folder / "quotas.csv")
    config = load_config(folder / "c.yaml")
    source = config.sources[0]
    assert isinstance(source, SalesforceSource)
    assert source.ca_bundle == folder / "certs" / "proxy-ca.pem"
    assert source.mapping.quota_source.csv == folder / "quotas.csv"
    assert source.auth.client_secret.file == folder / "secrets" / "client-secret.txt"  # type: ignore[union-attr]


def test_format_path() -> None:
    assert format_path(["sources", 0, "mapping", "stages", 3, "won"]) == (
        "sources[0].mapping.stages[3].won"
    )
    assert format_path(["teams", "France Nord", 1]) == 'teams["France Nord"][1]'
    assert format_path([]) == ""


# --- --check-secrets ------------------------------------------------------------------------


SECRET_VALUES = ("client-secret-value", "user@example.com", "pa55word-value", "token-value")


@pytest.fixture
def secrets_config(tmp_path: Path) -> Path:
    shutil.copy(DATA / "good-secrets.yaml", tmp_path / "c.yaml")
    shutil.copy(DATA / "quotas.csv", tmp_path / "quotas.csv")
    return tmp_path / "c.yaml"


def test_validation_never_reads_secrets(secrets_config: Path) -> None:
    config = load_config(secrets_config, environ={})
    assert len(config.sources) == 2


def test_check_secrets_reports_each_missing_one(secrets_config: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(secrets_config, check_secrets=True, environ={})
    folder = secrets_config.parent
    assert [(p.line, p.column, p.path, p.message) for p in exc.value.problems] == [
        (
            9,
            7,
            "sources[0].auth.client_secret",
            f"secret file {folder}/secrets/client-secret.txt does not exist",
        ),
        (10, 7, "sources[0].auth.username", "environment variable SF_USERNAME is not set"),
        (11, 7, "sources[0].auth.password", "environment variable SF_PASSWORD is not set"),
        (
            12,
            7,
            "sources[0].auth.security_token",
            "environment variable SF_TOKEN_FILE (path of a secret file) is not set",
        ),
        (13, 5, "sources[0].ca_bundle", f"CA bundle {folder}/certs/proxy-ca.pem does not exist"),
        (26, 7, "sources[1].auth.token", "environment variable HS_TOKEN is not set"),
        (42, 3, "store.url_env", "environment variable STORE_URL is not set"),
    ]


def test_check_secrets_passes_when_everything_is_there(secrets_config: Path) -> None:
    folder = secrets_config.parent
    (folder / "secrets").mkdir()
    (folder / "secrets" / "client-secret.txt").write_text("client-secret-value\n")
    (folder / "certs").mkdir()
    (folder / "certs" / "proxy-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (folder / "token").write_text("token-value")
    environ = {
        "SF_USERNAME": "user@example.com",
        "SF_PASSWORD": "pa55word-value",
        "SF_TOKEN_FILE": str(folder / "token"),
        "HS_TOKEN": "token-value",
        "STORE_URL": "postgresql://kpi:pa55word-value@db/kpi",
    }
    config = load_config(secrets_config, check_secrets=True, environ=environ)
    auth = config.sources[0].auth
    assert auth.client_secret.resolve().get_secret_value() == "client-secret-value"  # type: ignore[union-attr]
    text = summarize(config) + repr(config) + str(config)
    for secret in SECRET_VALUES:
        assert secret not in text


def test_check_secrets_reports_a_bad_quota_csv(secrets_config: Path) -> None:
    shutil.copy(DATA / "bad-quotas.csv", secrets_config.parent / "quotas.csv")
    env = {"SF_USERNAME": "u", "SF_PASSWORD": "p", "HS_TOKEN": "t", "STORE_URL": "sqlite://"}
    with pytest.raises(ConfigError) as exc:
        load_config(secrets_config, check_secrets=True, environ=env)
    csv_file = str(secrets_config.parent / "quotas.csv")
    assert [(p.file, p.line) for p in exc.value.problems if p.file == csv_file] == [
        (csv_file, 2),
        (csv_file, 3),
        (csv_file, 4),
        (csv_file, 6),
        (csv_file, 7),
    ]


def test_check_secrets_wants_a_pem_jwt_key(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    text = MINIMAL.replace(
        "method: password",
        f"method: jwt\n      client_id: abc\n      private_key: {{file: {key}}}",
    ).replace("      password: {env: SF_PASSWORD}\n", "")
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, check_secrets=True, environ={"SF_USERNAME": "u"})
    assert [(p.path, p.message) for p in exc.value.problems] == [
        (
            "sources[0].auth.private_key",
            f"file {key} does not hold a PEM private key (-----BEGIN ...)",
        )
    ]
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    load_config_text(text, check_secrets=True, environ={"SF_USERNAME": "u"})


def test_check_secrets_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SF_USERNAME", "u")
    monkeypatch.setenv("SF_PASSWORD", "p")
    load_config_text(MINIMAL, check_secrets=True)
    monkeypatch.delenv("SF_PASSWORD")
    with pytest.raises(ConfigError, match="SF_PASSWORD is not set"):
        load_config_text(MINIMAL, check_secrets=True)


def test_secrets_never_reach_problems() -> None:
    text = MINIMAL.replace("{env: SF_PASSWORD}", "pa55word-value").replace(
        "{env: SF_USERNAME}", "{value: user@example.com, extra: token-value}"
    )
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    rendered = str(exc.value) + repr(exc.value.problems)
    assert "pa55word-value" not in rendered and "token-value" not in rendered
    assert len(exc.value.problems) == 2


# --- quota CSV ------------------------------------------------------------------------------


def test_read_quota_csv() -> None:
    entries = read_quota_csv(DATA / "quotas.csv", FiscalCalendar())
    assert [(e.rep, e.period, e.amount) for e in entries] == [
        ("alice.martin@example.com", "2026-Q3", Decimal("120000")),
        ("bruno.lefevre@example.com", "2026", Decimal("480000")),
        ("chloe.dubois@example.com", None, Decimal("60000.50")),
    ]


def test_bad_quota_csv_reports_every_row() -> None:
    path = DATA / "bad-quotas.csv"
    with pytest.raises(ConfigError) as exc:
        read_quota_csv(path, FiscalCalendar())
    assert [(p.line, p.column, p.path, p.message) for p in exc.value.problems] == [
        (
            2,
            2,
            "period",
            "expected a period such as 2026 (fiscal year), 2026-Q3 (fiscal quarter) or 2026-07"
            " (month)",
        ),
        (3, 1, "rep", "expected an email address such as alice.martin@example.com"),
        (4, 5, "amount", "must be greater than or equal to 0"),
        (
            6,
            1,
            "",
            "alice.martin@example.com already has a quota for 2026-07-01..2026-09-30 (line 5)",
        ),
        (7, 1, "", "expected 5 columns, found 2"),
    ]


def test_quota_csv_header_problems(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("email,period,amout\n")
    with pytest.raises(ConfigError) as exc:
        read_quota_csv(path, FiscalCalendar())
    assert [(p.line, p.column, p.message) for p in exc.value.problems] == [
        (1, 1, "missing column 'amount'"),
        (1, 1, "missing column 'rep'"),
        (1, 1, "unknown column 'email'; expected rep, period, start, end, amount"),
        (1, 3, "unknown column 'amout'; expected rep, period, start, end, amount"),
    ]


# --- summary --------------------------------------------------------------------------------


def test_summary_of_the_secrets_fixture(secrets_config: Path) -> None:
    summary = summarize(load_config(secrets_config))
    assert summary.splitlines() == [
        "sources: 2",
        "  - sf: salesforce, auth oauth_password, username from $SF_USERNAME, domain acme.my,"
        " API v59.0",
        "    3 stage values -> 3 stages (qualified: open, conversion from: open), amount is ARR,"
        f" quotas from csv {secrets_config.parent / 'quotas.csv'}, demos not mapped",
        "  - hs: hubspot, auth private_app, base_url https://api.hubapi.com",
        "    3 stage values -> 3 stages (qualified: open, conversion from: open), amount is ARR,"
        " quotas from crm, demos not mapped",
        "reporting currency: USD (conversion: static, 3 static rates)",
        "fiscal year starts in January, timezone UTC, periods month, quarter, year",
        "teams: none",
        "quotas in config: 0",
        "KPI fields: sf: 1, scorecard KPI_Scorecard__c; hs: 1",
        "schedule: none (runs once per command)",
        "store: URL from $STORE_URL",
        "write: batches of up to 200, dry run off, language en",
    ]


def test_environment_is_untouched_by_loading() -> None:
    before = dict(os.environ)
    load_config(DATA / "good-minimal.yaml")
    assert dict(os.environ) == before
