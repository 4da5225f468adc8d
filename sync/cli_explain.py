"""``crm-kpi kpis explain``: one stored KPI value, its formula and the deals that make it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from crm_kpi_worker.kpis.results import KPI_KEYS
from crm_kpi_worker.sync.cli_sync import _load, config_option, open_store

#: Deals printed by the table; ``--format json`` lists all.
TABLE_DEALS = 60
_PERCENT = frozenset(
    {
        "win_rate",
        "quota_attainment",
        "pipeline_coverage",
        "conversion_rate",
        "retention_90d",
        "forecast_accuracy",
    }
)


@click.command("explain")
@config_option
@click.option("--rep", required=True, help="A rep's CRM user id or email.")
@click.option("--period", required=True, help="A period key: 2026-Q3, 2026-07, FY2026.")
@click.option(
    "--kpi",
    required=True,
    type=click.Choice(KPI_KEYS),
    metavar="KPI",
    help="A KPI key (bookings_arr, quota_attainment, win_rate, ...: see the README).",
)
@click.option("--source", help="The config's source (needed when it has several).")
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--all",
    "every_deal",
    is_flag=True,
    help="Also list the rep's deals outside the period (otherwise only counted).",
)
def explain_command(
    config_path: Path,
    rep: str,
    period: str,
    kpi: str,
    source: str | None,
    output: str,
    every_deal: bool,
) -> None:
    """Explain a stored KPI value: its formula with the numbers, and the deals that make it.

    Reads the store the last run left (never the CRM): every deal of the rep that counts, with
    what it adds, and those that do not, with why (excluded, outside the period, lost, open,
    not quota-credited...). The sums over the listed deals are the stored value."""
    from crm_kpi_worker.sync.explain import ExplainError, explain_kpi
    from crm_kpi_worker.sync.store import StoreMissing

    config = _load(config_path)
    try:
        store = open_store(config, read_only=True)
    except StoreMissing as exc:
        raise click.ClickException(
            f"no KPI values yet: run `crm-kpi sync --once` first ({exc})"
        ) from None
    with store:
        try:
            found = explain_kpi(
                config,
                store,
                rep=rep,
                period=period,
                kpi=kpi,
                source=source,
                every_deal=every_deal,
            )
        except ExplainError as exc:
            raise click.ClickException(str(exc)) from None
    if output == "json":
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    print_explanation(found)


def _value(kpi: str, value: float | None, currency: str) -> str:
    if value is None:
        return "empty"
    if kpi in _PERCENT:
        return f"{value:.4g} ({value * 100:.1f}%)".replace(".0%)", "%)")
    if kpi in ("deals_won", "deals_lost"):
        return f"{int(value)}"
    if kpi in ("sales_cycle_days", "sales_cycle_days_median", "demos_per_week"):
        return f"{value:,.1f}"
    return f"{value:,.2f} {currency}".replace(".00 ", " ")


def _amount(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_explanation(found: dict[str, Any]) -> None:
    """The table form of :func:`..explain.explain_kpi`'s result."""
    rep, period, kpi, currency = found["rep"], found["period"], found["kpi"], found["currency"]
    who = f"{rep['name']} <{rep['email']}>" if rep["email"] else rep["name"]
    click.echo(f"{kpi} of {who}, {period['key']} ({period['start']} to {period['end']})")
    run = found["run"]
    stored = _value(kpi, found["value"], currency) if found["stored"] else "not stored"
    click.echo(
        f"  stored value: {stored}  (run {run['id']}, as of {found['as_of']};"
        f" source {found['source']})"
    )
    if found["empty_reason"]:
        click.echo(f"  empty because: {found['empty_reason']['text']}")
    if not found["matches_store"]:
        click.echo(
            "  warning: the store's records give "
            f"{_value(kpi, found['computed'], currency)} now: they changed after run"
            f" {run['id']} (the next sync stores it)"
        )
    click.echo(f"  {found['formula']}")
    for row in found["quota_rows"]:
        click.echo(
            f"  quota row {row['start']} to {row['end']}: {_amount(row['amount'])} {currency},"
            f" {_amount(row['share'])} {currency} in {period['key']}"
        )
    deals = found["deals"]
    if deals:
        counting = sum(1 for d in deals if d["counts"])
        click.echo(
            f"\n  Deals: {counting} count, {len(deals) - counting} do not (ARR in {currency})"
        )
        click.echo(f"  {'id':<20} {'name':<30} {'ARR':>10}  {'close':<10}  {'stage':<14} why")
        for deal in deals[:TABLE_DEALS]:
            click.echo(
                f"  {deal['id'][:20]:<20} {str(deal['name'] or '')[:30]:<30}"
                f" {_amount(deal['arr']):>10}  {deal['close_date'] or '-':<10}"
                f"  {str(deal['stage'] or '')[:14]:<14} {_line_why(deal, currency)}"
            )
        if len(deals) > TABLE_DEALS:
            click.echo(f"  ... and {len(deals) - TABLE_DEALS} more (--format json lists all)")
    for part in found["parts"].values():
        click.echo(f"  total: {part['meaning']}: {_total(part['total'])} ({part['deals']} deals)")
    for item in found["not_listed"].values():
        click.echo(f"  not listed: {item['deals']} more deals of the rep, {item['why']} (--all)")


def _total(value: float) -> str:
    return f"{value:,.0f}" if value == round(value) else f"{value:,.2f}"


def _line_why(deal: dict[str, Any], currency: str) -> str:
    if not deal["counts"]:
        detail = "; ".join(e["detail"] for e in deal["excluded"] if e["detail"])
        return f"{deal['why']}" + (f" ({detail})" if detail and "excluded" in deal["why"] else "")
    adds = ", ".join(f"{name} +{_total(value)}" for name, value in deal["adds"].items())
    return f"counts: {adds}"
