"""Extract the identity of a Bitrix24 event from its parsed payload.

The payload is the PHP-style form read by ``parse_php_form`` or a JSON body with the same
structure (where ids and ``ts`` may be numbers). Bitrix24 sends no event id; the hub
identifies an event by ``(member_id, event, subject, ts)`` (CONTRACT.md, "Event identity").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.secrets import redact
from app.sources.errors import ShapeError

# Entity part of the event name (after ON/ONCRM, before the verb) -> subject prefix.
# Matched exactly, so ONTASKCOMMENTADD (a comment id) never poses as task/{id}.
ENTITIES: dict[str, str] = {
    "DEAL": "deal",
    "CONTACT": "contact",
    "LEAD": "lead",
    "COMPANY": "company",
    "INVOICE": "invoice",
    "QUOTE": "quote",
    "ACTIVITY": "activity",
    "PRODUCT": "product",
    "TASK": "task",
    "TASKCOMMENT": "task-comment",
    "TIMELINECOMMENT": "timeline-comment",
    "USER": "user",
    "CALENDAR": "calendar",
    "CALENDARENTRY": "calendar",
}
_DYNAMIC_ITEM = "DYNAMICITEM"  # smart-process items: the subject also names the process
# Trailing verbs of Bitrix24 event names; longest first so UNREGISTER is not read as REGISTER.
VERBS = (
    "MOVETOCATEGORY",
    "UNREGISTER",
    "SETSTATUS",
    "UNINSTALL",
    "REGISTER",
    "INSTALL",
    "PAYMENT",
    "UPDATE",
    "DELETE",
    "ACTION",
    "EXPOSE",
    "ADD",
)
# Where the record id lives: tasks send FIELDS_AFTER (FIELDS_BEFORE on delete), CRM FIELDS.
_FIELD_SETS = ("FIELDS_AFTER", "FIELDS_BEFORE", "FIELDS")


@dataclass(frozen=True)
class Bitrix24Event:
    """A Bitrix24 event reduced to what routes, deduplicates and authenticates it."""

    event: str  # upper-case, e.g. "ONCRMDEALUPDATE"
    subject: str  # "deal/7405", "dynamic-1032/21", or just the entity when no id was sent
    member_id: str | None  # auth[member_id]: picks the portal
    domain: str | None  # auth[domain]: picks the portal when member_id is absent
    application_token: str | None  # auth[application_token]: compare in constant time
    ts: str | None  # when the event left Bitrix24's queue (Unix seconds, as sent)
    data: dict[str, Any]  # the payload's data, secrets removed


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
    data = payload.get("data")
    # data is a dict for every real event; "undefined" (None) or an empty list mean none.
    data = data if isinstance(data, dict) else {}
    return Bitrix24Event(
        event=event,
        subject=event_subject(event, data),
        member_id=_text(auth.get("member_id")),
        domain=_text(auth.get("domain")),
        application_token=_text(auth.get("application_token")),
        ts=_text(payload.get("ts")),
        data=redact(data),
    )


def strip_secrets(payload: dict[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``payload`` without tokens or other secret-named keys.

    Removes ``auth[access_token]``, ``auth[refresh_token]``, ``auth[application_token]`` and
    every key named like a secret at any depth (see ``app.secrets.redact``); this is what
    may be stored, logged and forwarded as the event's data.
    """
    stripped: dict[str, Any] = redact(payload)
    return stripped


def event_subject(event: str, data: dict[str, Any]) -> str:
    """Build the subject ``{entity}/{ID}`` for an (upper-case) event name and its data."""
    entity_key = _entity_part(event)
    record_id, fields = _record_id(data)
    if entity_key == _DYNAMIC_ITEM:
        type_id = _text(fields.get("ENTITY_TYPE_ID"))
        entity = f"dynamic-{type_id}" if type_id else "dynamic"
    else:
        entity = ENTITIES.get(entity_key, entity_key.lower())
    return f"{entity}/{record_id}" if record_id else entity


def _entity_part(event: str) -> str:
    """``ONCRMDEALUPDATE`` -> ``DEAL``; unknown verbs leave the rest whole."""
    for prefix in ("ONCRM", "ON"):
        if event.startswith(prefix) and len(event) > len(prefix):
            event = event[len(prefix) :]
            break
    for verb in VERBS:
        if event.endswith(verb) and len(event) > len(verb):
            return event[: -len(verb)]
    return event


def _record_id(data: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Find the record id and the field set it came from."""
    for name in _FIELD_SETS:
        fields = data.get(name)
        if isinstance(fields, dict):
            record_id = _text(fields.get("ID"))
            if record_id:
                return record_id, fields
    # Calendar events put the id straight into data (data[id]).
    record_id = _text(data.get("ID")) or _text(data.get("id"))
    fields = data.get("FIELDS")
    return record_id, fields if isinstance(fields, dict) else {}


def _text(value: Any) -> str | None:
    """A form value, or a JSON number, as a stripped non-empty string; else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
