"""The exit codes of every ``crm-kpi`` command, and the one line each expected failure gets.

One table (:data:`EXIT_CODES`, copied into the README): cron, systemd and Kubernetes see a
run's outcome in its exit code. :func:`failure` turns an exception into its code and one clear
line; tracebacks are printed only with the global ``--debug``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import click

__all__ = ["EXIT_CODES", "ExitCode", "Failure", "Refused", "failure", "run_exit_code"]


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    COMPLETED_WITH_FAILURES = 3
    CONFIG = 4
    CRM_AUTH = 5
    CRM_UNAVAILABLE = 6
    RUN_IN_PROGRESS = 7
    STORE = 8


#: (code, when), the README's table.
EXIT_CODES: tuple[tuple[ExitCode, str], ...] = (
    (
        ExitCode.OK,
        "done; also a run stopped by SIGTERM/SIGINT that recorded itself `interrupted`",
    ),
    (
        ExitCode.ERROR,
        "the command could not do what was asked for another reason: `kpis show` found"
        " nothing matching, the CRM refused a request, an unexpected error (its traceback"
        " with `--debug`)",
    ),
    (ExitCode.USAGE, "wrong command line (unknown option, bad value; click's own code)"),
    (
        ExitCode.COMPLETED_WITH_FAILURES,
        "the run completed but some records could not be written (`completed_with_failures`;"
        " they are retried by the next run)",
    ),
    (
        ExitCode.CONFIG,
        "the config file is unreadable or invalid, a secret it names is missing, or it names"
        " fields or values the CRM does not have; a service without a schedule",
    ),
    (ExitCode.CRM_AUTH, "the CRM refused the credentials (wrong password, revoked token)"),
    (
        ExitCode.CRM_UNAVAILABLE,
        "the CRM could not be reached (connection refused, timeouts, 5xx or 429 after the"
        " retries, TLS), its daily API limit is used up, or the run stopped at its share of"
        " that limit (budget.max_share_of_daily_limit; the next run resumes)",
    ),
    (
        ExitCode.RUN_IN_PROGRESS,
        "another run of one of the config's sources holds the store's lock (or took it over"
        " from this one)",
    ),
    (
        ExitCode.STORE,
        "the state store cannot be opened or written (unreachable server, a read-only file"
        " for `sync`, migrated by a newer version)",
    ),
)


class Refused(click.ClickException):
    """A command refused for a config reason click cannot see (exit code 4)."""

    exit_code = ExitCode.CONFIG.value


class Failure(NamedTuple):
    code: ExitCode
    line: str


def _config_failure(exc: BaseException) -> Failure | None:
    from crm_kpi_worker.sync.config.base import SecretError
    from crm_kpi_worker.sync.config_loader import ConfigError
    from crm_kpi_worker.sync.crm_check import CrmCheckFailed

    if isinstance(exc, ConfigError):
        lines = "\n".join(str(p) for p in exc.problems)
        return Failure(
            ExitCode.CONFIG,
            f"{len(exc.problems)} problem(s) in {exc.file}:\n{lines}\n"
            f"(crm-kpi config validate {exc.file} lists them too)",
        )
    if isinstance(exc, CrmCheckFailed):
        return Failure(
            ExitCode.CONFIG, f"{exc}\n(crm-kpi config validate --check-crm lists them too)"
        )
    if isinstance(exc, SecretError):
        return Failure(ExitCode.CONFIG, f"a secret of the config is missing: {exc}")
    return None


def _crm_failure(exc: BaseException) -> Failure | None:
    from crm_kpi_worker.connectors import errors

    if isinstance(exc, errors.AuthenticationFailed):
        return Failure(ExitCode.CRM_AUTH, f"the CRM refused the credentials: {exc}")
    if isinstance(exc, errors.DailyLimitExceeded):
        return Failure(ExitCode.CRM_UNAVAILABLE, f"the CRM's daily API limit is reached: {exc}")
    if isinstance(exc, errors.TransientError | errors.TlsError):
        return Failure(ExitCode.CRM_UNAVAILABLE, f"the CRM cannot be reached: {exc}")
    if isinstance(exc, errors.ConnectorError):
        return Failure(ExitCode.ERROR, f"the CRM refused a request: {exc}")
    return None


def _store_failure(exc: BaseException) -> Failure | None:
    from sqlalchemy.exc import DBAPIError

    from crm_kpi_worker.sync.store import RunInProgress, StoreError
    from crm_kpi_worker.sync.store.engine import driver_reason

    if isinstance(exc, RunInProgress):
        return Failure(ExitCode.RUN_IN_PROGRESS, str(exc))
    if isinstance(exc, StoreError):
        return Failure(ExitCode.STORE, str(exc))
    if isinstance(exc, DBAPIError):
        return Failure(ExitCode.STORE, f"the state store failed: {driver_reason(exc)}")
    return None


def failure(exc: BaseException) -> Failure:
    """The exit code and the one line (or the config's problem lines) of ``exc``."""
    for classify in (_config_failure, _crm_failure, _store_failure):
        found = classify(exc)
        if found is not None:
            return found
    return Failure(ExitCode.ERROR, f"unexpected error: {type(exc).__name__}: {exc}")


def run_exit_code(status: str, *, lock_lost: bool = False) -> ExitCode:
    """The exit code of a run that ended with ``status`` (a run report's)."""
    if lock_lost:
        return ExitCode.RUN_IN_PROGRESS
    if status == "completed_with_failures":
        return ExitCode.COMPLETED_WITH_FAILURES
    if status in ("completed", "interrupted"):
        return ExitCode.OK
    if status == "stopped_for_budget":
        return ExitCode.CRM_UNAVAILABLE
    return ExitCode.ERROR
