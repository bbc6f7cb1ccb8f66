"""Decode 1C:Enterprise JSON bodies: UTF-8 BOM, declared charset, windows-1251 fallback."""

from __future__ import annotations

import codecs
import json
from typing import Any

from app import jsonio
from app.sources.errors import MalformedError
from app.sources.jsonlimits import check_json_limits

FALLBACK_CHARSET = "windows-1251"  # older 1C bases and hand-written HTTP services use cp1251
EXCERPT_CHARS = 80  # error messages may end up in logs and problem replies: keep them short

# Codecs Python accepts as text encodings that no 1C sends, and that would let a header
# reinterpret the body (escape sequences, UTF-7 smuggling).
_REFUSED_CODECS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "utf-7", "idna", "punycode", "undefined"}
)


class BodyError(MalformedError):
    """The body cannot be decoded as text or is not valid JSON (HTTP 400)."""


def decode_1c_json(body: bytes, content_type_charset: str | None) -> Any:
    """Decode a 1C body to text and parse it as JSON.

    A leading UTF-8 BOM (1C writes one by default) is stripped and then decides the charset,
    since a BOM is stronger evidence than a header. Otherwise the declared charset is tried
    when Python knows it, then UTF-8, then windows-1251 (1C bases on cp1251 often send no
    charset, or a wrong one).

    Raises:
        BodyError: empty body, no charset decodes it, or the text is not JSON. The message
            quotes at most ``EXCERPT_CHARS`` characters of the body.
        JsonLimitError: nested too deep or too many keys (see ``app.sources.jsonlimits``).
    """
    text = _decode_text(body, content_type_charset)
    if not text.strip():
        raise BodyError("body is empty")
    check_json_limits(text)
    try:
        return jsonio.loads(text)  # integers beyond 64 bits kept exact
    except json.JSONDecodeError as exc:  # orjson.JSONDecodeError subclasses it
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise BodyError(f"body is not valid JSON ({where}): {_excerpt(text)}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # deep nesting
        raise BodyError(f"body is not valid JSON ({exc}): {_excerpt(text)}") from None


def _decode_text(body: bytes, declared: str | None) -> str:
    candidates = [_known_charset(declared), "utf-8", FALLBACK_CHARSET]
    if body.startswith(codecs.BOM_UTF8):
        body = body[len(codecs.BOM_UTF8) :]
        candidates.insert(0, "utf-8")
    for charset in candidates:
        if charset is None:
            continue
        try:
            return body.decode(charset)
        except (UnicodeDecodeError, LookupError):  # LookupError: base64, rot13 and the like
            continue
    raise BodyError(
        f"body is neither UTF-8 nor {FALLBACK_CHARSET}: "
        f"{_excerpt(body.decode('utf-8', errors='replace'))}"
    )


def _known_charset(declared: str | None) -> str | None:
    """Return the Python codec name for a Content-Type charset, or None to ignore it."""
    if not declared:
        return None
    try:
        name = codecs.lookup(declared.strip().strip("\"'")).name
    except LookupError:
        return None  # unknown charset names are ignored rather than refused
    return None if name in _REFUSED_CODECS else name


def _excerpt(text: str) -> str:
    return repr(text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else ""))
