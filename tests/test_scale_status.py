"""``crm-kpi status-page`` (sync/scale/status.py): every tenant's runs, whichever worker ran
them, from the shared store: the page, each tenant's own page, /metrics, /healthz."""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_scale_scheduler import _config
from werkzeug.test import Client

from crm_kpi_worker.sync.backoff import BackoffPolicy
from crm_kpi_worker.sync.scale.control import ControlStore, RunKey
from crm_kpi_worker.sync.scale.status import DeploymentStatusApp
from crm_kpi_worker.sync.scale.stores import Deployment
from crm_kpi_worker.sync.scale.tenants import TenantFiles

DUE = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def client(tmp_path: Path, deployment: Deployment) -> Iterator[Client]:
    folder = tmp_path / "tenants"
    folder.mkdir()
    for name in ("acme", "globex"):
        _config("  every_minutes: 60\n", folder, name)
    (folder / "broken.yaml").write_text("sources: []\n", encoding="utf-8")
    files = TenantFiles(folder)
    tenants = {t.name: t for t in files.scan().tenants}
    with ControlStore.open(deployment) as control:
        # acme's run, done by "another worker" (its row), globex's still queued.
        with deployment.open_store(tenants["acme"]) as store:
            run = store.start_run(DUE, {}, sources=["sandbox"])
            store.finish_run(run, "completed", {"run_id": run, "sources": []})
        deployment.open_store(tenants["globex"]).close()
        acme, globex = RunKey("acme", "sandbox", DUE), RunKey("globex", "sandbox", DUE)
        control.enqueue(acme, lambda: None)
        control.enqueue(globex, lambda: None)
        assert control.claim(acme, "worker-7:4242") == "go"
        control.mark(acme, "finished", status="completed", run_id=run)
        app = DeploymentStatusApp(deployment, files, control)
        yield Client(app)
        app.close()


def test_the_page_lists_every_tenants_runs_and_who_ran_them(client: Client) -> None:
    page = client.get("/")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<a href="tenants/acme/">acme</a>' in html
    assert '<a href="tenants/globex/">globex</a>' in html
    assert f"{socket.gethostname()}:{os.getpid()}" in html  # the process that ran acme's run
    assert "worker-7:4242" in html  # the worker the scheduled run was delivered to
    assert "enqueued" in html and "completed" in html
    assert "tenant broken" in html  # the broken tenant, reported


def test_a_source_backing_off_shows_its_refused_logins_and_next_try(client: Client) -> None:
    app = client.application
    assert isinstance(app, DeploymentStatusApp)
    app.control.refused("globex", "sandbox", BackoffPolicy(), DUE)
    app.control.refused("globex", "sandbox", BackoffPolicy(), DUE + dt.timedelta(minutes=5))

    html = client.get("/").get_data(as_text=True)

    assert (
        '<td class="bad">login refused 2 time(s) in a row; next try at 2026-12-05 10:15:00 UTC'
        " (backing off 10 min)</td>" in html
    )
    assert html.count('<td class="bad">login refused') == 1  # globex's only, not acme's


def test_each_tenants_own_page_is_mounted_under_its_name(client: Client) -> None:
    assert client.get("/tenants/acme").status_code == 308
    page = client.get("/tenants/acme/")
    assert page.status_code == 200
    run = client.get("/tenants/acme/runs/1.json")
    assert run.status_code == 200 and run.json["status"] == "completed"  # type: ignore[index]
    assert client.get("/tenants/globex/runs/1.json").status_code == 404  # not globex's
    assert client.get("/tenants/nobody/").status_code == 404


def test_metrics_come_from_the_shared_store(client: Client) -> None:
    text = client.get("/metrics").get_data(as_text=True)

    assert (
        'crm_kpi_scheduled_runs{source="sandbox",state="finished",status="completed",'
        'tenant="acme"} 1.0' in text
    )
    assert (
        'crm_kpi_scheduled_runs{source="sandbox",state="enqueued",status="",tenant="globex"} 1.0'
        in text
    )
    assert 'crm_kpi_tenants{state="broken"} 1.0' in text
    assert 'crm_kpi_last_success_timestamp_seconds{source="sandbox",tenant="acme"}' in text
    assert 'crm_kpi_last_success_timestamp_seconds{source="sandbox",tenant="globex"}' not in text
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.post("/").status_code == 405
