"""The back-off after refused logins (sync/backoff.py): one policy, used by the embedded
service's :class:`AuthBackoff` and by the workers' shared state in the control schema."""

from __future__ import annotations

import datetime as dt

from crm_kpi_worker.sync import service
from crm_kpi_worker.sync.backoff import (
    AUTH_BACKOFF_CAP,
    AUTH_BACKOFF_FIRST,
    AuthBackoff,
    BackoffPolicy,
    duration,
)

MIN = dt.timedelta(minutes=1)
T0 = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)


def test_the_wait_doubles_from_five_minutes_up_to_six_hours() -> None:
    policy = BackoffPolicy()

    assert (policy.first, policy.cap) == (5 * MIN, 6 * 60 * MIN)
    assert [policy.wait(n) / MIN for n in range(1, 10)] == [5, 10, 20, 40, 80, 160, 320, 360, 360]
    assert policy.wait(0) == dt.timedelta(0)  # no refusal, no wait


def test_the_wait_stays_at_the_cap_after_any_number_of_refusals() -> None:
    # first * 2**(n-1) alone overflows a timedelta from the 40th refusal (a week at the cap).
    assert BackoffPolicy().wait(40) == AUTH_BACKOFF_CAP
    assert BackoffPolicy().wait(10_000) == AUTH_BACKOFF_CAP
    assert BackoffPolicy(first=MIN, cap=90 * MIN).wait(8) == 90 * MIN  # a cap off the doubling


def test_not_before_is_the_refusal_plus_its_wait() -> None:
    policy = BackoffPolicy(first=5 * MIN, cap=40 * MIN)

    assert policy.not_before(1, T0) == T0 + 5 * MIN
    assert policy.not_before(3, T0) == T0 + 20 * MIN
    assert policy.not_before(9, T0) == T0 + 40 * MIN


def test_the_services_back_off_counts_waits_and_resets_with_the_policy() -> None:
    now = [T0]
    backoff = AuthBackoff(first=5 * MIN, cap=40 * MIN, clock=lambda: now[0])

    assert not backoff.waiting()
    waits = [backoff.refused() for _ in range(5)]
    assert waits == [backoff.policy.wait(n) for n in range(1, 6)]
    assert [w / MIN for w in waits] == [5, 10, 20, 40, 40]
    assert (backoff.failures, backoff.not_before) == (5, T0 + 40 * MIN)
    now[0] = T0 + 39 * MIN
    assert backoff.waiting()
    now[0] = T0 + 40 * MIN
    assert not backoff.waiting()
    backoff.reset()
    assert (backoff.failures, backoff.not_before) == (0, None)
    assert backoff.refused() == 5 * MIN  # from the start again


def test_the_service_uses_the_shared_policy_and_defaults() -> None:
    assert service.AuthBackoff is AuthBackoff
    assert (service.AUTH_BACKOFF_FIRST, service.AUTH_BACKOFF_CAP) == (
        AUTH_BACKOFF_FIRST,
        AUTH_BACKOFF_CAP,
    )
    default = AuthBackoff()
    assert default.policy == BackoffPolicy()
    assert (default.first, default.cap) == (AUTH_BACKOFF_FIRST, AUTH_BACKOFF_CAP)


def test_durations_read_in_hours_and_minutes() -> None:
    assert [duration(n * MIN) for n in (0, 5, 60, 80, 360)] == [
        "0 min",
        "5 min",
        "1 h",
        "1 h 20 min",
        "6 h",
    ]
