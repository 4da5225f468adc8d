"""The one parser of CRM modification stamps, and each CRM's way of writing them.

Both CRMs send ISO-8601 instants with an explicit zone: Salesforce
``2026-09-15T16:00:00.000+0000``, HubSpot ``2026-09-15T16:00:00.000Z``; HubSpot also sends
epoch milliseconds as text in some places (``1757952000000``). :func:`parse_stamp` reads all
of them into an aware UTC datetime. A :class:`StampFormat` is how one CRM writes stamps back
(cursors stored by the pipeline, filter values): the same instant, the CRM's UTC suffix, whole
milliseconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["StampFormat", "from_ms", "parse_stamp", "to_ms"]


def parse_stamp(
    value: str, *, crm: str = "CRM", example: str = "2026-09-30T12:00:00.000Z"
) -> dt.datetime:
    """An instant in UTC from an ISO-8601 stamp with a zone, or epoch milliseconds as text.

    ``crm`` and ``example`` only word the error. A stamp without a zone, a date alone or any
    other text is refused (a ``ValueError`` naming the value), never guessed at: stamps end up
    in query filters.
    """
    text = value.strip() if isinstance(value, str) else ""
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    parsed = None
    # fromisoformat (C) is the fast path; the shape check keeps out what it also accepts but
    # no CRM sends (week dates, ordinal dates, a date alone).
    if len(text) > 16 and text[4] == "-" and text[7] == "-" and text[10] == "T":
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"not a {crm} datetime: {value!r}; expected e.g. {example}")
    return parsed.astimezone(dt.UTC)


def to_ms(value: dt.datetime) -> int:
    """Epoch milliseconds of an aware instant."""
    return round(value.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


@dataclass(frozen=True)
class StampFormat:
    """How one CRM writes an instant: UTC, whole milliseconds, then ``utc_suffix``."""

    crm: str
    utc_suffix: str  # "+0000" (Salesforce) or "Z" (HubSpot)

    @property
    def example(self) -> str:
        return f"2026-09-30T12:00:00.000{self.utc_suffix}"

    def parse(self, value: str) -> dt.datetime:
        """:func:`parse_stamp`, its errors naming this CRM."""
        return parse_stamp(value, crm=self.crm, example=self.example)

    def format(self, value: dt.datetime) -> str:
        utc = value.astimezone(dt.UTC)
        return (
            utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}{self.utc_suffix}"
        )

    def latest(self, stamps: Iterable[object]) -> dt.datetime | None:
        """The latest of a page's stamps (anything not text is ignored; None: no stamp).

        The CRMs write stamps fixed-width in UTC, where text order is time order: one parse per
        page instead of one per record. Any mix of widths or zones falls back to parsing all.
        """
        texts = [s for s in stamps if isinstance(s, str)]
        if not texts:
            return None
        width, suffix = len(texts[0]), self.utc_suffix
        if all(len(s) == width and s.endswith(suffix) for s in texts):
            return self.parse(max(texts))
        return max(self.parse(s) for s in texts)
