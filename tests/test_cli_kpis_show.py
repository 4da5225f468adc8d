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
