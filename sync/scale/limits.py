"""Limits shared by every worker: an org's API budget and HubSpot's per-token rate limits,
counted in the control schema (:mod:`.control`), never per process.

- :class:`SharedCallBudget` is the run's :class:`~crm_kpi_worker.connectors.budget.CallBudget`
  with its count in ``org_usage``: before each call, one atomic statement counts the call
  unless the org's usage as the CRM last said it plus the calls made since (by any worker)
  would pass the source's share of the daily limit; each answer's usage replaces the noted one
  and takes off the counted calls it already includes.
- :class:`SharedPacer` replaces the HubSpot transport's in-process windows: each call takes
  the bucket's next slot, ``period / limit`` after the one before, from one row per bucket
  (the database's clock); the call waits for its slot. Slots are evenly spaced, so no window
  of ``period`` ever holds more than ``limit`` calls, whichever worker makes them.

An org is known by :func:`org_key`: a Salesforce org by its instance (My Domain) URL, else its
login host and integration user; a HubSpot app by its base URL and a digest of its token
(HubSpot counts its limits per app token), so two tenants' different portals never share.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from crm_kpi_worker.connectors.budget import ApiUsage, CallBudget
from crm_kpi_worker.sync.config import SecretError
from crm_kpi_worker.sync.run_budget import USAGE_TRUSTED_FOR
from crm_kpi_worker.sync.scale.control import ControlStore

__all__ = ["SharedCallBudget", "SharedPacer", "org_key", "share_hubspot_pacing"]


def _digest(value: str) -> str:
    return hashlib.sha256(f"crm-kpi-org:{value}".encode()).hexdigest()[:16]


def org_key(source: Any, environ: Mapping[str, str] | None = None) -> str:
    """The key of the org (or HubSpot app) ``source`` calls; no secret in it."""
    auth = source.auth
    if source.type == "salesforce":
        instance = source.effective_instance_url
        if instance:
            return f"salesforce:{instance.rstrip('/')}"
        host = source.login_url or f"https://{source.domain}.salesforce.com"
        username = getattr(auth, "username", None)
        user = _resolved(username, environ) if username is not None else "?"
        return f"salesforce:{host.rstrip('/')}:{user}"
    credential = getattr(auth, "token", None) or getattr(auth, "access_token", None)
    if credential is None:
        credential = getattr(auth, "refresh_token", None)
    secret = _resolved(credential, environ) if credential is not None else source.name
    base = str(getattr(source, "base_url", "")).rstrip("/")
    return f"{source.type}:{base}:{_digest(secret)}"


def _resolved(ref: Any, environ: Mapping[str, str] | None) -> str:
    try:
        return str(ref.resolve(environ).get_secret_value())
    except SecretError:
        return ref.describe()  # the connector reports the missing secret itself


class SharedCallBudget(CallBudget):
    """A run's budget whose org usage and call count live in the control schema."""

    def __init__(self, share: float, source: str, org: str, control: ControlStore) -> None:
        super().__init__(share, source)
        self.org = org
        self._control = control
        row = control.usage(org)
        if row is not None:
            self._mirror(row)

    def _mirror(self, row: Any) -> None:
        """Keep the shared row's values here: ``usage``, ``allowance`` and the run report
        read them as for a run's own budget."""
        values = row if isinstance(row, Mapping) else row._mapping
        noted = values.get("noted_at")
        fresh = noted is not None and dt.datetime.now(dt.UTC) - noted < USAGE_TRUSTED_FOR
        with self._lock:
            if fresh and values.get("daily_limit"):
                self.usage = ApiUsage(int(values["used"]), int(values["daily_limit"]))
            self._since_noted = int(values.get("calls_since") or 0)

    def note(self, usage: ApiUsage | None) -> None:
        if usage is None or usage.limit <= 0:
            return
        self._control.note_usage(self.org, usage.used, usage.limit)
        row = self._control.usage(self.org)
        if row is not None:
            self._mirror(row)

    def remembered(self, usage: ApiUsage, at: dt.datetime) -> None:
        """A usage remembered in the tenant's store counts only over an older shared one."""
        self._control.note_usage(self.org, usage.used, usage.limit, at=at)
        row = self._control.usage(self.org)
        if row is not None:
            self._mirror(row)

    def before_call(self) -> None:
        allowed, row = self._control.take_call(self.org, self.share, USAGE_TRUSTED_FOR)
        if row is not None:
            self._mirror(row)
        if not allowed:
            usage, ceiling = self.usage, self.ceiling
            assert usage is not None and ceiling is not None
            raise self.exhausted(usage, self.calls_since_noted, ceiling)


class SharedPacer:
    """A HubSpot transport window (``acquire``, ``lower_to``) whose slots are shared."""

    def __init__(
        self,
        control: ControlStore,
        bucket: str,
        limit: int,
        period: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._control = control
        self.bucket = bucket
        self.limit = max(1, limit)
        self.period = period
        self._sleep = sleep
        self.waited = 0.0

    def acquire(self) -> None:
        _slot, wait = self._control.next_slot(self.bucket, self.period / self.limit)
        if wait > 0:
            self.waited += wait
            self._sleep(wait)

    @property
    def rate(self) -> float:
        """Calls a second the shared window lets through in the long run (all workers
        together): what the connector's choice of road reads."""
        return self.limit / self.period

    def lower_to(self, limit: int, period: float) -> None:
        """Follow a stricter limit the portal announced (never a looser one)."""
        if limit >= 1 and period > 0 and limit / period < self.limit / self.period:
            self.limit, self.period = limit, period


def share_hubspot_pacing(connector: Any, org: str, control: ControlStore) -> None:
    """Give a HubSpot connector's transport shared windows in place of its own ones."""
    transport = getattr(connector, "transport", None)
    windows = getattr(transport, "windows", None)
    if not isinstance(windows, dict):
        return
    for bucket, window in list(windows.items()):
        windows[bucket] = SharedPacer(control, f"{org}:{bucket}", window.limit, window.period)
