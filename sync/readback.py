"""Drift: what the worker's own fields hold in the CRM, compared with what it wrote there.

The write memory (``Store.written``) holds what the worker last wrote and the CRM confirmed;
someone may have edited those fields since (a scorecard's quota set to 1 by hand). Two reads
find out, without a call of their own where the CRM allows it:

- along the pull: the deals (and Salesforce users) queries read the worker's own fields too
  (``Connector.read_along``); a hand edit moves the record's stamp, so the next incremental
  pull reads it;
- a verify pass (``Connector.read_back``): every record of every object the worker wrote, its
  own fields only (on Salesforce one query: a REST page per 2,000 records, or above
  ``bulk.pull_above`` one Bulk query job whose CSV values come typed as REST's, so
  :func:`same_value` sees the same values on both roads; a list page per 100 on HubSpot);
  every ``write.verify_every`` (default daily) and on ``sync --once --verify``.

Where the CRM holds another value than the one remembered, the memory takes the CRM's value
and the record counts as drift: the write phase, diffing against the memory, then writes the
worker's value back, and only into the worker's own fields.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from crm_kpi_worker.connectors.base import Connector, content_digest
from crm_kpi_worker.connectors.registry import plugin_for
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.store import Store, StoredPage

__all__ = [
    "DriftFinder",
    "context_salt",
    "own_fields",
    "own_objects_by_stream",
    "readable_own_fields",
    "same_value",
    "verify_due",
    "verify_written",
]

#: The source metadata key of the last verify pass (an ISO instant).
VERIFIED_AT = "verified_at"


@dataclass
class DriftFinder:
    """Compares what the CRM holds with the write memory of one source; counts drifted records
    per object (``found``) and remembers the CRM's values in their place."""

    store: Store
    source: str
    found: dict[str, list[str]] = field(default_factory=dict)  # object -> drifted keys

    def check(self, object: str, held: Mapping[str, Mapping[str, Any]]) -> int:
        """``held``: key -> field -> value as the CRM holds it. Returns the drifted records."""
        if not held:
            return 0
        remembered = self.store.written(self.source, object, keys=list(held))
        if not remembered:
            return 0
        changed: list[tuple[str, str, Any]] = []
        drifted: list[str] = []
        for key, values in held.items():
            before = len(changed)
            for name, value in values.items():
                if (key, name) not in remembered:
                    continue  # never written (or not confirmed): the write phase sends it
                mine = remembered[key, name]
                if not same_value(mine, value):
                    changed.append((key, name, as_remembered(mine, value)))
            if len(changed) > before:
                drifted.append(key)
        if changed:
            self.store.record_written(self.source, object, changed)
            self.found.setdefault(object, []).extend(drifted)
        return len(drifted)

    def report(self, written: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Per object: the drifted records and how many of them the run wrote back."""
        failed = {
            (w["object"], f["key"]) for w in written for f in w.get("failures", ()) if "key" in f
        }
        return [
            {
                "object": object,
                "records": len(keys),
                "repaired": sum((object, key) not in failed for key in keys),
                "keys": keys,
            }
            for object, keys in self.found.items()
        ]


def _number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _instant(value: Any) -> dt.datetime | dt.date | None:
    """A date or an instant from the forms CRMs send (ISO text, ``+0000``, epoch ms)."""
    if isinstance(value, dt.datetime | dt.date):
        return value
    text = str(value).strip()
    if text.isdigit() and len(text) >= 12:
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    if len(text) == 10:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            return None
    text = text.replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"  # +0000 -> +00:00
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def same_value(mine: Any, held: Any) -> bool:
    """Whether the CRM's ``held`` is the value the worker wrote (``mine``, as remembered),
    whatever form the CRM answers in (HubSpot: text; Salesforce: JSON numbers, +0000)."""
    if mine is None or mine == "":
        return held is None or held == ""
    if held is None or held == "":
        return False
    if isinstance(mine, bool):
        return str(held).lower() == str(mine).lower()
    if isinstance(mine, int | float | Decimal):
        number = _number(held)
        return number is not None and math.isclose(float(mine), number, abs_tol=1e-6)
    if isinstance(mine, dt.date) or (isinstance(mine, str) and mine[:4].isdigit() and "-" in mine):
        left, right = _instant(mine), _instant(held)
        if left is not None and right is not None:
            if isinstance(left, dt.datetime) != isinstance(right, dt.datetime):
                # A date field may come back as an instant at midnight UTC (HubSpot).
                left = left.date() if isinstance(left, dt.datetime) else left
                right = right.date() if isinstance(right, dt.datetime) else right
            return left == right
    return str(mine) == str(held)


def as_remembered(mine: Any, held: Any) -> Any:
    """The CRM's value in the type the memory keeps for this field."""
    if held is None or held == "":
        return None
    if isinstance(mine, int | float | Decimal) and not isinstance(mine, bool):
        number = _number(held)
        return number if number is not None else str(held)
    if isinstance(held, int | float | bool):
        return held
    return str(held)


def verify_due(
    store: Store, source: str, every: dt.timedelta | None, now: dt.datetime, *, forced: bool
) -> bool:
    """Whether this run reads back every written record (``--verify``, or the cadence)."""
    if forced:
        return True
    if every is None:
        return False
    last = store.metadata(source, VERIFIED_AT)
    if last is None:
        return True
    try:
        when = dt.datetime.fromisoformat(str(last))
    except ValueError:
        return True
    return now - when >= every


def own_fields(config: AppConfig, source: Any) -> dict[str, list[str]]:
    """The fields the worker writes on the deal and rep objects (read along the pull)."""
    fields = config.kpi_fields_for(source)
    plugin = plugin_for(source.type)
    deal: list[str] = []
    for target in (fields.deal, fields.owner):
        if target is not None:
            deal += [name for name in target.fields.values() if name not in deal]
    out: dict[str, list[str]] = {}
    if deal:
        out[plugin.deal_object] = deal
    if fields.rep is not None and plugin.rep_object is not None:
        out[plugin.rep_object] = list(dict.fromkeys(fields.rep.fields.values()))
    return out


def readable_own_fields(config: AppConfig, source: Any, store: Store) -> dict[str, list[str]]:
    """:func:`own_fields` the worker has written already: they exist and it may read them
    (setup may not have run, or access not been granted yet), and only written values can
    drift. Costs no call."""
    out: dict[str, list[str]] = {}
    for object, names in own_fields(config, source).items():
        written = [name for name in names if store.has_written(source.name, object, name)]
        if written:
            out[object] = written
    return out


def own_objects_by_stream(source: Any) -> dict[str, str]:
    """stream -> the object the worker writes that its pages carry."""
    plugin = plugin_for(source.type)
    out = {"deals": plugin.deal_object}
    if plugin.rep_object is not None:
        out["users"] = plugin.rep_object
    return out


def context_salt(config: AppConfig, metadata: Any) -> str:
    """A short digest of what normalization depends on besides the record: the config (but
    its runtime parts) and the CRM's metadata (stages, currencies), and this version."""
    settings = config.model_dump(
        mode="json", exclude={"write", "budget", "store", "schedule", "runtime"}
    )
    return content_digest([settings, metadata, _version()])[:8]


def _version() -> str:
    try:
        return importlib.metadata.version("crm-kpi-worker")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def verify_written(
    config: AppConfig,
    store: Store,
    source: Any,
    connector: Connector,
    drift: DriftFinder,
    report: Any,
    *,
    every: bool,
) -> None:
    """The verify pass: read back the worker's fields on the scorecards (the pull reads the
    deal and user fields along), or on every object it wrote (``every``: ``--verify``), and
    check them (:class:`DriftFinder`)."""
    fields = config.kpi_fields_for(source)
    targets: list[tuple[str, str | None]] = []
    if fields.scorecard is not None:
        targets.append((fields.scorecard.object, fields.scorecard.external_id))
    if every:
        targets += [(obj, None) for obj in own_fields(config, source)]
    for object, key_field in targets:
        names = store.written_fields(source.name, object)
        if not names:
            continue  # nothing written there yet: nothing to compare
        for values in connector.read_back(object, names, key_field):
            report.verified[object] += len(values)
            drift.check(object, values)
    stamp = dt.datetime.now(dt.UTC).isoformat()
    store.save_page(
        StoredPage(source=source.name, stream="metadata", metadata={VERIFIED_AT: stamp})
    )
