"""Extract the identity of a Bitrix24 event from its parsed payload.

The payload is the PHP-style form read by ``parse_php_form`` or a JSON body with the same
structure (where ids and ``ts`` may be numbers). Bitrix24 sends no event id: the subject comes from
the event-family rules (app.sources.bitrix24.identity), the dedup key from the data itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.secrets import redact
from app.sources.bitrix24.identity import data_hash, subject_of
from app.sources.errors import ShapeError

# `ts` is Unix seconds; beyond the year 9999 no date can hold it.
MAX_TS = 253_402_300_799


@dataclass(frozen=True)
class Bitrix24Event:
    """A Bitrix24 event reduced to what routes, deduplicates and authenticates it."""

    event: str  # upper-case, e.g. "ONCRMDEALUPDATE"
    subject: str  # "deal/7405", "dynamic-1032/21", "task/555", "call/…"; "{entity}/~{hash}" without an id
    member_id: str | None  # auth[member_id]: picks the portal
    domain: str | None  # auth[domain]: picks the portal when member_id is absent
    application_token: str | None  # auth[application_token]: compare in constant time
    ts: str | None  # when the event left Bitrix24's queue (Unix seconds, as sent)
    data: dict[str, Any]  # the payload's data, secrets removed
    data_hash: str  # SHA-256 of the canonical data, the same for the form and the JSON body

    def dedup_key(self) -> str:
        """(portal, event, ts, data hash): two events that differ in anything they carry never share it.

        The `b24v2:` prefix keeps it apart from the v1 keys stored before, `(portal, event, subject, ts)`, which
        merged different events of one second.
        """
        return f"b24v2:{self.member_id or self.domain or ''}:{self.event}:{self.ts or ''}:{self.data_hash}"


def parse_b24(payload: dict[str, Any]) -> Bitrix24Event:
    """Read the event name, subject and auth fields from a parsed Bitrix24 payload.

    Raises:
        ShapeError: the payload is not an object or has no non-empty string ``event``.
    """
    if not isinstance(payload, dict):
        raise ShapeError("Bitrix24 payload must be an object")
    event = payload.get("event")
    if not isinstance(event, str) or not event.strip():
        raise ShapeError("Bitrix24 payload has no 'event' (a non-empty string is required)")
    event = event.strip().upper()
    auth = payload.get("auth")
    auth = auth if isinstance(auth, dict) else {}
    raw = payload.get("data")
    ts = _text(payload.get("ts"))
    if ts is not None and not (ts.isdigit() and int(ts) <= MAX_TS):
        raise ShapeError(f"Bitrix24 'ts' must be Unix seconds up to {MAX_TS}")
    return Bitrix24Event(
        event=event,
        subject=subject_of(event, raw),
        member_id=_text(auth.get("member_id")),
        domain=_text(auth.get("domain")),
        application_token=_text(auth.get("application_token")),
        ts=ts,
        # data is an object for nearly every event; a few carry a number or a list, kept under "value".
        data=redact(
            raw if isinstance(raw, dict) else {} if raw in (None, [], "") else {"value": raw}
        ),
        data_hash=data_hash(raw),
    )


def strip_secrets(payload: dict[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``payload`` without tokens or other secret-named keys.

    Removes ``auth[access_token]``, ``auth[refresh_token]``, ``auth[application_token]`` and
    every key named like a secret at any depth (see ``app.secrets.redact``); this is what
    may be stored, logged and forwarded as the event's data.
    """
    stripped: dict[str, Any] = redact(payload)
    return stripped


def _text(value: Any) -> str | None:
    """A form value, or a JSON number, as a stripped non-empty string; else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
