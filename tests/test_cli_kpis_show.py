"""``crm-kpi kpis show``: which store it reads (relative to the config file) and what it says
when a filter matches nothing."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sync.cli import main
from crm_kpi_worker.sync.model import Rep
from crm_kpi_worker.sync.store import KpiRow, Store, StoredPage

SOURCE = "sandbox"  # the demo config's source name
AS_OF = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


def _config(folder: Path, store_url: str = "sqlite:///kpi-store.sqlite") -> Path:
    """The shipped demo config (never dialled here) with its store at ``store_url``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
    text = text.replace("url: sqlite:///crm-kpi-demo.sqlite", f"url: {store_url}")
    path = folder / "crm-kpi.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _fill(store_path: Path, reps: int = 3) -> None:
    """Reps rep0..repN with values for 2026-Q3 and 2026-Q4 (rep0 also a month), a team, the org."""
    with Store.open(f"sqlite:///{store_path}") as store:
        people = [
            Rep(id=f"005R{i}", name=f"Rep {i}", email=f"rep{i}@example.com") for i in range(reps)
        ]
        store.save_page(StoredPage(source=SOURCE, stream="users", reps=people))
        run = store.start_run(AS_OF, {})
        rows = []
        for period in ("2026-Q3", "2026-Q4"):
            for rep in people:
                rows.append(
                    KpiRow(SOURCE, "rep", rep.id, "quarter", period, "bookings_arr", Decimal(1000))
                )
            rows.append(
                KpiRow(SOURCE, "team", "Core", "quarter", period, "bookings_arr", Decimal(9))
            )
            rows.append(KpiRow(SOURCE, "org", "org", "quarter", period, "bookings_arr", Decimal(9)))
        rows.append(KpiRow(SOURCE, "rep", "005R0", "month", "2026-11", "deals_won", 2))
        store.save_kpis(run, rows)


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config in tmp/etc with a relative store URL and a filled store beside it; the working
    directory is another folder."""
    config = _config(tmp_path / "etc")
    _fill(tmp_path / "etc" / "kpi-store.sqlite")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return config


def _show(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["kpis", "show", "--config", str(config), *args])


# ---- point 10: the store is beside the config file -------------------------------------------


def test_a_relative_store_path_is_relative_to_the_config_file(elsewhere: Path) -> None:
    outcome = _show(elsewhere, "--scope", "rep", "--period", "2026-Q3", "--format", "json")
    assert outcome.exit_code == 0, outcome.output
    assert sorted(row["subject"] for row in json.loads(outcome.stdout)) == [
        "005R0",
        "005R1",
        "005R2",
    ]
    assert list(Path.cwd().iterdir()) == []  # no empty store made in the working directory


def test_the_default_store_is_beside_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _config(tmp_path / "etc").read_text(encoding="utf-8")
    text = text.replace("store:\n  url: sqlite:///kpi-store.sqlite\n", "")
    (tmp_path / "etc" / "crm-kpi.yaml").write_text(text, encoding="utf-8")
    _fill(tmp_path / "etc" / "crm-kpi.sqlite")
    monkeypatch.chdir(tmp_path)
    outcome = _show(Path("etc/crm-kpi.yaml"), "--rep", "rep1@example.com")
    assert outcome.exit_code == 0, outcome.output
    assert "Rep 1" in outcome.stdout
    assert not (tmp_path / "crm-kpi.sqlite").exists()


def test_config_validate_names_the_store_file_beside_the_config(elsewhere: Path) -> None:
    outcome = CliRunner().invoke(main, ["config", "validate", str(elsewhere)])
    assert outcome.exit_code == 0, outcome.output
    assert f"store: sqlite ({elsewhere.parent / 'kpi-store.sqlite'})" in outcome.stdout


def test_absolute_and_in_memory_store_urls_are_kept(tmp_path: Path) -> None:
    from crm_kpi_worker.sync.config_loader import load_config

    absolute = tmp_path / "abs" / "store.sqlite"
    config = load_config(_config(tmp_path / "a", f"sqlite:///{absolute}"))
    assert config.store.resolve_url().get_secret_value() == f"sqlite:///{absolute}"
    config = load_config(_config(tmp_path / "b", "sqlite://"))
    assert config.store.resolve_url().get_secret_value() == "sqlite://"
    config = load_config(_config(tmp_path / "c", "sqlite+pysqlite:///data/s.sqlite?timeout=5"))
    assert (
        config.store.resolve_url().get_secret_value()
        == f"sqlite+pysqlite:///{tmp_path / 'c' / 'data' / 's.sqlite'}?timeout=5"
    )


# ---- point 11: say what did not match ----------------------------------------------------------


def test_an_unknown_rep_is_named_with_the_reps_that_have_values(elsewhere: Path) -> None:
    outcome = _show(elsewhere, "--rep", "nobody@example.com")
    assert outcome.exit_code == 1
    assert (
        "no rep matches 'nobody@example.com'; reps with values:"
        " rep0@example.com, rep1@example.com, rep2@example.com"
    ) in outcome.output
    assert "run `crm-kpi sync --once` first" not in outcome.output


def test_a_long_rep_list_is_trimmed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path / "etc")
    _fill(tmp_path / "etc" / "kpi-store.sqlite", reps=14)
    monkeypatch.chdir(tmp_path)
    outcome = _show(config, "--rep", "005XX")
    assert outcome.exit_code == 1
    message = outcome.output.strip()
    assert message.startswith("Error: no rep matches '005XX'; reps with values: rep0@example.com,")
    assert message.endswith("rep5@example.com and 4 more")  # 10 of 14, in email order
    assert message.count("@example.com") == 10


@pytest.mark.parametrize("key", ["2026-Q9", "banana", "2026-13"])
def test_an_invalid_period_key_is_refused_with_examples(elsewhere: Path, key: str) -> None:
    outcome = _show(elsewhere, "--period", key)
    assert outcome.exit_code == 1
    assert (
        f"'{key}' is not a period key; expected e.g. 2026-Q3, 2026-07, FY2026,"
        " or a kind: month, quarter, year"
    ) in outcome.output


def test_a_valid_period_without_values_lists_the_stored_periods(elsewhere: Path) -> None:
    outcome = _show(elsewhere, "--period", "2026-Q1")
    assert outcome.exit_code == 1
    assert (
        "no values stored for period 2026-Q1; stored periods: 2026-11, 2026-Q3, 2026-Q4"
        in outcome.output
    )
    outcome = _show(elsewhere, "--period", "year")
    assert outcome.exit_code == 1
    assert "no values stored for period kind year; stored kinds: month, quarter" in outcome.output


def test_period_keys_are_read_as_the_calendar_reads_them(elsewhere: Path) -> None:
    for spelling in ("2026-q3", " 2026-Q3", "QUARTER"):
        outcome = _show(elsewhere, "--period", spelling, "--scope", "org", "--format", "json")
        assert outcome.exit_code == 0, (spelling, outcome.output)
        assert {row["period"] for row in json.loads(outcome.stdout)} >= {"2026-Q3"}


def test_a_rep_without_values_in_a_stored_period_says_which_periods_the_rep_has(
    elsewhere: Path,
) -> None:
    outcome = _show(elsewhere, "--rep", "rep1@example.com", "--period", "2026-11")
    assert outcome.exit_code == 1
    assert (
        "no values stored for rep 'rep1@example.com' in period 2026-11;"
        " the rep's stored periods: 2026-Q3, 2026-Q4"
    ) in outcome.output


def test_rep_and_a_scope_other_than_rep_match_nothing(elsewhere: Path) -> None:
    outcome = _show(elsewhere, "--rep", "rep1@example.com", "--scope", "team")
    assert outcome.exit_code == 1
    assert "--rep selects rep rows; --scope team excludes them" in outcome.output


def test_an_empty_store_still_says_run_sync_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path / "etc")
    monkeypatch.chdir(tmp_path)
    for args in ((), ("--rep", "nobody@example.com"), ("--period", "2026-Q1")):
        outcome = _show(config, *args)
        assert outcome.exit_code == 1
        assert "no KPI values yet: run `crm-kpi sync --once` first" in outcome.output


def test_a_relative_sqlite_url_from_the_environment_is_beside_the_config_too(
    tmp_path: Path,
) -> None:
    from crm_kpi_worker.sync.config_loader import load_config

    path = _config(tmp_path / "etc")
    text = path.read_text(encoding="utf-8").replace(
        "url: sqlite:///kpi-store.sqlite", "url_env: STORE_URL"
    )
    path.write_text(text, encoding="utf-8")
    store = load_config(path).store
    resolved = store.resolve_url({"STORE_URL": "sqlite:///state/kpi.sqlite"})
    assert resolved.get_secret_value() == f"sqlite:///{tmp_path / 'etc' / 'state' / 'kpi.sqlite'}"
    postgres = "postgresql://kpi:hunter2@db/kpi"
    assert store.resolve_url({"STORE_URL": postgres}).get_secret_value() == postgres
