"""The CloudEvent (1.0, structured JSON) a target gets for a stored event: built once, here, for the
targets that send it and for the console that shows it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# The `source` column's value -> the name used in CloudEvents `source` URNs and `type` prefixes.
_SOURCE_NAMES = {"bitrix24": "bitrix24", "onec": "1c"}


def build_cloudevent(event_row: Mapping[str, Any]) -> dict[str, Any]:
    """The CloudEvent for a row with the columns of `app.models.Event`.

    Bitrix24 events carry the portal (`origin`) in their source URN and their whole parsed payload
    as data; 1C events carry the object's data (type, ref and version are in the envelope and the
    subject). The time is when the event happened if the sender said so, else when we received it.
    """
    source = str(event_row["source"])
    name = _SOURCE_NAMES.get(source, source)
    origin = event_row.get("origin")
    urn = f"urn:mastermobile:{name}"
    if origin and source == "bitrix24":
        urn = f"{urn}:{origin}"
    when = event_row.get("occurred_at") or event_row["received_at"]
    payload = event_row["payload"]
    extensions = {}
    if source == "onec" and isinstance(payload, Mapping) and "data" in payload:
        # 1C payloads are stored as the hub's envelope; targets get the object's own data, and
        # the version it was read at as the extension attribute `dataversion` (when 1C sent one).
        if payload.get("data_version"):
            extensions["dataversion"] = str(payload["data_version"])
        payload = payload["data"]
    return {
        "specversion": "1.0",
        "id": str(event_row["id"]),
        "source": urn,
        "type": f"{name}.{event_row['type']}",
        "subject": event_row["subject"],
        "time": rfc3339_utc(when),
        "datacontenttype": "application/json",
        **extensions,
        "data": payload,
    }


def rfc3339_utc(when: datetime) -> str:
    """`2025-12-18T08:38:44Z` (fractions kept when present); a naive time is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
