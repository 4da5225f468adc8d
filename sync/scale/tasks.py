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
- Publisher confirms (``confirm_publish``, RabbitMQ): the scheduler records a due run only
  once the broker has its message (on Redis a publish is a ``LPUSH`` that has returned).
- Redelivery: RabbitMQ delivers a dead worker's unacknowledged message again as soon as its
  connection drops. Redis cannot see a worker die: kombu keeps each delivered message in a
  sorted set and puts it back on its queue once it has been unacknowledged for the
  transport's ``visibility_timeout`` (an hour by default), whether its worker died or is still
  running it. :func:`broker_transport_options` sets it from the time slice (see there).
- JSON only, no result backend: the outcome of each run is in the control schema and in the
  tenant's store.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, Task
from celery.signals import setup_logging, worker_shutting_down

from crm_kpi_worker.sync.scale.control import RunKey
from crm_kpi_worker.sync.scale.runner import (
    DEFAULT_SLICE_SECONDS,
    LOCK_RETRIES,
    LOCK_RETRY_SECONDS,
    SourceRunner,
)

__all__ = [
    "DEFAULT_QUEUE",
    "RUN_SOURCE",
    "app",
    "broker_transport_options",
    "configure",
    "default_redelivery_seconds",
    "is_redis",
    "publish",
    "run_source",
]

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
    broker_transport_options={"confirm_publish": True},  # RabbitMQ's; see configure()
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
)

_runner: SourceRunner | None = None

#: kombu's Redis transport names (``redis+socket://`` is ``redis`` over a Unix socket).
_REDIS_SCHEMES = frozenset({"redis", "rediss", "sentinel"})
#: How often a Redis worker looks for messages past their visibility timeout (kombu sweeps
#: every ``unacked_restore_interval * unacked_restore_throttle`` seconds: 100 by default).
RESTORE_EVERY_SECONDS = 10


def is_redis(broker_url: str) -> bool:
    """Whether kombu reaches ``broker_url`` through its Redis transport."""
    first = broker_url.split(";", 1)[0]  # a list of failover URLs shares one transport
    return urlsplit(first).scheme.split("+", 1)[0].lower() in _REDIS_SCHEMES


def default_redelivery_seconds(slice_seconds: float = DEFAULT_SLICE_SECONDS) -> int:
    """Redis's visibility timeout by default: twice the time slice plus 5 minutes.

    A task normally ends within its slice plus one page or write batch, well inside this; a
    task of a worker that died comes back on the queue this long after its delivery (plus at
    most :data:`RESTORE_EVERY_SECONDS`). A task still running past it (a page that took
    minutes) is delivered a second time while the first delivery runs, which is harmless:
    the duplicate claims the run (:meth:`~.control.ControlStore.claim` counts a delivery; the
    run shows ``waiting``), finds the source's run lock held (the store's PostgreSQL advisory
    lock, taken by ``run_once``), so :meth:`~.runner.SourceRunner.run` answers ``retry`` and
    the task is tried again every :data:`~.runner.LOCK_RETRY_SECONDS` (at most
    :data:`~.runner.LOCK_RETRIES` times); once the run is done, its claim finds it done and
    it is dropped. Only one delivery at a time ever runs the source.
    """
    return math.ceil(slice_seconds * 2 + 300)


def broker_transport_options(
    broker_url: str,
    *,
    slice_seconds: float = DEFAULT_SLICE_SECONDS,
    redelivery: float | None = None,
) -> dict[str, Any]:
    """kombu's transport options for ``broker_url`` (Celery's ``broker_transport_options``).

    - Redis: ``visibility_timeout`` is ``redelivery`` seconds, or
      :func:`default_redelivery_seconds` of the slice (one shorter than the slice
      delivers every long run twice); the sweep that puts expired messages back runs
      every :data:`RESTORE_EVERY_SECONDS` (``unacked_restore_throttle`` 1). The sweep runs in
      the workers, each with its own setting: every worker of a queue should use the same.
    - Otherwise (RabbitMQ): publisher confirms. ``redelivery`` is refused (``ValueError``):
      RabbitMQ delivers a dead worker's message again as soon as its connection drops.
    """
    if not is_redis(broker_url):
        if redelivery is not None:
            raise ValueError(
                "--redelivery-seconds is for a Redis broker (redis://...): RabbitMQ delivers a"
                " dead worker's task again as soon as its connection drops"
            )
        return {"confirm_publish": True}
    timeout = redelivery if redelivery is not None else default_redelivery_seconds(slice_seconds)
    return {
        "visibility_timeout": timeout,
        "unacked_restore_interval": RESTORE_EVERY_SECONDS,
        "unacked_restore_throttle": 1,
    }


def configure(
    broker_url: str,
    queue: str,
    runner: SourceRunner | None = None,
    *,
    redelivery: float | None = None,
) -> Celery:
    """Point the application at the broker and queue; ``runner`` runs this process's tasks
    (a worker's; a scheduler only publishes). The transport's options come from
    :func:`broker_transport_options` (``redelivery``: Redis only; the slice is the runner's)."""
    global _runner
    slice_seconds = runner.slice_seconds if runner is not None else DEFAULT_SLICE_SECONDS
    app.conf.broker_transport_options = broker_transport_options(
        broker_url, slice_seconds=slice_seconds, redelivery=redelivery
    )
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
