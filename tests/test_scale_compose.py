"""compose.yaml: its services run the commands the scale-out tests run, with options the
commands take (parsed by the CLI itself, the URLs from the environment compose sets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crm_kpi_worker.sync.cli import main

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"


def test_compose_runs_the_worker_scheduler_and_status_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    environment = compose["x-crm-kpi"]["environment"]
    assert set(environment) == {"CRM_KPI_CONFIGS", "CRM_KPI_STORE_URL", "CRM_KPI_BROKER_URL"}
    for name, value in environment.items():
        monkeypatch.setenv(name, value.replace("${CRM_KPI_DB_PASSWORD}", "pw"))
    monkeypatch.setenv("CRM_KPI_CONFIGS", str(tmp_path))  # the mounted folder

    commands = {}
    for service in ("worker", "scheduler", "status"):
        name, *args = services[service]["command"]
        command = main.commands[name]
        with command.make_context(name, list(args)) as context:
            commands[name] = context.params
    assert set(commands) == {"worker", "scheduler", "status-page"}
    assert commands["worker"]["concurrency"] == 8
    assert commands["worker"]["configs_dir"] == tmp_path
    assert commands["worker"]["broker"].startswith("amqp://crmkpi:")
    assert commands["status-page"]["host"] == "0.0.0.0"  # noqa: S104 - inside its container
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["rabbitmq"]["image"].startswith("rabbitmq:")


def test_a_command_without_the_shared_store_is_refused_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    monkeypatch.delenv("CRM_KPI_STORE_URL", raising=False)
    ran = CliRunner().invoke(main, ["worker", "--configs", str(tmp_path), "--broker", "amqp://x"])

    assert ran.exit_code == 4, ran.output
    assert ran.output == (
        "Error: the workers, the scheduler and the status page share a PostgreSQL store: give"
        " --store-url postgresql://user@host/db (or $CRM_KPI_STORE_URL)\n"
    )
