"""HubSpot's setup plan (connectors/hubspot/setup.py) on a portal held in memory: only what
differs, nothing for what does not exist yet, applied changes make the next plan empty."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crm_kpi_worker.connectors.base import SetupSettings, TargetField, TargetObject
from crm_kpi_worker.connectors.hubspot.setup import GRANT_TO_NOTE, plan_hubspot_setup

CARD = TargetObject(
    "p_kpi_scorecard", "KPI Scorecard", "KPI Scorecards", "Scorecard", ("kpi_win_rate",)
)
FIELDS = [
    TargetField("p_kpi_scorecard", "kpi_name", "text", "Scorecard"),
    TargetField("p_kpi_scorecard", "kpi_win_rate", "percent", "Win rate", "Won / (won + lost)."),
    TargetField("p_kpi_scorecard", "hubspot_owner_id", "text", "Rep"),
    TargetField("deals", "kpi_slips", "number", "Close date slips", "How many times."),
    TargetField("deals", "kpi_owner_attainment", "percent", "Owner attainment", "Owner's."),
]


def _prop(name: str, label: str, group: str, description: str = "") -> dict[str, Any]:
    return {"name": name, "label": label, "groupName": group, "description": description}


class FakeTargets:
    """The TargetManager surface the plan uses, over dicts; counts the writes."""

    def __init__(self, *, with_card: bool = True) -> None:
        self.schemas: dict[str, dict[str, Any]] = {}
        self.properties: dict[str, list[dict[str, Any]]] = {
            "deals": [
                _prop("kpi_slips", "Reports de clôture", "kpi_worker", "Nombre de fois."),
                _prop("kpi_owner_attainment", "Mine", "my_group", "mine"),  # moved by a person
                _prop("amount", "Amount", "dealinformation"),
            ]
        }
        self.groups: dict[str, dict[str, Any] | None] = {
            "deals": {"name": "kpi_worker", "label": "KPI worker"}
        }
        self.writes: list[tuple[str, ...]] = []
        if with_card:
            self.schemas["2-1"] = {
                "objectTypeId": "2-1",
                "labels": {"singular": "KPI Scorecard", "plural": "KPI Scorecards"},
                "primaryDisplayProperty": "kpi_name",
                "secondaryDisplayProperties": [],
            }
            self.properties["2-1"] = [
                _prop("kpi_name", "Scorecard", "kpi_scorecard_information"),
                _prop(
                    "kpi_win_rate", "Win rate", "kpi_scorecard_information", "Won / (won + lost)."
                ),
            ]

    def is_custom(self, name: str) -> bool:
        return name.startswith("p_")

    def schema_of(self, name: str) -> dict[str, Any] | None:
        return self.schemas.get("2-1") if name == "p_kpi_scorecard" else None

    def object_type(self, name: str) -> str:
        return "2-1" if name == "p_kpi_scorecard" and self.schemas else name

    def properties_of(self, object_type: str) -> list[dict[str, Any]]:
        return self.properties[object_type]

    def group(self, object_type: str) -> dict[str, Any] | None:
        return self.groups.get(object_type)

    def update_property(self, object_type: str, name: str, changes: dict[str, Any]) -> None:
        self.writes.append(("property", object_type, name))
        for prop in self.properties[object_type]:
            if prop["name"] == name:
                prop.update(changes)

    def update_group(self, object_type: str, changes: dict[str, Any]) -> None:
        self.writes.append(("group", object_type))
        group = self.groups[object_type]
        assert group is not None
        group.update(changes)

    def update_schema(self, object_type: str, changes: dict[str, Any]) -> None:
        self.writes.append(("schema", object_type))
        self.schemas[object_type].update(changes)


def _plan(targets: FakeTargets, settings: SetupSettings | None = None) -> list[Any]:
    return plan_hubspot_setup(targets, [CARD], FIELDS, settings or SetupSettings())  # type: ignore[arg-type]


def test_only_differences_are_planned_then_applied_once() -> None:
    targets = FakeTargets()
    plan = _plan(targets)
    assert [str(c) for c in plan] == [
        "object p_kpi_scorecard: secondary display properties kpi_win_rate (were none)",
        "property deals.kpi_slips: label 'Close date slips' (was 'Reports de clôture');"
        " description in the config's language",
    ]
    assert targets.writes == []  # planning reads only
    for change in plan:
        change.apply()
    assert targets.writes == [("schema", "2-1"), ("property", "deals", "kpi_slips")]
    assert _plan(targets) == []  # idempotent
    assert targets.properties["deals"][1]["label"] == "Mine"  # a person's group: theirs


def test_renamed_group_and_object_labels_are_set_back() -> None:
    targets = FakeTargets()
    targets.groups["deals"] = {"name": "kpi_worker", "label": "Our numbers"}
    targets.schemas["2-1"]["labels"] = {"singular": "Tableau", "plural": "Tableaux"}
    targets.schemas["2-1"]["secondaryDisplayProperties"] = ["kpi_win_rate"]
    targets.properties["2-1"][1]["label"] = "Taux"
    lines = [str(c) for c in _plan(targets)]
    assert lines[0] == (
        "object p_kpi_scorecard: labels 'KPI Scorecard'/'KPI Scorecards'"
        " (were 'Tableau'/'Tableaux')"
    )
    assert "property p_kpi_scorecard.kpi_win_rate: label 'Win rate' (was 'Taux')" in lines
    assert "property group deals.kpi_worker: label 'KPI worker' (was 'Our numbers')" in lines


def test_nothing_is_planned_for_what_does_not_exist_yet() -> None:
    targets = FakeTargets(with_card=False)
    targets.properties["deals"] = [_prop("amount", "Amount", "dealinformation")]
    targets.groups["deals"] = None
    assert _plan(targets) == []


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        (SetupSettings(), False),
        (SetupSettings(grant_to_profiles=("Sales Manager",)), True),
        (SetupSettings(grant_to_reps=False), True),
    ],
)
def test_grant_to_is_said_to_have_no_effect_when_set(
    settings: SetupSettings, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _plan(FakeTargets(), settings)
    assert (GRANT_TO_NOTE in caplog.text) is warned
