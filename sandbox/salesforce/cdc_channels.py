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

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|<>|=|\(|\))|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)


@dataclass(frozen=True)
class _Comparison:
    field: str
    equal: bool
    value: Any

    def holds(self, event: ChangeEvent) -> bool:
        same = event.value_of(self.field) == self.value
        return same if self.equal else not same


@dataclass(frozen=True)
class _Junction:
    is_and: bool
    parts: tuple[Any, ...]

    def holds(self, event: ChangeEvent) -> bool:
        results = (part.holds(event) for part in self.parts)
        return all(results) if self.is_and else any(results)


class FilterExpression:
    """A member's filter, parsed and checked against the entity's fields."""

    def __init__(self, text: str, field_exists: Callable[[str], bool]) -> None:
        self.text = text
        self._tokens = self._tokenize(text)
        self._at = 0
        self._field_exists = field_exists
        self._root = self._or()
        if self._at != len(self._tokens):
            raise self._error(f"unexpected '{self._tokens[self._at][1]}'")

    def accepts(self, event: ChangeEvent) -> bool:
        return bool(self._root.holds(event))

    def _error(self, why: str) -> ChannelError:
        return ChannelError("FIELD_INTEGRITY_EXCEPTION", f"Invalid filter expression: {why}")

    def _tokenize(self, text: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise self._error(f"unexpected character at {position}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            position = match.end()
        return tokens

    def _peek(self) -> tuple[str, str] | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise self._error("unexpected end")
        self._at += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token[0] == "word" and token[1].upper() == word:
            self._at += 1
            return True
        return False

    def _or(self) -> Any:
        parts = [self._and()]
        while self._keyword("OR"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _Junction(False, tuple(parts))

    def _and(self) -> Any:
        parts = [self._atom()]
        while self._keyword("AND"):
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else _Junction(True, tuple(parts))

    def _atom(self) -> Any:
        kind, text = self._take()
        if (kind, text) == ("op", "("):
            inner = self._or()
            if self._take() != ("op", ")"):
                raise self._error("missing ')'")
            return inner
        if kind != "word":
            raise self._error(f"a field name was expected, not '{text}'")
        self._check_field(text)
        op_kind, op = self._take()
        if op_kind != "op" or op not in {"=", "!=", "<>"}:
            raise self._error(f"unsupported operator '{op}'")
        return _Comparison(text, op == "=", self._literal())

    def _literal(self) -> Any:
        kind, text = self._take()
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "word" and text.lower() in {"true", "false", "null"}:
            return {"true": True, "false": False, "null": None}[text.lower()]
        raise self._error(f"a literal was expected, not '{text}'")

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
