"""Keep secrets out of what we store: request headers and the raw body."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

MASK = b"[REDACTED]"
_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
_SECRET_WORDS = ("token", "secret", "password", "signature")


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers minus credentials (lower-cased names)."""
    return {
        name: value
        for name, value in ((k.lower(), v) for k, v in headers.items())
        if name not in _SECRET_HEADERS and not any(word in name for word in _SECRET_WORDS)
    }


def mask_secrets(raw: bytes, secrets: Iterable[str]) -> bytes:
    """Replace every secret value in the raw body, as sent or percent-encoded, with a mask."""
    for secret in secrets:
        if len(secret) < 4:  # too short to mask without mangling unrelated bytes
            continue
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            raw = raw.replace(form.encode(), MASK)
    return raw
