"""The worker's log lines: text for people, or one JSON object per event for log collectors.

- ``runtime.log_format`` (``text`` | ``json``) picks the format; without it, the
  ``CRM_KPI_LOG_FORMAT`` environment variable (the container image sets ``json``), else text.
- A JSON line holds ``time`` (UTC, ISO 8601), ``level``, ``event`` (a stable name, e.g.
  ``run_finished``; else the logger's name), ``source`` and ``run_id`` when a run is going on,
  ``message`` (the same sentence as the text line) and the event's own fields (counts as
  numbers, never formatted into a string): ``log.info("...", extra=fields("run_finished",
  pulled=580))``.
- The run id and source come from :func:`log_context` (context variables), so the lines of a
  connector's retries carry them without passing them along.
- Alembic's INFO lines (its plugins and migration context, about fifteen at each start) are
  DEBUG lines here: shown with ``--debug`` only.
- Secrets never reach a line: every message goes through the connectors' scrubber.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from crm_kpi_worker.connectors.errors import scrub

__all__ = [
    "LOG_FORMAT_ENV",
    "bind_run",
    "bind_source",
    "configure_logging",
    "fields",
    "log_context",
    "log_format",
]

#: The environment variable giving the log format when the config does not.
LOG_FORMAT_ENV = "CRM_KPI_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_run_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("run_id", default=None)
_source: contextvars.ContextVar[str | None] = contextvars.ContextVar("source", default=None)

#: Loggers whose INFO lines are DEBUG lines here (the migration machinery's chatter).
_QUIET_INFO = ("alembic",)
_PROJECT = "crm_kpi_worker."


def fields(event: str, **values: Any) -> dict[str, Any]:
    """``extra=`` of a log call: its event name and fields (numbers stay numbers)."""
    return {"event": event, **values}


@contextlib.contextmanager
def log_context(*, run_id: int | None = None, source: str | None = None) -> Iterator[None]:
    """Every line logged inside (this thread, and threads started from a copy of its
    context) carries this run id and source; :func:`bind_run` and :func:`bind_source` change
    them within.
    Both are as before on the way out."""
    run_token = _run_id.set(run_id if run_id is not None else _run_id.get())
    source_token = _source.set(source if source is not None else _source.get())
    try:
        yield
    finally:
        _source.reset(source_token)
        _run_id.reset(run_token)


def bind_source(source: str | None) -> None:
    """The source the next lines are about (inside a :func:`log_context`)."""
    _source.set(source)


def bind_run(run_id: int | None) -> None:
    """The run the next lines are about (inside a :func:`log_context`)."""
    _run_id.set(run_id)


def log_format(configured: str | None, environ: dict[str, str] | None = None) -> str:
    """The format in force: the config's, else the environment's, else text."""
    if configured:
        return configured
    value = (environ if environ is not None else os.environ).get(LOG_FORMAT_ENV, "")
    return value.strip().lower() if value.strip().lower() in ("text", "json") else "text"


class _CurrentStderr:
    """``sys.stderr`` as it is when a line is written (a progress display or a test runner
    may have replaced it since logging was set up)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _RunContext(logging.Filter):
    """Adds the event name, run id and source; makes quiet loggers' INFO lines DEBUG ones
    (dropped unless the level is DEBUG); scrubs secrets out of the message."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.startswith(_QUIET_INFO):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            if self.level > logging.DEBUG:
                return False
        if not getattr(record, "event", None):
            name = record.name
            record.event = name[len(_PROJECT) :] if name.startswith(_PROJECT) else name
        if getattr(record, "run_id", None) is None:
            record.run_id = _run_id.get()
        if getattr(record, "source", None) is None:
            record.source = _source.get()
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def _plain(value: Any) -> Any:
    """A field that JSON has no type for: instants and dates in ISO 8601, else text."""
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


class _JsonLines(JsonFormatter):
    """One JSON object per line: time, level, event, source, run_id, message, then the
    event's own fields."""

    _FIRST = ("time", "level", "event", "source", "run_id", "message", "logger")

    def __init__(self) -> None:
        super().__init__(
            ["message", "levelname", "name"],
            rename_fields={"levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
            json_default=_plain,
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, *rest: Any) -> None:
        super().add_fields(log_data, record, *rest)
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        extras = {k: v for k, v in log_data.items() if k not in self._FIRST}
        ordered = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "event": record.__dict__.get("event"),
            "source": record.__dict__.get("source"),
            "run_id": record.__dict__.get("run_id"),
            "message": log_data.get("message"),
            "logger": record.name,
            **extras,
        }
        if ordered["source"] is None:
            del ordered["source"]
        if ordered["run_id"] is None:
            del ordered["run_id"]
        log_data.clear()
        log_data.update(ordered)


def configure_logging(
    level: str, format: str, *, debug: bool = False, stream: TextIO | None = None
) -> logging.Handler:
    """Send the worker's log lines to stderr in ``format`` (``text`` | ``json``) at ``level``
    (DEBUG with ``debug``). Replaces the handler an earlier call installed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_crm_kpi", False):
            root.removeHandler(handler)
    numeric = logging.DEBUG if debug else logging.getLevelName(level.upper())
    handler = logging.StreamHandler(stream or _CurrentStderr())
    handler._crm_kpi = True  # type: ignore[attr-defined]
    handler.addFilter(_RunContext(numeric))
    handler.setFormatter(_JsonLines() if format == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
