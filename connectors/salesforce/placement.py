"""Where people see the KPI fields: a "KPIs" section on page layouts, a tab and a list view for
the scorecard object. All through simple-salesforce's Metadata API client (``sf.mdapi``, zeep
over the bundled WSDL), never hand-made SOAP.

- **Layouts**: each layout ``sources[].layouts`` names (default: the standard "Opportunity
  Layout" and "User Layout"; an empty list means none) gets one section labelled "KPIs"
  ("Indicateurs KPI" in French) holding that object's KPI fields, read-only, in two columns.
  An existing KPIs section (either label) is updated in place, fields added or removed to
  match, never duplicated; a KPI field an admin moved to another section stays there. A named
  layout that does not exist is an error at plan time listing the object's layouts. Layouts
  not named are never read nor touched.
- **Tab**: a custom object tab for the scorecard object (``fullName`` = its API name).
- **List view** ``<object>.My_Scorecards``: "My scorecards", ``filterScope: Mine`` (records the
  running user owns: the worker makes each active rep the owner of their own scorecards), the
  name (rep and period) and up to 14 KPI columns.

Reads: one ``readMetadata`` per metadata type (layouts, tab, list view); writes: one
``updateMetadata``/``upsertMetadata`` per change.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from crm_kpi_worker.connectors.base import SetupChange, TargetField
from crm_kpi_worker.connectors.errors import ConnectorError, RequestRejected

__all__ = ["LIST_VIEW", "SECTION_LABELS", "MetadataClient", "PlacementPlanner"]

log = logging.getLogger(__name__)

SECTION_LABELS = {"en": "KPIs", "fr": "Indicateurs KPI"}
LIST_VIEW = "My_Scorecards"
LIST_VIEW_LABELS = {"en": "My scorecards", "fr": "Mes tableaux de bord"}
TAB_MOTIF = "Custom53: Bell"
#: List views show at most 15 columns: the name and 14 KPIs.
LIST_VIEW_KPI_COLUMNS = 14
#: readMetadata/updateMetadata take at most 10 components a call.
METADATA_BATCH = 10


class MetadataClient:
    """The few Metadata API calls setup makes, over ``sf.mdapi``; Metadata API faults become
    :class:`RequestRejected`. Tests give the planner a fake with the same methods."""

    def __init__(self, client: Any, fetch: Callable[[Callable[[], Any]], Any]) -> None:
        self.client = client
        self.fetch = fetch

    def _call(self, what: str, thunk: Callable[[], Any]) -> Any:
        try:
            return self.fetch(thunk)
        except ConnectorError:
            raise  # the transport's own (retried, rate limited, daily limit, connection)
        except Exception as exc:  # a SOAP fault, a refused component, an answer not SOAP
            raise RequestRejected(
                f"Metadata API {what} failed: {type(exc).__name__}: {exc}"
            ) from None

    def new(self, kind: str, **values: Any) -> Any:
        return getattr(self.client.mdapi, kind)(**values)

    def read(self, kind: str, names: Sequence[str]) -> list[Any | None]:
        """The components, None for each name the org does not have."""
        out: list[Any | None] = []
        for start in range(0, len(names), METADATA_BATCH):
            chunk = list(names[start : start + METADATA_BATCH])
            api = getattr(self.client.mdapi, kind)
            answer = self._call(f"readMetadata {kind}", functools.partial(api.read, chunk))
            items = answer if isinstance(answer, list) else [answer]
            found = {getattr(i, "fullName", None): i for i in items if i is not None}
            out += [found.get(name) for name in chunk]
        return out

    def names(self, kind: str) -> list[str]:
        api = self.client.mdapi
        query = api._client.get_type("ns0:ListMetadataQuery")(type=kind)
        answer = self._call(f"listMetadata {kind}", lambda: api.list_metadata([query]))
        return sorted(str(p.fullName) for p in answer or ())

    def update(self, kind: str, components: Sequence[Any]) -> None:
        api = getattr(self.client.mdapi, kind)
        self._call(f"updateMetadata {kind}", lambda: api.update(list(components)))

    def upsert(self, kind: str, components: Sequence[Any]) -> None:
        api = getattr(self.client.mdapi, kind)
        self._call(f"upsertMetadata {kind}", lambda: api.upsert(list(components)))


class PlacementPlanner:
    """Plans the layout, tab and list view changes (see module doc); :meth:`plan` only reads."""

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata

    def plan(
        self,
        layouts: dict[str, list[str]],
        scorecard: str | None,
        fields: Sequence[TargetField],
        language: str,
    ) -> list[SetupChange]:
        changes = self._plan_layouts(layouts, fields, language)
        if scorecard is not None:
            card_fields = [f for f in fields if f.object.lower() == scorecard.lower()]
            changes += self._plan_tab(scorecard)
            changes += self._plan_list_view(scorecard, card_fields, language)
        return changes

    # ---- layouts ----------------------------------------------------------------------------

    def _plan_layouts(
        self, layouts: dict[str, list[str]], fields: Sequence[TargetField], language: str
    ) -> list[SetupChange]:
        wanted: list[tuple[str, list[str]]] = []  # (layout full name, its object's KPI fields)
        for obj, names in layouts.items():
            kpis = [f.name for f in fields if f.object.lower() == obj.lower()]
            if kpis:
                wanted += [(f"{obj}-{name}", kpis) for name in names]
        if not wanted:
            return []
        found = self.metadata.read("Layout", [name for name, _ in wanted])
        missing = [name for (name, _), layout in zip(wanted, found, strict=True) if layout is None]
        if missing:
            raise ValueError(self._missing_layouts(missing))
        changes = []
        for (name, kpis), layout in zip(wanted, found, strict=True):
            change = self._plan_layout(name, layout, kpis, language)
            if change is not None:
                changes.append(change)
        return changes

    def _missing_layouts(self, missing: list[str]) -> str:
        objects = sorted({name.split("-", 1)[0] for name in missing})
        try:
            existing = self.metadata.names("Layout")
        except RequestRejected:
            existing = []
        lines = [
            f"sources[].layouts names page layouts this org does not have:"
            f" {', '.join(repr(m.split('-', 1)[1]) for m in missing)}"
        ]
        for obj in objects:
            names = [n.split("-", 1)[1] for n in existing if n.split("-", 1)[0] == obj]
            if names:
                lines.append(f"{obj}'s layouts are: {', '.join(repr(n) for n in names)}")
        return "; ".join(lines)

    def _plan_layout(
        self, name: str, layout: Any, kpis: list[str], language: str
    ) -> SetupChange | None:
        label = SECTION_LABELS.get(language, SECTION_LABELS["en"])
        sections = list(getattr(layout, "layoutSections", None) or [])
        ours = [s for s in sections if getattr(s, "label", None) in SECTION_LABELS.values()]
        section = ours[0] if ours else None
        elsewhere = {
            item_field.lower()
            for s in sections
            if s is not section
            for item_field in _section_fields(s)
        }
        desired = [f for f in kpis if f.lower() not in elsewhere]
        if section is None:
            if not desired:
                return None
            detail = f"add section {label} ({len(desired)} fields)"

            def add() -> None:
                layout.layoutSections = [*sections, self._section(label, desired)]
                self.metadata.update("Layout", [layout])

            return SetupChange("page layout", name, detail, add)
        present = _section_fields(section)
        added = [f for f in desired if f.lower() not in {p.lower() for p in present}]
        removed = [p for p in present if p.lower() not in {f.lower() for f in desired}]
        relabel = section.label != label
        if not added and not removed and not relabel:
            return None
        parts = [f"add {len(added)} fields"] if added else []
        parts += [f"remove {len(removed)} fields"] if removed else []
        parts += [f"relabel {section.label!r} to {label!r}"] if relabel else []
        detail = f"section {label}: {', '.join(parts)}"

        def update() -> None:
            self._update_section(section, label, added, removed)
            self.metadata.update("Layout", [layout])

        return SetupChange("page layout", name, detail, update)

    def _section(self, label: str, fields: list[str]) -> Any:
        half = (len(fields) + 1) // 2
        columns = [
            self.metadata.new("LayoutColumn", layoutItems=[self._item(f) for f in part])
            for part in (fields[:half], fields[half:])
        ]
        return self.metadata.new(
            "LayoutSection",
            customLabel=True,
            detailHeading=True,
            editHeading=False,
            label=label,
            style="TwoColumnsTopToBottom",
            layoutColumns=columns,
        )

    def _item(self, field: str) -> Any:
        return self.metadata.new("LayoutItem", behavior="Readonly", field=field)

    def _update_section(
        self, section: Any, label: str, added: list[str], removed: list[str]
    ) -> None:
        gone = {r.lower() for r in removed}
        columns = list(getattr(section, "layoutColumns", None) or [])
        if not columns:
            columns = [self.metadata.new("LayoutColumn", layoutItems=[])]
        for column in columns:
            items = list(getattr(column, "layoutItems", None) or [])
            column.layoutItems = [
                i for i in items if (getattr(i, "field", None) or "").lower() not in gone
            ]
        for field in added:  # each into the shortest column
            shortest = min(columns, key=lambda c: len(c.layoutItems))
            shortest.layoutItems = [*shortest.layoutItems, self._item(field)]
        section.layoutColumns = columns
        section.label = label
        section.customLabel = True

    # ---- tab and list view ------------------------------------------------------------------

    def _plan_tab(self, scorecard: str) -> list[SetupChange]:
        (tab,) = self.metadata.read("CustomTab", [scorecard])
        if tab is not None:
            return []

        def create() -> None:
            component = self.metadata.new(
                "CustomTab", fullName=scorecard, customObject=True, motif=TAB_MOTIF
            )
            self.metadata.upsert("CustomTab", [component])

        return [SetupChange("tab", scorecard, "create the object's tab", create)]

    def _plan_list_view(
        self, scorecard: str, fields: Sequence[TargetField], language: str
    ) -> list[SetupChange]:
        name = f"{scorecard}.{LIST_VIEW}"
        label = LIST_VIEW_LABELS.get(language, LIST_VIEW_LABELS["en"])
        columns = list_view_columns(fields)
        (view,) = self.metadata.read("ListView", [name])
        if view is not None:
            same = (
                list(getattr(view, "columns", None) or []) == columns
                and getattr(view, "label", None) == label
                and getattr(view, "filterScope", None) == "Mine"
            )
            if same:
                return []
        verb = "create" if view is None else "update"
        detail = f'{verb} "{label}" (the running user\'s own scorecards, {len(columns)} columns)'

        def upsert() -> None:
            component = self.metadata.new(
                "ListView", fullName=name, label=label, filterScope="Mine", columns=columns
            )
            self.metadata.upsert("ListView", [component])

        return [SetupChange("list view", name, detail, upsert)]


def list_view_columns(fields: Sequence[TargetField]) -> list[str]:
    """The list view's columns: the record name (it names the rep and the period), then the
    first KPI fields (the scorecard's number, percent and currency fields)."""
    kpis = [f.name for f in fields if f.type in {"number", "percent", "currency"}]
    return ["NAME", *kpis[:LIST_VIEW_KPI_COLUMNS]]


def _section_fields(section: Any) -> list[str]:
    out = []
    for column in getattr(section, "layoutColumns", None) or []:
        for item in getattr(column, "layoutItems", None) or []:
            value = getattr(item, "field", None)
            if value:
                out.append(str(value))
    return out
