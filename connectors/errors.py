"""Typed connector errors, and the one table that says what to do about each failure.

Every failure a connector meets is classified once, by :func:`classify`, into an
:class:`Action`:

- ``retry``: transient (429, 5xx, a concurrent-request limit, connection refused/reset, a
  timeout). The retry policy (:mod:`crm_kpi_worker.connectors.retry`) tries again, honouring
  Retry-After; when the attempts run out the typed :class:`TransientError` is raised.
- ``refresh_session``: the session expired (401 INVALID_SESSION_ID). A client that holds
  credentials logs in again and retries once; one that cannot (an existing session id) fails
  with :class:`SessionExpired`, whose message says what to do.
- ``stop_run``: nothing more can succeed in this run (the daily API limit, refused
  credentials): :class:`StopRun` is raised and never retried.
- ``skip_record``: one record of a batch write failed; the others go on, and the pipeline
  retries it next run (reported through ``WriteResult``, not raised).
- ``fail``: anything else (a malformed query, a missing field or permission): raised as
  :class:`RequestRejected`, not retried, since trying again cannot help.

Errors carry the HTTP status, the CRM's error code, a redacted URL (no session id, token or
secret query parameter) and a truncated body. No secret reaches a message: values registered
with :func:`register_secret` and anything shaped like a session id or bearer token are
replaced by ``***`` wherever an error is built.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

__all__ = [
    "ERROR_TABLE",
    "Action",
    "AuthenticationFailed",
    "BudgetExhausted",
    "ConnectionFailed",
    "ConnectorError",
    "CurrencyCheckFailed",
    "DailyLimitExceeded",
    "ErrorRule",
    "RateLimited",
    "RequestRejected",
    "ServerError",
    "SessionExpired",
    "StopRun",
    "TlsError",
    "TransientError",
    "classify",
    "codes",
    "codes_of",
    "error_details",
    "redact_url",
    "register_secret",
    "scrub",
    "truncate",
]

MAX_BODY_CHARS = 500
MAX_QUERY_CHARS = 300
REDACTED = "***"


class Action(StrEnum):
    RETRY = "retry"
    REFRESH_SESSION = "refresh_session"
    STOP_RUN = "stop_run"
    SKIP_RECORD = "skip_record"
    FAIL = "fail"


@dataclass(frozen=True)
class ErrorRule:
    """One row of the table: what matches, what to do, and why (for logs and docs)."""

    action: Action
    why: str
    statuses: frozenset[int] = frozenset()  # empty: any status
    codes: frozenset[str] = frozenset()  # empty: any code; compared case-insensitively
    message: str | None = None  # a regular expression searched in the message
    connection: bool = False  # matches only failures without an HTTP answer
    per_record: bool = False  # matches only per-record results of a batch write
    login: bool | None = None  # True: login calls only; False: API calls only; None: both
    has_code: bool = False  # matches only when the answer names an error code
    daily_limit: bool = False  # the CRM's daily allowance is used up (DailyLimitExceeded)

    def matches(
        self,
        *,
        status: int | None,
        code: str | None,
        message: str | None,
        connection: bool,
        per_record: bool,
        login: bool,
    ) -> bool:
        if self.connection != connection or self.per_record != per_record:
            return False
        if self.login is not None and self.login != login:
            return False
        if self.statuses and status not in self.statuses:
            return False
        if self.codes and (code or "").upper() not in self.codes:
            return False
        if self.has_code and not code:
            return False
        return self.message is None or re.search(self.message, message or "", re.I) is not None


def codes(*names: str) -> frozenset[str]:
    """Error codes as :class:`ErrorRule` compares them."""
    return frozenset(n.upper() for n in names)


_SERVER_STATUSES = frozenset({500, 502, 503, 504})

#: The classification table, first match wins, after the rows of the CRM that answered (its
#: daily and concurrency limits: each CRM's ``settings.ERROR_RULES``).
ERROR_TABLE: tuple[ErrorRule, ...] = (
    ErrorRule(
        Action.SKIP_RECORD,
        "one record of a batch failed (lock, validation rule, bad value); the others are"
        " written and this one is retried next run",
        per_record=True,
    ),
    ErrorRule(
        Action.RETRY,
        "connection refused or reset, or a timeout: the CRM or the network is briefly away",
        connection=True,
    ),
    ErrorRule(
        Action.RETRY, "rate limited (429): wait as Retry-After says", statuses=frozenset({429})
    ),
    ErrorRule(
        Action.RETRY,
        "the login service is briefly unavailable",
        codes=codes("SERVER_UNAVAILABLE", "UNKNOWN_EXCEPTION"),
        login=True,
    ),
    ErrorRule(
        Action.STOP_RUN,
        "the CRM refused the credentials (wrong password or token, unknown client, key not"
        " uploaded, user locked out)",
        statuses=frozenset({400, 401, 403}),
        login=True,
    ),
    ErrorRule(
        Action.STOP_RUN,
        "a SOAP login fault (HTTP 500 naming an exception code such as INVALID_LOGIN)",
        statuses=frozenset({500}),
        login=True,
        has_code=True,
    ),
    ErrorRule(
        Action.REFRESH_SESSION,
        "the session expired: log in again and retry once (fatal for a session id given in"
        " the config, which the worker cannot renew)",
        statuses=frozenset({401}),
    ),
    ErrorRule(Action.RETRY, "a server error (5xx): try again later", statuses=_SERVER_STATUSES),
    ErrorRule(
        Action.FAIL,
        "anything else (malformed query, unknown field, missing permission): retrying cannot help",
    ),
)


def classify(
    *,
    status: int | None = None,
    code: str | None = None,
    message: str | None = None,
    connection: bool = False,
    per_record: bool = False,
    login: bool = False,
    crm_rules: Sequence[ErrorRule] = (),
) -> ErrorRule:
    """The first rule that matches this failure: of ``crm_rules`` (the rows of the CRM that
    answered), then of :data:`ERROR_TABLE`."""
    for rule in (*crm_rules, *ERROR_TABLE):
        if rule.matches(
            status=status,
            code=code,
            message=message,
            connection=connection,
            per_record=per_record,
            login=login,
        ):
            return rule
    raise AssertionError("ERROR_TABLE ends with a catch-all rule")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Secrets out of messages

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
# Shorter values would blank out ordinary words; real secrets are longer.
_MIN_SECRET_LENGTH = 6
_PATTERNS = (
    # Salesforce session ids / access tokens: 00D + org id, '!', then the token.
    (re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._\-]+"), REDACTED),
    (re.compile(r"(?i)\b(bearer|oauth)\s+[A-Za-z0-9._~+/=!\-]+"), r"\1 " + REDACTED),
    (
        re.compile(
            r"(?i)(<(?:\w+:)?(?:sessionId|password)>)[^<]*(</(?:\w+:)?(?:sessionId|password)>)"
        ),
        r"\1" + REDACTED + r"\2",
    ),
    (
        re.compile(
            r"(?i)(\"(?:access_token|refresh_token|client_secret|password|session_?id|"
            r"assertion|signature)\"\s*:\s*\")[^\"]*(\")"
        ),
        r"\1" + REDACTED + r"\2",
    ),
)
_SECRET_PARAMS = re.compile(
    r"(?i)(token|secret|password|passwd|pwd|sid|session|assertion|signature|code|key|auth)"
)


def register_secret(value: str | None) -> None:
    """Never show ``value`` in an error message or log line built by the connectors."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def scrub(text: str) -> str:
    """``text`` with registered secrets and token-shaped values replaced by ``***``."""
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def truncate(text: str, limit: int = MAX_BODY_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def redact_url(url: str | None) -> str | None:
    """``url`` without credentials: no user info, secret-looking query values as ``***``, a
    long SOQL ``q`` cut short."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:
        return REDACTED
    params = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "q":
            value = truncate(value, MAX_QUERY_CHARS)
        elif _SECRET_PARAMS.search(name):
            value = REDACTED
        params.append((name, value))
    # Readable rather than re-encoded: this URL is for people (logs, error messages).
    query = urlencode(params, safe="*(),' =<>!:", quote_via=quote)
    return scrub(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


def error_details(body: Any) -> tuple[str | None, str | None]:
    """(error code, message) from an error body in any of the shapes the CRMs send.

    Salesforce REST: ``[{"errorCode", "message"}]``; Salesforce OAuth: ``{"error",
    "error_description"}``; Salesforce SOAP faults: ``<sf:exceptionCode>``, else
    ``<faultcode>sf:CODE</faultcode>``; HubSpot:
    ``{"category", "message", "policyName"}``.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        soap = re.search(r"<(?:\w+:)?exceptionCode>([^<]*)<", body)
        if soap:
            message = re.search(r"<(?:\w+:)?exceptionMessage>([^<]*)<", body)
            return soap.group(1).strip(), (message.group(1).strip() if message else None)
        fault = re.search(r"<faultcode>(?:\w+:)?([^<]*)</faultcode>", body)
        if fault:  # a fault without detail (the Metadata API's): "sf:INVALID_TYPE"
            message = re.search(r"<faultstring>([^<]*)<", body)
            return fault.group(1).strip(), (message.group(1).strip() if message else None)
        try:
            body = json.loads(body)
        except ValueError:
            return None, body.strip()[:MAX_BODY_CHARS] or None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        code = body.get("errorCode") or body.get("policyName") or body.get("error")
        code = code or body.get("statusCode") or body.get("category")
        message = body.get("message") or body.get("error_description")
        return (str(code) if code else None), (str(message) if message else None)
    return None, None


def _body_text(body: Any) -> str | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str):
        try:
            body = json.dumps(body, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            body = repr(body)
    return truncate(scrub(body))


# ---------------------------------------------------------------------------------------------
# Exceptions


class ConnectorError(Exception):
    """A CRM call failed. ``status``/``code`` as the CRM sent them, ``url`` redacted,
    ``body`` truncated; the message never holds a secret."""

    action: ClassVar[Action] = Action.FAIL

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        url: str | None = None,
        method: str | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.code = code
        self.method = method
        self.url = redact_url(url)
        self.body = _body_text(body)
        self.detail = scrub(message)
        super().__init__(self.detail)

    def __str__(self) -> str:
        parts = [self.detail]
        status = " ".join(str(x) for x in (self.status, self.code) if x)
        if status:
            parts.append(f"[{status}]")
        if self.url:
            parts.append(f"({self.method + ' ' if self.method else ''}{self.url})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class TransientError(ConnectorError):
    """A failure worth retrying; raised once the retry policy has given up."""

    action = Action.RETRY


class RateLimited(TransientError):
    """429 or a concurrent-request limit; ``retry_after`` in seconds when the CRM said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(TransientError):
    """A 5xx answer."""


class ConnectionFailed(TransientError):
    """No answer: connection refused or reset, DNS failure, or a timeout."""


class StopRun(ConnectorError):
    """Nothing more can succeed in this run; never retried.

    ``write_results`` holds the outcome of a batch write interrupted by it (records not sent
    are reported failed), so the caller still learns what was written.
    """

    action = Action.STOP_RUN

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.write_results: list[Any] = []


class DailyLimitExceeded(StopRun):
    """The org's daily API request limit is used up."""


class BudgetExhausted(StopRun):
    """The worker's share of the org's daily API limit (``budget.max_share_of_daily_limit``)
    is reached: the run stops cleanly before making the call that would pass it."""


class AuthenticationFailed(StopRun):
    """The CRM refused the credentials."""


class SessionExpired(AuthenticationFailed):
    """The session expired and could not be renewed."""


class CurrencyCheckFailed(StopRun):
    """The configured currency conversion cannot work with this org."""


class RequestRejected(ConnectorError):
    """A request the CRM refused for a reason retrying cannot fix (malformed query, unknown
    field or object, missing permission)."""


class TlsError(ConnectorError):
    """The CRM's TLS certificate could not be verified."""


def codes_of(errors: Iterable[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(first status code, joined messages) of Salesforce per-record errors."""
    items = [e for e in errors if isinstance(e, dict)]
    if not items:
        return None, None
    code = items[0].get("statusCode") or items[0].get("errorCode")
    message = "; ".join(
        str(e.get("message", ""))
        + (f" (fields: {', '.join(e['fields'])})" if e.get("fields") else "")
        for e in items
    )
    return (str(code) if code else None), scrub(message)
