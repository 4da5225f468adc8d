"""The canonical model: validation, invariants, derived properties."""

from __future__ import annotations

import ast
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from crm_kpi_worker.sync import model
from crm_kpi_worker.sync.model import (
    CLOSE_DATE_FIELD,
    Account,
    Activity,
    Deal,
    DealType,
    FieldChange,
    ForecastCategory,
    Quota,
    QuotaSource,
    Rep,
    StageChange,
)

PARIS = dt.timezone(dt.timedelta(hours=2))
CREATED = dt.datetime(2026, 4, 1, 9, 30, tzinfo=dt.UTC)


def deal(**changes: Any) -> Deal:
    data: dict[str, Any] = {
        "id": "006000000000001AAA",
        "source": "sandbox",
        "name": "Acme - Platform",
        "owner_id": "005000000000001AAA",
        "account_id": "001000000000001AAA",
        "created_at": CREATED,
        "close_date": dt.date(2026, 6, 15),
        "stage": "closed_won",
        "is_won": True,
        "is_closed": True,
        "amount": Decimal("15000"),
        "currency": "EUR",
        "arr": Decimal("15000"),
        "deal_type": "new_business",
        "forecast_category": "closed",
        "probability": Decimal("1"),
        "term_months": 12,
        "last_modified": CREATED,
    }
    data.update(changes)
    return Deal.model_validate(data)


def errors_of(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[tuple[Any, ...], str]]:
    return [(e["loc"], e["type"]) for e in exc.value.errors()]


def test_a_valid_deal_keeps_its_values() -> None:
    d = deal()
    assert d.deal_type is DealType.NEW_BUSINESS
    assert d.forecast_category is ForecastCategory.CLOSED
    assert d.amount == Decimal("15000") and isinstance(d.amount, Decimal)
    assert (d.is_won, d.is_lost, d.is_open) == (True, False, False)


def test_lost_and_open_are_derived_from_won_and_closed() -> None:
    lost = deal(stage="closed_lost", is_won=False, is_closed=True)
    open_ = deal(stage="demo", is_won=False, is_closed=False, forecast_category="pipeline")
    assert (lost.is_lost, lost.is_open) == (True, False)
    assert (open_.is_lost, open_.is_open) == (False, True)


def test_records_are_frozen() -> None:
    d = deal()
    with pytest.raises(ValidationError) as exc:
        d.amount = Decimal("1")  # type: ignore[misc]
    assert errors_of(exc) == [(("amount",), "frozen_instance")]


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        deal(amout=Decimal("1"))
    assert errors_of(exc) == [(("amout",), "extra_forbidden")]


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        deal(created_at=dt.datetime(2026, 4, 1, 9, 30))
    assert errors_of(exc) == [(("created_at",), "timezone_aware")]


def test_aware_datetimes_are_normalized_to_utc() -> None:
    d = deal(created_at=dt.datetime(2026, 4, 1, 11, 30, tzinfo=PARIS))
    assert d.created_at == CREATED
    assert d.created_at.utcoffset() == dt.timedelta(0)
    assert d.created_at.tzinfo is dt.UTC


def test_money_is_decimal_and_never_negative() -> None:
    assert deal(amount=0.1, arr=0.1).amount == Decimal("0.1")
    with pytest.raises(ValidationError) as exc:
        deal(amount=Decimal("-1"), arr=Decimal("-12"))
    assert errors_of(exc) == [(("amount",), "greater_than_equal"), (("arr",), "greater_than_equal")]
    with pytest.raises(ValidationError) as exc:
        deal(amount=Decimal("NaN"))
    assert errors_of(exc)[0][0] == ("amount",)


def test_a_won_deal_must_be_closed() -> None:
    with pytest.raises(ValidationError, match="is_won=True needs is_closed=True"):
        deal(is_won=True, is_closed=False)


def test_arr_needs_an_amount() -> None:
    with pytest.raises(ValidationError, match="a deal without amount has no arr"):
        deal(amount=None, arr=Decimal("100"))
    missing = deal(amount=None, arr=None)
    assert (missing.amount, missing.arr) == (None, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("probability", Decimal("1.5")),
        ("probability", Decimal("-0.1")),
        ("currency", "eur"),
        ("currency", "EURO"),
        ("stage", "Closed Won"),
        ("source", "Prod Org"),
        ("id", ""),
        ("id", "   "),
        ("term_months", 0),
        ("deal_type", "upsell"),
        ("forecast_category", "maybe"),
    ],
)
def test_field_rules(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        deal(**{field: value})
    assert [loc for loc, _ in errors_of(exc)] == [(field,)]


def test_missing_close_date_and_owner_are_allowed_as_bad_data() -> None:
    d = deal(close_date=None, owner_id=None)
    assert (d.close_date, d.owner_id) == (None, None)


def test_rep_email_is_lowered_and_validated() -> None:
    rep = Rep(id="005A", name="Alice Martin", email="Alice.Martin@Sandbox.Local")
    assert rep.email == "alice.martin@sandbox.local"
    assert (rep.is_active, rep.is_ae, rep.team, rep.start_date) == (True, True, None, None)
    with pytest.raises(ValidationError):
        Rep(id="005A", name="Alice", email="alice at example")


def test_account_churn_date() -> None:
    account = Account(id="001A", name="Acme", churn_date=dt.date(2026, 9, 1))
    assert account.churn_date == dt.date(2026, 9, 1)


def test_stage_change_and_activity() -> None:
    change = StageChange(deal_id="006A", stage="demo", entered_at=CREATED)
    assert change.entered_at == CREATED
    demo = Activity(id="00UA", owner_id="005A", kind=model.DEMO_ACTIVITY, start=CREATED)
    assert (demo.kind, demo.deal_id) == ("demo", None)
    with pytest.raises(ValidationError):
        Activity(id="00UA", owner_id="005A", kind="Demo", start=CREATED)
    with pytest.raises(ValidationError):
        StageChange(deal_id="006A", stage="demo", entered_at=dt.datetime(2026, 1, 1))


def test_field_change_detects_close_date_slips() -> None:
    def change(old: object, new: object) -> FieldChange:
        return FieldChange(
            deal_id="006A", field=CLOSE_DATE_FIELD, old_value=old, new_value=new, changed_at=CREATED
        )

    assert change(dt.date(2026, 6, 1), dt.date(2026, 7, 1)).is_slip is True
    assert change(dt.date(2026, 7, 1), dt.date(2026, 6, 1)).is_slip is False
    assert change(dt.date(2026, 7, 1), dt.date(2026, 7, 1)).is_slip is False
    assert change(None, dt.date(2026, 7, 1)).is_slip is False
    assert change("2026-06-01", "2026-07-01").is_slip is False  # text: not a date field
    numbers = change(5, Decimal("7.5"))
    assert (numbers.old_value, numbers.new_value) == (Decimal("5"), Decimal("7.5"))


def test_quota_period_end_is_inclusive() -> None:
    quota = Quota(
        rep_id="005A",
        period_start=dt.date(2026, 7, 1),
        period_end=dt.date(2026, 9, 30),
        amount=Decimal("120000"),
        source=QuotaSource.CRM,
    )
    assert quota.days == 92
    assert quota.covers(dt.date(2026, 9, 30)) and quota.covers(dt.date(2026, 7, 1))
    assert not quota.covers(dt.date(2026, 10, 1))
    one_day = quota.model_copy(update={"period_end": dt.date(2026, 7, 1)})
    assert one_day.days == 1


def test_quota_rules() -> None:
    with pytest.raises(ValidationError, match="period_end is the last day"):
        Quota(
            rep_id="005A",
            period_start=dt.date(2026, 7, 1),
            period_end=dt.date(2026, 6, 30),
            amount=Decimal("1"),
            source="config",
        )
    with pytest.raises(ValidationError):
        Quota(
            rep_id="005A",
            period_start=dt.date(2026, 7, 1),
            period_end=dt.date(2026, 9, 30),
            amount=Decimal("-1"),
            source="csv",
        )


def test_model_imports_nothing_else_of_the_project() -> None:
    tree = ast.parse(Path(model.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module or "")
    assert not any(name.startswith("crm_kpi_worker") for name in imported), imported
