"""Shared fixtures: a running sandbox Salesforce, the public references, server URLs."""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.base import SetupSettings, TargetField, TargetObject
from crm_kpi_worker.sandbox.salesforce.login import DEFAULT_USERNAME
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.store import normalise_url

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ENV = "CRM_KPI_TEST_POSTGRES_URL"
SESSION = uuid.uuid4().hex[:8]
_schema_numbers = itertools.count()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A command sets up the root logger for its process (``sync.logs``); in the test process
    it is put back after each test, so no later test's output holds another's log lines."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def reference_dir() -> Path | None:
    """The public API references (shared/reference beside the checkout), if present."""
    configured = os.environ.get("CRM_KPI_REFERENCE_DIR")
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "reference")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def references() -> Path:
    """Skip where the references are absent (a user's clone); in CI they must be there."""
    found = reference_dir()
    if found is None:
        message = (
            "the public API references (../shared/reference beside the checkout, or"
            " CRM_KPI_REFERENCE_DIR) are not on this machine"
        )
        if IN_CI:
            pytest.fail(message + " and CI=true: CI must run the conformance tests")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def sf_sandbox() -> Iterator[SalesforceSandbox]:
    """The demo scenario plus filler, shared by read-only tests."""
    with SalesforceSandbox.start(seed=42, deals=6000) as sandbox:
        yield sandbox


@pytest.fixture
def fresh_sandbox() -> Iterator[SalesforceSandbox]:
    """A sandbox of its own, for tests that write or inject faults."""
    with SalesforceSandbox.start(seed=7) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def sf(sf_sandbox: SalesforceSandbox):  # type: ignore[no-untyped-def]
    return sf_sandbox.client()


def create_and_grant(
    connector: Any, objects: Sequence[TargetObject], fields: Sequence[TargetField]
) -> None:
    """What ``setup`` does for these targets: create them, then make the connector's setup
    plan (on Salesforce, the permission sets without which nobody, the integration user
    included, may read or write a field created through the Tooling API)."""
    connector.create_targets(objects, fields)
    for change in connector.plan_setup(objects, fields, SetupSettings(grant_to_reps=False)):
        change.apply()


def grant_fields(
    sf: Any,
    fields: Sequence[str],
    *,
    username: str = DEFAULT_USERNAME,
    name: str = "Test_Field_Access",
) -> None:
    """Give ``username`` (the sandbox's admin) read and edit on ``fields`` ("Object.Field"),
    through ``sf`` as an admin does on Salesforce: a permission set with FieldPermissions,
    assigned to them."""
    permission_set = sf.PermissionSet.create({"Name": name, "Label": name.replace("_", " ")})["id"]
    for field in fields:
        sf.FieldPermissions.create(
            {
                "ParentId": permission_set,
                "SobjectType": field.split(".")[0],
                "Field": field,
                "PermissionsRead": True,
                "PermissionsEdit": True,
            }
        )
    me = sf.query(f"SELECT Id FROM User WHERE Username = '{username}'")["records"][0]["Id"]
    sf.PermissionSetAssignment.create({"AssigneeId": me, "PermissionSetId": permission_set})


#: Source settings of a demo config that keeps every pull and write on REST (query pages,
#: sObject Collections), for tests of what those calls do.
REST_ONLY = "    bulk: {pull_above: null, write_above: null}\n"


def write_demo_config(sandbox: SalesforceSandbox, folder: Path, source_extra: str = "") -> Path:
    """The shipped demo config, pointed at ``sandbox``, with its store in ``folder``;
    ``source_extra``: more settings of the source (indented lines, e.g. :data:`REST_ONLY`)."""
    text = path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
    text = text.replace("login_url: https://127.0.0.1:0", f"login_url: {sandbox.url}")
    text = text.replace(
        "instance_url: https://127.0.0.1:0",
        f"instance_url: {sandbox.url}\n{source_extra}    ca_bundle: {sandbox.ca_path}",
    )
    text = text.replace(
        "url: sqlite:///crm-kpi-demo.sqlite", f"url: sqlite:///{folder / 'store.sqlite'}"
    )
    path = folder / "crm-kpi.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---- PostgreSQL (CRM_KPI_TEST_POSTGRES_URL): a fresh schema per test


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message}, and CI=true: CI must run the PostgreSQL store tests")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    """An engine on the test server, with every schema this session made dropped at the end."""
    raw = os.environ.get(PG_ENV)
    if not raw:
        _unavailable(f"{PG_ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    engine = sa.create_engine(normalise_url(raw or ""), connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        _unavailable(f"PostgreSQL at {PG_ENV} is unreachable: {str(exc.orig).splitlines()[0]}")
    yield engine
    with engine.begin() as connection:
        leftovers = connection.execute(
            sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :prefix"),
            {"prefix": f"crm_kpi_test_{SESSION}_%"},
        ).scalars()
        for schema in list(leftovers):
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """The test server's URL with a fresh, empty schema first on the search path."""
    schema = f"crm_kpi_test_{SESSION}_{next(_schema_numbers)}"
    with pg_admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = pg_admin.url.update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with pg_admin.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


# ---- a deployment of many tenants (sync/scale): schemas and roles under a fresh prefix


@pytest.fixture
def deployment(pg_admin: sa.Engine) -> Iterator[Any]:
    """A :class:`~crm_kpi_worker.sync.scale.stores.Deployment` on the test server with a
    prefix of its own; its schemas and roles are dropped at the end."""
    from pydantic import SecretStr

    from crm_kpi_worker.sync.scale.stores import Deployment

    prefix = f"crm_kpi_test_{SESSION}_{next(_schema_numbers)}_"
    url = pg_admin.url.render_as_string(hide_password=False)
    yield Deployment(SecretStr(url), prefix)
    like = prefix.replace("_", "\\_") + "%"
    with pg_admin.connect() as connection:
        schemas = list(
            connection.execute(
                sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": like}
            ).scalars()
        )
    for schema in schemas:  # one transaction each: dropping a schema's tables takes locks
        with pg_admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    with pg_admin.begin() as connection:
        for role in connection.execute(
            sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"), {"p": like}
        ).scalars():
            connection.execute(sa.text(f'DROP ROLE "{role}"'))


AMQP_ENV = "CRM_KPI_TEST_AMQP_URL"
REDIS_ENV = "CRM_KPI_TEST_REDIS_URL"


def _server_url(env: str, example: str, tests: str) -> str:
    """The URL of a test server from ``env``; skip without it, fail in CI (``tests``: what
    CI must run)."""
    url = os.environ.get(env)
    if not url:
        message = f"{env} is not set (e.g. {example})"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true: CI must run {tests}")
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The test broker (RabbitMQ); skip without it, fail in CI."""
    return _server_url(AMQP_ENV, "amqp://guest:guest@127.0.0.1:5672//", "the worker tests")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test broker on Redis (a database number the tests own); skip without it, fail in
    CI."""
    return _server_url(REDIS_ENV, "redis://127.0.0.1:6379/15", "the worker tests on Redis")
