"""Backing off refused logins: one policy for the embedded service and the workers.

A CRM that refuses the credentials is not asked again at every scheduled time (a Salesforce
integration user would be locked out): after the n-th refusal in a row, no attempt before
``first * 2**(n-1)`` has passed, at most ``cap``; a successful run resets it.

- :class:`BackoffPolicy`: that arithmetic, and nothing else;
- :class:`AuthBackoff`: the state of one process (the embedded service, :mod:`.service`);
- the workers of a deployment keep the same state in the control schema, shared by every
  worker and scheduler (:meth:`crm_kpi_worker.sync.scale.control.ControlStore.refused`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "AUTH_BACKOFF_CAP",
    "AUTH_BACKOFF_FIRST",
    "AuthBackoff",
    "BackoffPolicy",
    "duration",
]

AUTH_BACKOFF_FIRST = dt.timedelta(minutes=5)
AUTH_BACKOFF_CAP = dt.timedelta(hours=6)

Clock = Callable[[], dt.datetime]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class BackoffPolicy:
    """How long to wait after the n-th refused login in a row."""

    first: dt.timedelta = AUTH_BACKOFF_FIRST
    cap: dt.timedelta = AUTH_BACKOFF_CAP

    def wait(self, failures: int) -> dt.timedelta:
        """The wait after ``failures`` refusals in a row (none after none)."""
        if failures <= 0:
            return dt.timedelta(0)
        # The doubling stops at the cap: ``first * 2**(n-1)`` itself overflows a timedelta
        # after about forty refusals (a week of them at the cap).
        wait = self.first
        for _ in range(failures - 1):
            if wait >= self.cap:
                break
            wait *= 2
        return min(wait, self.cap)

    def not_before(self, failures: int, refused_at: dt.datetime) -> dt.datetime:
        """The first instant a new attempt may be made, after a refusal at ``refused_at``."""
        return refused_at + self.wait(failures)


class AuthBackoff:
    """The back-off of one process: after the n-th refused login in a row, no attempt before
    ``first * 2**(n-1)`` (at most ``cap``) has passed; a successful run resets it."""

    def __init__(
        self,
        first: dt.timedelta = AUTH_BACKOFF_FIRST,
        cap: dt.timedelta = AUTH_BACKOFF_CAP,
        clock: Clock = _now,
    ) -> None:
        self.policy = BackoffPolicy(first, cap)
        self._clock = clock
        self.failures = 0
        self.not_before: dt.datetime | None = None

    @property
    def first(self) -> dt.timedelta:
        return self.policy.first

    @property
    def cap(self) -> dt.timedelta:
        return self.policy.cap

    def waiting(self) -> bool:
        return self.not_before is not None and self._clock() < self.not_before

    def refused(self) -> dt.timedelta:
        """Count one more refusal; the wait before the next attempt."""
        self.failures += 1
        wait = self.policy.wait(self.failures)
        self.not_before = self._clock() + wait
        return wait

    def reset(self) -> None:
        self.failures, self.not_before = 0, None


def duration(span: dt.timedelta) -> str:
    """``5 min``, ``1 h 20 min``."""
    minutes = round(span.total_seconds() / 60)
    hours, minutes = divmod(minutes, 60)
    return (
        " ".join(
            part for part in (f"{hours} h" * bool(hours), f"{minutes} min" * bool(minutes)) if part
        )
        or "0 min"
    )
