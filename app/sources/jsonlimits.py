"""Limits on client JSON, checked on the text before anything parses or walks it recursively.

A body nested thousands of levels deep, or holding hundreds of thousands of keys, is refused with a
clear 4xx instead of failing somewhere deeper (orjson stops at its own recursion limit with a
TypeError; serialising a stored payload stops at 254 levels).
"""

from __future__ import annotations

import re

from app.sources.errors import MalformedError

MAX_DEPTH = 64  # objects and arrays inside one another
MAX_KEYS = 100_000  # object members in the whole body (a 500-row batch of rich 1C documents fits)

# A JSON string (escapes included), or one structural character. Commas, numbers and whitespace
# between them are skipped by the regex engine, so the Python loop runs per string or bracket only.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:]')


class JsonLimitError(MalformedError):
    """The body nests too deep or has too many keys (HTTP 400, before any parsing)."""


def check_json_limits(text: str) -> None:
    """Raise `JsonLimitError` when `text` nests deeper than `MAX_DEPTH` or has over `MAX_KEYS` keys.

    Linear in the text and never recursive. Most bodies are decided by counting characters alone.
    """
    if text.count("{") + text.count("[") <= MAX_DEPTH and text.count(":") <= MAX_KEYS:
        return
    depth = keys = 0
    for match in _TOKEN.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise JsonLimitError(f"JSON nested deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1
        elif char == ":":
            keys += 1
            if keys > MAX_KEYS:
                raise JsonLimitError(f"JSON with more than {MAX_KEYS} keys")
