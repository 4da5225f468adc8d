"""``setup`` for change events: the custom channel and its filtered Opportunity member.

With ``change_events`` configured the worker reads others' opportunity changes from a custom
Change Data Capture channel (see ``change_events.py``). ``setup`` makes it through the Tooling
API, as Salesforce documents for channels: a ``PlatformEventChannel`` (channel type ``data``)
and one ``PlatformEventChannelMember`` selecting ``OpportunityChangeEvent`` with the filter
``ChangeEventHeader.commitUser != '<the worker's user id>'``. Only what differs is planned: a
missing channel or member is created, a member with another filter gets this one.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from crm_kpi_worker.connectors.base import SetupChange
from crm_kpi_worker.connectors.salesforce import soql
from crm_kpi_worker.connectors.salesforce.writes import create_by_tooling

__all__ = ["ENTITY", "ChannelPlanner", "commit_user_filter"]

log = logging.getLogger(__name__)

#: The change event the worker reads.
ENTITY = "OpportunityChangeEvent"


def commit_user_filter(user_id: str) -> str:
    """The member's filter: changes committed by anyone but ``user_id``."""
    return f"ChangeEventHeader.commitUser != {soql.string_literal(user_id)}"


class ChannelPlanner:
    """Plans the channel and member ``setup`` makes (only what differs from the org)."""

    def __init__(self, client: Any, fetch: Callable[[Callable[[], Any]], Any]) -> None:
        self.client = client
        self.fetch = fetch

    def plan(self, channel: str, user_id: str) -> list[SetupChange]:
        developer_name = channel.removesuffix("__chn")
        wanted = commit_user_filter(user_id)
        changes: list[SetupChange] = []
        found = self._query(
            soql.Select(
                "PlatformEventChannel",
                ("Id",),
                where=(f"DeveloperName = {soql.string_literal(developer_name)}",),
            ).soql()
        )
        if not found:
            changes.append(
                SetupChange(
                    "change event channel",
                    channel,
                    "create (channel type data)",
                    apply=lambda: self._create(
                        "PlatformEventChannel",
                        channel,
                        {"channelType": "data", "label": "CRM KPI worker changes"},
                    ),
                )
            )
        members = (
            self._query(
                soql.Select(
                    "PlatformEventChannelMember",
                    ("Id", "SelectedEntity", "FilterExpression"),
                    where=(f"EventChannel = {soql.string_literal(channel)}",),
                ).soql()
            )
            if found
            else []
        )
        member = next((m for m in members if m.get("SelectedEntity") == ENTITY), None)
        full_name = f"{developer_name}_chn_{ENTITY}"
        metadata = {"eventChannel": channel, "selectedEntity": ENTITY, "filterExpression": wanted}
        if member is None:
            changes.append(
                SetupChange(
                    "change event channel member",
                    full_name,
                    f"select {ENTITY}, filter {wanted}",
                    apply=lambda: self._create("PlatformEventChannelMember", full_name, metadata),
                )
            )
        elif member.get("FilterExpression") != wanted:
            member_id = str(member["Id"])
            changes.append(
                SetupChange(
                    "change event channel member",
                    full_name,
                    f"filter {member.get('FilterExpression')!r} -> {wanted}",
                    apply=lambda: self._update(member_id, full_name, metadata),
                )
            )
        return changes

    def _query(self, text: str) -> list[dict[str, Any]]:
        answer = self.fetch(
            lambda: self.client.toolingexecute("query/?q=" + urllib.parse.quote(text))
        )
        records = (answer or {}).get("records") or []
        return [r for r in records if isinstance(r, dict)]

    def _create(self, kind: str, full_name: str, metadata: dict[str, Any]) -> None:
        create_by_tooling(self.client, self.fetch, kind, full_name, metadata)

    def _update(self, member_id: str, full_name: str, metadata: dict[str, Any]) -> None:
        self.fetch(
            lambda: self.client.toolingexecute(
                f"sobjects/PlatformEventChannelMember/{member_id}",
                method="PATCH",
                data={"FullName": full_name, "Metadata": metadata},
            )
        )
        log.info("updated PlatformEventChannelMember %s", full_name)
