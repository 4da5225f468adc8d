"""The deals pull with change events, on fakes of its parts: which reads it makes and which
cursors it stores; and the feed's handling of events it cannot take (the end-to-end behaviour
is in test_change_events.py, on the sandbox)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import pytest

from crm_kpi_worker.connectors.base import Page
from crm_kpi_worker.connectors.salesforce.change_events import ChangeBatch
from crm_kpi_worker.connectors.salesforce.deals_feed import (
    IDS_PER_QUERY,
    DealsByEvents,
    ReplayCursor,
)

START = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
FULL_STARTED = dt.datetime(2026, 12, 1, 9, 55, tzinfo=dt.UTC)


def at(clock: str) -> int:
    """Epoch ms of a time on 2026-12-01 (UTC)."""
    return round(dt.datetime.fromisoformat(f"2026-12-01T{clock}+00:00").timestamp() * 1000)


ME = "005000000000001AAA"


class FakeFeed:
    def __init__(self, batch: ChangeBatch) -> None:
        self.batch = batch
        self.reads: list[tuple[bytes | None, dt.datetime | None]] = []

    def read(self, replay: bytes | None, not_before: dt.datetime | None) -> ChangeBatch:
        self.reads.append((replay, not_before))
        return self.batch


class Parts:
    """The pull's parts, recording what was asked."""

    def __init__(self, feed: FakeFeed | str, soql_ids: list[list[str]]) -> None:
        self.feed = feed
        self.soql_ids = soql_ids
        self.pulls: list[tuple[str | None, str | None]] = []
        self.by_ids: list[list[str]] = []

    def pull(self, since: str | None, skip: str | None) -> Iterator[Page]:
        self.pulls.append((since, skip))
        for number, ids in enumerate(self.soql_ids, start=1):
            stamp = f"2026-12-01T12:0{number}:00.000+0000"
            yield Page("deals", [{"Id": i, "SystemModstamp": stamp} for i in ids], stamp)

    def by_id(self, ids: Sequence[str]) -> Iterator[Page]:
        self.by_ids.append(list(ids))
        yield Page("deals", [{"Id": i} for i in ids], None, total=len(ids))

    def deals(self) -> DealsByEvents:
        return DealsByEvents(
            source="sf",
            feed=lambda: self.feed,  # type: ignore[arg-type,return-value]
            pull=self.pull,
            by_id=self.by_id,
            window_start=lambda since: None if since is None else START,
            me=lambda: ME,
            started=lambda: FULL_STARTED,
        )


def cursors(pages: list[Page]) -> list[ReplayCursor]:
    return [ReplayCursor.decode(page.cursor) for page in pages]


def test_an_incremental_pull_skips_the_workers_writes_and_reads_by_id_what_events_name() -> None:
    # "a" was read by SOQL after its change (12:01 > 12:00:30): not read again; "b" changed
    # again after SOQL read it (12:01:30): read by Id, with "x" and "y", which SOQL left out.
    changed = {"a": at("12:00:30"), "b": at("12:01:30"), "x": at("11:59"), "y": at("12:00")}
    feed = FakeFeed(ChangeBatch(complete=True, changed=changed, replay=b"\x07", events=4))
    parts = Parts(feed, [["a", "b"]])
    stored = ReplayCursor("2026-12-01T11:00:00.000+0000", b"\x05").encode()
    pages = list(parts.deals()(stored))
    assert feed.reads == [(b"\x05", None)]  # every event after the stored position counts
    assert parts.pulls == [("2026-12-01T11:00:00.000+0000", ME)]  # the worker's writes left out
    assert parts.by_ids == [["b", "x", "y"]]
    assert [[r["Id"] for r in p.records] for p in pages] == [["a", "b"], ["b", "x", "y"], []]
    # Cursor and replay move only with the last page, once everything else is saved.
    assert [p.cursor for p in pages[:2]] == [stored, stored]
    assert cursors(pages)[-1] == ReplayCursor("2026-12-01T12:01:00.000+0000", b"\x07")
    assert pages[1].total is None


def test_ids_are_read_three_hundred_a_query() -> None:
    ids = {f"id{n:04d}": at("11:00") for n in range(IDS_PER_QUERY * 2 + 5)}
    feed = FakeFeed(ChangeBatch(complete=True, changed=ids, replay=b"\x09", events=len(ids)))
    parts = Parts(feed, [[]])
    list(parts.deals()(ReplayCursor("2026-12-01T11:00:00.000+0000", None).encode()))
    assert [len(chunk) for chunk in parts.by_ids] == [IDS_PER_QUERY, IDS_PER_QUERY, 5]
    assert sorted(i for chunk in parts.by_ids for i in chunk) == sorted(ids)


def test_events_not_read_completely_mean_the_plain_pull_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = FakeFeed(ChangeBatch(complete=False, replay=b"\x02", reason="Pub/Sub API UNAVAILABLE"))
    parts = Parts(feed, [["a"], ["b"]])
    pages = list(parts.deals()(ReplayCursor("2026-12-01T11:00:00.000+0000", b"\x01").encode()))
    # The SOQL read ran beside the feed's; what it left out is read after all: every record.
    assert parts.pulls == [
        ("2026-12-01T11:00:00.000+0000", ME),
        ("2026-12-01T11:00:00.000+0000", None),
    ]
    assert parts.by_ids == []
    assert [c.replay for c in cursors(pages)] == [b"\x01"] * 4 + [b"\x02"]
    # The plain pull moves the pull's cursor as usual (it reads every modified deal).
    assert [c.inner for c in cursors(pages)[2:4]] == [
        "2026-12-01T12:01:00.000+0000",
        "2026-12-01T12:02:00.000+0000",
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "Pub/Sub API UNAVAILABLE" in warnings[0]


def test_a_feed_that_cannot_be_made_is_said_and_the_pull_reads_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parts = Parts("the worker's user could not be told: 403", [["a"]])
    pages = list(parts.deals()(ReplayCursor("2026-12-01T11:00:00.000+0000", b"\x01").encode()))
    assert parts.pulls == [("2026-12-01T11:00:00.000+0000", None)]
    assert cursors(pages)[-1].replay == b"\x01"  # kept for the next run
    assert "could not be told" in caplog.text


def test_a_full_pull_reads_no_events_and_notes_when_it_started() -> None:
    feed = FakeFeed(ChangeBatch(complete=True))
    parts = Parts(feed, [["a"], ["b"]])
    pages = list(parts.deals()(None))
    assert feed.reads == [] and parts.pulls == [(None, None)]
    found = cursors(pages)
    assert [c.full for c in found] == [True, True, False]  # stopped midway: resumed as full
    assert found[-1].inner == "2026-12-01T12:02:00.000+0000" and found[-1].replay is None
    assert found[-1].cutoff == FULL_STARTED  # the next run's events count from then


def test_a_full_pull_stopped_midway_is_resumed_without_the_filter() -> None:
    feed = FakeFeed(ChangeBatch(complete=True, changed={"z": at("11:00")}))
    parts = Parts(feed, [["c"]])
    midway = ReplayCursor(
        "2026-12-01T11:30:00.000+0000", None, full=True, events_from="2026-12-01T09:00:00+00:00"
    )
    pages = list(parts.deals()(midway.encode()))
    assert feed.reads == [] and parts.by_ids == []
    assert parts.pulls == [("2026-12-01T11:30:00.000+0000", None)]  # every record: the sweep
    assert cursors(pages)[-1].events_from == "2026-12-01T09:00:00+00:00"  # the first start


def test_after_a_full_pull_the_events_count_from_its_start() -> None:
    feed = FakeFeed(ChangeBatch(complete=True, replay=b"\x03", events=1))
    parts = Parts(feed, [[]])
    after_full = ReplayCursor(
        "2026-12-01T11:00:00.000+0000", None, events_from=FULL_STARTED.isoformat()
    )
    pages = list(parts.deals()(after_full.encode()))
    assert feed.reads == [(None, FULL_STARTED)]
    assert cursors(pages)[-1] == ReplayCursor("2026-12-01T12:01:00.000+0000", b"\x03")


def test_a_cursor_stored_before_change_events_were_on_is_read_as_the_pulls_own() -> None:
    assert ReplayCursor.decode("2026-12-01T11:00:00.000+0000") == ReplayCursor(
        "2026-12-01T11:00:00.000+0000", None
    )
    with pytest.raises(ValueError, match="unreadable change-event position"):
        ReplayCursor.decode("events:not-base64!")


def test_the_feed_takes_others_record_changes_and_steps_past_an_overflow() -> None:
    from types import SimpleNamespace

    from crm_kpi_worker.connectors.salesforce.change_events import ChangeFeed, FeedSession

    session = FeedSession("00D!secret-token", "https://127.0.0.1:1", "00D000000000001")
    feed = ChangeFeed("127.0.0.1:1", "/data/X__chn", "Opportunity", session)
    headers = iter(
        [
            {"entityName": "Opportunity", "changeType": "UPDATE", "recordIds": ["006A"]},
            {"entityName": "Account", "changeType": "UPDATE", "recordIds": ["001B"]},
            {"entityName": "Opportunity", "changeType": "GAP_OVERFLOW", "recordIds": []},
        ]
    )
    feed._decode = lambda stub, schema_id, payload: {"ChangeEventHeader": next(headers)}  # type: ignore[method-assign]
    batch = ChangeBatch(complete=True)
    for replay in (b"\x01", b"\x02", b"\x03"):
        event = SimpleNamespace(replay_id=replay, event=SimpleNamespace(schema_id="s", payload=b""))
        feed._take(None, event, None, batch)
    assert list(batch.changed) == ["006A"]  # another entity's event names nothing to read
    assert batch.complete is False and "GAP_OVERFLOW" in (batch.reason or "")
    assert batch.replay == b"\x03"  # past the overflow: this run's full read covers it
    assert batch.events == 3
    assert "secret-token" not in repr(session)  # the token never appears


def test_an_event_that_cannot_be_decoded_is_said_and_never_raised() -> None:
    from types import SimpleNamespace

    from crm_kpi_worker.connectors.salesforce.change_events import ChangeFeed, FeedSession, _Refused

    feed = ChangeFeed(
        "127.0.0.1:1", "/data/X__chn", "Opportunity", FeedSession("t", "https://h", "o")
    )
    schema = '{"type": "record", "name": "E", "fields": [{"name": "Name", "type": "string"}]}'
    stub = SimpleNamespace(GetSchema=lambda *a, **k: SimpleNamespace(schema_json=schema))
    with pytest.raises(_Refused, match=r"an event of schema s1 could not be decoded \(EOFError"):
        feed._decode(stub, "s1", b"")  # a payload cut short
    broken = SimpleNamespace(GetSchema=lambda *a, **k: SimpleNamespace(schema_json="{"))
    with pytest.raises(_Refused, match="the schema s2 could not be decoded"):
        feed._decode(broken, "s2", b"")


def test_the_feed_steps_past_an_event_it_cannot_decode() -> None:
    """Read end to end against the sandbox's Pub/Sub API: an event whose payload is not what
    its schema says makes the read incomplete (the run reads every modified deal), and the
    position moves past it, so the next run does not stop on it again."""
    from crm_kpi_worker.connectors.salesforce.change_events import ChangeFeed, FeedSession
    from crm_kpi_worker.sandbox.salesforce.catalog import ORG_ID
    from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox

    with SalesforceSandbox.start(deals=None, pubsub_keepalive_seconds=0.2) as sandbox:
        sf = sandbox.client()
        sf.toolingexecute(
            "sobjects/PlatformEventChannelMember",
            method="POST",
            data={
                "FullName": "ChangeEvents_OpportunityChangeEvent",
                "Metadata": {
                    "eventChannel": "ChangeEvents",
                    "selectedEntity": "OpportunityChangeEvent",
                },
            },
        )
        deal = sf.query("SELECT Id FROM Opportunity LIMIT 1")["records"][0]["Id"]
        sf.Opportunity.update(deal, {"Amount": 1.0})
        session = FeedSession(sf.session_id, sandbox.url, ORG_ID)
        feed = ChangeFeed(
            sandbox.pubsub_endpoint,
            "/data/OpportunityChangeEvent",
            "Opportunity",
            session,
            ca_bundle=str(sandbox.ca_path),
            idle_seconds=0.5,
        )
        good = feed.read(None, None)
        assert good.complete and list(good.changed) == [deal] and good.replay
        sf.Opportunity.update(deal, {"Amount": 2.0})
        # The schema the client holds no longer fits the payloads: every event is unreadable.
        feed._schemas = {
            key: {
                "type": "record",
                "name": "X",
                "fields": [
                    {"name": "Huge", "type": {"type": "fixed", "name": "F", "size": 1 << 20}}
                ],
            }
            for key in feed._schemas
        }
        bad = feed.read(good.replay, None)
        assert not bad.complete and "could not be decoded" in (bad.reason or "")
        assert bad.replay is not None and bad.replay > good.replay  # stepped past it
        assert feed.read(bad.replay, None).complete  # the next read is not stopped by it
