"""The pulled records: cursors, full-pull sweeps, and the pages of reps, accounts, deals
(with their histories), activities, quotas, source metadata and exclusions.

:meth:`PulledRecords.save_page` writes everything of one page and the stream's new cursor in
ONE transaction: a page that fails changes nothing, so a crash resumes from the last saved
cursor without loss or double counting. The KPI frames' compact copy of the deals, activities
and accounts the page changed is brought in line in that same transaction (``frame_copy``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from crm_kpi_worker.sync.bulk import gc_paused
from crm_kpi_worker.sync.model import Account, Quota, QuotaSource, Rep
from crm_kpi_worker.sync.store.database import Database, chunks
from crm_kpi_worker.sync.store.frame_copy import FrameCopy
from crm_kpi_worker.sync.store.page import (
    ACTIVITY_ROW,
    DEAL_ROW,
    Exclusion,
    PreparedPage,
    StoredPage,
)
from crm_kpi_worker.sync.store.schema import (
    RECORD_TABLES,
    accounts,
    activities,
    deals,
    decode_json,
    exclusions,
    pulled_digests,
    quotas,
    reps,
    source_metadata,
    sync_cursors,
)

__all__ = ["PulledRecords"]

log = logging.getLogger(__name__)


class PulledRecords:
    """What the pull stored, and how it stores it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._frames = FrameCopy(db)

    # ---- cursors and full pulls

    def cursor(self, source: str, stream: str) -> str | None:
        with self._db.read() as connection:
            return connection.execute(
                select(sync_cursors.c.cursor).where(
                    sync_cursors.c.source == source, sync_cursors.c.stream == stream
                )
            ).scalar_one_or_none()

    def full_pull_started(self, source: str, stream: str) -> dt.datetime | None:
        """When the unfinished full pull of the stream began (None: none running), so a
        crashed full pull can resume and still sweep at the end."""
        with self._db.read() as connection:
            return connection.execute(
                select(sync_cursors.c.full_pull_started).where(
                    sync_cursors.c.source == source, sync_cursors.c.stream == stream
                )
            ).scalar_one_or_none()

    def begin_full_pull(self, source: str, stream: str) -> dt.datetime:
        """Mark the start of a full pull: the stream's cursor is cleared (a crash before the
        end resumes the full pull) and the returned instant goes to finish_full_pull."""
        started = self._db.clock()
        with self._db.write() as connection:
            statement = self._db.insert(sync_cursors).values(
                source=source,
                stream=stream,
                cursor=None,
                full_pull_started=started,
                updated_at=started,
            )
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["source", "stream"],
                    set_={
                        "cursor": None,
                        "full_pull_started": started,
                        "updated_at": started,
                    },
                )
            )
        return started

    def finish_full_pull(self, source: str, stream: str, started: dt.datetime) -> int:
        """Remove the source's records written by ``stream`` that no page carried since
        ``started`` (purged in the CRM), with their exclusions; returns how many."""
        removed = 0
        with self._db.write() as connection:
            for kind, table in RECORD_TABLES.items():
                unseen = and_(
                    table.c.source == source,
                    table.c.stream == stream,
                    table.c.seen_at < started,
                )
                connection.execute(
                    delete(exclusions).where(
                        exclusions.c.source == source,
                        exclusions.c.record_type == kind,
                        exclusions.c.record_id.in_(select(table.c.id).where(unseen)),
                    )
                )
                self._frames.forget(connection, kind, source, select(table.c.id).where(unseen))
                removed += connection.execute(delete(table).where(unseen)).rowcount
            connection.execute(
                update(sync_cursors)
                .where(
                    sync_cursors.c.source == source,
                    sync_cursors.c.stream == stream,
                    sync_cursors.c.full_pull_started == started,
                )
                .values(full_pull_started=None, updated_at=self._db.clock())
            )
        log.log(
            logging.INFO if removed else logging.DEBUG,
            "full pull of %s/%s: %d records no longer in the CRM",
            source,
            stream,
            removed,
            extra={"event": "swept", "source": source, "stream": stream, "removed": removed},
        )
        return removed

    def metadata(self, source: str, key: str) -> Any:
        """The value saved under ``key`` (``StoredPage.metadata``), None when there is none."""
        statement = select(source_metadata.c.value).where(
            source_metadata.c.source == source, source_metadata.c.key == key
        )
        with self._db.read() as connection:
            text = connection.execute(statement).scalar_one_or_none()
        return None if text is None else decode_json(text)

    def digests(self, source: str, stream: str, ids: Sequence[str]) -> dict[str, str]:
        """record id -> the digest saved with the page that last carried it (of ``ids``)."""
        if not ids:
            return {}
        statement = select(pulled_digests.c.record_id, pulled_digests.c.digest).where(
            pulled_digests.c.source == source,
            pulled_digests.c.stream == stream,
            self._db.ids_match(pulled_digests.c.record_id, ids),
        )
        with self._db.read() as connection:
            return {str(key): str(value) for key, value in connection.execute(statement)}

    def save_page(self, page: StoredPage) -> None:
        """Write all of a page and its cursor in one transaction (see :class:`StoredPage`)."""
        # Validate and encode everything before touching the database (no cyclic garbage
        # collection meanwhile: thousands of acyclic rows, freed by reference counting).
        with gc_paused():
            prepared = PreparedPage(page, self._db.driver)
            with self._db.write() as connection:
                self._save_prepared(connection, prepared)

    def _save_prepared(self, connection: Connection, prepared: PreparedPage) -> None:
        page = prepared.page
        source = page.source
        started = connection.execute(
            select(sync_cursors.c.full_pull_started).where(
                sync_cursors.c.source == source, sync_cursors.c.stream == page.stream
            )
        ).scalar_one_or_none()
        now = self._db.clock()
        # Rows saved during a full pull are never stamped before its start, even if the
        # clock stepped back.
        seen = max(now, started) if started is not None else now
        bookkeeping = {
            "stream": page.stream,
            "is_deleted": False,
            "seen_at": self._db.driver.instant(seen),
        }

        self._upsert_records(connection, reps, prepared.reps, bookkeeping)
        self._upsert_records(connection, accounts, prepared.accounts, bookkeeping)
        stamp = (page.stream, self._db.driver.instant(seen))
        self._db.upsert_tuples(
            connection,
            deals,
            (*DEAL_ROW, "stream", "seen_at"),
            [(*row, *stamp) for row in prepared.deals],
            updates=_keep_stored_history,
        )
        self._db.upsert_tuples(
            connection,
            activities,
            (*ACTIVITY_ROW, "stream", "is_deleted", "seen_at"),
            [(*row, page.stream, False, stamp[1]) for row in prepared.activities],
        )
        self._replace_detached_histories(connection, prepared)
        for kind, ids in prepared.deleted.items():
            self._update_ids(connection, kind, source, ids, is_deleted=True, seen_at=seen)
        for kind, ids in prepared.seen_ids.items():
            self._update_ids(connection, kind, source, ids, seen_at=seen)
        self._frames.refresh(
            connection,
            source,
            deal_ids=[
                *(row[1] for row in prepared.deals),
                *(deal_id for texts in prepared.detached_histories.values() for deal_id in texts),
                *prepared.deleted.get("deal", ()),
            ],
            activity_ids=[
                *(row[1] for row in prepared.activities),
                *prepared.deleted.get("activity", ()),
            ],
            account_ids=[
                *(row["id"] for row in prepared.accounts),
                *prepared.deleted.get("account", ()),
            ],
        )
        if prepared.quotas is not None:
            connection.execute(delete(quotas).where(quotas.c.source == source))
            if prepared.quotas:
                connection.execute(insert(quotas), prepared.quotas)
        if prepared.metadata:
            statement = self._db.insert(source_metadata)
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["source", "key"],
                    set_={"value": statement.excluded.value, "updated_at": now},
                ),
                [
                    {"source": source, "key": key, "value": value, "updated_at": now}
                    for key, value in prepared.metadata.items()
                ],
            )
        self._replace_exclusions(connection, prepared, now)
        if page.digests:
            self._db.upsert_many(
                connection,
                pulled_digests,
                [
                    {"source": source, "stream": page.stream, "record_id": key, "digest": value}
                    for key, value in page.digests.items()
                ],
            )
        if page.cursor is not None:
            statement = self._db.insert(sync_cursors).values(
                source=source, stream=page.stream, cursor=page.cursor, updated_at=now
            )
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["source", "stream"],
                    set_={"cursor": page.cursor, "updated_at": now},
                )
            )

    def _upsert_records(
        self,
        connection: Connection,
        table: Table,
        rows: Sequence[dict[str, Any]],
        bookkeeping: Mapping[str, Any],
    ) -> None:
        self._db.upsert_many(connection, table, [{**bookkeeping, **row} for row in rows])

    def _replace_detached_histories(self, connection: Connection, prepared: PreparedPage) -> None:
        """Histories of deals this page does not carry: set on the stored deal rows."""
        for name, values in prepared.detached_histories.items():
            if values:
                connection.execute(
                    update(deals)
                    .where(deals.c.source == bindparam("b_source"), deals.c.id == bindparam("b_id"))
                    .values({name: bindparam("b_value")}),
                    [
                        {"b_source": prepared.page.source, "b_id": deal_id, "b_value": text}
                        for deal_id, text in values.items()
                    ],
                )

    def _update_ids(
        self, connection: Connection, kind: str, source: str, ids: Sequence[str], **values: Any
    ) -> None:
        table = RECORD_TABLES[kind]
        connection.execute(
            update(table)
            .where(table.c.source == source, self._db.ids_match(table.c.id, ids))
            .values(**values)
        )

    def _replace_exclusions(
        self, connection: Connection, prepared: PreparedPage, now: dt.datetime
    ) -> None:
        source = prepared.page.source
        for kind, ids in prepared.carried.items():
            connection.execute(
                delete(exclusions).where(
                    exclusions.c.source == source,
                    exclusions.c.record_type == kind,
                    self._db.ids_match(exclusions.c.record_id, ids),
                )
            )
        if prepared.quotas is not None:
            connection.execute(
                delete(exclusions).where(
                    exclusions.c.source == source, exclusions.c.record_type == "quota"
                )
            )
        if prepared.exclusions:
            connection.execute(
                insert(exclusions),
                [{**row, "source": source, "recorded_at": now} for row in prepared.exclusions],
            )

    # ---- reads
    # ---- reads

    def reps(self, source: str) -> list[Rep]:
        """Live (not deleted) reps of the source, by id."""
        names = [name for name in Rep.model_fields if name in reps.c]
        return self._models(Rep, reps, names, source)

    def accounts(self, source: str) -> list[Account]:
        names = [name for name in Account.model_fields if name in accounts.c]
        return self._models(Account, accounts, names, source)

    def _models(self, model: Any, table: Table, names: list[str], source: str) -> list[Any]:
        statement = (
            select(*(table.c[name] for name in names))
            .where(table.c.source == source, ~table.c.is_deleted)
            .order_by(table.c.id)
        )
        with self._db.read() as connection:
            rows = connection.execute(statement).all()
        return [model.model_validate(dict(zip(names, row, strict=True))) for row in rows]

    def quotas(self, source: str) -> list[Quota]:
        statement = (
            select(quotas)
            .where(quotas.c.source == source)
            .order_by(quotas.c.rep_id, quotas.c.period_start, quotas.c.period_end)
        )
        with self._db.read() as connection:
            rows = connection.execute(statement).mappings().all()
        # Rows the store validated when it saved them (thousands at a million deals).
        return [
            Quota.model_construct(
                rep_id=row["rep_id"],
                period_start=row["period_start"],
                period_end=row["period_end"],
                amount=row["amount"],
                source=QuotaSource(row["quota_source"]),
            )
            for row in rows
        ]

    def deal_details(self, source: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Name, stage, type, original amount and currency, forecast category and probability
        of the live deals ``ids`` (what ``kpis explain`` shows beside the frames' columns)."""
        names = ("id", "name", "stage", "deal_type", "amount", "currency", "forecast_category")
        found: dict[str, dict[str, Any]] = {}
        with self._db.read() as connection:
            for chunk in chunks(ids, 500):
                statement = select(*(deals.c[name] for name in names)).where(
                    deals.c.source == source, ~deals.c.is_deleted, deals.c.id.in_(chunk)
                )
                for row in connection.execute(statement).mappings():
                    found[row["id"]] = dict(row)
        return found

    def exclusions(self, source: str) -> list[Exclusion]:
        statement = (
            select(
                exclusions.c.record_type,
                exclusions.c.record_id,
                exclusions.c.reason,
                exclusions.c.detail,
            )
            .where(exclusions.c.source == source)
            .order_by(exclusions.c.record_type, exclusions.c.record_id, exclusions.c.reason)
        )
        with self._db.read() as connection:
            return [
                Exclusion(row.record_type, row.record_id, row.reason, row.detail)
                for row in connection.execute(statement)
            ]


def _keep_stored_history(table: Table, statement: Any) -> dict[str, Any]:
    """The deals upsert's SET for histories: NULL = "this page carries no history for the
    deal", so the stored one stays."""
    return {
        name: func.coalesce(statement.excluded[name], table.c[name])
        for name in ("stage_history", "close_date_history", "field_history")
    }
