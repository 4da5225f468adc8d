"""The sandbox HubSpot's rate limits: search calls per rolling second, other calls per rolling
10 seconds, a daily budget; HubSpot's 429 answers and its rate-limit headers."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from crm_kpi_worker.sandbox.hubspot.auth import _Auth
from crm_kpi_worker.sandbox.hubspot.catalog import PORTAL_ID
from crm_kpi_worker.sandbox.hubspot.routes import HubSpotError, PortalRoutes


@dataclass(frozen=True)
class RateLimits:
    """The portal's API limits (None: unlimited). ``monotonic`` times the rolling windows
    (tests pass a fake one instead of sleeping)."""

    search_per_second: float | None = 5
    burst_per_10s: int | None = 190
    daily: int | None = 1_000_000
    monotonic: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)


DEFAULT_LIMITS = RateLimits()


class _Window:
    """Requests in a rolling window (thread-safe under the app's lock)."""

    def __init__(self, seconds: float, allowed: int) -> None:
        self.seconds = seconds
        self.allowed = allowed
        self.times: deque[float] = deque()

    def used(self, now: float) -> int:
        while self.times and self.times[0] <= now - self.seconds:
            self.times.popleft()
        return len(self.times)

    def retry_after(self, now: float) -> int:
        # HubSpot does not guarantee Retry-After on a 429; the sandbox always sends one.
        wait = self.times[0] + self.seconds - now if self.times else 1.0
        return max(1, math.ceil(wait))


class RateLimitChecks(PortalRoutes):
    """Counts each API call against the portal's limits (under the app's lock)."""

    limits: RateLimits
    _search_window: _Window | None
    _burst_window: _Window | None
    _second_window: _Window
    _daily_used: int
    _daily_day: int | None

    def _seconds_to_midnight(self) -> int:
        now = self.portal.now_ms()
        return max(1, math.ceil(((now // 86_400_000 + 1) * 86_400_000 - now) / 1000))

    def _rate_limit(self, is_search: bool, auth: _Auth, headers: dict[str, str]) -> None:
        limits = self.limits
        now = limits.monotonic()
        day = self.portal.now_ms() // 86_400_000
        with self._lock:
            if self._daily_day != day:
                self._daily_day, self._daily_used = day, 0
            if limits.daily is not None and self._daily_used >= limits.daily:
                self.stats.rate_limited += 1
                raise _rate_limited("DAILY", self._seconds_to_midnight())
            window = self._search_window if is_search else self._burst_window
            if window is not None and window.used(now) >= window.allowed:
                self.stats.rate_limited += 1
                policy = "SECONDLY" if is_search else "TEN_SECONDLY_ROLLING"
                raise _rate_limited(policy, window.retry_after(now))
            if window is not None:
                window.times.append(now)
            self._daily_used += 1
            if is_search or (self._burst_window is None and limits.daily is None):
                return  # search answers carry no rate headers (community report)
            if not auth.oauth and limits.daily is not None:
                headers["X-HubSpot-RateLimit-Daily"] = str(limits.daily)
                headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                    max(0, limits.daily - self._daily_used)
                )
            burst = self._burst_window
            if burst is not None:
                secondly = math.ceil(burst.allowed / 10)
                self._second_window.times.append(now)
                used_second = self._second_window.used(now)
                headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = "10000"
                headers["X-HubSpot-RateLimit-Max"] = str(burst.allowed)
                headers["X-HubSpot-RateLimit-Remaining"] = str(
                    max(0, burst.allowed - burst.used(now))
                )
                headers["X-HubSpot-RateLimit-Secondly"] = str(secondly)
                headers["X-HubSpot-RateLimit-Secondly-Remaining"] = str(
                    max(0, secondly - used_second)
                )


def _rate_limited(policy: str, retry_after: int) -> HubSpotError:
    # Body as recorded in HubSpot/hubspot-api-python#117; SECONDLY in HGData/mk-node-hubspot#89.
    names = {
        "SECONDLY": ("secondly", f"publicapi:search-api-calls-secondly:{PORTAL_ID}"),
        "TEN_SECONDLY_ROLLING": (
            "ten_secondly_rolling",
            f"publicapi:private-app-api-calls-ten-secondly:{PORTAL_ID}",
        ),
        "DAILY": ("daily", f"publicapi:private-app-api-calls-daily:{PORTAL_ID}"),
    }
    word, group = names[policy]
    return HubSpotError(
        429,
        "RATE_LIMITS",
        f"You have reached your {word} limit.",
        headers={"Retry-After": str(max(1, int(retry_after)))},
        body={
            "status": "error",
            "message": f"You have reached your {word} limit.",
            "errorType": "RATE_LIMIT",
            "policyName": policy,
            "groupName": group,
        },
    )
