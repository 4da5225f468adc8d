"""Where each tenant's data lives, apart from every other tenant's.

- **PostgreSQL** (the deployment's ``--store-url``, shared by every worker): one schema per
  tenant, ``<prefix>t_<tenant>`` (``crm_kpi_t_acme``), owned by a role of the same name that
  can log in nowhere (``NOLOGIN``) and has no right on any other tenant's schema. The tenant's
  store connects as the deployment's user and becomes that role at once (``-c role=...`` in
  the connection's startup options) with its schema alone on the search path: a query that
  names another tenant's table is refused by PostgreSQL itself ("permission denied for
  schema"), whatever the code does. The store's migrations run per schema (Alembic's version
  table is in the schema), the run locks' keys are per schema. The deployment's user needs
  ``CREATEROLE`` (or is the database's owner with it) to create the roles: :func:`provision`.
- **SQLite** (no ``--store-url``): a tenant of a folder keeps ``<tenant>.sqlite`` beside its
  config, one file per tenant (its config has no ``store`` section: the loader refuses one);
  a single config keeps its own ``store``.

The deployment's own tables (the schedule's runs, the shared API budget and rate limits) are
in the control schema, ``<prefix>control`` (:mod:`.control`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from crm_kpi_worker.sync.scale.tenants import Tenant
from crm_kpi_worker.sync.store import Store, StoreError, normalise_url
from crm_kpi_worker.sync.store.engine import connect_engine, driver_reason, redact

__all__ = ["DEFAULT_PREFIX", "Deployment", "provision", "sql_name"]

DEFAULT_PREFIX = "crm_kpi_"
#: pg_advisory_xact_lock key serializing the creation of tenant schemas and roles.
_PROVISION_LOCK = 0x63726D5F70726F76  # "crm_prov"


def sql_name(name: str) -> str:
    """A schema or role name as SQL (names are checked: lower-case, digits, ``_``)."""
    if not name.replace("_", "").isalnum() or not name.islower() or len(name) > 63:
        raise ValueError(f"not a safe SQL name: {name!r}")
    return f'"{name}"'


@dataclass(frozen=True)
class Deployment:
    """The deployment's shared store: a PostgreSQL URL and the prefix of its schema names."""

    url: SecretStr | None = None
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        sql_name(self.prefix + "control")  # ValueError on a prefix PostgreSQL cannot take
        if self.url is not None and normalise_url(self.url).get_backend_name() != "postgresql":
            raise StoreError(
                "--store-url must be a PostgreSQL URL (postgresql://user@host/db): tenants"
                " share it, one schema each; without it each tenant keeps its own SQLite file"
            )

    @property
    def shared(self) -> bool:
        return self.url is not None

    def schema(self, tenant: str) -> str:
        return f"{self.prefix}t_{tenant.replace('-', '_')}"

    @property
    def control_schema(self) -> str:
        return f"{self.prefix}control"

    def _with_options(self, schema: str, role: str | None) -> URL:
        assert self.url is not None
        options = f"-c search_path={schema}" + (f" -c role={role}" if role else "")
        return normalise_url(self.url).update_query_dict({"options": options})

    def control_url(self) -> URL:
        """The control schema's URL (as the deployment's user)."""
        return self._with_options(self.control_schema, None)

    def tenant_url(self, tenant: Tenant) -> SecretStr | URL:
        """The URL of the tenant's store (see the module's text)."""
        if self.url is not None:
            schema = self.schema(tenant.name)
            return self._with_options(schema, schema)
        if tenant.environ is not None:  # a tenant of a folder (its config has no store)
            return SecretStr(f"sqlite:///{tenant.file.parent / (tenant.name + '.sqlite')}")
        return tenant.config.store.resolve_url()

    def open_store(self, tenant: Tenant, *, read_only: bool = False) -> Store:
        """The tenant's store, provisioned (PostgreSQL) and migrated."""
        if self.url is not None and not read_only:
            provision(self, tenant.name)
        return Store.open(self.tenant_url(tenant), read_only=read_only)


_provisioned: set[tuple[str, str]] = set()
_provisioned_guard = threading.Lock()


def provision(deployment: Deployment, tenant: str) -> None:
    """Create the tenant's role and schema when missing (idempotent; once per process)."""
    assert deployment.url is not None
    schema = deployment.schema(tenant)
    key = (redact(normalise_url(deployment.url)), schema)
    with _provisioned_guard:
        if key in _provisioned:
            return
    name = sql_name(schema)
    engine = connect_engine(normalise_url(deployment.url))
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PROVISION_LOCK})
            exists = connection.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": schema}
            ).first()
            if exists is None:
                connection.execute(text(f"CREATE ROLE {name} NOLOGIN"))
            # The deployment's user becomes the role on each connection: it must be a member.
            connection.execute(text(f"GRANT {name} TO CURRENT_USER"))
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {name} AUTHORIZATION {name}"))
            connection.execute(text(f"REVOKE ALL ON SCHEMA {name} FROM PUBLIC"))
    except DBAPIError as exc:
        raise StoreError(
            f"cannot create the schema and role {schema} of tenant {tenant} in"
            f" {redact(normalise_url(deployment.url))}: {driver_reason(exc)} (the store's"
            " user needs CREATEROLE and CREATE on the database)"
        ) from exc
    finally:
        engine.dispose()
    with _provisioned_guard:
        _provisioned.add(key)
