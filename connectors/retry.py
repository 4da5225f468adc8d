"""The one retry policy of the connectors (tenacity), and the transport adapter applying it.

:class:`RetryPolicy` retries a call while it raises :class:`TransientError` (429, 5xx, a
concurrent-request limit, a connection failure or timeout, as classified by
:func:`crm_kpi_worker.connectors.errors.classify`):

- the wait is the answer's Retry-After when it gave one (seconds or an HTTP date), else a
  capped exponential backoff with jitter (``base_delay * 2**n``, capped at ``max_delay``, the
  upper half of that drawn at random so clients spread out);
- at most ``attempts`` tries; a Retry-After longer than ``max_retry_after`` is not waited for
  (the error is raised at once: better to stop than to block a worker for an hour);
- ``reraise=True``: the caller gets the last typed error, never tenacity's RetryError.

``sleep`` and ``clock`` are injectable so tests never really sleep. The defaults need no
configuration.

:class:`RetryingAdapter` is a ``requests`` transport adapter wrapping the session's own
(connectors.http's TLS/timeout/routing adapter): every HTTP call the client library makes goes
through the policy, is counted (logins apart), and comes back either as a response the library
handles itself (2xx/3xx, 4xx it knows, a 401 it renews the session for) or as a typed error
(retries exhausted, or the run must stop). HubSpot's client, which does not run on
``requests``, uses :meth:`RetryPolicy.call` around its calls instead.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
import tenacity
from requests.adapters import BaseAdapter

from crm_kpi_worker.connectors.budget import ApiUsage, CallBudget
from crm_kpi_worker.connectors.errors import RateLimited, TransientError, redact_url
from crm_kpi_worker.connectors.failures import (
    ErrorWording,
    answer_failure,
    connection_failure,
    parse_retry_after,
)

__all__ = ["RetryPolicy", "RetryingAdapter", "parse_retry_after"]

log = logging.getLogger(__name__)
T = TypeVar("T")
#: The adapter serves Salesforce's client, whose errors have always said "the CRM".
_WORDING = ErrorWording()


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of transient failures; see the module doc."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    random: Callable[[], float] = field(default=random.random)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("attempts >= 1 and 0 <= base_delay <= max_delay are required")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based) without Retry-After."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + self.random() * ceiling / 2

    def call(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, tried again while it raises :class:`TransientError`."""
        out_of_attempts = tenacity.stop_after_attempt(self.attempts)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            stop=lambda state: out_of_attempts(state) or self._retry_after_too_long(state),
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(attempt)

    @staticmethod
    def _retry_after(state: tenacity.RetryCallState) -> float | None:
        error = state.outcome.exception() if state.outcome else None
        return error.retry_after if isinstance(error, RateLimited) else None

    def _retry_after_too_long(self, state: tenacity.RetryCallState) -> bool:
        wait = self._retry_after(state)
        return wait is not None and wait > self.max_retry_after

    def _wait(self, state: tenacity.RetryCallState) -> float:
        wait = self._retry_after(state)
        return wait if wait is not None else self.backoff(state.attempt_number)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "retrying in %.1f s (attempt %d of %d failed): %s",
            wait,
            state.attempt_number,
            self.attempts,
            error,
            extra={
                "event": "retry",
                "wait_seconds": round(wait, 1),
                "attempt": state.attempt_number,
                "attempts": self.attempts,
                "error_code": getattr(error, "code", None),
                "status": getattr(error, "status", None),
            },
        )


class RetryingAdapter(BaseAdapter):
    """Wraps a session's transport adapter with :class:`RetryPolicy` and counts calls.

    ``is_login(request)`` tells login calls apart: they are not counted in :attr:`calls` (they
    use no API request allowance) and their refusals raise :class:`AuthenticationFailed`.
    """

    def __init__(
        self,
        inner: BaseAdapter,
        policy: RetryPolicy,
        *,
        is_login: Callable[[requests.PreparedRequest], bool] = lambda request: False,
        wording: ErrorWording = _WORDING,
    ) -> None:
        super().__init__()
        self.wording = wording
        self.inner = inner
        self.policy = policy
        self.is_login = is_login
        self._calls = 0
        self._server_time: dt.datetime | None = None
        self._lock = threading.Lock()
        #: The API budget (set by the connector): asked before every call, told the usage
        #: each answer carries (``usage_of(response)``).
        self.budget: CallBudget | None = None
        self.usage_of: Callable[[requests.Response], ApiUsage | None] = lambda response: None
        #: The daily usage the latest answer carried.
        self.usage: ApiUsage | None = None

    @property
    def calls(self) -> int:
        """HTTP calls sent so far, every attempt included, logins excluded."""
        return self._calls

    @property
    def server_time(self) -> dt.datetime | None:
        """The server's clock (its ``Date`` header, whole seconds, UTC) at the latest answer."""
        return self._server_time

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        login = self.is_login(request)

        def attempt() -> requests.Response:
            if not login:
                if self.budget is not None:
                    self.budget.before_call()
                with self._lock:
                    self._calls += 1
            return self._send_once(request, login, kwargs)

        return self.policy.call(attempt)

    def _send_once(
        self, request: requests.PreparedRequest, login: bool, kwargs: dict[str, Any]
    ) -> requests.Response:
        try:
            response = self.inner.send(request, **kwargs)
        except Exception as exc:
            failure = connection_failure(exc, self.wording, url=request.url, method=request.method)
            if failure is None:
                raise
            raise failure from None
        if not login:
            usage = self.usage_of(response)
            if usage is not None:
                self.usage = usage
                if self.budget is not None:
                    self.budget.note(usage)
        if response.status_code < 400:
            self._note_server_time(response)
            return response
        error = answer_failure(
            response.status_code,
            response.content,
            response.headers.get,
            self.wording,
            url=request.url,
            method=request.method,
            now=self.policy.clock(),
            reason=response.reason,
            login=login,
        )
        if error is None:
            return response  # the client library handles it (and renews sessions on 401)
        response.close()
        raise error

    def _note_server_time(self, response: requests.Response) -> None:
        header = response.headers.get("Date")
        if not header:
            return
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return
        self._server_time = (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(
            dt.UTC
        )

    def close(self) -> None:
        self.inner.close()


def describe_request(request: requests.PreparedRequest) -> str:
    """``METHOD url`` with the URL redacted, for logs."""
    return f"{request.method} {redact_url(request.url)}"
