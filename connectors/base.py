"""The interface every CRM connector implements, the same for every CRM.

A connector pulls raw records (the CRM's own JSON, one dict per record) in pages, per stream,
since a cursor, and writes field values back in batches. It knows nothing of KPIs or of the
store; the sync pipeline wires it to them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import marshal
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from crm_kpi_worker.connectors.budget import CallBudget
from crm_kpi_worker.connectors.errors import ConnectorError, StopRun

log = logging.getLogger(__name__)

# The streams a connector offers. Every connector offers these names (a CRM without a concept
# yields no pages for it); the pipeline pulls them in this order.
STREAMS: tuple[str, ...] = (
    "stages",  # pipeline stage metadata (Salesforce OpportunityStage)
    "currencies",  # conversion rates the CRM knows (Salesforce CurrencyType)
    "users",  # people who own records (reps)
    "accounts",  # accounts with a churn signal
    "deals",  # opportunities, each with its stage history and close-date history
    "activities",  # demo activities
    "quotas",  # quotas kept in the CRM
)


@dataclass(frozen=True)
class Page:
    """One page of raw records of one stream.

    ``cursor`` is the value to store once this page is persisted: the largest modification
    stamp of the records so far (pages come in stamp order), so a run that stops after this
    page resumes from here. None for streams pulled whole every time.
    ``deleted_ids`` lists records the CRM reports as deleted/archived in this page.
    ``own_values``: record id -> the worker's own fields as the CRM holds them, for the
    fields asked with :meth:`Connector.read_along` (drift is found on them).
    ``digests``: (record id, digest) of every record, in order: a digest of what the record
    holds but its modification stamps and the worker's own fields, so a record whose only
    change is the worker's own write has the digest it had (empty: not computed).
    ``total`` is how many records the query this page answers matches in all, when the CRM
    says so in the same answer (Salesforce's ``totalSize``, HubSpot's search ``total``): the
    expected count a progress bar shows; None when the CRM does not say.
    """

    stream: str
    records: list[dict[str, Any]]
    cursor: str | None
    deleted_ids: list[str] = field(default_factory=list)
    own_values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    digests: Sequence[tuple[str, str]] = ()
    total: int | None = None


#: For content marshal cannot take (one encoder: ``json.dumps`` with options builds one a call).
_DIGEST_JSON = json.JSONEncoder(separators=(",", ":"), default=str)


def content_digest(content: Any) -> str:
    """A short digest of a record's content (JSON values; key order as the CRM sends it).

    The content is serialized by marshal, a few times faster than JSON on a CRM record (a
    million a full pull): format version 2, which writes no back-references, so equal content
    gives equal bytes whatever objects it shares; other values (dates, decimals) go through
    JSON. A digest that changes (another serialization) only costs normalizing the record
    again; the context salt changes with the worker's version anyway."""
    try:
        data = marshal.dumps(content, 2)
    except ValueError:
        data = _DIGEST_JSON.encode(content).encode()
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def text_digest(text: str) -> str:
    """A short digest of a text that says a record's content (see :func:`content_digest`)."""
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class TargetField:
    """A field the worker writes: created by ``setup`` when missing."""

    object: str  # e.g. Opportunity, User, KPI_Scorecard__c
    name: str  # API name, e.g. KPI_Days_In_Stage__c
    type: Literal["number", "percent", "currency", "date", "datetime", "text", "lookup"]
    label: str
    help_text: str = ""
    precision: int = 18
    scale: int = 2
    length: int = 255
    external_id: bool = False
    unique: bool = False
    reference_to: str | None = None


@dataclass(frozen=True)
class TargetObject:
    """A custom object the worker upserts records into (the scorecards)."""

    name: str  # e.g. KPI_Scorecard__c
    label: str
    plural_label: str
    name_field_label: str
    #: The fields people should see first on a record, besides its name (most useful first):
    #: setup shows them where the CRM lets an object choose (HubSpot's secondary display
    #: properties).
    headline_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetupSettings:
    """The config's word on what ``setup`` does besides creating fields (``write:``); what is
    CRM-specific (Salesforce page layouts) is on the source's own config."""

    #: ``write.language``: the labels of what setup creates.
    language: str = "en"
    #: ``write.grant_to.reps``: every active user who is a rep gets read access to the KPIs.
    grant_to_reps: bool = True
    #: ``write.grant_to.profiles``: and every active user of these profiles (by name).
    grant_to_profiles: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetupChange:
    """One change ``setup`` makes in the CRM besides creating the target objects and fields:
    access (Salesforce permission sets and their assignments), placement (page layouts, a
    tab, a list view; HubSpot's default columns), labels.

    A connector's ``plan_setup`` returns only what differs from the CRM as it is, so a second
    ``setup`` plans nothing. ``setup --dry-run`` prints the plan; ``setup`` prints it and calls
    each change's ``apply`` in order (an earlier change may be one a later one needs).
    """

    kind: str  # what sort of thing changes, e.g. "permission set", "page layout", "tab"
    name: str  # which one, e.g. "KPI_Worker_Read", "Opportunity-Opportunity Layout"
    detail: str  # one line for people: what changes, e.g. "add section KPIs (7 fields)"
    #: Makes the change (calls the CRM); planned changes are applied in the plan's order.
    apply: Callable[[], None] = field(compare=False, repr=False, default=lambda: None)

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.detail}"


@dataclass(frozen=True)
class CrmField:
    """One field of a CRM object, as the CRM's metadata describes it (Salesforce describe,
    HubSpot properties and pipelines)."""

    name: str  # API name as the CRM spells it, e.g. Amount, closedate
    #: The values the field takes when the CRM lists them (a Salesforce picklist, HubSpot's
    #: deal stage and pipeline ids); None when any value goes.
    values: tuple[str, ...] | None = None
    #: The objects a lookup points to, and the relationship name that reaches them in a
    #: field path (Salesforce: AccountId -> ("Account",), "Account").
    references: tuple[str, ...] = ()
    relationship: str | None = None


@dataclass(frozen=True, slots=True)  # slots: a run keeps every failure for its report
class WriteResult:
    """The outcome for one record of a batch write."""

    record_id: str | None  # the CRM id (None when an insert failed)
    key: str  # what the caller identified the record by: an id or an external id value
    success: bool
    error_code: str | None = None
    error_message: str | None = None
    created: bool = False

    @classmethod
    def failed(cls, key: str, record_id: str | None, code: str, message: str) -> WriteResult:
        return cls(record_id, key, False, code, message)


#: (key, request body) of one record to write; the key is a record id or an external id.
WriteItem = tuple[str, dict[str, Any]]


def write_in_batches(
    items: Sequence[WriteItem],
    size: int,
    send: Callable[[Sequence[WriteItem]], list[WriteResult]],
    *,
    by_id: bool,
) -> list[WriteResult]:
    """``send`` each batch of at most ``size`` items, results in order. A :class:`StopRun`
    reports every record not written yet as failed (in ``stop.write_results``, with the
    results so far) and propagates."""
    results: list[WriteResult] = []
    for start in range(0, len(items), size):
        try:
            results += send(items[start : start + size])
        except StopRun as stop:
            code = stop.code or "STOPPED"
            results += [
                WriteResult.failed(key, key if by_id else None, code, stop.detail)
                for key, _ in items[start:]
            ]
            stop.write_results = results
            raise
    return results


def batch_failed(
    batch: Sequence[WriteItem], by_id: bool, error: ConnectorError
) -> list[WriteResult]:
    """Every record of a batch failed by the call's error."""
    log.warning("a batch of %d records failed: %s", len(batch), error)
    code = error.code or (f"HTTP_{error.status}" if error.status else "CALL_FAILED")
    return [WriteResult.failed(key, key if by_id else None, code, error.detail) for key, _ in batch]


class WritesThroughTargets:
    """The part of :class:`Connector` every CRM does the same way: target objects and fields
    through ``self.targets``, updates through ``self.writer``."""

    targets: Any
    writer: Any

    def missing_targets(
        self, objects: Sequence[TargetObject], fields: Sequence[TargetField]
    ) -> tuple[list[TargetObject], list[TargetField]]:
        return self.targets.missing(objects, fields)

    def create_targets(
        self, objects: Sequence[TargetObject], fields: Sequence[TargetField]
    ) -> None:
        self.targets.create(objects, fields)

    def plan_setup(
        self,
        objects: Sequence[TargetObject],
        fields: Sequence[TargetField],
        settings: SetupSettings,
    ) -> list[SetupChange]:
        return []

    def update(self, object: str, records: Mapping[str, Mapping[str, Any]]) -> list[WriteResult]:
        return self.writer.update(object, records)

    def write_batch_size(self, count: int, configured: int) -> int:
        return configured

    def write_calls(self, count: int, configured: int) -> int:
        return math.ceil(count / self.write_batch_size(count, configured)) if count > 0 else 0

    def change_events(self) -> dict[str, Any]:
        return {}


class Connector(Protocol):
    """One CRM source."""

    name: str  # the source's name in the config

    def pull(self, stream: str, since: str | None) -> Iterator[Page]:
        """Pages of ``stream`` changed at or after ``since`` (None: everything), deletions
        included, in modification-stamp order."""
        ...

    def describe_fields(self, object: str) -> dict[str, CrmField] | None:
        """The fields of a CRM object by API name (the config's object names: Opportunity,
        User, Event; deals, companies, meetings, owners), None when the CRM has no such
        object. Described once per connector (one run)."""
        ...

    def missing_targets(
        self, objects: Sequence[TargetObject], fields: Sequence[TargetField]
    ) -> tuple[list[TargetObject], list[TargetField]]:
        """The objects and fields that do not exist yet in the CRM."""
        ...

    def create_targets(
        self, objects: Sequence[TargetObject], fields: Sequence[TargetField]
    ) -> None:
        """Create objects and fields (idempotent: existing ones are left alone)."""
        ...

    def plan_setup(
        self,
        objects: Sequence[TargetObject],
        fields: Sequence[TargetField],
        settings: SetupSettings,
    ) -> list[SetupChange]:
        """What ``setup`` changes besides creating ``objects`` and ``fields`` (which may not
        exist yet: a dry run plans before anything is created): only what differs from the
        CRM as it is, so a second ``setup`` plans nothing. Reads only."""
        ...

    def update(self, object: str, records: Mapping[str, Mapping[str, Any]]) -> list[WriteResult]:
        """Set field values on existing records (record id -> field -> value), batched at the
        API's largest size; one result per record, failures never abort the others."""
        ...

    def upsert(
        self, object: str, external_id: str, records: Mapping[str, Mapping[str, Any]]
    ) -> list[WriteResult]:
        """Create or update records keyed by an external id field (key value -> fields)."""
        ...

    def write_batch_size(self, count: int, configured: int) -> int:
        """How many of ``count`` records to write to hand over per ``update``/``upsert`` call
        (``configured``: the config's batch size): a CRM with a bulk road takes more at once."""
        ...

    def write_calls(self, count: int, configured: int) -> int:
        """The API calls writing ``count`` records at once takes, at the least (what a dry run
        says its writes would cost)."""
        ...

    @property
    def api_calls(self) -> int:
        """API calls this connector has made (for the run report)."""
        ...

    def change_events(self) -> dict[str, Any]:
        """What this run's pulls read from the CRM's change feed, for the run report:
        ``events`` (others' change events read), ``read_by_id`` (records they named that the
        query left out), ``complete`` (False: the pull read every modified record instead)
        and ``reason``; empty when no change feed was read."""
        ...

    def read_along(self, fields: Mapping[str, Sequence[str]]) -> None:
        """From now on, pulls that read records of these objects (object -> the worker's own
        fields on it, e.g. Opportunity, User) carry those fields' values in
        ``Page.own_values``, where the CRM lets a pull ask for them (no extra call)."""
        ...

    def read_back(
        self, object: str, fields: Sequence[str], key_field: str | None = None
    ) -> Iterator[dict[str, dict[str, Any]]]:
        """Pages of what ``fields`` hold on every record of ``object``: key -> field -> value,
        keyed by record id, or by ``key_field`` (an external id) when given. The fewest calls
        the CRM allows (Salesforce: a query page per 2,000 records, or one Bulk query job for
        a big object; HubSpot: list pages)."""
        ...

    def use_budget(self, budget: CallBudget) -> None:
        """Ask ``budget`` before every API call and tell it the usage the CRM reports."""
        ...
