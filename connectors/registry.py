"""The CRMs the worker knows: one :class:`CrmPlugin` per CRM, the only way ``sync/`` reaches one.

Everything that knows a CRM lives in its folder, ``connectors/<crm>/``: client and auth, config
models (``config.py``), streams, normalization into the canonical model, write targets and
metadata checks. Its ``plugin.py`` describes it in one :class:`CrmPlugin`, and the built-in
entries are listed once, in :func:`_built_in`. Another CRM (a test's fake one, a private
connector) is added with :func:`register`; nothing in ``sync/`` changes.

An entry is light: its source and mapping models are pydantic only, and its ``connect``,
``normalize`` and ``metadata`` import their modules when first called, so a HubSpot-only worker
never imports simple-salesforce.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crm_kpi_worker.connectors.base import Connector

if TYPE_CHECKING:
    from crm_kpi_worker.sync.config.mapping import MappingBase
    from crm_kpi_worker.sync.config.money import CurrencySettings
    from crm_kpi_worker.sync.config.source import SourceBase
    from crm_kpi_worker.sync.config.targets import TargetNaming
    from crm_kpi_worker.sync.normalize import CrmMetadata, NormalizeContext, Normalized

__all__ = [
    "ConnectorFactory",
    "CrmPlugin",
    "MappedField",
    "build_connector",
    "plugin_for",
    "plugins",
    "register",
    "source_models",
    "unregister",
]

ConnectorFactory = Callable[..., Connector]


@dataclass(frozen=True)
class MappedField:
    """A CRM field a source's mapping names, checked against the CRM's metadata before a run."""

    key: tuple[str | int, ...]  # its key path under the source's ``mapping``
    object: str  # the CRM object the field is on (a name ``describe_fields`` takes)
    name: str  # the field (a dotted relationship path on Salesforce)
    default: str | None = None  # the key's default field, the hint when nothing is closer
    #: The CRM may lack it and the connector copes (Salesforce's currency field, which only
    #: multi-currency orgs have).
    absent_ok: bool = False


@dataclass(frozen=True)
class CrmPlugin:
    """One CRM, as the rest of the worker sees it."""

    #: ``sources[].type`` in the config, e.g. "salesforce"; also the source model's ``crm``.
    type: str
    #: The CRM's name for people, e.g. "Salesforce".
    label: str
    #: The source's config model (a ``SourceBase`` with ``type: Literal["<type>"]``).
    # builtins.type: the field "type" above shadows the builtin in this class body.
    source_model: builtins.type[SourceBase]
    #: The shape of ``sources[].mapping`` (what ``config show-mapping`` files hold).
    mapping_model: builtins.type[MappingBase]
    #: ``connect(source, currency, **options)``: logs in and returns the connector. Options a
    #: CRM does not know (``retry_policy``, ``environ``, ...) are passed by keyword; a factory
    #: takes ``**options`` and ignores the ones it has no use for.
    connect: Callable[..., Connector]
    #: ``normalize(context, stream, records)``: one page of raw records of a stream into the
    #: canonical records and exclusions (the metadata streams give an empty result).
    normalize: Callable[[NormalizeContext, str, Sequence[Any]], Normalized]
    #: ``metadata(records)``: the CRM's stages and currencies, from the records of the
    #: ``stages`` and ``currencies`` streams (stream -> records).
    metadata: Callable[[Mapping[str, list[dict[str, Any]]]], CrmMetadata]
    #: How the CRM names the fields and objects the worker writes.
    target_naming: TargetNaming
    #: The object deal fields are written on (Opportunity, deals).
    deal_object: str
    #: The object ``kpi_fields.rep`` writes on (User), None when the CRM's users take no fields.
    rep_object: str | None
    #: The largest batch one write call takes.
    write_batch_limit: int
    #: ``mapped_fields(mapping, conversion)``: every field the mapping names, for the check
    #: against the CRM (``conversion`` is the config's ``currency.conversion``).
    mapped_fields: Callable[[Any, str], Iterator[MappedField]]
    #: What the CRM calls a field, in messages ("field", "property").
    field_noun: str
    #: The CRM's default mapping and example config, files of the package's ``config/``
    #: folder (``config show-mapping``, ``config show-example``); None when it ships none.
    default_mapping_file: str | None = None
    example_config_file: str | None = None
    #: The scorecard object has no name field of its own: the worker writes a ``kpi_name``
    #: text field as its display name (HubSpot custom objects).
    scorecard_name_field: str | None = None
    #: The scorecard's rep column is a lookup to ``rep_object`` (so reports can join on it).
    rep_column_is_lookup: bool = False
    #: The scorecard's owner field, set to the rep on each active rep's own scorecards (so a
    #: list view of "my" records, which filters on the owner, shows a rep their own); None
    #: when the CRM's scorecard owner is the rep column already (HubSpot) or stays the worker.
    scorecard_owner_field: str | None = None


_plugins: dict[str, CrmPlugin] = {}


def _built_in() -> tuple[CrmPlugin, ...]:
    """The CRMs that ship with the worker, in the order error messages list them."""
    from crm_kpi_worker.connectors.hubspot.plugin import HUBSPOT
    from crm_kpi_worker.connectors.salesforce.plugin import SALESFORCE

    return SALESFORCE, HUBSPOT


def plugins() -> tuple[CrmPlugin, ...]:
    """Every known CRM: the built-in ones, then those registered."""
    if not _plugins:
        for plugin in _built_in():
            _plugins.setdefault(plugin.type, plugin)
    return tuple(_plugins.values())


def register(plugin: CrmPlugin) -> None:
    """Make a CRM known (``sources[].type: <plugin.type>`` then validates and runs)."""
    plugins()  # the built-in entries come first
    known = _plugins.get(plugin.type)
    if known is not None and known is not plugin:
        raise ValueError(f"a CRM of type {plugin.type!r} is already registered")
    if plugin.source_model.crm != plugin.type:
        raise ValueError(
            f"{plugin.source_model.__name__}.crm is {plugin.source_model.crm!r},"
            f" not the plugin's type {plugin.type!r}"
        )
    _plugins[plugin.type] = plugin


def unregister(crm: str) -> None:
    """Forget a registered CRM (tests); the built-in ones stay."""
    if crm in {p.type for p in _built_in()}:
        raise ValueError(f"{crm!r} is a built-in CRM")
    _plugins.pop(crm, None)


def plugin_for(crm: str) -> CrmPlugin:
    """The entry of ``crm`` (a source's ``type``)."""
    plugins()
    plugin = _plugins.get(crm)
    if plugin is None:
        known = ", ".join(sorted(_plugins))
        raise ValueError(f"no connector for CRM type {crm!r} yet; available: {known}")
    return plugin


def source_models() -> dict[str, type[SourceBase]]:
    """``sources[].type`` -> the source's config model, for every known CRM."""
    return {plugin.type: plugin.source_model for plugin in plugins()}


def build_connector(source: Any, currency: CurrencySettings, **options: Any) -> Connector:
    """The connector for one configured source (``source.type`` picks the CRM)."""
    return plugin_for(str(getattr(source, "type", None))).connect(source, currency, **options)
