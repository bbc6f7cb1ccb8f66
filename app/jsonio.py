"""JSON in and out at orjson's speed, with every integer kept exact.

orjson reads an integer beyond 64 bits as a float, silently: 123456789012345678901234567890 becomes
1.2345678901234568e+29, so a barcode or a 1C number in a payload would be stored and delivered
changed. It also refuses to write such an integer. JSON sets no limit and PostgreSQL's jsonb keeps
them exact, so payloads go through `loads` and `dumps` here: orjson first (and its strictness: no
NaN, no lone surrogate), the standard library only for texts and values that hold such a number.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

# 19 digits in a row: the shortest number that may not fit orjson's int64 / uint64 (a run inside a
# string or a long fraction matches too; it only costs a second parse).
_LONG_RUN = re.compile(r"\d{19}")
_LONG_RUN_BYTES = re.compile(rb"\d{19}")


def loads(data: str | bytes) -> Any:
    """Parse JSON as orjson does (same errors: `orjson.JSONDecodeError`), integers exact."""
    value = orjson.loads(data)
    if (_LONG_RUN.search(data) if isinstance(data, str) else _LONG_RUN_BYTES.search(data)) is None:
        return value
    return json.loads(data)  # orjson accepted it, so it is strict JSON; this keeps big ints


def dumps(value: Any, *, sort_keys: bool = False, indent: bool = False) -> bytes:
    """Compact UTF-8 JSON as orjson writes it (datetimes in ISO 8601, UTC as `Z`; UUIDs as
    strings), including integers beyond 64 bits."""
    option = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
    option |= (orjson.OPT_SORT_KEYS if sort_keys else 0) | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
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
