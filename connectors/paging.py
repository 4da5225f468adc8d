"""Paginators: how the next page of an answer is asked for, one object per scheme.

- :class:`NextUrlPaginator`: Salesforce queries, ``done: false`` and ``nextRecordsUrl`` (the
  top-level result and any child result a record left unfinished).
- :class:`AfterPaginator`: HubSpot's ``paging.next.after`` (lists and searches); with a
  ``cap``, it stops before the page a search would refuse (HubSpot pages a search through
  10,000 results at most).
- :func:`windowed_search`: every record a HubSpot search matches, past that cap.

A paginator refuses a token it has already followed (as the Singer SDK's do): a CRM answering
the same token twice would otherwise keep a worker looping for ever. :func:`follow` drives one:
it sends the first request, hands out each answer, and asks the paginator for the next token
only when the consumer comes back for more (so a page is persisted before the next is asked
for).

:func:`windowed_search` sorts by the modification stamp and, when a query reaches the cap,
starts a new query at the last stamp it read (``GTE`` that stamp, skipping the ids already read
at it: :class:`~crm_kpi_worker.connectors.incremental.KeysAtStamp`). When 10,000 records or
more share one stamp (a bulk import or a workflow touching a whole segment in one millisecond),
that stamp is walked by ``hs_object_id`` instead (``EQ`` stamp, ``GT`` last id, sorted by id),
then the walk goes on after it. No record is lost and none is read twice, however many change
at once. Filters are sent as JSON in the POST body (never in a URL), values as text.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from crm_kpi_worker.connectors.errors import RequestRejected
from crm_kpi_worker.connectors.incremental import KeysAtStamp
from crm_kpi_worker.connectors.stamps import parse_stamp, to_ms

__all__ = [
    "SEARCH_CAP",
    "AfterPaginator",
    "NextUrlPaginator",
    "Paginator",
    "SearchPages",
    "answered_properties",
    "follow",
    "stamp_ms",
    "windowed_search",
]

Token = TypeVar("Token")
Answer = TypeVar("Answer")


class Paginator(Generic[Token]):
    """Reads the next page's token from an answer; refuses one it has followed before."""

    #: Names the CRM and its token in the loop error.
    crm = "the CRM"
    answer_field = "page token"

    def __init__(self) -> None:
        self._followed: set[Token] = set()

    def next_token(self, answer: Any) -> Token | None:
        """The token of the page after ``answer``; None: it was the last."""
        raise NotImplementedError

    def advance(self, answer: Any) -> Token | None:
        """:meth:`next_token`, refused if it was followed before."""
        token = self.next_token(answer)
        if token is None:
            return None
        if token in self._followed:
            raise RequestRejected(
                f"{self.crm} returned the same {self.answer_field} twice; stopping instead of"
                " looping",
                code="UNEXPECTED_RESPONSE",
            )
        self._followed.add(token)
        return token


def follow(send: Callable[[Token | None], Answer], paginator: Paginator[Token]) -> Iterator[Answer]:
    """``send(None)``, then ``send(token)`` for each next page, answers in order."""
    answer = send(None)
    while True:
        yield answer
        token = paginator.advance(answer)
        if token is None:
            return
        answer = send(token)


class NextUrlPaginator(Paginator[str]):
    """Salesforce query results: more follow while ``done`` is false, at ``nextRecordsUrl``."""

    crm = "Salesforce"
    answer_field = "nextRecordsUrl"

    def next_token(self, answer: Any) -> str | None:
        if answer.get("done", True) is not False:
            return None
        url = answer.get("nextRecordsUrl")
        if not isinstance(url, str) or not url.startswith("/"):
            raise RequestRejected(
                "Salesforce said more records follow (done: false) but gave no nextRecordsUrl",
                code="UNEXPECTED_RESPONSE",
            )
        return url


class AfterPaginator(Paginator[str]):
    """HubSpot's ``paging.next.after``. With ``cap``, a search's offset token: ``capped`` is
    set, and None returned, when the next page of ``page_size`` would pass the cap."""

    crm = "HubSpot"
    answer_field = "paging.next.after"

    def __init__(self, *, cap: int | None = None, page_size: int = 0) -> None:
        super().__init__()
        self.cap = cap
        self.page_size = page_size
        self.capped = False

    def next_token(self, answer: Any) -> str | None:
        after = ((answer.get("paging") or {}).get("next") or {}).get("after")
        if not after:
            return None
        if self.cap is not None and int(after) + self.page_size > self.cap:
            self.capped = True
            return None
        return str(after)


# ---------------------------------------------------------------------------------------------
# HubSpot search past the 10,000-result cap

#: Results one HubSpot search query can page through.
SEARCH_CAP = 10_000
ID_PROPERTY = "hs_object_id"

Search = Callable[[dict[str, Any]], dict[str, Any]]


def answered_properties(properties: Sequence[str], stamp_property: str) -> list[str]:
    """The properties a HubSpot pull asks for: ``properties``, the stamp and the id (once)."""
    return list(dict.fromkeys([*properties, stamp_property, ID_PROPERTY]))


def stamp_ms(record: dict[str, Any], stamp_property: str) -> int:
    """A search result's modification stamp in epoch ms (its ``updatedAt`` if the property is
    missing)."""
    props = record.get("properties") or {}
    value: Any = props.get(stamp_property) or record.get("updatedAt")
    return to_ms(parse_stamp(value, crm="HubSpot"))


def _filter(name: str, operator: str, value: Any) -> dict[str, Any]:
    return {"propertyName": name, "operator": operator, "value": str(value)}


def windowed_search(
    search: Search,
    *,
    properties: Sequence[str],
    filters: Sequence[dict[str, Any]] = (),
    stamp_property: str = "hs_lastmodifieddate",
    since_ms: int | None = None,
    page_size: int = 200,
) -> SearchPages:
    """Pages (lists of raw records) of every record matching ``filters`` whose stamp is at
    or after ``since_ms``, in stamp order; see the module doc. ``search(body)`` sends one
    search request and returns its JSON answer. The iterator's ``total`` is the first
    answer's ``total`` (every matching record: the later windows are parts of the first)."""
    walk = _WindowedSearch(search, properties, filters, stamp_property, page_size)
    return SearchPages(walk, walk.pages(since_ms))


class SearchPages(Iterator[list[dict[str, Any]]]):
    """The pages of :func:`windowed_search`, and how many records HubSpot said match."""

    def __init__(self, walk: _WindowedSearch, pages: Iterator[list[dict[str, Any]]]) -> None:
        self._walk = walk
        self._pages = pages

    @property
    def total(self) -> int | None:
        return self._walk.total

    def __next__(self) -> list[dict[str, Any]]:
        return next(self._pages)


class _WindowedSearch:
    def __init__(
        self,
        search: Search,
        properties: Sequence[str],
        filters: Sequence[dict[str, Any]],
        stamp_property: str,
        page_size: int,
    ) -> None:
        self.search = search
        self.wanted = answered_properties(properties, stamp_property)
        self.filters = list(filters)
        self.stamp_property = stamp_property
        self.page_size = page_size
        self.total: int | None = None  # the first answer's count of matching records

    def _body(self, window: list[dict[str, Any]], sort_by: str) -> dict[str, Any]:
        return {
            "filterGroups": [{"filters": window}] if window else [],
            "sorts": [{"propertyName": sort_by, "direction": "ASCENDING"}],
            "properties": self.wanted,
            "limit": self.page_size,
        }

    def _answers(self, body: dict[str, Any], paginator: AfterPaginator) -> Iterator[dict[str, Any]]:
        def send(after: str | None) -> dict[str, Any]:
            if after is not None:
                body["after"] = after
            return self.search(body)

        return follow(send, paginator)

    def pages(self, since_ms: int | None) -> Iterator[list[dict[str, Any]]]:
        low = since_ms
        read = KeysAtStamp(low)  # ids already read at the latest stamp
        stamp_property = self.stamp_property
        while True:
            window = [*self.filters]
            if low is not None:
                window.append(_filter(stamp_property, "GTE", low))
            paginator = AfterPaginator(cap=SEARCH_CAP, page_size=self.page_size)
            first_stamp: int | None = None
            for answer in self._answers(self._body(window, stamp_property), paginator):
                if self.total is None and isinstance(answer.get("total"), int):
                    self.total = answer["total"]
                page: list[dict[str, Any]] = []
                for record in answer.get("results") or ():
                    stamp = stamp_ms(record, stamp_property)
                    if first_stamp is None:
                        first_stamp = stamp
                    if not read.seen(stamp, str(record.get("id"))):
                        page.append(record)
                if page:
                    yield page
            if not paginator.capped:
                return
            last_stamp = read.stamp
            assert last_stamp is not None
            if first_stamp == last_stamp:
                # The whole window is one stamp: walk that stamp by id, then go past it.
                yield from self._walk_one_stamp(last_stamp, read.keys)
                low, read = last_stamp + 1, KeysAtStamp(last_stamp + 1)
            else:
                low = last_stamp

    def _walk_one_stamp(self, stamp: int, read: set[Hashable]) -> Iterator[list[dict[str, Any]]]:
        last_id: str | None = None
        while True:
            window = [*self.filters, _filter(self.stamp_property, "EQ", stamp)]
            if last_id is not None:
                window.append(_filter(ID_PROPERTY, "GT", last_id))
            paginator = AfterPaginator(cap=SEARCH_CAP, page_size=self.page_size)
            for answer in self._answers(self._body(window, ID_PROPERTY), paginator):
                results = answer.get("results") or []
                # The walk never answers an id twice (GT last id): only the ids read before it
                # are skipped, and the set does not grow with the stamp's records.
                page = [r for r in results if str(r.get("id")) not in read]
                if results:
                    last_id = str(results[-1].get("id"))
                if page:
                    yield page
            if not paginator.capped:
                return
