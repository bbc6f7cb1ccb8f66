"""CloudEvents 1.0 in structured JSON mode: the body `onec`, `walking_warehouse` and `http` receive.

`app.outbox.envelope.build_cloudevent` turns a stored event into the envelope; `CloudEventTarget` is
the shape the three CloudEvent kinds share (a kind only adds headers or changes how a reply is judged).
"""

from __future__ import annotations

import aiohttp

from app.hubconfig import BasicAuth, BearerAuth
from dispatch.targets.base import AttemptResult, Outbound, Reply, Verdict, trace_headers
from dispatch.targets.transport import auth_headers, encode_json, judge_status, post

CONTENT_TYPE = "application/cloudevents+json"


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
