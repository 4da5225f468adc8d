"""Salesforce record ids for sandbox rows.

A sandbox id is ``<3-char key prefix>Sb0<9 base-62 digits of row + 1>`` (15 characters, like a
real id: prefix, pod, reserved digit, counter) followed by Salesforce's 3-character case-safe
suffix, so ids look, sort and validate like real 18-character ids, and map back to a row
without any lookup table.
"""

from __future__ import annotations

import string

import numpy as np

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_BASE62_INDEX = {c: i for i, c in enumerate(_BASE62)}
_SUFFIX_ALPHABET = string.ascii_uppercase + "012345"
_POD = "Sb0"
_COUNTER_DIGITS = 9
MAX_ROWS = 62**_COUNTER_DIGITS - 1
_BASE62_CODES = np.frombuffer(_BASE62.encode("ascii"), dtype=np.uint8)
_SUFFIX_CODES = np.frombuffer(_SUFFIX_ALPHABET.encode("ascii"), dtype=np.uint8)


def case_safe_suffix(id15: str) -> str:
    """The 3 characters Salesforce appends to a 15-character id to make it case-insensitive."""
    suffix = []
    for chunk in range(3):
        bits = 0
        for position, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix.append(_SUFFIX_ALPHABET[bits])
    return "".join(suffix)


def make_id(prefix: str, row: int) -> str:
    if not 0 <= row < MAX_ROWS:
        raise ValueError(f"row {row} out of range")
    number = row + 1
    digits = []
    for _ in range(_COUNTER_DIGITS):
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    id15 = prefix + _POD + "".join(reversed(digits))
    return id15 + case_safe_suffix(id15)


def id_codes(prefix: str, rows: np.ndarray) -> np.ndarray:
    """``make_id(prefix, row)`` for every row at once, as an ``(n, 18)`` array of ASCII codes
    (``.view("S18")`` reads them as bytes): a million ids in a fraction of a second, where the
    scalar form takes seconds (Bulk API result pages are rendered from these)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= MAX_ROWS):
        raise ValueError("row out of range")
    places = 62 ** np.arange(_COUNTER_DIGITS - 1, -1, -1, dtype=np.int64)
    codes = np.empty((len(rows), 18), dtype=np.uint8)
    head = (prefix + _POD).encode("ascii")
    codes[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    codes[:, 6:15] = _BASE62_CODES[((rows + 1)[:, None] // places) % 62]
    upper = ((codes[:, :15] >= ord("A")) & (codes[:, :15] <= ord("Z"))).astype(np.uint8)
    for chunk in range(3):
        bits = np.zeros(len(rows), dtype=np.uint8)
        for position in range(5):
            bits |= upper[:, chunk * 5 + position] << position
        codes[:, 15 + chunk] = _SUFFIX_CODES[bits]
    return codes


def is_valid_id(value: str) -> bool:
    """True for a well-formed 15- or 18-character id (any org), as Salesforce checks them."""
    if len(value) not in (15, 18) or not value.isalnum() or not value.isascii():
        return False
    return len(value) == 15 or case_safe_suffix(value[:15]) == value[15:].upper()


def parse_id(value: str, prefix: str) -> int | None:
    """The row of a sandbox id with the given key prefix; None for any other valid id.

    Raises ValueError for a malformed id (Salesforce answers MALFORMED_ID / invalid ID).
    """
    if not is_valid_id(value):
        raise ValueError(f"invalid ID: {value}")
    if value[:3] != prefix or value[3:6] != _POD:
        return None
    number = 0
    for char in value[6:15]:
        number = number * 62 + _BASE62_INDEX[char]
    return number - 1 if number > 0 else None
