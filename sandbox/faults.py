"""Fault injection for the sandbox CRMs: rate limits, server errors, slow answers, expired
sessions, per-record write failures, and for asynchronous (Bulk API) jobs a failed job, a job
that stays in progress, and a result download cut midway, and a Pub/Sub API call refused with
UNAVAILABLE (``pubsub_unavailable``: its path is ``/eventbus.v1.PubSub/<Method>``), on a
schedule the caller controls.

A rule matches requests by method and path (a regular expression searched in the path) and
fires ``times`` times (``None``: forever), on every ``every``-th match, or with a probability
drawn from a seeded generator, so a fault scenario is repeatable.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal[
    "rate_limit",
    "daily_limit",
    "server_error",
    "slow",
    "expire_session",
    "write_failure",
    "job_failure",
    "slow_job",
    "cut_download",
    "pubsub_unavailable",
]
FAULT_KINDS: tuple[str, ...] = (
    "rate_limit",
    "daily_limit",
    "server_error",
    "slow",
    "expire_session",
    "write_failure",
    "job_failure",
    "slow_job",
    "cut_download",
    "pubsub_unavailable",
)


@dataclass
class FaultRule:
    kind: FaultKind
    path: str = ""  # regular expression searched in the request path; "" matches all
    method: str | None = None  # e.g. "GET"; None matches all
    times: int | None = 1  # how many times it fires; None = no limit
    every: int = 1  # fire on every n-th matching request
    probability: float = 1.0
    status: int = 503  # server_error: the HTTP status
    retry_after: int = 1  # rate_limit: the Retry-After seconds
    delay: float = 1.0  # slow: seconds to wait before answering
    record_ids: tuple[str, ...] = ()  # write_failure: these records fail (empty: any record)
    message: str = ""  # job_failure: the failed job's errorMessage ("": the CRM's usual one)
    polls: int | None = 1  # slow_job: status polls answered "in progress"; None: until released
    cut_after: int = 1024  # cut_download: bytes of the body sent before the connection closes
    fired: int = 0
    seen: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def hold(self) -> None:
        """A slow answer: wait ``delay`` seconds, or until :meth:`release`."""
        self._released.wait(self.delay)

    def release(self) -> None:
        """Let every request held by this slow rule go on at once (tests park a worker on a
        request, act, then release it); a job held by a slow_job rule completes at its next
        status poll."""
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; use one of {', '.join(FAULT_KINDS)}"
            )
        if (
            self.every < 1
            or not 0 <= self.probability <= 1
            or (self.times is not None and self.times < 0)
        ):
            raise ValueError("every >= 1, 0 <= probability <= 1 and times >= 0 are required")
        if (self.polls is not None and self.polls < 0) or self.cut_after < 0:
            raise ValueError("polls (or null) and cut_after must be >= 0")
        self._pattern = re.compile(self.path)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        allowed = {
            "kind",
            "path",
            "method",
            "times",
            "every",
            "probability",
            "status",
            "retry_after",
            "delay",
            "record_ids",
            "message",
            "polls",
            "cut_after",
        }
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault rule keys: {', '.join(sorted(unknown))}")
        values = dict(data)
        if "record_ids" in values:
            values["record_ids"] = tuple(values["record_ids"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "method": self.method,
            "times": self.times,
            "every": self.every,
            "probability": self.probability,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "record_ids": list(self.record_ids),
            "message": self.message,
            "polls": self.polls,
            "cut_after": self.cut_after,
            "fired": self.fired,
        }

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method.upper()) and bool(
            self._pattern.search(path)
        )


class FaultPlan:
    """The rules in force on one sandbox; thread-safe."""

    def __init__(self, seed: int = 0) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)  # noqa: S311 - test scheduling, not security

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            for rule in self._rules:
                rule.release()  # requests held by a slow rule go on
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def draw(self, method: str, path: str, kinds: tuple[str, ...]) -> FaultRule | None:
        """The first rule of one of ``kinds`` that fires for this request, counted as fired."""
        with self._lock:
            for rule in self._rules:
                if rule.kind in kinds and rule.matches(method, path) and self._fires(rule):
                    return rule
        return None

    def failing_record(
        self, record_id: str | None, method: str, path: str, *, key: str | None = None
    ) -> FaultRule | None:
        """A write_failure rule that fails this record (counted per record); ``record_ids``
        match the record's id or ``key``, the other id it was written by (an upsert's unique
        value)."""
        with self._lock:
            for rule in self._rules:
                if (
                    rule.kind == "write_failure"
                    and rule.matches(method, path)
                    and (
                        not rule.record_ids
                        or record_id in rule.record_ids
                        or (key is not None and key in rule.record_ids)
                    )
                    and self._fires(rule)
                ):
                    return rule
        return None

    def _fires(self, rule: FaultRule) -> bool:
        """Whether a matching rule fires now (under the lock); counts it when it does."""
        if rule.times is not None and rule.fired >= rule.times:
            return False
        rule.seen += 1
        if rule.seen % rule.every:
            return False
        if rule.probability < 1 and self._random.random() >= rule.probability:
            return False
        rule.fired += 1
        return True
