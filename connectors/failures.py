"""The one place where a failed call becomes a typed error of :mod:`.errors`.

Both transports call it: Salesforce's ``requests`` adapter (:mod:`.retry`) and HubSpot's
urllib3-based client (:mod:`.hubspot.transport`).

- :func:`connection_failure`: a call that got no HTTP answer. A TLS failure (``requests`` or
  urllib3 ``SSLError``, also inside urllib3's ``MaxRetryError``) is :class:`TlsError`, which
  retrying cannot cure; a timeout, refused or reset connection or DNS failure is
  :class:`ConnectionFailed` (transient). Anything else is not a transport failure (None).
- :func:`answer_failure`: an HTTP answer the error table (:func:`.errors.classify`) says to
  retry or to stop the run on: :class:`RateLimited` (429, a concurrent-request limit; with the
  Retry-After it gave), :class:`ServerError` (5xx), :class:`DailyLimitExceeded`,
  :class:`AuthenticationFailed` (a refused login). Refusals the client library or the CRM's
  connector words itself (an expired session, a malformed query) are left to them (None).
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import urllib3

from crm_kpi_worker.connectors.errors import (
    Action,
    AuthenticationFailed,
    ConnectionFailed,
    ConnectorError,
    DailyLimitExceeded,
    ErrorRule,
    RateLimited,
    ServerError,
    TlsError,
    classify,
    error_details,
)

__all__ = [
    "ErrorWording",
    "answer_failure",
    "connection_failure",
    "parse_retry_after",
    "tls_error",
]

_TIMEOUTS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date (RFC 9110).
    None when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class ErrorWording:
    """How the errors of one transport name what failed."""

    crm: str | None = None  # "HubSpot"; None: "the CRM"
    source: str | None = None  # the config's source name, said first when given
    daily_limit: str = "daily API request limit"  # the CRM's name for its daily allowance
    #: The CRM's own rows of the error table (its limits), matched before the shared ones.
    rules: tuple[ErrorRule, ...] = ()

    def prefix(self) -> str:
        return f"source '{self.source}': " if self.source else ""

    def whose(self, unnamed: str = "the CRM's") -> str:
        return f"{self.crm}'s" if self.crm else unnamed


def _tls(exc: BaseException) -> bool:
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return isinstance(exc.reason, urllib3.exceptions.SSLError)
    return isinstance(exc, (requests.exceptions.SSLError, urllib3.exceptions.SSLError))


def _connection_kind(exc: BaseException) -> BaseException | None:
    """The failure to name, when ``exc`` is a connection failure."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return exc.reason if exc.reason is not None else exc
    if isinstance(exc, requests.exceptions.RequestException):
        # Others (an invalid URL, a bad header) are the caller's mistakes, not the network's.
        connection = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
        return exc if isinstance(exc, connection) else None
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return exc
    return None


def tls_error(wording: ErrorWording, *, url: str | None, method: str | None) -> TlsError:
    return TlsError(
        f"{wording.whose()} TLS certificate could not be verified; behind a TLS-inspecting"
        " proxy, set the source's ca_bundle to the proxy's CA (PEM)",
        url=url,
        method=method,
    )


def connection_failure(
    exc: BaseException, wording: ErrorWording, *, url: str | None, method: str | None
) -> ConnectorError | None:
    """The typed error of a call that got no answer; None when ``exc`` is no such failure."""
    if _tls(exc):
        return tls_error(wording, url=url, method=method)
    failure = _connection_kind(exc)
    if failure is None:
        return None
    # urllib3's NewConnectionError (refused, DNS) subclasses its ConnectTimeoutError.
    timed_out = isinstance(failure, _TIMEOUTS) and not isinstance(
        failure, urllib3.exceptions.NewConnectionError
    )
    kind = "timed out" if timed_out else "failed"
    return ConnectionFailed(
        f"the connection {kind} ({type(failure).__name__})", url=url, method=method
    )


def answer_failure(
    status: int,
    body: Any,
    header: Callable[[str], str | None],
    wording: ErrorWording,
    *,
    url: str | None,
    method: str | None,
    now: float,
    reason: str | None = None,
    login: bool = False,
) -> ConnectorError | None:
    """The typed error of an answer to retry or to stop the run on (None: neither). ``header``
    reads one response header; ``now`` (epoch seconds) dates a Retry-After."""
    code, message = error_details(body)
    rule = classify(status=status, code=code, message=message, login=login, crm_rules=wording.rules)
    if rule.action not in (Action.RETRY, Action.STOP_RUN):
        return None
    details: dict[str, Any] = {
        "status": status,
        "code": code,
        "url": url,
        "method": method,
        "body": body,
    }
    text = message or reason or "no message"
    if rule.action is Action.RETRY:
        if status in (429, 403):
            retry_after = parse_retry_after(header("Retry-After"), now)
            return RateLimited(f"rate limited: {text}", retry_after=retry_after, **details)
        return ServerError(f"server error: {text}", **details)
    if rule.daily_limit:
        return DailyLimitExceeded(
            f"{wording.prefix()}{wording.whose('the')}"
            f" {wording.daily_limit} is used up ({message or code}); the run stops and resumes"
            " from its stored cursors once the limit resets",
            **details,
        )
    return AuthenticationFailed(f"login refused: {message or code or rule.why}", **details)
