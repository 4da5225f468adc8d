"""Which entities produce change events and where they are delivered: the Tooling API records
``PlatformEventChannel`` (a custom channel, ``X__chn``, ChannelType ``data``) and
``PlatformEventChannelMember`` (an entity's ``<Entity>ChangeEvent`` selected on the standard
channel ``ChangeEvents`` or on a custom channel, with an optional filter expression).

An entity selected on any channel produces change events (``change_events.py``). Topics:
``/data/ChangeEvents`` (every entity selected on the standard channel),
``/data/<Entity>ChangeEvent`` (one entity selected on the standard channel) and
``/data/<Name>__chn`` (a custom channel's members, each member's events filtered by its
expression).

Filter expressions (custom channels only, as on Salesforce) are a subset of SOQL's WHERE:
``ChangeEventHeader.<field>`` or a record field, ``=`` / ``!=`` / ``<>`` against a string,
number, boolean or null literal, AND, OR and parentheses. Salesforce refuses a filter on the
header's array fields (recordIds, changedFields, nulledFields, diffFields) and on fields the
entity does not have; so does the sandbox.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crm_kpi_worker.sandbox.salesforce.change_events import ChangeEvent
from crm_kpi_worker.sandbox.salesforce.soql import SoqlError, parse
from crm_kpi_worker.sandbox.salesforce.soql_ast import (
    And,
    BoolLit,
    Comparison,
    Condition,
    FieldRef,
    NullLit,
    NumberLit,
    Or,
    StringLit,
)

__all__ = ["STANDARD_CHANNEL", "CdcChannels", "ChannelError", "FilterExpression"]

STANDARD_CHANNEL = "ChangeEvents"
HEADER_FIELDS = frozenset(
    {
        "entityname",
        "changetype",
        "changeorigin",
        "transactionkey",
        "sequencenumber",
        "committimestamp",
        "commitnumber",
        "commituser",
    }
)
ARRAY_HEADER_FIELDS = frozenset({"recordids", "changedfields", "nulledfields", "difffields"})


class ChannelError(Exception):
    """A refused channel or member, as the Tooling API reports it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---- filter expressions -----------------------------------------------------------------------

#: What a filter expression may compare with (SOQL's own literals).
_LITERALS = (StringLit, NumberLit, BoolLit, NullLit)


class FilterExpression:
    """A member's filter: a SOQL condition (the sandbox's SOQL parser reads it) of ``=`` and
    ``!=`` comparisons of header or record fields with literals, under AND and OR; checked
    against the entity's fields."""

    def __init__(self, text: str, field_exists: Callable[[str], bool]) -> None:
        self.text = text
        self._field_exists = field_exists
        try:
            where = parse(f"SELECT Id FROM Event WHERE {text}").where  # noqa: S608 - parsed only
        except SoqlError as error:
            raise self._error(error.reason or str(error)) from None
        assert where is not None
        self._root = where
        self._check(where)

    def accepts(self, event: ChangeEvent) -> bool:
        return self._holds(self._root, event)

    def _holds(self, condition: Condition, event: ChangeEvent) -> bool:
        if isinstance(condition, And):
            return all(self._holds(item, event) for item in condition.items)
        if isinstance(condition, Or):
            return any(self._holds(item, event) for item in condition.items)
        assert isinstance(condition, Comparison) and isinstance(condition.left, FieldRef)
        assert isinstance(condition.value, _LITERALS)
        value = None if isinstance(condition.value, NullLit) else condition.value.value
        same = event.value_of(".".join(condition.left.path)) == value
        return same if condition.op == "=" else not same

    def _check(self, condition: Condition) -> None:
        if isinstance(condition, And | Or):
            for item in condition.items:
                self._check(item)
            return
        if not isinstance(condition, Comparison) or not isinstance(condition.left, FieldRef):
            raise self._error("only comparisons of fields, AND and OR are supported")
        if condition.op not in {"=", "!="}:
            raise self._error(f"unsupported operator '{condition.op}'")
        if not isinstance(condition.value, _LITERALS):
            raise self._error("a field is compared with a literal")
        self._check_field(".".join(condition.left.path))

    def _error(self, why: str) -> ChannelError:
        return ChannelError("FIELD_INTEGRITY_EXCEPTION", f"Invalid filter expression: {why}")

    def _check_field(self, name: str) -> None:
        head, dot, rest = name.partition(".")
        if dot and head.lower() == "changeeventheader":
            if rest.lower() in ARRAY_HEADER_FIELDS:
                raise self._error(
                    f"{name}: filtering on array fields of ChangeEventHeader isn't supported"
                )
            if rest.lower() not in HEADER_FIELDS:
                raise self._error(f"{name} is not a ChangeEventHeader field")
            return
        if dot or not self._field_exists(name):
            raise self._error(f"no such field {name}")


# ---- the Tooling records ------------------------------------------------------------------------


@dataclass
class Channel:
    id: str
    full_name: str  # "KpiWorker__chn"
    label: str
    channel_type: str  # "data"


@dataclass
class Member:
    id: str
    full_name: str
    channel: str  # "ChangeEvents" or a custom channel's full name
    selected_entity: str  # "OpportunityChangeEvent"
    entity: str  # "Opportunity"
    filter: FilterExpression | None

    def accepts(self, event: ChangeEvent) -> bool:
        return event.entity == self.entity and (self.filter is None or self.filter.accepts(event))


class CdcChannels:
    """The org's channels and members. ``entity_fields(entity)`` answers the entity's name as
    the org spells it and its change-event field names (None: no such entity, or one without
    change events)."""

    def __init__(self, entity_fields: Callable[[str], tuple[str, set[str]] | None]) -> None:
        self._entity_fields = entity_fields
        self._lock = threading.Lock()
        self.channels: dict[str, Channel] = {}  # lower-cased full name -> channel
        self.members: dict[str, Member] = {}  # id -> member
        self._serial = 0

    def _new_id(self, prefix: str) -> str:
        from crm_kpi_worker.sandbox.salesforce.ids import make_id

        self._serial += 1
        return make_id(prefix, self._serial)

    def add_channel(self, full_name: str, metadata: dict[str, Any]) -> Channel:
        channel_type = str(metadata.get("channelType") or "")
        with self._lock:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*__chn", full_name) or "___" in full_name:
                raise ChannelError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"Invalid channel name {full_name}: a custom channel's name ends in __chn",
                )
            if channel_type.lower() not in {"data", "event"}:
                raise ChannelError("FIELD_INTEGRITY_EXCEPTION", "channelType must be data or event")
            if full_name.lower() in self.channels:
                raise ChannelError(
                    "DUPLICATE_DEVELOPER_NAME", f"There is already a channel named {full_name}"
                )
            channel = Channel(
                self._new_id("0YL"),
                full_name,
                str(metadata.get("label") or full_name),
                channel_type.lower(),
            )
            self.channels[full_name.lower()] = channel
            return channel

    def add_member(self, full_name: str, metadata: dict[str, Any]) -> Member:
        channel_name = str(metadata.get("eventChannel") or "")
        selected = str(metadata.get("selectedEntity") or "")
        expression = metadata.get("filterExpression")
        with self._lock:
            standard = channel_name.lower() == STANDARD_CHANNEL.lower()
            channel = self.channels.get(channel_name.lower())
            if not standard and (channel is None or channel.channel_type != "data"):
                raise ChannelError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"eventChannel {channel_name!r} is not ChangeEvents or a data channel",
                )
            entity = selected[: -len("ChangeEvent")] if selected.endswith("ChangeEvent") else ""
            if entity.endswith("__"):  # a custom object's event: Thing__ChangeEvent
                entity += "c"
            found = self._entity_fields(entity) if entity else None
            if found is None:
                raise ChannelError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"selectedEntity {selected!r} is not a change event of a supported entity",
                )
            entity, fields = found
            canonical = channel.full_name if channel else STANDARD_CHANNEL
            if any(
                m.channel.lower() == canonical.lower() and m.entity.lower() == entity.lower()
                for m in self.members.values()
            ):
                raise ChannelError(
                    "DUPLICATE_VALUE", f"{selected} is already selected on {canonical}"
                )
            parsed = None
            if expression:
                if standard:
                    raise ChannelError(
                        "FIELD_INTEGRITY_EXCEPTION",
                        "Filter expressions are supported on custom channels only",
                    )
                lowered = {f.lower() for f in fields}
                parsed = FilterExpression(str(expression), lambda n: n.lower() in lowered)
            member = Member(self._new_id("0v8"), full_name, canonical, selected, entity, parsed)
            self.members[member.id] = member
            return member

    def delete(self, record_id: str) -> bool:
        with self._lock:
            if self.members.pop(record_id, None) is not None:
                return True
            for key, channel in list(self.channels.items()):
                if channel.id == record_id:
                    if any(m.channel.lower() == key for m in self.members.values()):
                        raise ChannelError(
                            "DELETE_FAILED", "Delete the channel's members before the channel"
                        )
                    del self.channels[key]
                    return True
            return False

    # ---- what the event bus and the Pub/Sub API ask -------------------------------------------

    def selected(self, entity: str) -> bool:
        with self._lock:
            return any(m.entity.lower() == entity.lower() for m in self.members.values())

    def topic_members(self, topic: str) -> list[Member] | None:
        """The members whose events a topic delivers (None: no such topic)."""
        name = topic.removeprefix("/data/")
        if not topic.startswith("/data/") or not name:
            return None
        with self._lock:
            standard = [
                m for m in self.members.values() if m.channel.lower() == STANDARD_CHANNEL.lower()
            ]
            if name.lower() == STANDARD_CHANNEL.lower():
                return standard
            if name.lower().endswith("__chn"):
                if name.lower() not in self.channels:
                    return None
                return [m for m in self.members.values() if m.channel.lower() == name.lower()]
            chosen = [m for m in standard if m.selected_entity.lower() == name.lower()]
            return chosen or None
