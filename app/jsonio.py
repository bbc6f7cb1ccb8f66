"""JSON in and out at orjson's speed, with every integer kept exact.

orjson reads an integer beyond 64 bits as a float, silently: 123456789012345678901234567890 becomes
1.2345678901234568e+29, so a barcode or a 1C number in a payload would be stored and delivered
changed. It also refuses to write such an integer. JSON sets no limit and PostgreSQL's jsonb keeps
them exact, so payloads go through `loads` and `dumps` here: orjson first (and its strictness: no
NaN, no lone surrogate, no number beyond a double's range), the standard library only for texts and
values that hold such an integer.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

# orjson keeps integers in [-2**63, 2**64) and makes a float of any other: a float this large in
# what it parsed may be a rounded integer (or a float the text wrote as such: parsed again, same).
_ROUNDED_FROM = 2.0**63


def loads(data: str | bytes) -> Any:
    """Parse JSON as orjson does (same errors: `orjson.JSONDecodeError`), integers exact."""
    value = orjson.loads(data)
    if not _has_huge_float(value):
        return value
    try:
        return json.loads(data)  # orjson accepted it, so it is strict JSON; this keeps big ints
    except RecursionError:  # the standard library's parser recurses; orjson's nests to 1024
        raise orjson.JSONDecodeError(
            "nested too deep to keep its integers exact", str(data[:80]), 0
        ) from None


def _has_huge_float(value: Any) -> bool:
    # Iterative, by exact type: as fast as orjson's own parse on typical payloads.
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float and (item >= _ROUNDED_FROM or item <= -_ROUNDED_FROM):
            return True
    return False


def dumps(value: Any, *, sort_keys: bool = False, indent: bool = False) -> bytes:
    """UTF-8 JSON as orjson writes it (datetimes in ISO 8601, UTC as `Z`; UUIDs as strings), and
    values holding an integer beyond 64 bits, which orjson refuses: those through the standard
    library, with the same separators, key order, escapes and indent (a float may be spelled
    differently there, 1e-05 for 0.00001, the same number). Anything else orjson refuses, it raises.
    """
    option = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
    option |= (orjson.OPT_SORT_KEYS if sort_keys else 0) | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):  # "Integer exceeds 64-bit range"
            raise
    text = json.dumps(
        value,
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=sort_keys,
        indent=2 if indent else None,
        separators=(",", ": ") if indent else (",", ":"),
        default=_default,
    )
    return text.encode()


def _default(value: Any) -> str:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
