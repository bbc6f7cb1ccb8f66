"""Client idempotency keys and the canonical payload digest that tells a reuse from a retry.

A request sent with an `Idempotency-Key` header is deduplicated by that key alone; its stored
dedup key is ``key:{key}`` (rows of a batch ``key:{key}[{index}]``). The same key coming back with
a different canonical payload is a conflict (409), never a silent duplicate: the digest of the
payload stored with the first event is what the later one is compared with.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request

from app import jsonio
from app.errors import BadRequest

KEY_PREFIX = "key:"
MAX_KEY_CHARS = 255  # as Stripe and the IETF draft's examples; the key is part of a unique index


def canonical_json(obj: Any) -> bytes:
    """One serialization per value: keys sorted, no whitespace (orjson escapes nothing optional)."""
    return jsonio.dumps(obj, sort_keys=True)


def payload_digest(obj: Any) -> bytes:
    """SHA-256 of the canonical JSON of a parsed, secret-free payload."""
    return hashlib.sha256(canonical_json(obj)).digest()


def client_key(request: Request) -> str | None:
    """The request's `Idempotency-Key`, or None when absent or blank.

    Raises:
        BadRequest: the key is longer than `MAX_KEY_CHARS` characters.
    """
    key = request.headers.get("idempotency-key", "").strip()
    if len(key) > MAX_KEY_CHARS:
        raise BadRequest(f"the Idempotency-Key is longer than {MAX_KEY_CHARS} characters")
    return key or None


def keyed_dedup_key(key: str, index: int | None = None) -> str:
    """The dedup key of an event sent with a client key (`index`: its row in a batch)."""
    return f"{KEY_PREFIX}{key}" if index is None else f"{KEY_PREFIX}{key}[{index}]"


def is_keyed(dedup_key: str) -> bool:
    """Whether a dedup key came from a client's `Idempotency-Key`."""
    return dedup_key.startswith(KEY_PREFIX)
