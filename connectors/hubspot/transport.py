"""Every HubSpot API call goes through :class:`HubSpotTransport`: pacing, retries, counting,
typed errors.

hubspot-api-client has no retry of its own for POST and PATCH (urllib3's default
``allowed_methods`` leaves them out, see HubSpot/hubspot-api-python#117), and it turns every
answer into generated model objects, which for a million deals costs more than the HTTP calls.
So the connector calls the client's own API methods with ``_preload_content=False`` (the
client still builds the request: paths, auth, query strings, body) and reads the JSON itself,
through :meth:`HubSpotTransport.call`, which

- paces calls on the client side so the worker stays under the portal's limits instead of
  meeting 429s: search endpoints at ``search_per_second`` (HubSpot: 5 a second per portal),
  every other endpoint at ``per_10_seconds`` (100 to 190 per 10 s by tier), lowered to what
  the portal's ``X-HubSpot-RateLimit-Max`` / ``-Interval-Milliseconds`` headers say;
- retries 429 and 5xx answers and connection failures with :class:`RetryPolicy` (Retry-After
  when the portal sends one; HubSpot does not promise it), stops the run on the daily limit
  (a 429 whose ``policyName`` is ``DAILY``) and on refused credentials;
- renews an OAuth access token once on a 401 (``renew``), then retries the call;
- counts every HTTP call (retries included; token renewals apart) and remembers the server's
  clock from its ``Date`` header.
"""

from __future__ import annotations

import collections
import datetime as dt
import email.utils
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from crm_kpi_worker.connectors.budget import ApiUsage, CallBudget
from crm_kpi_worker.connectors.errors import (
    AuthenticationFailed,
    ConnectorError,
    RequestRejected,
    ServerError,
    SessionExpired,
    error_details,
)
from crm_kpi_worker.connectors.failures import (
    ErrorWording,
    answer_failure,
    connection_failure,
    tls_error,
)
from crm_kpi_worker.connectors.hubspot.settings import ERROR_RULES
from crm_kpi_worker.connectors.retry import RetryPolicy

__all__ = ["Answer", "HubSpotTransport", "SlidingWindow"]

log = logging.getLogger(__name__)

Bucket = Literal["search", "api"]


class SlidingWindow:
    """At most ``limit`` calls in any ``period`` seconds (a rolling window, as HubSpot's)."""

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = max(1, limit)
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._sent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting, for the run report and benchmarks

    def acquire(self) -> None:
        with self._lock:
            while True:
                now = self._clock()
                while self._sent and now - self._sent[0] >= self.period:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                wait = self.period - (now - self._sent[0])
                self.waited += wait
                self._sleep(wait)

    @property
    def rate(self) -> float:
        """Calls a second this window lets through in the long run."""
        return self.limit / self.period

    def lower_to(self, limit: int, period: float) -> None:
        """Follow a stricter limit the portal announced (never a looser one)."""
        if limit >= 1 and period > 0 and limit / period < self.limit / self.period:
            with self._lock:
                self.limit, self.period = limit, period


class Answer:
    """A decoded answer: status, JSON body (None when empty) and headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: Any, headers: Any) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def _windows(search_per_second: float, per_10_seconds: int, **clocks: Any) -> dict[Bucket, Any]:
    # 5 a second -> 5 calls per 1.0 s; 0.5 a second -> 1 call per 2 s. A 2% margin keeps the
    # client's window from meeting the server's at its edge.
    search_limit = max(1, round(search_per_second))
    return {
        "search": SlidingWindow(search_limit, search_limit / search_per_second * 1.02, **clocks),
        "api": SlidingWindow(per_10_seconds, 10.0 * 1.02, **clocks),
    }


class HubSpotTransport:
    """Runs client calls; see the module doc."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        search_per_second: float = 5.0,
        per_10_seconds: int = 100,
        renew: Callable[[], bool] | None = None,
        source: str = "hubspot",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.renew = renew
        self.source = source
        self.wording = ErrorWording(
            "HubSpot", source, daily_limit="daily API limit", rules=ERROR_RULES
        )
        self.windows = _windows(search_per_second, per_10_seconds, clock=clock, sleep=policy.sleep)
        self._calls = 0
        self._lock = threading.Lock()
        self.server_time: dt.datetime | None = None
        self.daily_remaining: int | None = None
        #: The API budget (set by the connector): asked before every call, told the daily
        #: usage the answers carry.
        self.budget: CallBudget | None = None
        #: The daily usage the latest answer that carried it said.
        self.usage: ApiUsage | None = None

    @property
    def calls(self) -> int:
        return self._calls

    def call(
        self,
        bucket: Bucket,
        what: str,
        request: Callable[[], Any],
        *,
        statuses: tuple[int, ...] = (200,),
    ) -> Answer:
        """Run ``request`` (a client method called with ``_preload_content=False``).

        ``what`` names the call in errors (``POST /crm/v3/objects/deals/search``);
        ``statuses`` are the success statuses the client itself would accept (any other 2xx
        is refused, as the client would silently return None for it).
        """
        renewed = False
        while True:
            try:
                return self.policy.call(lambda: self._attempt(bucket, what, request, statuses))
            except _Expired as expired:
                if renewed or self.renew is None or not self.renew():
                    raise expired.error from None
                renewed = True

    def _attempt(
        self, bucket: Bucket, what: str, request: Callable[[], Any], statuses: tuple[int, ...]
    ) -> Answer:
        if self.budget is not None:
            self.budget.before_call()
        self.windows[bucket].acquire()
        with self._lock:
            self._calls += 1
        method, _, path = what.partition(" ")
        try:
            response = request()
        except Exception as exc:
            failure = self._failure(exc, method, path)
            if failure is None:
                raise
            raise failure from None
        headers = response.headers
        self._note(headers)
        data = response.data
        status = int(response.status)
        if status not in statuses:
            raise RequestRejected(
                f"HubSpot answered {status} where {'/'.join(map(str, statuses))} was expected",
                status=status,
                url=path,
                method=method,
                body=data,
            )
        try:
            body = json.loads(data) if data else None
        except ValueError:
            raise ServerError(
                "HubSpot answered with a body that is not JSON",
                status=status,
                url=path,
                method=method,
                body=data,
            ) from None
        return Answer(status, body, headers)

    def _failure(self, exc: Exception, method: str, path: str) -> ConnectorError | None:
        """The typed error of a call that raised ``exc`` (None when it is none of the
        transport's or the API's)."""
        failure = connection_failure(exc, self.wording, url=path, method=method)
        if failure is not None:
            return failure
        # Every generated package has its own ApiException class: known by its attributes.
        if not hasattr(exc, "status") or not hasattr(exc, "headers"):
            return None
        if not exc.status:  # the client wraps urllib3's SSLError as status 0
            return tls_error(self.wording, url=path, method=method)
        return self._error(exc, method, path)

    def _error(self, exc: Any, method: str, path: str) -> ConnectorError:
        status = int(exc.status or 0)
        body = exc.body
        headers = exc.headers or {}
        self._note(headers)
        failure = answer_failure(
            status,
            body,
            lambda name: _header(headers, name),
            self.wording,
            url=path,
            method=method,
            now=self.policy.clock(),
            reason=getattr(exc, "reason", None),
        )
        if failure is not None:
            return failure
        code, message = error_details(body)
        details: dict[str, Any] = {
            "status": status,
            "code": code,
            "url": path,
            "method": method,
            "body": body,
        }
        text = message or getattr(exc, "reason", None) or "no message"
        if status == 401:
            error = SessionExpired(
                f"source '{self.source}': HubSpot refused the access token ({text}); check the"
                " private app's token (or the OAuth credentials) and its scopes",
                **details,
            )
            return _Expired(error)
        if status == 403:
            return AuthenticationFailed(
                f"source '{self.source}': HubSpot refused the call ({text}); the private app"
                " (or OAuth app) lacks a scope this call needs: see the README's list of"
                " scopes",
                **details,
            )
        return RequestRejected(f"HubSpot refused the request: {text}", **details)

    def _note(self, headers: Any) -> None:
        date = _header(headers, "Date")
        if date:
            try:
                when = email.utils.parsedate_to_datetime(date)
                self.server_time = (
                    when if when.tzinfo else when.replace(tzinfo=dt.UTC)
                ).astimezone(dt.UTC)
            except (TypeError, ValueError, IndexError):
                pass
        limit = _int_header(headers, "X-HubSpot-RateLimit-Max")
        interval = _int_header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
        if limit and interval:
            self.windows["api"].lower_to(limit, interval / 1000 * 1.02)
        remaining = _int_header(headers, "X-HubSpot-RateLimit-Daily-Remaining")
        if remaining is not None:
            self.daily_remaining = remaining
            daily = _int_header(headers, "X-HubSpot-RateLimit-Daily")
            if daily:
                self.usage = ApiUsage(max(0, daily - remaining), daily)
                if self.budget is not None:
                    self.budget.note(self.usage)


class _Expired(ConnectorError):
    """A 401 the caller may cure by renewing the token (never retried by the policy)."""

    def __init__(self, error: SessionExpired) -> None:
        super().__init__(error.detail)
        self.error = error


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None and hasattr(headers, "items"):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == lowered), None)
    return str(value) if value is not None else None


def _int_header(headers: Any, name: str) -> int | None:
    value = _header(headers, name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
