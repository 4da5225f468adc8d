"""Tenants (sync/scale): a folder of configs, each validated on its own; each tenant's secrets
its own; each tenant's rows apart in PostgreSQL (its schema and role) or in its SQLite file."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_unattended import CLI

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sync.config import SecretError
from crm_kpi_worker.sync.scale.runner import SourceRunner
from crm_kpi_worker.sync.scale.stores import Deployment
from crm_kpi_worker.sync.scale.tenants import (
    Tenant,
    TenantEnviron,
    TenantFiles,
    load_tenants,
    tenant_name_problem,
)
from crm_kpi_worker.sync.store import StoredPage

HUBSPOT = path_of("demo-hubspot.yaml").read_text(encoding="utf-8")


def _hubspot_config(token: str = "{env: HUBSPOT_TOKEN}", base: str = "https://127.0.0.1:9") -> str:  # noqa: S107
    """The HubSpot demo config with its token from ``token`` (no default: a real secret)."""
    text = HUBSPOT.replace(
        "token: {env: CRM_KPI_HUBSPOT_TOKEN, default: pat-sandbox-demo}", f"token: {token}"
    )
    text = text.replace("store:\n  url: sqlite:///crm-kpi-demo-hubspot.sqlite\n", "")
    assert "store:" not in text
    return text.replace("base_url: https://127.0.0.1:0", f"base_url: {base}")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    configs = tmp_path / "tenants"
    configs.mkdir()
    (configs / "acme.yaml").write_text(_hubspot_config(), encoding="utf-8")
    (configs / "globex.yml").write_text(_hubspot_config(), encoding="utf-8")
    (configs / "broken.yaml").write_text(
        _hubspot_config().replace("reporting: EUR", "reporting: EUR\n  colour: blue"),
        encoding="utf-8",
    )
    (configs / "Bad_Name.yaml").write_text(_hubspot_config(), encoding="utf-8")
    (configs / "notes.txt").write_text("not a config", encoding="utf-8")
    return configs


def test_each_config_of_a_folder_is_a_tenant_validated_on_its_own(folder: Path) -> None:
    found = load_tenants(folder)

    assert found.names == ["acme", "globex"]
    broken = {b.name: b for b in found.broken}
    assert sorted(broken) == ["Bad_Name", "broken"]
    assert broken["broken"].file == folder / "broken.yaml"
    (problem,) = broken["broken"].problems
    assert "broken.yaml:" in problem and "currency.colour" in problem
    assert "lower-case letters and digits" in broken["Bad_Name"].describe()


def test_one_config_is_one_tenant_named_after_its_file(folder: Path) -> None:
    found = load_tenants(config=folder / "acme.yaml")

    assert found.names == ["acme"]
    assert found.tenants[0].environ is None  # the process's own variables, as crm-kpi sync


def test_two_files_of_one_name_are_reported(folder: Path) -> None:
    (folder / "acme.yml").write_text(_hubspot_config(), encoding="utf-8")

    found = load_tenants(folder)

    assert found.names == ["acme", "globex"]
    assert any("tenant acme is also" in b.describe() for b in found.broken)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("acme", True),
        ("acme-emea-2", True),
        ("a" * 40, True),
        ("a" * 41, False),
        ("Acme", False),
        ("acme_emea", False),
        ("acme--emea", False),
        ("-acme", False),
        ("2acme", False),
    ],
)
def test_tenant_names(name: str, ok: bool) -> None:
    assert (tenant_name_problem(name) is None) is ok


def test_a_tenant_reads_only_its_own_prefixed_variables() -> None:
    environ = {
        "HUBSPOT_TOKEN": "process-wide",
        "CRM_KPI_ACME__HUBSPOT_TOKEN": "acme-token",
        "CRM_KPI_ACME_EMEA__HUBSPOT_TOKEN": "acme-emea-token",
        "CRM_KPI_GLOBEX__OTHER": "globex",
    }
    acme, emea, globex = (TenantEnviron(t, environ) for t in ("acme", "acme-emea", "globex"))

    assert acme["HUBSPOT_TOKEN"] == "acme-token"
    assert emea["HUBSPOT_TOKEN"] == "acme-emea-token"
    assert "HUBSPOT_TOKEN" not in globex
    assert sorted(acme) == ["HUBSPOT_TOKEN"]
    assert sorted(globex) == ["OTHER"]
    assert "acme-token" not in repr(acme)


def test_secrets_are_resolved_from_the_tenants_own_environment(folder: Path) -> None:
    environ = {"HUBSPOT_TOKEN": "process-wide", "CRM_KPI_ACME__HUBSPOT_TOKEN": "acme-token"}
    found = load_tenants(folder, environ=environ)
    acme, globex = found.get("acme"), found.get("globex")
    assert acme is not None and globex is not None

    def token(tenant: Tenant) -> str:
        ref = tenant.config.sources[0].auth.token  # type: ignore[attr-defined]
        return str(ref.resolve(tenant.environ).get_secret_value())

    assert token(acme) == "acme-token"
    with pytest.raises(SecretError, match="environment variable HUBSPOT_TOKEN is not set"):
        token(globex)  # neither acme's variable nor the process-wide one


def test_a_tenants_runs_connect_with_its_own_environment(folder: Path) -> None:
    """The worker builds each run's connector with the tenant's environment."""
    seen: list[object] = []

    def fake_build(source: object, currency: object, **options: object) -> object:
        seen.append(options["environ"])
        return object()

    files = TenantFiles(folder, environ={"CRM_KPI_GLOBEX__HUBSPOT_TOKEN": "globex-token"})
    globex = files.load("globex")
    assert isinstance(globex, Tenant)
    runner = SourceRunner(Deployment(), files, control=None, connect=fake_build)  # type: ignore[arg-type]

    runner._connector_factory(globex)(globex.config.sources[0], globex.config.currency)

    (environ,) = seen
    assert isinstance(environ, TenantEnviron) and dict(environ) == {"HUBSPOT_TOKEN": "globex-token"}


def test_secret_files_must_be_in_the_tenants_secrets_folder(folder: Path) -> None:
    own = folder / "secrets" / "acme"
    own.mkdir(parents=True)
    (own / "token").write_text("acme-token\n", encoding="utf-8")
    theirs = folder / "secrets" / "globex"
    theirs.mkdir(parents=True)
    (theirs / "token").write_text("globex-token\n", encoding="utf-8")
    (folder / "acme.yaml").write_text(
        _hubspot_config("{file: secrets/acme/token}"), encoding="utf-8"
    )
    (folder / "globex.yml").write_text(
        _hubspot_config("{file: secrets/acme/token}"),
        encoding="utf-8",  # acme's file
    )
    (folder / "initech.yaml").write_text(
        _hubspot_config("{file_env: TOKEN_FILE}"), encoding="utf-8"
    )

    found = load_tenants(folder, environ={"CRM_KPI_INITECH__TOKEN_FILE": str(theirs / "token")})

    assert "acme" in found.names
    broken = {b.name: b.describe() for b in found.broken}
    assert "outside the tenant's secrets folder" in broken["globex"]
    assert f"{folder / 'secrets' / 'globex'}" in broken["globex"]
    assert "outside the tenant's secrets folder" in broken["initech"]
    acme = found.get("acme")
    assert acme is not None
    ref = acme.config.sources[0].auth.token  # type: ignore[attr-defined]
    assert ref.resolve(acme.environ).get_secret_value() == "acme-token"


def test_tenants_check_reports_every_broken_tenant_and_exits_4(folder: Path) -> None:
    shown = subprocess.run(  # noqa: S603 - the project's own CLI
        [CLI, "tenants", "check", "--configs", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert shown.returncode == 4, shown.stderr
    assert (
        f"ok: tenant acme ({folder / 'acme.yaml'}): sources sandbox; its own store" in shown.stdout
    )
    assert "ok: tenant globex" in shown.stdout
    assert "error: tenant broken" in shown.stderr and "error: tenant Bad_Name" in shown.stderr


def test_a_tenant_of_a_folder_has_no_store_section(folder: Path) -> None:
    (folder / "acme.yaml").write_text(HUBSPOT, encoding="utf-8")  # store: sqlite:///...

    found = load_tenants(folder)

    assert found.names == ["globex"]
    assert "store: a tenant of a folder keeps its data where the deployment says" in next(
        b.describe() for b in found.broken if b.name == "acme"
    )


def test_a_folders_tenants_keep_one_sqlite_file_each(folder: Path) -> None:
    found = load_tenants(folder)
    urls = {t.name: Deployment().tenant_url(t) for t in found.tenants}

    assert {name: url.get_secret_value() for name, url in urls.items()} == {  # type: ignore[union-attr]
        "acme": f"sqlite:///{folder / 'acme.sqlite'}",
        "globex": f"sqlite:///{folder / 'globex.sqlite'}",
    }


# ---- PostgreSQL: a schema and a role per tenant


def _tenants(folder: Path) -> tuple[Tenant, Tenant]:
    found = load_tenants(folder)
    acme, globex = found.get("acme"), found.get("globex")
    assert acme is not None and globex is not None
    return acme, globex


def test_a_tenants_store_can_neither_read_nor_write_another_tenants_rows(
    folder: Path, deployment: Deployment
) -> None:
    acme, globex = _tenants(folder)
    at = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    with deployment.open_store(acme) as store_a, deployment.open_store(globex) as store_b:
        run_a = store_a.start_run(at, {}, sources=["sandbox"])
        store_a.save_page(StoredPage(source="sandbox", stream="metadata", metadata={"k": "acme"}))

        # Each store sees its own rows only, under the same source name.
        assert [r["id"] for r in store_a.recent_runs()] == [run_a]
        assert store_b.recent_runs() == []
        assert store_b.metadata("sandbox", "k") is None
        # Both hold the run lock of their own "sandbox" source at once.
        with store_a.lock_sources(["sandbox"]), store_b.lock_sources(["sandbox"]):
            pass

        schema_a = deployment.schema("acme")
        with store_b._engine.connect() as connection:
            who = connection.execute(sa.text("SELECT current_user, current_schema")).one()
            assert tuple(who) == (deployment.schema("globex"), deployment.schema("globex"))
            for statement in (
                f'SELECT * FROM "{schema_a}".runs',
                f'DELETE FROM "{schema_a}".runs',
                f"INSERT INTO \"{schema_a}\".source_metadata VALUES ('x', 'k', '1')",
            ):
                with pytest.raises(sa.exc.ProgrammingError, match="permission denied for schema"):
                    connection.execute(sa.text(statement))
                connection.rollback()
    with deployment.open_store(acme) as store_a:
        assert [r["id"] for r in store_a.recent_runs()] == [run_a]  # untouched


@pytest.mark.slow
def test_sync_once_over_a_folder_runs_every_good_tenant_in_its_schema(
    tmp_path: Path, deployment: Deployment
) -> None:
    from sandbox_fleet import fleet

    assert deployment.url is not None
    with fleet(tmp_path / "tenants", 2) as orgs:
        (tmp_path / "tenants" / "broken.yaml").write_text("sources: []\n", encoding="utf-8")
        ran = subprocess.run(  # noqa: S603 - the project's own CLI
            [
                CLI,
                "sync",
                "--once",
                "--configs",
                str(tmp_path / "tenants"),
                "--store-url",
                deployment.url.get_secret_value(),
                "--schema-prefix",
                deployment.prefix,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert ran.returncode == 4, ran.stderr  # the broken tenant's config error
        assert "error: tenant broken" in ran.stderr
        for org in orgs:
            assert f"tenant {org.tenant} ({org.config})" in ran.stdout
            tenant = load_tenants(config=org.config).tenants[0]
            named = Tenant(org.tenant, org.config, tenant.config, {})
            with deployment.open_store(named, read_only=True) as store:
                (run,) = store.recent_runs()
                assert run["status"] == "completed"


@pytest.mark.slow
def test_each_tenants_setup_and_run_read_its_own_secret_only(
    tmp_path: Path, deployment: Deployment
) -> None:
    """acme's token is given as CRM_KPI_ACME__HUBSPOT_TOKEN; globex names the same variable
    but has none of its own: the process-wide HUBSPOT_TOKEN (the right token) is never read
    for it, in setup or in a run."""
    import os

    from sandbox_fleet import REFERENCE

    from crm_kpi_worker.sandbox.hubspot.server import HubSpotSandbox, RateLimits

    assert deployment.url is not None
    limits = RateLimits(search_per_second=None, burst_per_10s=None, daily=1_000_000)
    with HubSpotSandbox.start(seed=5, reference_date=REFERENCE, limits=limits) as sandbox:
        folder = tmp_path / "tenants"
        folder.mkdir()
        for name in ("acme", "globex"):
            text = _hubspot_config(base=sandbox.url).replace(
                f"base_url: {sandbox.url}",
                f"base_url: {sandbox.url}\n    ca_bundle: {sandbox.ca_path}",
            )
            (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
        environ = {
            **os.environ,
            "HUBSPOT_TOKEN": sandbox.token,
            "CRM_KPI_ACME__HUBSPOT_TOKEN": sandbox.token,
        }

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(  # noqa: S603 - the project's own CLI
                [CLI, *args], capture_output=True, text=True, timeout=300, env=environ
            )

        setup = cli("tenants", "setup", "--configs", str(folder))
        ran = cli(
            "sync", "--once", "--configs", str(folder),
            "--store-url", deployment.url.get_secret_value(),
            "--schema-prefix", deployment.prefix,
        )  # fmt: skip

    assert setup.returncode == 4, setup.stdout + setup.stderr
    assert "tenant acme" in setup.stdout
    assert "error: tenant globex: " in setup.stderr
    assert "environment variable HUBSPOT_TOKEN is not set" in setup.stderr
    assert ran.returncode == 4, ran.stdout + ran.stderr
    assert ran.stdout.count(": completed") == 1  # acme's run
    assert "error: tenant globex: " in ran.stderr
    assert "environment variable HUBSPOT_TOKEN is not set" in ran.stderr
