"""Deal and activity columns as numpy arrays: the types the KPI frames read, and the bulk
parsing of the pulled rows' text that the compact copy is built from.

The frames read :class:`DealArrays` from the store's compact copy (``frame_copy``), which is
built from the deals and activities tables: :func:`parse_deals` / :func:`parse_activities` turn
a chunk of their rows, read as ONE text value per column (the chunk's values joined with
:data:`RS`: SQLite's ``group_concat``; on PostgreSQL rows joined in Python; NULL text as
:data:`NULL`), into arrays without a Python object per value where they can: instants and
dates are fixed-width ISO text parsed by numpy (``datetime64``), histories are split on the
bytes with numpy, repeated texts (owners, stages...) come back dictionary-encoded
(:class:`Coded`). Amounts go through numpy's float parser, the same double as
``float(Decimal(text))``.

Anything that does not have the expected shape (a separator inside a value, an instant not
in the store's own format) is parsed value by value instead, with the same results.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crm_kpi_worker.sync.store.schema import split_history

__all__ = [
    "ACTIVITY_TEXT_COLUMNS",
    "DEAL_TEXT_COLUMNS",
    "NULL",
    "RS",
    "Coded",
    "DealArrays",
    "DealColumns",
    "IrregularChunkError",
    "StoredActivities",
    "StoredDeals",
    "coded",
    "first_seen_codes",
    "id_keys",
    "offsets_of",
    "parse_activities",
    "parse_activity_rows",
    "parse_deal_rows",
    "parse_deals",
]

#: Between the values of one column of a chunk.
RS = "\x1e"
#: A NULL text value (owner and account ids).
NULL = "\x1f"
_TAB = 9
_RS_BYTE = 0x1E
_INSTANT = 32  # len(iso_instant(...)): 2024-01-02T03:04:05.000000+00:00
_INSTANT_SUFFIX = np.frombuffer(b"+00:00", dtype=np.uint8)
_INSTANT_MARKS = (4, 7, 10, 13, 16, 19)
_INSTANT_MARK_BYTES = np.frombuffer(b"--T::.", dtype=np.uint8)
_DATE = 10  # 2024-01-02


class IrregularChunkError(ValueError):
    """A chunk's joined text cannot be split back into its values (a value holds a
    separator): the caller reads that chunk row by row."""


@dataclass(frozen=True)
class Coded:
    """A dictionary-encoded text column: row ``i`` holds ``values[codes[i]]`` (None = NULL).

    ``values`` are distinct."""

    codes: np.ndarray  # int32
    values: list[str | None]

    def decode(self) -> list[str | None]:
        return [self.values[code] for code in self.codes.tolist()]


@dataclass(frozen=True)
class DealColumns:
    """One chunk of live deals: the columns both the pulled rows and the compact copy give.

    Histories are compressed sparse rows: deal ``i``'s entries are ``offsets[i]`` to
    ``offsets[i + 1] - 1``, oldest first.
    """

    id: list[str]
    owner_id: Coded
    stage: Coded
    deal_type: Coded  # the enum values
    forecast_category: Coded
    created_at: np.ndarray  # datetime64[us], UTC
    close_date: np.ndarray  # datetime64[D]; NaT = none
    is_won: np.ndarray  # bool
    is_closed: np.ndarray  # bool
    arr: np.ndarray  # float64; NaN = none
    probability: np.ndarray  # float64; NaN = none
    stage_history_offsets: np.ndarray  # int64, len(id) + 1
    stage_history_stage: Coded
    stage_history_entered_at: np.ndarray  # datetime64[us], UTC
    close_date_history_offsets: np.ndarray  # int64, len(id) + 1
    close_date_history_old: np.ndarray  # datetime64[D]; NaT = none
    close_date_history_new: np.ndarray  # datetime64[D]; NaT = none

    def __len__(self) -> int:
        return len(self.id)


@dataclass(frozen=True)
class StoredDeals(DealColumns):
    """A chunk of the deals table's live rows, parsed (what the compact copy is built from)."""

    account_id: Coded  # None = no account


@dataclass(frozen=True)
class DealArrays(DealColumns):
    """A chunk of live deals as the KPI frames read them (:meth:`Store.iter_deal_arrays`)."""

    account: np.ndarray  # int32: one number per account id, the same within a read; -1 = none
    account_churn: np.ndarray  # datetime64[D]: the (live) account's churn date; NaT = none


@dataclass(frozen=True)
class StoredActivities:
    """A chunk of the activities table's live rows, parsed."""

    id: list[str]
    owner_id: Coded  # None = no owner
    kind: Coded
    start: np.ndarray  # datetime64[us], UTC

    def __len__(self) -> int:
        return len(self.id)


#: The texts parse_deals takes, in this order (the store builds one SQL expression per name).
DEAL_TEXT_COLUMNS: tuple[str, ...] = (
    "id",
    "owner_id",
    "account_id",
    "stage",
    "deal_type",
    "forecast_category",
    "created_at",
    "close_date",
    "flags",  # is_won + 2 * is_closed
    "arr",
    "probability",
    "stage_history",
    "close_date_history",
)

#: The texts parse_activities takes, in this order.
ACTIVITY_TEXT_COLUMNS: tuple[str, ...] = ("id", "owner_id", "kind", "start")


def parse_deals(n: int, texts: list[str]) -> StoredDeals:
    """A chunk of ``n`` deals from the joined texts of :data:`DEAL_TEXT_COLUMNS`."""
    column = dict(zip(DEAL_TEXT_COLUMNS, texts, strict=True))

    def fields(name: str) -> _Fields:
        return _Fields.split(column[name], n, _ONLY_RS)

    def floats(name: str) -> np.ndarray:
        return _floats(column[name], n, name)

    ids = _split(column["id"], n, "id")
    flags = fields("flags")
    if not (flags.lengths == 1).all():
        raise IrregularChunkError("flags: not one digit each")
    digits = flags.windows(1)[flags.starts].view(np.uint8) - ord("0")
    stage_offsets, stage_names, entered_at = stage_history(column["stage_history"], n)
    close_offsets, old, new = close_date_history(column["close_date_history"], n)
    return StoredDeals(
        id=ids,
        owner_id=fields("owner_id").coded(nullable=True),
        account_id=fields("account_id").coded(nullable=True),
        stage=fields("stage").coded(),
        deal_type=fields("deal_type").coded(),
        forecast_category=fields("forecast_category").coded(),
        created_at=fields("created_at").instants(),
        close_date=fields("close_date").dates(),
        is_won=(digits & 1).astype(bool),
        is_closed=(digits & 2).astype(bool),
        arr=floats("arr"),
        probability=floats("probability"),
        stage_history_offsets=stage_offsets,
        stage_history_stage=stage_names,
        stage_history_entered_at=entered_at,
        close_date_history_offsets=close_offsets,
        close_date_history_old=old,
        close_date_history_new=new,
    )


def parse_deal_rows(rows: Sequence[Sequence[str]]) -> StoredDeals:
    """The same from rows of :data:`DEAL_TEXT_COLUMNS` texts, value by value (any text)."""
    n = len(rows)
    columns = _columns(DEAL_TEXT_COLUMNS, rows)
    flags = np.array(columns["flags"], dtype=np.int8).reshape(-1)
    stage_counts, stage_fields = split_history(columns["stage_history"], 2)
    close_counts, close_fields = split_history(columns["close_date_history"], 3)
    return StoredDeals(
        id=columns["id"],
        owner_id=coded(columns["owner_id"], nullable=True),
        account_id=coded(columns["account_id"], nullable=True),
        stage=coded(columns["stage"]),
        deal_type=coded(columns["deal_type"]),
        forecast_category=coded(columns["forecast_category"]),
        created_at=_instants_one_by_one(columns["created_at"]),
        close_date=dates(columns["close_date"]),
        is_won=(flags & 1).astype(bool),
        is_closed=(flags & 2).astype(bool),
        arr=np.fromiter(map(float, columns["arr"]), dtype=np.float64, count=n),
        probability=np.fromiter(map(float, columns["probability"]), dtype=np.float64, count=n),
        stage_history_offsets=offsets_of(np.array(stage_counts, dtype=np.int64)),
        stage_history_stage=coded(stage_fields[0::2]),
        stage_history_entered_at=_instants_one_by_one(stage_fields[1::2]),
        close_date_history_offsets=offsets_of(np.array(close_counts, dtype=np.int64)),
        close_date_history_old=dates(close_fields[0::3]),
        close_date_history_new=dates(close_fields[1::3]),
    )


def parse_activities(n: int, texts: list[str]) -> StoredActivities:
    """A chunk of ``n`` activities from the joined texts of :data:`ACTIVITY_TEXT_COLUMNS`."""
    column = dict(zip(ACTIVITY_TEXT_COLUMNS, texts, strict=True))
    owner, kind, start = (
        _Fields.split(column[name], n, _ONLY_RS) for name in ("owner_id", "kind", "start")
    )
    return StoredActivities(
        id=_split(column["id"], n, "id"),
        owner_id=owner.coded(nullable=True),
        kind=kind.coded(),
        start=start.instants(),
    )


def parse_activity_rows(rows: Sequence[Sequence[str]]) -> StoredActivities:
    columns = _columns(ACTIVITY_TEXT_COLUMNS, rows)
    return StoredActivities(
        id=columns["id"],
        owner_id=coded(columns["owner_id"], nullable=True),
        kind=coded(columns["kind"]),
        start=_instants_one_by_one(columns["start"]),
    )


def _split(text: str, n: int, name: str) -> list[str]:
    values = text.split(RS)
    if len(values) != n:
        raise IrregularChunkError(f"{name}: {len(values)} values for {n} rows")
    return values


def _columns(names: tuple[str, ...], rows: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    columns = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in names]
    return dict(zip(names, columns, strict=True))


# ---- columns


def id_keys(values: list[str]) -> np.ndarray:
    """Texts as their UTF-8 bytes, zero-padded (``S`` dtype): they sort as SQLite sorts
    text (and as Python sorts str)."""
    return np.array([value.encode() for value in values], dtype=bytes).reshape(-1)


def coded(values: list[str], *, nullable: bool = False) -> Coded:
    distinct = list(dict.fromkeys(values))
    index = {value: i for i, value in enumerate(distinct)}
    codes = np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values))
    if nullable:
        return Coded(codes, [None if value == NULL else value for value in distinct])
    return Coded(codes, distinct)  # type: ignore[arg-type]


def _instant_rows(rows: np.ndarray) -> np.ndarray | None:
    """Rows of 32 bytes (``S32``) ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` as datetime64[us];
    None if any row is not."""
    matrix = rows.view(np.uint8).reshape(-1, _INSTANT)
    if not (
        (matrix[:, 26:] == _INSTANT_SUFFIX).all()
        and (matrix[:, _INSTANT_MARKS] == _INSTANT_MARK_BYTES).all()
    ):
        return None
    # The first 26 bytes of each row, in place (a strided view: no copy).
    local = np.ndarray((len(rows),), dtype="S26", buffer=rows, strides=(_INSTANT,))
    try:
        return local.astype("datetime64[us]")
    except ValueError:
        return None


def _floats(text: str, n: int, name: str) -> np.ndarray:
    """``n`` decimal texts (or ``nan``) joined by RS as float64: numpy's C parser (correctly
    rounded, like ``float``), or ``float`` of each value if numpy does not read every value
    (a separator inside a value is an irregular chunk)."""
    try:
        with warnings.catch_warnings():
            # Older numpy versions warn (instead of raising) on text not read to its end.
            warnings.simplefilter("error", DeprecationWarning)
            parsed = np.fromstring(text, dtype=np.float64, sep=RS)
        if len(parsed) == n:
            return parsed
    except (ValueError, DeprecationWarning):
        pass
    values = text.split(RS)
    if len(values) != n:
        raise IrregularChunkError(f"{name}: {len(values)} values for {n} deals")
    return np.fromiter(map(float, values), dtype=np.float64, count=n)


def _instants_one_by_one(values: list[str]) -> np.ndarray:
    utc = [
        dt.datetime.fromisoformat(value).astimezone(dt.UTC).replace(tzinfo=None) for value in values
    ]
    return np.array(utc, dtype="datetime64[us]").reshape(-1)


def dates(values: list[str]) -> np.ndarray:
    """ISO dates ('' = none) as datetime64[D]."""
    return np.array(values, dtype="datetime64[D]").reshape(-1)


# ---- histories


def stage_history(text: str, n: int) -> tuple[np.ndarray, Coded, np.ndarray]:
    """Offsets, stages and entry instants of the joined stage histories of ``n`` deals."""
    try:
        entries = _Fields.split(text, n, _TAB_OR_RS).entries(2)
        stages = entries.column(0).coded()
        entered = entries.column(1).instants(strict=True)
        counts = entries.counts
    except IrregularChunkError:
        counts_list, values = split_history(_deal_texts(text, n), 2)
        counts = np.array(counts_list, dtype=np.int64)
        stages = coded(values[0::2])
        entered = _instants_one_by_one(values[1::2])
    return offsets_of(counts), stages, entered


def close_date_history(text: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets, old and new dates of the joined close-date histories of ``n`` deals."""
    try:
        entries = _Fields.split(text, n, _TAB_OR_RS).entries(3)
        old, new = entries.column(0).dates(), entries.column(1).dates()
        counts = entries.counts
    except IrregularChunkError:
        counts_list, values = split_history(_deal_texts(text, n), 3)
        counts = np.array(counts_list, dtype=np.int64)
        old, new = dates(values[0::3]), dates(values[1::3])
    return offsets_of(counts), old, new


def _deal_texts(text: str, n: int) -> list[str]:
    texts = text.split(RS)
    if len(texts) != n:
        raise IrregularChunkError(f"history: {len(texts)} values for {n} deals")
    return texts


def offsets_of(counts: np.ndarray) -> np.ndarray:
    """Compressed-row offsets (``len(counts) + 1``) of per-row entry counts."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


_ONLY_RS = False
_TAB_OR_RS = True


class _Fields:
    """Text fields located in the bytes of a joined text: ``starts``/``lengths`` per field
    (no Python object per field). ``counts``: entries per deal (after :meth:`entries`)."""

    def __init__(
        self, raw: bytes, starts: np.ndarray, lengths: np.ndarray, counts: np.ndarray
    ) -> None:
        self.raw = raw
        self.starts = starts
        self.lengths = lengths
        self.counts = counts
        self._windows: dict[int, np.ndarray] = {}  # by width; 0: the zero-padded bytes

    @classmethod
    def split(cls, text: str, n: int, tabs: bool) -> _Fields:
        """Fields separated by RS (one per deal), or by tabs and RS (histories)."""
        raw = text.encode()
        buf = np.frombuffer(raw, dtype=np.uint8)
        if not tabs:
            separators = np.flatnonzero(buf == _RS_BYTE)
            if len(separators) != n - 1:
                raise IrregularChunkError(f"{len(separators) + 1} values for {n} deals")
            starts = np.concatenate(([0], separators + 1))
            lengths = np.append(separators, len(buf)) - starts
            return cls(raw, starts, lengths, np.ones(n, dtype=np.int64))
        # Tabs and RS in one pass: control bytes, then the two kept (others are text).
        separators = np.flatnonzero(buf < 32)
        kinds = buf[separators]
        kept = (kinds == _TAB) | (kinds == _RS_BYTE)
        if not kept.all():
            separators, kinds = separators[kept], kinds[kept]
        starts = np.concatenate(([0], separators + 1))
        lengths = np.append(separators, len(buf)) - starts
        last_of_deal = np.append(kinds == _RS_BYTE, True)
        if int(last_of_deal.sum()) != n:
            raise IrregularChunkError(f"history: {int(last_of_deal.sum())} values for {n} deals")
        deal = np.concatenate(([0], np.cumsum(last_of_deal[:-1])))
        per_deal = np.bincount(deal, minlength=n)
        first = np.concatenate(([0], np.cumsum(per_deal)[:-1]))
        empty = (per_deal == 1) & (lengths[first] == 0)  # no history: one empty field
        keep = ~empty[deal]
        return cls(raw, starts[keep], lengths[keep], np.where(empty, 0, per_deal))

    def entries(self, width: int) -> _Fields:
        """Per deal, fields grouped by ``width`` into entries: use :meth:`column`."""
        if (self.counts % width).any():
            raise IrregularChunkError("history: an entry with a missing or extra field")
        self.counts = self.counts // width
        self.width = width
        return self

    def column(self, k: int) -> _Fields:
        """Field ``k`` of every entry."""
        column = _Fields(
            self.raw, self.starts[k :: self.width], self.lengths[k :: self.width], self.counts
        )
        column._windows = self._windows
        return column

    def windows(self, width: int) -> np.ndarray:
        """The bytes as overlapping ``S{width}`` items, one starting at each byte: indexing
        with field starts copies each field's bytes in one go (zero-padded at the end).
        The columns of one text share one zero-padded copy of its bytes."""
        if width not in self._windows:
            padded = self._windows.get(0)
            if padded is None or len(padded) - len(self.raw) < width:
                padded = np.frombuffer(self.raw + bytes(max(width, 64)), dtype=np.uint8)
                self._windows[0] = padded
            self._windows[width] = np.ndarray(
                (len(self.raw) + 1,), dtype=f"S{width}", buffer=padded, strides=(1,)
            )
        return self._windows[width]

    def matrix(self, width: int) -> np.ndarray:
        """Each field's first ``width`` bytes, zero beyond its length (fields x width)."""
        rows = self.windows(width)[self.starts].view(np.uint8).reshape(-1, width)
        if not (self.lengths == width).all():
            # Zero the bytes past each field's end (they belong to the next field).
            small = np.uint8 if width < 256 else np.int64
            ends = np.minimum(self.lengths, width).astype(small)
            keep = np.arange(width, dtype=small) < ends[:, None]
            np.multiply(rows, keep, out=rows, casting="unsafe")
        return rows

    def instants(self, *, strict: bool = False) -> np.ndarray:
        if len(self.starts) and (self.lengths == _INSTANT).all():
            parsed = _instant_rows(self.windows(_INSTANT)[self.starts])
            if parsed is not None:
                return parsed
        if strict:
            raise IrregularChunkError("an instant in another format")
        return _instants_one_by_one(self.values())

    def dates(self) -> np.ndarray:
        if not ((self.lengths == 0) | (self.lengths == _DATE)).all():
            return dates(self.values())
        try:
            return self.matrix(_DATE).view(f"S{_DATE}").reshape(-1).astype("datetime64[D]")
        except ValueError:
            return dates(self.values())

    def values(self) -> list[str]:
        raw = self.raw
        return [
            raw[start : start + length].decode()
            for start, length in zip(self.starts.tolist(), self.lengths.tolist(), strict=True)
        ]

    def coded(self, *, nullable: bool = False) -> Coded:
        """Dictionary-encoded (values in first-seen order) by the fields' bytes."""
        if not len(self.starts):
            return Coded(np.zeros(0, dtype=np.int32), [])
        width = max(8, -(-int(self.lengths.max()) // 8) * 8)
        codes, first = first_seen_codes(self.matrix(width), self.lengths)
        raw = self.raw
        values: list[Any] = []
        for start, length in zip(
            self.starts[first].tolist(), self.lengths[first].tolist(), strict=True
        ):
            value = raw[start : start + length].decode()
            values.append(None if nullable and value == NULL else value)
        return Coded(codes, values)

    def keys(self) -> np.ndarray:
        """The fields' bytes, zero-padded, as an ``S`` array (for :func:`first_seen_codes`
        over several chunks, or sorting as SQLite does)."""
        width = max(1, int(self.lengths.max())) if len(self.lengths) else 1
        return self.matrix(width).view(f"S{width}").reshape(-1)


_SMALL = 12  # at most this many distinct values: found without sorting the rows


def first_seen_codes(
    matrix: np.ndarray, lengths: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Codes of equal rows of a zero-padded byte matrix (rows x width, width a multiple of
    8), numbered in order of first appearance, and the first row of each code.

    Rows are compared through a 64-bit hash of their bytes (and ``lengths``, when byte
    strings may end with zero bytes); every row is then checked against its code's first row,
    and a collision falls back to comparing the bytes themselves.
    """
    n = len(matrix)
    if not n:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    words = matrix.view(np.uint64)
    key = np.zeros(n, dtype=np.uint64) if lengths is None else lengths.astype(np.uint64)
    with np.errstate(over="ignore"):
        for k in range(words.shape[1]):
            key = key * np.uint64(0x9E3779B97F4A7C15) + words[:, k]
    # Few distinct values (stages, types): the distinct keys found from the first rows (and
    # any row they miss), then each row's by a binary search among them; no sort of the
    # rows. Unless the first rows already show many (owners, accounts).
    heads = None
    distinct = np.unique(key[:1024])
    if len(distinct) <= _SMALL:
        position = np.searchsorted(distinct, key)
        np.minimum(position, len(distinct) - 1, out=position)
        missed = distinct[position] != key
        if missed.any():
            distinct = np.union1d(distinct, key[missed])
            position = np.searchsorted(distinct, key)
        if len(distinct) <= _SMALL:
            # Number the keys by first appearance.
            firsts = np.array([int(np.argmax(position == k)) for k in range(len(distinct))])
            order = np.argsort(firsts, kind="stable")
            rank = np.empty(len(distinct), dtype=np.int32)
            rank[order] = np.arange(len(distinct), dtype=np.int32)
            codes = rank[position]
            heads = firsts[order].astype(np.int64)
    if heads is None:
        _, firsts, inverse = np.unique(key, return_index=True, return_inverse=True)
        order = np.argsort(firsts, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        codes = rank[inverse.reshape(-1)].astype(np.int32)
        heads = firsts[order]
    exact = (words == words[heads][codes]).all() and (
        lengths is None or (lengths == lengths[heads][codes]).all()
    )
    if exact:
        return codes, heads
    rows = np.ascontiguousarray(matrix).view(f"V{matrix.shape[1]}").reshape(-1)
    if lengths is not None:
        rows = np.rec.fromarrays([rows, lengths]).view(np.ndarray)
    _, firsts, inverse = np.unique(rows, return_index=True, return_inverse=True)
    order = np.argsort(firsts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)].astype(np.int32), firsts[order]
