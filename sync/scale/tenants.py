"""Tenants: the orgs and portals one deployment serves, one config each.

A deployment reads either one config (one tenant, named after the file: ``crm-kpi.yaml`` is
tenant ``crm-kpi``) or a folder of configs (``--configs DIR``): every ``*.yaml`` / ``*.yml``
file of the folder is one tenant, named after the file (``acme.yaml`` is tenant ``acme``).
Each file is validated on its own: a broken one is reported with its file and problems, and
the others go on (:class:`TenantSet` keeps both lists).

Secrets are the tenant's own (:class:`TenantEnviron`). In a folder, ``{env: NAME}`` in tenant
``acme``'s config reads ``CRM_KPI_ACME__NAME`` (the tenant's name upper-cased, ``-`` as
``_``, then two underscores) and never ``NAME`` itself, nor another tenant's variable: a
tenant's name never holds ``__``, so the first ``__`` after ``CRM_KPI_`` ends it. Secret
files (``{file: ...}``, ``{file_env: ...}``) must lie in the tenant's own secrets folder,
``<configs>/secrets/<tenant>/``: a file elsewhere is a problem of the config, found when it is
loaded. A single config is one tenant and reads its variables and files as ``crm-kpi sync``
does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crm_kpi_worker.sync.config import AppConfig, FileEnvRef, FileRef, iter_secret_refs

__all__ = [
    "SECRETS_FOLDER",
    "TENANT_ENV_PREFIX",
    "BrokenTenant",
    "Tenant",
    "TenantEnviron",
    "TenantFiles",
    "TenantSet",
    "load_tenants",
    "tenant_name_problem",
]

TENANT_ENV_PREFIX = "CRM_KPI_"
#: The folder of tenants' secret files, beside their configs: ``secrets/<tenant>/``.
SECRETS_FOLDER = "secrets"
CONFIG_SUFFIXES = (".yaml", ".yml")
#: Lower-case letters and digits, words joined by single hyphens; short enough for a
#: PostgreSQL schema and role name (63 bytes) with the deployment's prefix.
_TENANT_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
TENANT_NAME_MAX = 40


def tenant_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a tenant, or None."""
    if len(name) > TENANT_NAME_MAX or not _TENANT_NAME.match(name):
        return (
            f"tenant name {name!r} (the file's name) must be lower-case letters and digits,"
            f" words joined by single hyphens, at most {TENANT_NAME_MAX} characters (e.g."
            " acme-emea.yaml)"
        )
    return None


class TenantEnviron(Mapping[str, str]):
    """The environment a tenant's ``{env: NAME}`` secrets read: ``NAME`` is looked up as
    ``CRM_KPI_<TENANT>__NAME``; nothing else of the environment is visible."""

    def __init__(self, tenant: str, environ: Mapping[str, str] | None = None) -> None:
        self.prefix = f"{TENANT_ENV_PREFIX}{tenant.upper().replace('-', '_')}__"
        self._environ = os.environ if environ is None else environ

    def __getitem__(self, name: str) -> str:
        return self._environ[self.prefix + name]

    def __iter__(self) -> Iterator[str]:
        size = len(self.prefix)
        return (key[size:] for key in list(self._environ) if key.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:  # names only, never values
        return f"TenantEnviron({self.prefix}*)"


@dataclass(frozen=True)
class Tenant:
    """One tenant: its name, config file, validated config and the environment its secrets
    are read from (``None``: the process's own, for a single config)."""

    name: str
    file: Path
    config: AppConfig
    environ: Mapping[str, str] | None = None

    def source_names(self) -> list[str]:
        return [source.name for source in self.config.sources]

    def for_source(self, name: str) -> AppConfig:
        """The config with only source ``name``: one task runs one source."""
        return self.config.model_copy(update={"sources": [self.config.source(name)]})


@dataclass(frozen=True)
class BrokenTenant:
    """A tenant whose config did not load: its file and the problems, one line each."""

    name: str
    file: Path
    problems: tuple[str, ...]

    def describe(self) -> str:
        return f"tenant {self.name} ({self.file}): " + "; ".join(self.problems)


@dataclass
class TenantSet:
    tenants: list[Tenant] = field(default_factory=list)
    broken: list[BrokenTenant] = field(default_factory=list)

    def get(self, name: str) -> Tenant | None:
        return next((tenant for tenant in self.tenants if tenant.name == name), None)

    @property
    def names(self) -> list[str]:
        return [tenant.name for tenant in self.tenants]


def config_files(folder: Path) -> list[Path]:
    """The tenants' config files of ``folder``, by name (hidden files left out)."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix in CONFIG_SUFFIXES and path.is_file() and not path.name.startswith(".")
    )


def load_tenants(
    configs: Path | None = None,
    config: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> TenantSet:
    """The tenants of a folder of configs, or the one tenant of a config file."""
    if configs is not None and not configs.is_dir():
        raise FileNotFoundError(f"{configs} is not a folder of configs")
    return TenantFiles(configs, config, environ=environ).scan()


def _add(
    found: TenantSet, path: Path, *, folder: Path | None, environ: Mapping[str, str] | None
) -> None:
    from crm_kpi_worker.sync.config_loader import ConfigError, load_config

    name = path.stem
    problem = tenant_name_problem(name)
    if problem is not None:
        found.broken.append(BrokenTenant(name, path, (problem,)))
        return
    tenant_environ = TenantEnviron(name, environ) if folder is not None else environ
    try:
        config = load_config(path)
    except ConfigError as exc:
        found.broken.append(BrokenTenant(name, path, tuple(str(p) for p in exc.problems)))
        return
    if folder is not None:
        secrets = (folder / SECRETS_FOLDER / name).resolve()
        problems = list(_files_outside(config, secrets, tenant_environ))
        if "store" in config.model_fields_set:
            problems.append(
                "store: a tenant of a folder keeps its data where the deployment says"
                f" (--store-url: a schema of its own; else {name}.sqlite beside its config):"
                " remove the store section"
            )
        if problems:
            found.broken.append(BrokenTenant(name, path, tuple(problems)))
            return
    found.tenants.append(Tenant(name, path, config, tenant_environ))


def _files_outside(
    config: AppConfig, secrets: Path, environ: Mapping[str, str] | None
) -> Iterator[str]:
    """The secret files of a tenant's config that are not in its own secrets folder."""
    for key_path, ref in iter_secret_refs(config):
        key = ".".join(str(part) for part in key_path)
        if isinstance(ref, FileRef):
            file = ref.file
        elif isinstance(ref, FileEnvRef):
            named = (environ or {}).get(ref.file_env)
            if not named:
                continue  # reported when resolved, as for any missing variable
            file = Path(named).expanduser()
        else:
            continue
        if not file.resolve().is_relative_to(secrets):
            yield (
                f"{key}: the secret file {file} is outside the tenant's secrets folder"
                f" {secrets}; a tenant reads only its own secret files"
            )


class TenantFiles:
    """The deployment's tenants, read again from their files when these change (a tenant is
    added by adding its file; no worker or scheduler restarts)."""

    def __init__(
        self,
        configs: Path | None = None,
        config: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if (configs is None) == (config is None):
            raise ValueError("give a folder of configs or one config file")
        self.configs, self.config, self._environ = configs, config, environ
        self._cache: dict[str, tuple[tuple[int, int], Tenant | BrokenTenant]] = {}

    def describe(self) -> str:
        return f"the configs of {self.configs}" if self.configs else f"the config {self.config}"

    def _files(self) -> list[Path]:
        if self.config is not None:
            return [self.config]
        assert self.configs is not None
        return config_files(self.configs)

    def scan(self) -> TenantSet:
        """Every tenant, each file read again only when it changed."""
        found = TenantSet()
        seen: dict[str, Path] = {}
        for path in self._files():
            if path.stem in seen:
                problem = f"tenant {path.stem} is also {seen[path.stem]}: rename one file"
                found.broken.append(BrokenTenant(path.stem, path, (problem,)))
                continue
            seen[path.stem] = path
            loaded = self._load(path)
            if isinstance(loaded, Tenant):
                found.tenants.append(loaded)
            else:
                found.broken.append(loaded)
        return found

    def load(self, name: str) -> Tenant | BrokenTenant | None:
        path = next((p for p in self._files() if p.stem == name), None)
        return None if path is None else self._load(path)

    def _load(self, path: Path) -> Tenant | BrokenTenant:
        try:
            stat = path.stat()
        except OSError as exc:
            return BrokenTenant(path.stem, path, (f"cannot read the file: {exc.strerror}",))
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path.stem)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = TenantSet()
        _add(found, path, folder=self.configs, environ=self._environ)
        loaded: Tenant | BrokenTenant = found.tenants[0] if found.tenants else found.broken[0]
        self._cache[path.stem] = (stamp, loaded)
        return loaded
