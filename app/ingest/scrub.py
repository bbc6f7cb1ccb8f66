"""Keep secrets out of what we store: request headers and the raw body."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

from app.secrets import MASK, is_secret_key, mask_credentials

# Credentials that no key-name rule catches: session cookies and request signatures.
_SECRET_HEADERS = frozenset({"cookie", "set-cookie", "proxy-authorization"})
_SECRET_HEADER_WORDS = ("token", "secret", "password", "signature", "api-key", "apikey", "auth")
_MASK_BYTES = MASK.encode()


@functools.lru_cache(maxsize=512)  # clients send the same few names with every request
def is_secret_header(name: str) -> bool:
    """Tell whether a request header carries a credential (``Authorization``, ``X-Api-Key``, ``Cookie`` …)."""
    lowered = name.lower()
    return (
        lowered in _SECRET_HEADERS
        or any(word in lowered for word in _SECRET_HEADER_WORDS)
        or is_secret_key(lowered)
    )


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers minus credentials (lower-cased names), with any credential-shaped value masked."""
    return {
        name: mask_credentials(value)
        for name, value in ((k.lower(), v) for k, v in headers.items())
        if not is_secret_header(name)
    }


@functools.lru_cache(maxsize=1024)  # a portal's tokens come back with every event
def _encoded_pattern(secret: str) -> re.Pattern[bytes]:
    """Match ``secret`` as sent, or percent-encoded in any case and in any mix (``+`` or ``%20`` for a space)."""
    parts = []
    for byte in secret.encode():
        literal = re.escape(bytes([byte]))
        encoded = b"%%%02x" % byte
        space = rb"|\+" if byte == 0x20 else b""
        parts.append(b"(?:" + literal + b"|(?i:" + encoded + b")" + space + b")")
    return re.compile(b"".join(parts))


def mask_secrets(raw: bytes, secrets: Iterable[str]) -> bytes:
    """Replace every secret value in the raw body, as sent or percent-encoded, with a mask."""
    for secret in secrets:
        if len(secret) < 4:  # too short to mask without mangling unrelated bytes
            continue
        raw = _encoded_pattern(secret).sub(_MASK_BYTES, raw)
    return raw
