"""The binary rows of the KPI frames' compact copy (``frame_deals.row``, ``frame_activities.row``).

A deal's row is :data:`DEAL_HEAD` (fixed width) followed by its stage history
(:data:`STAGE_ENTRY` each) and its close-date history (:data:`CLOSE_ENTRY` each), all
little-endian and made of 4-byte words, so that the rows of a chunk, concatenated, are parsed
by numpy in a few vectorised steps from their lengths (no Python object per deal). An
activity's row is :data:`ACTIVITY_ROW`. Texts are numbers given per family by the store
(``frame_texts``); instants are microseconds since the epoch (UTC), dates days since it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ACTIVITY_ROW",
    "CLOSE_ENTRY",
    "DEAL_HEAD",
    "NO_DATE",
    "STAGE_ENTRY",
    "CorruptRowError",
    "day_numbers",
    "days",
    "decode_activities",
    "decode_deals",
    "encode_activities",
    "encode_deals",
]

DEAL_HEAD = np.dtype(
    [
        ("created_at", "<i8"),  # microseconds since the epoch, UTC
        ("arr", "<f8"),  # NaN: none
        ("probability", "<f8"),  # NaN: none
        ("close_date", "<i4"),  # days since the epoch; NO_DATE: none
        ("owner", "<i4"),  # text number (family "owner"); -1: none
        ("account", "<i4"),  # text number (family "account"); -1: none
        ("stage", "<i4"),  # text number (family "stage")
        ("deal_type", "<i4"),  # text number (family "deal_type")
        ("forecast_category", "<i4"),  # text number (family "forecast_category")
        ("flags", "<i4"),  # is_won + 2 * is_closed
        ("stages", "<i4"),  # stage history entries after the head
        ("close_dates", "<i4"),  # close-date history entries after those
    ]
)
STAGE_ENTRY = np.dtype([("entered_at", "<i8"), ("stage", "<i4")])
CLOSE_ENTRY = np.dtype([("old", "<i4"), ("new", "<i4")])  # days; NO_DATE: none
ACTIVITY_ROW = np.dtype([("start", "<i8"), ("owner", "<i4")])  # owner -1: none

#: A missing date.
NO_DATE = np.iinfo(np.int32).min

_WORD = 4
_HEAD_WORDS = DEAL_HEAD.itemsize // _WORD
_STAGE_WORDS = STAGE_ENTRY.itemsize // _WORD
_CLOSE_WORDS = CLOSE_ENTRY.itemsize // _WORD


class CorruptRowError(ValueError):
    """Rows that do not have the layout of this module."""


def day_numbers(values: np.ndarray) -> np.ndarray:
    """datetime64[D] (NaT allowed) as int32 day numbers, NaT as :data:`NO_DATE`."""
    numbers = values.astype("datetime64[D]").view(np.int64)
    return np.where(np.isnat(values), NO_DATE, numbers).astype("<i4")


def days(numbers: np.ndarray) -> np.ndarray:
    """The inverse of :func:`day_numbers`."""
    wide = numbers.astype(np.int64)
    wide[numbers == NO_DATE] = np.datetime64("NaT").view(np.int64)
    return wide.view("datetime64[D]")


def encode_deals(head: np.ndarray, stages: np.ndarray, close_dates: np.ndarray) -> list[bytes]:
    """One row per deal: its head, then its ``head["stages"]`` stage entries and its
    ``head["close_dates"]`` close-date entries, taken in order from ``stages`` and
    ``close_dates`` (every deal's entries together, deal after deal)."""
    n = len(head)
    stage_counts = head["stages"].astype(np.int64)
    close_counts = head["close_dates"].astype(np.int64)
    if int(stage_counts.sum()) != len(stages) or int(close_counts.sum()) != len(close_dates):
        raise ValueError("encode_deals: the heads' entry counts do not match the entries")
    words = _HEAD_WORDS + _STAGE_WORDS * stage_counts + _CLOSE_WORDS * close_counts
    ends = np.cumsum(words)
    starts = ends - words
    out = np.empty(int(ends[-1]) if n else 0, dtype="<i4")
    _put(out, starts, _records(head, DEAL_HEAD))
    first_stage = starts + _HEAD_WORDS
    _put(
        out,
        _entry_starts(first_stage, stage_counts, _STAGE_WORDS),
        _records(stages, STAGE_ENTRY),
    )
    first_close = first_stage + _STAGE_WORDS * stage_counts
    _put(
        out,
        _entry_starts(first_close, close_counts, _CLOSE_WORDS),
        _records(close_dates, CLOSE_ENTRY),
    )
    raw = out.tobytes()
    return [raw[_WORD * a : _WORD * b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def decode_deals(blob: bytes, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heads, stage entries and close-date entries of rows concatenated in ``blob``, the
    ``i``-th ``lengths[i]`` bytes long (the inverse of :func:`encode_deals`)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if (
        int(lengths.sum()) != len(blob)
        or (lengths % _WORD).any()
        or (lengths < DEAL_HEAD.itemsize).any()
    ):
        raise CorruptRowError("frame_deals: rows that are not whole heads and entries")
    words = np.frombuffer(blob, dtype="<i4")
    size = lengths // _WORD
    ends = np.cumsum(size)
    starts = ends - size
    head = _take(words, starts, DEAL_HEAD)
    stage_counts = head["stages"].astype(np.int64)
    close_counts = head["close_dates"].astype(np.int64)
    expected = _HEAD_WORDS + _STAGE_WORDS * stage_counts + _CLOSE_WORDS * close_counts
    if (stage_counts < 0).any() or (close_counts < 0).any() or (expected != size).any():
        raise CorruptRowError("frame_deals: a row's length does not match its entry counts")
    first_stage = starts + _HEAD_WORDS
    stages = _take(words, _entry_starts(first_stage, stage_counts, _STAGE_WORDS), STAGE_ENTRY)
    first_close = first_stage + _STAGE_WORDS * stage_counts
    close_dates = _take(words, _entry_starts(first_close, close_counts, _CLOSE_WORDS), CLOSE_ENTRY)
    return head, stages, close_dates


def encode_activities(rows: np.ndarray) -> list[bytes]:
    raw = np.ascontiguousarray(rows, dtype=ACTIVITY_ROW).tobytes()
    size = ACTIVITY_ROW.itemsize
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def decode_activities(blob: bytes) -> np.ndarray:
    if len(blob) % ACTIVITY_ROW.itemsize:
        raise CorruptRowError("frame_activities: rows that are not whole activities")
    return np.frombuffer(blob, dtype=ACTIVITY_ROW)


def _records(records: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(records, dtype=dtype)


def _entry_starts(firsts: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
    """The first word of every entry: deal ``i``'s ``counts[i]`` entries of ``width`` words
    each start at ``firsts[i]``."""
    total = int(counts.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    before = np.cumsum(counts) - counts  # entries of the deals before
    return np.repeat(firsts - width * before, counts) + width * np.arange(total)


def _windows(words: np.ndarray, size: int) -> np.ndarray:
    """``words`` seen as ``size``-byte items, one starting at each word (overlapping):
    indexing them with word positions reads or writes whole records in one step (as plain
    bytes: numpy copies those far faster than records with fields)."""
    count = len(words) - size // _WORD + 1
    return np.ndarray((max(count, 0),), dtype=f"V{size}", buffer=words, strides=(_WORD,))


def _put(out: np.ndarray, starts: np.ndarray, records: np.ndarray) -> None:
    if len(starts):
        size = records.dtype.itemsize
        _windows(out, size)[starts] = records.view(f"V{size}")


def _take(words: np.ndarray, starts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if not len(starts):
        return np.zeros(0, dtype=dtype)
    return _windows(words, dtype.itemsize)[starts].view(dtype)
