"""What every CRM source shares: its name, TLS trust, timeout, own ``kpi_fields``, and the
rules every CRM's source model checks (no secret default sent to a real CRM, names its CRM can
write). Each CRM's source model (``connectors/<crm>/config.py``) extends :class:`SourceBase`
with its ``type: Literal[...]``, auth, endpoints and mapping; its cross-field validator calls
:meth:`SourceBase.default_secret_problems` and :meth:`SourceBase.kpi_field_problems`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic_core import InitErrorDetails

from crm_kpi_worker.sync.config.base import (
    AuthBase,
    ConfigModel,
    ConfigPath,
    EnvRef,
    SourceName,
    Timeout,
    error_at,
    url_is_loopback,
)
from crm_kpi_worker.sync.config.targets import KpiFields

if TYPE_CHECKING:
    from crm_kpi_worker.sync.config.mapping import MappingBase

__all__ = ["SourceBase"]


class SourceBase(ConfigModel):
    name: SourceName
    """Unique name of this source (used in state keys, logs and reports)."""
    ca_bundle: ConfigPath | None = None
    """PEM file of CA certificates to trust (corporate TLS proxy, the sandbox)."""
    timeout_seconds: Timeout = 30.0
    kpi_fields: KpiFields | None = None
    """Overrides the top-level kpi_fields for this source."""

    #: The CRM's registry name, the same as the source's ``type``.
    crm: ClassVar[str]

    if TYPE_CHECKING:
        # Every CRM's source has these, with its own types; the sync layer reads them here.
        type: str
        auth: AuthBase  # a CRM needing no credentials may have none
        mapping: MappingBase

    def default_secret_problems(self, endpoint: str | None) -> list[InitErrorDetails]:
        auth = self.auth
        if url_is_loopback(endpoint):
            return []
        problems = []
        for name in auth.secret_fields:
            ref = getattr(auth, name)
            if isinstance(ref, EnvRef) and ref.default is not None:
                problems.append(
                    error_at(
                        ("auth", name, "default"),
                        "a default for a secret is accepted only when the CRM endpoint is a"
                        " loopback host (the sandbox CRM); give a real secret through the"
                        f" environment variable {ref.env} or a file",
                    )
                )
        return problems

    def describe_endpoint(self) -> str:
        """Where the CRM is reached, for the config summary (no secret)."""
        return "endpoint set by the CRM's defaults"

    def with_changes(self, **changes: Any) -> Any:
        """A re-validated copy with some settings changed, e.g. ``base_url`` pointed at a
        sandbox (``model_copy`` would skip the rules, such as the loopback-default one)."""
        return type(self).model_validate({**dict(self), **changes})

    def kpi_field_problems(self) -> list[InitErrorDetails]:
        if self.kpi_fields is None:
            return []
        return [
            error_at(("kpi_fields", *loc), msg) for loc, msg in self.kpi_fields.problems(self.crm)
        ]
