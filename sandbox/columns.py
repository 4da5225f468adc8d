"""The column core both sandbox CRMs' stores share.

The two stores do different jobs above this core, so each keeps its own column classes: the
Salesforce org's (``salesforce/store.py``) answer the SOQL engine (comparable values with a null
mask, ORDER BY keys, typed JSON values, per-field write errors), the HubSpot portal's
(``hubspot/objects.py``) answer search and rendering (float keys with nan for none, text masks,
every value as wire text). What they share is here: numpy arrays with a null sentinel, grown
for new rows, and the vectorised ISO rendering of day and millisecond columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def grown(array: np.ndarray, size: int, fill: Any) -> np.ndarray:
    """``array`` with room for ``size`` rows (amortised doubling), new cells set to ``fill``."""
    if size <= len(array):
        return array
    capacity = max(size, len(array) * 2, 16)
    bigger = np.full(capacity, fill, dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


def days_to_iso(days: np.ndarray, null: Any) -> list[str | None]:
    """Epoch days as ``YYYY-MM-DD`` (``null``: None)."""
    missing = days == null
    text = np.datetime_as_string(np.where(missing, 0, days).astype("datetime64[D]"), unit="D")
    return [None if n else t for n, t in zip(missing.tolist(), text.tolist(), strict=True)]


def ms_to_iso(ms: np.ndarray, null: Any, *, suffix: str, unit: str = "ms") -> list[str | None]:
    """Epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmm`` + ``suffix`` (``unit="s"``: without
    the fraction, truncated); ``null``: None."""
    missing = ms == null
    values = np.where(missing, 0, ms)
    if unit == "s":
        values = values // 1000
    text = np.datetime_as_string(values.astype(f"datetime64[{unit}]"), unit=unit)
    return [None if n else t + suffix for n, t in zip(missing.tolist(), text.tolist(), strict=True)]
