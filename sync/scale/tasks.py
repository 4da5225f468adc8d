"""The Celery application of a deployment: one task, ``crm_kpi.run_source``, one run of one
tenant's source (:class:`~.runner.SourceRunner`).

Delivery settings, and why:

- ``task_acks_late`` with ``task_reject_on_worker_lost``: a message is acknowledged once its run
  is done, so a worker that dies mid-run (SIGKILL, a lost machine) leaves it to the broker,
  which delivers it to another worker; runs are idempotent (pages saved with their cursor,
  writes diffed against what the CRM confirmed), so the next one resumes with no record lost
  or written twice.
- ``worker_prefetch_multiplier = 1``: a worker takes one message per free slot, so a busy
  worker never sits on tasks another one could run.
- Publisher confirms (``confirm_publish``): the scheduler records a due run only once the
  broker has its message.
- JSON only, no result backend: the outcome of each run is in the control schema and in the
  tenant's store.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import Celery, Task
from celery.signals import setup_logging, worker_shutting_down

from crm_kpi_worker.sync.scale.control import RunKey
from crm_kpi_worker.sync.scale.runner import LOCK_RETRIES, LOCK_RETRY_SECONDS, SourceRunner

__all__ = ["DEFAULT_QUEUE", "RUN_SOURCE", "app", "configure", "publish", "run_source"]

log = logging.getLogger("crm_kpi_worker.scale")

DEFAULT_QUEUE = "crm-kpi-runs"
RUN_SOURCE = "crm_kpi.run_source"

app = Celery("crm_kpi_worker", set_as_current=False)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=DEFAULT_QUEUE,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"confirm_publish": True},
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
)

_runner: SourceRunner | None = None


def configure(broker_url: str, queue: str, runner: SourceRunner | None = None) -> Celery:
    """Point the application at the broker and queue; ``runner`` runs this process's tasks
    (a worker's; a scheduler only publishes)."""
    global _runner
    app.conf.broker_url = broker_url
    app.conf.task_default_queue = queue
    _runner = runner
    return app


def publish(key: RunKey) -> None:
    """Enqueue the run's task (the broker has confirmed it when this returns)."""
    app.send_task(RUN_SOURCE, kwargs=key.as_task())


@app.task(bind=True, name=RUN_SOURCE, max_retries=LOCK_RETRIES)
def run_source(self: Task, tenant: str, source: str, due_at: str) -> str:
    """One run (or one time slice of it) of ``tenant``'s ``source``, due at ``due_at``."""
    if _runner is None:
        raise RuntimeError("this process runs no tasks: start it with `crm-kpi worker`")
    key = RunKey(tenant, source, dt.datetime.fromisoformat(due_at))
    retries = int(self.request.retries or 0)
    outcome = _runner.run(key, lock_retries_left=LOCK_RETRIES - retries)
    if outcome.action == "retry":
        raise self.retry(countdown=LOCK_RETRY_SECONDS)
    if outcome.action == "continue":
        publish(key)  # the next slice, at the end of the queue
    return outcome.action


@setup_logging.connect
def _keep_own_logging(**_: Any) -> None:
    """The command set up the log lines (``sync.logs``: text or JSON, secrets scrubbed); with
    a receiver here, Celery leaves logging alone and its own lines go through the same
    handler."""


@worker_shutting_down.connect
def _stop_runs(sig: Any = None, how: Any = None, exitcode: Any = None, **_: Any) -> None:
    """A worker asked to stop (SIGTERM): its runs stop at their next page or batch and go
    on in new tasks, which another worker (or this one, restarted) takes."""
    if _runner is not None:
        _runner.stop_all("the worker is shutting down; the run goes on in a new task")
