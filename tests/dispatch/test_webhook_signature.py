"""http targets: Standard Webhooks headers, checked by hand (HMAC-SHA256) and by the library."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

import aiohttp
import pytest
from standardwebhooks import Webhook

from app.hubconfig import HttpTarget as HttpSpec
from dispatch.targets import build_target
from dispatch.targets.base import Outbound
from tests.fake_target import FakeTarget, Received

RAW_SECRET = "not-base64: a plain shared secret!"
KEY = bytes(range(32))
WHSEC = "whsec_" + base64.b64encode(KEY).decode()


def expected_signature(key: bytes, request: Received) -> str:
    """The spec's algorithm, independently of the library: v1,base64(HMAC-SHA256(id.ts.body))."""
    signed = b".".join(
        [
            request.headers["webhook-id"].encode(),
            request.headers["webhook-timestamp"].encode(),
            request.body,
        ]
    )
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def deliver(
    secret: str | None, url: str, session: aiohttp.ClientSession, out: Outbound
) -> None:
    spec = HttpSpec.model_validate({"kind": "http", "url": url, "secret": secret})
    result = await build_target("audit", spec).send(session, out, 5)
    assert result.outcome == "delivered"


@pytest.mark.parametrize(
    ("secret", "key", "verifier"),
    [
        (RAW_SECRET, RAW_SECRET.encode(), Webhook(RAW_SECRET.encode())),
        (WHSEC, KEY, Webhook(WHSEC)),
    ],
    ids=["raw", "whsec"],
)
async def test_signature(
    secret: str,
    key: bytes,
    verifier: Webhook,
    fake_target: FakeTarget,
    session: aiohttp.ClientSession,
    make_outbound: Callable[..., Outbound],
) -> None:
    out = make_outbound()
    await deliver(secret, fake_target.url, session, out)

    [request] = fake_target.requests
    assert request.headers["webhook-id"] == str(out.delivery_id)
    assert request.headers["webhook-timestamp"].isdigit()
    assert request.headers["webhook-signature"] == expected_signature(key, request)
    headers = {k: v for k, v in request.headers.items()}
    assert verifier.verify(request.body, headers) == out.event


async def test_webhook_id_is_the_delivery_id_on_every_attempt(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: Callable[..., Outbound]
) -> None:
    out = make_outbound()
    await deliver(WHSEC, fake_target.url, session, out)
    await deliver(WHSEC, fake_target.url, session, out)
    ids = {r.headers["webhook-id"] for r in fake_target.requests}
    assert ids == {str(out.delivery_id)}


async def test_no_secret_no_signature(
    fake_target: FakeTarget, session: aiohttp.ClientSession, make_outbound: Callable[..., Outbound]
) -> None:
    await deliver(None, fake_target.url, session, make_outbound())
    headers = fake_target.requests[0].headers
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature"} & set(headers)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_%%%"])
def test_unusable_secret_is_refused_without_quoting_it(secret: str) -> None:
    spec = HttpSpec.model_validate({"kind": "http", "url": "https://h.example/", "secret": secret})
    with pytest.raises(ValueError, match="target 'audit'") as caught:
        build_target("audit", spec)
    assert "%%%" not in str(caught.value)
