"""Parser for ``application/x-www-form-urlencoded`` bodies with PHP-style nested keys.

Bitrix24 writes its events with PHP's ``http_build_query`` (``data[FIELDS][ID]=7405``), so
we read them back the way PHP's ``parse_str`` does:

* ``a[b][c]=v`` nests; ``a[]=v`` appends; explicit keys, numeric ones included, stay string
  dict keys (``FIELDS_AFTER[0]`` -> ``{"0": ...}``). A container is returned as a list only
  when every key in it came from ``[]``; mixing in an explicit key makes it a dict, with
  ``[]`` then taking PHP's next free integer key.
* The later of two conflicting fields wins, whether scalar or container (``a=1&a[b]=2``
  gives ``{"a": {"b": "2"}}``), exactly as PHP overwrites.
* A name whose first ``[`` is never closed is not an index: PHP turns that ``[`` into ``_``
  (``a[b=1`` -> ``{"a_b": "1"}``). A later unclosed segment and any text after the last
  ``]`` are dropped (``a[b][c=1`` and ``a[b]x=1`` both -> ``{"a": {"b": "1"}}``).
* Fields with an empty name (``=1``, ``[x]=1``) are dropped; a field without ``=`` is ``""``.
* The literal value ``undefined`` (JavaScript's, as Bitrix24 sends it) becomes ``None``.

Deliberate deviation: PHP also rewrites ``.`` and `` `` in top-level names to ``_`` and strips
leading spaces (a register_globals relic); we keep names as sent.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from app.sources.errors import MalformedError

MAX_DEPTH = 32  # bracket levels per name (PHP's max_input_nesting_level, but we refuse loudly)
MAX_FIELDS = 1000  # PHP's max_input_vars

# Bitrix24 posts JavaScript's undefined as text, e.g. data[FIELDS_BEFORE]=undefined.
_UNDEFINED = "undefined"
# Control bytes never occur in form text (they arrive percent-encoded): a body with them is binary.
_BINARY = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Keys PHP stores as integers, which advance the next index used by "[]".
_INT_KEY = re.compile(r"0|[1-9][0-9]{0,17}")
_DIGITS = frozenset("0123456789")


class FormError(MalformedError):
    """The body cannot be read as a PHP-style form (binary, too deep, too many fields)."""


class _Array(dict[str, Any]):
    """A PHP array under construction; it remembers how its keys were made."""

    __slots__ = ("explicit", "next_index")

    def __init__(self) -> None:
        super().__init__()
        self.explicit = False  # any key given by name, so the result must be a dict
        self.next_index = 0  # the key "[]" uses next, as PHP's nNextFreeElement

    def put(self, key: str | None, value: Any) -> None:
        if key is None:
            key = str(self.next_index)
        else:
            self.explicit = True
        if key[:1] in _DIGITS and _INT_KEY.fullmatch(key):  # most keys are names: no regex
            self.next_index = max(self.next_index, int(key) + 1)
        self[key] = value

    def child(self, key: str | None) -> _Array:
        existing = self.get(key) if key is not None else None
        if type(existing) is _Array:
            return existing
        created = _Array()  # replaces a scalar: the later field wins
        self.put(key, created)
        return created


def parse_php_form(body: bytes) -> dict[str, Any]:
    """Parse a form-urlencoded body the way PHP's ``parse_str`` does (see the module doc).

    Values are strings, ``None`` (for ``undefined``), dicts or lists. Names and values are
    percent-decoded (``+`` is a space) and read as UTF-8, else windows-1251 (Bitrix24
    portals on cp1251 exist), else UTF-8 with replacement characters.

    Raises:
        FormError: the body is binary, has more than ``MAX_FIELDS`` fields, or a name
            nests deeper than ``MAX_DEPTH`` levels.
    """
    if _BINARY.search(body):
        raise FormError("body is not form-urlencoded text (it contains control bytes)")
    pairs = [pair for pair in body.split(b"&") if pair]
    if len(pairs) > MAX_FIELDS:
        raise FormError(f"form has {len(pairs)} fields, more than the limit of {MAX_FIELDS}")
    root = _Array()
    for pair in pairs:
        raw_name, _, raw_value = pair.partition(b"=")
        base, path = _name(raw_name)
        if not base:
            continue
        value = _decode(raw_value)
        node: _Array = root
        key: str | None = base
        for segment in path:
            node, key = node.child(key), segment
        node.put(key, None if value == _UNDEFINED else value)
    return _finish(root) if root else {}


def _name(raw: bytes) -> tuple[str, tuple[str | None, ...]]:
    """A field's name, decoded and split (see `_split_name`); short ones from a cache."""
    return _cached_name(raw) if len(raw) <= _CACHED_NAME_BYTES else _split(raw)


def _split(raw: bytes) -> tuple[str, tuple[str | None, ...]]:
    base, path = _split_name(_decode(raw))
    return base, tuple(path)


# A portal sends the same few hundred names with every event. The body is not authenticated yet:
# only short names are kept, so that the cache stays small whatever a client sends.
_CACHED_NAME_BYTES = 200
_cached_name = functools.lru_cache(maxsize=4096)(_split)


def _decode(raw: bytes) -> str:
    """Percent-decode one name or value and pick its charset."""
    # Most values (ids, dates, tokens) are sent as they are: nothing to unquote.
    data = unquote_to_bytes(raw.replace(b"+", b" ")) if b"%" in raw or b"+" in raw else raw
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Not UTF-8, so the portal is probably cp1251; Python's cp1251 only rejects byte 0x98.
    try:
        return data.decode("windows-1251")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace")


def _split_name(name: str) -> tuple[str, list[str | None]]:
    """Split ``a[b][]`` into ``("a", ["b", None])``, following php_register_variable_ex."""
    start = name.find("[")
    if start < 0:
        return name, []
    if start == 0:
        return "", []  # PHP drops a field whose name starts with "[" (empty variable name)
    base, pos = name[:start], start
    path: list[str | None] = []
    while pos < len(name) and name[pos] == "[":
        end = name.find("]", pos + 1)
        if end < 0:
            if not path:  # PHP: an unclosed first "[" is no index but part of the name
                return base + "_" + name[start + 1 :], []
            break  # PHP: an unclosed later segment is dropped
        if len(path) == MAX_DEPTH:
            raise FormError(f"field name nests deeper than {MAX_DEPTH} levels: {name[:60]!r}")
        path.append(name[pos + 1 : end] or None)
        pos = end + 1
    return base, path


def _finish(node: _Array) -> Any:
    """Turn the ``_Array`` tree into plain dicts and lists (depth is bounded by MAX_DEPTH)."""
    if node.explicit:
        return {k: _finish(v) if type(v) is _Array else v for k, v in node.items()}
    return [_finish(v) if type(v) is _Array else v for v in node.values()]
