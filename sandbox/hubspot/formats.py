"""The portal's wire formats: datetimes (ISO with milliseconds and ``Z``; closedate without the
fraction), numbers as plain decimal text, and the parsing of written datetimes.

Vectorised over numpy columns: a page of a million-deal store formats only its own rows.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata

import numpy as np

from crm_kpi_worker.sandbox import dataset as ds
from crm_kpi_worker.sandbox.columns import ms_to_iso

NULL_MS = np.int64(np.iinfo(np.int64).min)
NULL_DAY = ds.NULL_DAY
DAY_MS = 86_400_000


def iso_ms(values: np.ndarray) -> list[str | None]:
    """Epoch-ms int64 values as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (NULL_MS: None)."""
    return ms_to_iso(np.asarray(values, dtype=np.int64), NULL_MS, suffix="Z")


def iso_seconds(values: np.ndarray) -> list[str | None]:
    """Epoch-ms values as ``YYYY-MM-DDTHH:MM:SSZ`` (closedate's format)."""
    return ms_to_iso(np.asarray(values, dtype=np.int64), NULL_MS, suffix="Z", unit="s")


def stamp(ms: int) -> str:
    """One epoch-ms value in the portal's datetime format."""
    return iso_ms(np.array([ms], dtype=np.int64))[0] or ""


def format_number(value: float) -> str | None:
    if value is None or math.isnan(value):
        return None
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def parse_datetime_ms(text: str) -> int:
    """Epoch ms from an epoch-ms string or an ISO date/datetime (naive = UTC)."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return round(parsed.timestamp() * 1000)


def slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())
