"""CloudEvents 1.0 in structured JSON mode: the body `onec`, `walking_warehouse` and `http` receive.

`build_cloudevent` turns a stored event into the envelope; `CloudEventTarget` is the shape the three
CloudEvent kinds share (a kind only adds headers or changes how a reply is judged).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from app.hubconfig import BasicAuth, BearerAuth
from dispatch.targets.base import AttemptResult, Outbound, Reply, Verdict, trace_headers
from dispatch.targets.transport import auth_headers, encode_json, judge_status, post

CONTENT_TYPE = "application/cloudevents+json"
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


def cloudevent_headers(out: Outbound) -> dict[str, str]:
    """Headers every CloudEvent delivery carries, the same on each attempt but `traceparent`."""
    return {
        "Content-Type": CONTENT_TYPE,
        "Idempotency-Key": str(out.delivery_id),
        **trace_headers(out),
    }


class CloudEventTarget:
    """POST the CloudEvent as JSON to `url` with optional Basic/Bearer auth; 2xx is delivered."""

    def __init__(self, name: str, url: str, auth: BasicAuth | BearerAuth | None) -> None:
        self.name = name
        self.url = url
        self._auth_headers, self._secrets = auth_headers(auth)

    async def send(
        self,
        session: aiohttp.ClientSession,
        out: Outbound,
        timeout: float,  # noqa: ASYNC109 - goes to aiohttp.ClientTimeout(total=...)
    ) -> AttemptResult:
        """POST the CloudEvent once and judge the reply."""
        body = encode_json(out.event)
        headers = {**cloudevent_headers(out), **self._auth_headers, **self.extra_headers(out, body)}
        return await post(
            session,
            self.url,
            body=body,
            headers=headers,
            timeout=timeout,
            judge=self.judge,
            secrets=self._secrets,
        )

    def extra_headers(self, out: Outbound, body: bytes) -> dict[str, str]:
        """Kind-specific headers (signatures); none by default."""
        return {}

    def judge(self, reply: Reply) -> Verdict:
        """Kind-specific reading of a reply; by HTTP status by default."""
        return judge_status(reply)
