"""What the HubSpot connector reads back of the worker's own properties: along the deal search
(``Page.own_values`` and the records' digests) and in the verify pass (list pages)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from crm_kpi_worker.connectors.base import Page, content_digest
from crm_kpi_worker.connectors.hubspot.writes import NAME_PROPERTY

__all__ = ["property_name", "values_by_key", "with_own_values"]

#: Top-level keys of a search result that move with any write (the worker's own included).
VOLATILE_KEYS = frozenset({"updatedAt"})


def property_name(field: str) -> str:
    """The HubSpot property a field the worker writes lands in (``Name`` is ``kpi_name``)."""
    return NAME_PROPERTY if field == "Name" else field


def with_own_values(page: Page, own_fields: Sequence[str], volatile: Iterable[str]) -> Page:
    """``page`` with the own properties' values and the records' digests (the properties but
    the stamps and the own ones, and the other keys but ``updatedAt``)."""
    leave_out = {*own_fields, *volatile}
    own: dict[str, dict[str, Any]] = {}
    digests: list[tuple[str, str]] = []
    for record in page.records:
        record_id = str(record.get("id"))
        properties = record.get("properties") or {}
        if own_fields:
            own[record_id] = {name: properties.get(name) for name in own_fields}
        content = [(key, value) for key, value in record.items() if key not in VOLATILE_KEYS]
        content = [
            (key, [(k, v) for k, v in value.items() if k not in leave_out])
            if key == "properties" and isinstance(value, dict)
            else (key, value)
            for key, value in content
        ]
        digests.append((record_id, content_digest(content)))
    return dataclasses.replace(page, own_values=own, digests=digests)


def values_by_key(
    bodies: Iterable[dict[str, Any]], fields: Sequence[str], key_field: str | None
) -> Iterator[dict[str, dict[str, Any]]]:
    """List answers as the verify pass takes them: key -> field -> value."""
    for body in bodies:
        values: dict[str, dict[str, Any]] = {}
        for record in body.get("results") or ():
            if not isinstance(record, dict):
                continue
            properties = record.get("properties") or {}
            key = properties.get(key_field) if key_field else record.get("id")
            if key is not None:
                values[str(key)] = {name: properties.get(property_name(name)) for name in fields}
        yield values
