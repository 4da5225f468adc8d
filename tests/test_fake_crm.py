"""A CRM is one folder plus one registry entry: the proof.

A minimal in-memory CRM is defined entirely here (its source model, connector, normalizer,
write targets, metadata check), registered with ``connectors.registry.register``, and run
through the real command line (``config validate``, ``setup``, ``sync --once``): the pipeline
pulls it, the KPI engine computes, the scorecards are written back into it. Nothing in
``sync/``, ``kpis/`` or the config loader knows it. This file is the worked example of the
README's "Adding a CRM".
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from click.testing import CliRunner
from pydantic import model_validator

from crm_kpi_worker.connectors.base import (
    STREAMS,
    CrmField,
    Page,
    SetupChange,
    SetupSettings,
    TargetField,
    TargetObject,
    WriteResult,
)
from crm_kpi_worker.connectors.budget import CallBudget
from crm_kpi_worker.connectors.registry import (
    CrmPlugin,
    MappedField,
    register,
    source_models,
    unregister,
)
from crm_kpi_worker.sync.cli import main
from crm_kpi_worker.sync.config.base import raise_all
from crm_kpi_worker.sync.config.mapping import MappingBase
from crm_kpi_worker.sync.config.source import SourceBase
from crm_kpi_worker.sync.config.targets import TargetNaming
from crm_kpi_worker.sync.config_loader import ConfigError, load_config
from crm_kpi_worker.sync.model import Deal, Rep
from crm_kpi_worker.sync.normalize import (
    CrmMetadata,
    ExclusionReason,
    InvalidValue,
    NormalizeContext,
    Normalized,
    RecordType,
    deal_arr,
    each_record,
    read_date,
    read_decimal,
    read_instant,
    read_text,
)

# --- the fake CRM's config: its source and mapping ----------------------------------------


class FakeMapping(MappingBase):
    """The fake CRM's records have fixed keys; only the stages and quota source are mapped."""

    # What the sync layer reads on every mapping; this CRM has none of them.
    team_field: None = None
    churn_date: None = None
    demos: None = None


class FakeSource(SourceBase):
    crm: ClassVar[str] = "fake"
    type: Literal["fake"]
    mapping: FakeMapping

    @model_validator(mode="after")
    def _cross_checks(self) -> FakeSource:
        raise_all("fake source", self.kpi_field_problems())
        return self


# --- the fake CRM itself: records in dicts, and its connector -------------------------------


class FakeCrm:
    """The CRM's data: what it serves and what the worker wrote into it."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.objects: set[str] = set()
        self.fields: set[tuple[str, str]] = set()
        self.upserted: dict[str, dict[str, dict[str, Any]]] = {}
        self.calls = 0


CRM = FakeCrm()


class FakeConnector:
    """``connectors.base.Connector`` over :data:`CRM`."""

    def __init__(self, source: FakeSource) -> None:
        self.name = source.name
        self.crm = CRM

    def pull(self, stream: str, since: str | None) -> Iterator[Page]:
        self.crm.calls += 1
        records = [
            r for r in self.crm.records.get(stream, []) if since is None or r["modified"] >= since
        ]
        if records:
            yield Page(stream, records, max(r["modified"] for r in records))

    def describe_fields(self, object: str) -> dict[str, CrmField] | None:
        if object != "deals":
            return None
        return {name: CrmField(name) for name in ("id", "owner", "amount", "stage", "close_date")}

    def missing_targets(
        self, objects: Sequence[TargetObject], fields: Sequence[TargetField]
    ) -> tuple[list[TargetObject], list[TargetField]]:
        return (
            [o for o in objects if o.name not in self.crm.objects],
            [f for f in fields if (f.object, f.name) not in self.crm.fields],
        )

    def create_targets(
        self, objects: Sequence[TargetObject], fields: Sequence[TargetField]
    ) -> None:
        self.crm.objects.update(o.name for o in objects)
        self.crm.fields.update((f.object, f.name) for f in fields)

    def plan_setup(
        self,
        objects: Sequence[TargetObject],
        fields: Sequence[TargetField],
        settings: SetupSettings,
    ) -> list[SetupChange]:
        return []  # the fake CRM has no access rules nor layouts

    def update(self, object: str, records: Mapping[str, Mapping[str, Any]]) -> list[WriteResult]:
        raise AssertionError("the fake config writes scorecards only")

    def upsert(
        self, object: str, external_id: str, records: Mapping[str, Mapping[str, Any]]
    ) -> list[WriteResult]:
        self.crm.calls += 1
        table = self.crm.upserted.setdefault(object, {})
        results = []
        for key, values in records.items():
            created = key not in table
            table.setdefault(key, {}).update(values)
            results.append(WriteResult(key, key, True, created=created))
        return results

    def write_batch_size(self, count: int, configured: int) -> int:
        return configured

    def write_calls(self, count: int, configured: int) -> int:
        return -(-count // configured)

    @property
    def api_calls(self) -> int:
        return self.crm.calls

    def read_along(self, fields: Mapping[str, Sequence[str]]) -> None:
        pass  # the fake config writes no deal field: nothing to read along

    def change_events(self) -> dict[str, Any]:
        return {}  # no change feed

    def read_back(
        self, object: str, fields: Sequence[str], key_field: str | None = None
    ) -> Iterator[dict[str, dict[str, Any]]]:
        self.crm.calls += 1
        table = self.crm.upserted.get(object, {})
        yield {key: {name: values.get(name) for name in fields} for key, values in table.items()}

    def use_budget(self, budget: CallBudget) -> None:
        pass  # the fake CRM has no daily limit


# --- normalization into the canonical model -------------------------------------------------


def _normalize_users(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    out = Normalized()

    def one(record: dict[str, Any], user_id: str) -> None:
        email = read_text(record.get("email"), "email") or ""
        name = read_text(record.get("name"), "name") or ""
        out.reps.append(Rep(id=user_id, name=name, email=email, team=context.team_of(email)))

    each_record(records, RecordType.REP, out, one, lambda r: str(r["id"]))
    return out


def _normalize_deals(context: NormalizeContext, records: Sequence[Any]) -> Normalized:
    out = Normalized()
    mapping = context.source.mapping

    def one(record: dict[str, Any], deal_id: str) -> None:
        stage = mapping.stage_for(str(record["stage"]))
        if stage is None:
            raise InvalidValue("stage", f"unmapped stage {record['stage']!r}")
        amount = read_decimal(record.get("amount"), "amount")
        problems: list[tuple[ExclusionReason, str]] = []
        arr = None
        if amount is not None:
            reporting = context.currency.reporting
            arr = deal_arr(context, amount, reporting, None, "arr", None, False, problems)
        modified = read_instant(record["modified"], "modified")
        deal = Deal(
            id=deal_id,
            source=context.source.name,
            name=read_text(record.get("name"), "name") or "",
            owner_id=read_text(record.get("owner"), "owner"),
            created_at=read_instant(record["created"], "created"),
            close_date=read_date(record.get("close_date"), "close_date"),
            stage=stage.stage,
            is_won=stage.won,
            is_closed=stage.closed,
            amount=amount,
            currency=context.currency.reporting,
            arr=arr,
            deal_type=mapping.deal_types.map(read_text(record.get("type"), "type")),
            last_modified=modified,
        )
        out.add_deal(deal, [], [], problems)

    each_record(records, RecordType.DEAL, out, one, lambda r: str(r["id"]))
    return out


_READERS = {"users": _normalize_users, "deals": _normalize_deals}


def _normalize(context: NormalizeContext, stream: str, records: Sequence[Any]) -> Normalized:
    reader = _READERS.get(stream)
    return reader(context, records) if reader is not None else Normalized()


def _mapped_fields(mapping: FakeMapping, conversion: str) -> Iterator[MappedField]:
    yield MappedField(("stages",), "deals", "stage")


def _name_problem(value: str, what: str) -> str | None:
    ok = re.fullmatch(r"[a-z][a-z0-9_]*", value)
    return None if ok else f"expected a fake {what} name in lower case, e.g. 'kpi_win_rate'"


FAKE = CrmPlugin(
    type="fake",
    label="Fake CRM",
    source_model=FakeSource,
    mapping_model=FakeMapping,
    connect=lambda source, currency, **options: FakeConnector(source),
    normalize=_normalize,
    metadata=lambda records: CrmMetadata(),
    target_naming=TargetNaming(
        name_problem=_name_problem,
        scorecard_columns={
            "rep_field": "kpi_rep",
            "team_field": "kpi_team",
            "period_type_field": "kpi_period_type",
            "period_start_field": "kpi_period_start",
            "period_end_field": "kpi_period_end",
            "computed_at_field": "kpi_computed_at",
        },
    ),
    mapped_fields=_mapped_fields,
    field_noun="field",
    deal_object="deals",
    rep_object=None,
    write_batch_limit=50,
)

# --- the scenario ---------------------------------------------------------------------------

CONFIG = """\
version: 1
sources:
  - name: fake-crm
    type: fake
    mapping:
      stages:
        - {crm: open, stage: qualification, order: 1}
        - {crm: won, stage: closed_won, order: 2, won: true}
        - {crm: lost, stage: closed_lost, order: 3, lost: true}
      qualified_stage: qualification
      conversion_entry_stage: qualification
      quota_source: config
      deal_types: {default: new_business}
currency: {reporting: EUR}
teams:
  North: [alice@example.com, bruno@example.com]
quotas:
  entries:
    - {rep: alice@example.com, period: 2026-Q3, amount: 120000}
    - {rep: bruno@example.com, period: 2026-Q3, amount: 100000}
kpi_fields:
  scorecard:
    object: kpi_scorecard
    external_id: kpi_key
    fields:
      bookings_arr: kpi_bookings
      deals_won: kpi_won
      deals_lost: kpi_lost
      win_rate: kpi_win_rate
      quota_attainment: kpi_attainment
store: {url: "sqlite:///fake.sqlite"}
"""
STAMP = "2026-09-30T10:00:00+00:00"


def _deal(deal_id: str, owner: str, amount: int, stage: str, close: str) -> dict[str, Any]:
    return {
        "id": deal_id,
        "name": f"Deal {deal_id}",
        "owner": owner,
        "amount": amount,
        "stage": stage,
        "close_date": close,
        "created": "2026-05-04T09:00:00+00:00",
        "modified": STAMP,
    }


@pytest.fixture
def fake_crm(tmp_path: Path) -> Iterator[Path]:
    register(FAKE)
    CRM.__init__()
    CRM.records = {
        "users": [
            {"id": "u1", "name": "Alice Martin", "email": "alice@example.com", "modified": STAMP},
            {"id": "u2", "name": "Bruno Lefèvre", "email": "bruno@example.com", "modified": STAMP},
        ],
        "deals": [
            _deal("d1", "u1", 100_000, "won", "2026-07-20"),
            _deal("d2", "u1", 50_000, "won", "2026-08-12"),
            _deal("d3", "u1", 30_000, "lost", "2026-09-01"),
            _deal("d4", "u2", 40_000, "won", "2026-09-15"),
            _deal("d5", "u2", 10_000, "lost", "2026-08-02"),
            _deal("d6", "u2", 25_000, "lost", "2026-07-09"),
            _deal("d7", "u1", 70_000, "open", "2026-12-10"),
        ],
    }
    path = tmp_path / "fake.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    try:
        yield path
    finally:
        unregister("fake")


def _run(*args: str) -> str:
    outcome = CliRunner().invoke(main, list(args))
    assert outcome.exit_code == 0, outcome.output
    return outcome.stdout


def test_a_registered_crm_validates_like_the_built_in_ones(fake_crm: Path) -> None:
    assert list(source_models())[-1] == "fake"
    config = load_config(fake_crm)
    assert isinstance(config.sources[0], FakeSource)
    bad = fake_crm.with_name("bad.yaml")
    bad.write_text(CONFIG.replace("type: fake", "type: fak"), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert str(exc.value.problems[0]) == (
        f"{bad}:4:5: sources[0].type: unknown source type 'fak'; expected one of"
        " 'salesforce', 'hubspot', 'fake'; did you mean 'fake'?"
    )
    typo = fake_crm.with_name("typo.yaml")
    typo.write_text(CONFIG.replace("qualified_stage:", "qualifed_stage:"), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(typo)
    expected = (
        f"{typo}:10:7: sources[0].mapping.qualifed_stage: unknown key 'qualifed_stage'; did you"
        " mean 'qualified_stage'?"
    )
    assert expected in [str(p) for p in exc.value.problems]


def test_a_whole_sync_runs_through_the_real_pipeline(fake_crm: Path) -> None:
    assert "valid" in _run("config", "validate", str(fake_crm))
    _run("setup", "--config", str(fake_crm))
    assert "kpi_scorecard" in CRM.objects
    assert ("kpi_scorecard", "kpi_attainment") in CRM.fields

    _run("sync", "--once", "--config", str(fake_crm), "--as-of", "2026-10-15T12:00:00+00:00")

    cards = CRM.upserted["kpi_scorecard"]
    q3 = {
        values["kpi_rep"]: values
        for values in cards.values()
        if values["kpi_period_type"] == "quarter"
        and values["kpi_period_start"] == "2026-07-01"
        and values["kpi_rep"]
    }
    alice, bruno = q3["u1"], q3["u2"]
    assert float(alice["kpi_bookings"]) == 150_000
    assert (int(float(alice["kpi_won"])), int(float(alice["kpi_lost"]))) == (2, 1)
    # Percent fields hold percentages, as the CRMs' percent fields do.
    assert float(alice["kpi_attainment"]) == pytest.approx(125)
    assert float(alice["kpi_win_rate"]) == pytest.approx(200 / 3, abs=0.01)
    assert float(bruno["kpi_bookings"]) == 40_000
    assert float(bruno["kpi_attainment"]) == pytest.approx(40)
    assert float(bruno["kpi_win_rate"]) == pytest.approx(100 / 3, abs=0.01)

    # A second run pulls nothing new and writes nothing: the diff remembers what was written.
    written = {key: dict(values) for key, values in cards.items()}
    calls = CRM.calls
    _run("sync", "--once", "--config", str(fake_crm), "--as-of", "2026-10-15T12:00:00+00:00")
    assert cards == written
    assert CRM.calls - calls == len(STREAMS)  # one pull per stream, no write


def test_the_fake_crm_is_gone_once_unregistered(fake_crm: Path) -> None:
    unregister("fake")
    with pytest.raises(ConfigError) as exc:
        load_config(fake_crm)
    assert "unknown source type 'fake'" in str(exc.value)
    register(FAKE)


def test_this_file_is_the_whole_crm() -> None:
    """Nothing outside this file names the fake CRM (the registry finds it at run time)."""
    root = Path(__file__).resolve().parents[1]
    for folder in ("sync", "kpis", "connectors"):
        for path in (root / folder).rglob("*.py"):
            assert "FakeSource" not in path.read_text(encoding="utf-8"), path
    assert textwrap.dedent(CONFIG).count("type: fake") == 1
