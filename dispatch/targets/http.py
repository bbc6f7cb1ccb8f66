"""`http`: a generic endpoint; the CloudEvent signed with Standard Webhooks headers when a secret is set.

`webhook-signature` is `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`, so a
receiver can verify with any Standard Webhooks library (https://www.standardwebhooks.com/).
"""

from __future__ import annotations

import binascii
from datetime import UTC, datetime

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from app.hubconfig import HttpTarget as HttpSpec
from dispatch.targets.base import Outbound
from dispatch.targets.cloudevent import CloudEventTarget

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of the standard form, not a secret


def signer(name: str, secret: str) -> Webhook:
    """A Standard Webhooks signer for a configured secret.

    `whsec_<base64>` (the form Svix and the spec hand out) is used as is; any other value is the raw
    key bytes. The library would base64-decode a plain string, so those are passed as bytes.
    """
    if not secret:
        raise ValueError(f"target {name!r}: the signing secret is empty")
    try:
        if secret.startswith(SECRET_PREFIX):
            return Webhook(secret)
        return Webhook(secret.encode())
    # The messages never quote the secret.
    except EmptyWebhookSecretError:
        raise ValueError(f"target {name!r}: the signing secret is empty") from None
    except (binascii.Error, ValueError):
        raise ValueError(f"target {name!r}: the whsec_ secret is not valid base64") from None


class HttpTarget(CloudEventTarget):
    """A generic HTTP endpoint: 2xx delivered, the rest judged by HTTP status."""

    def __init__(self, name: str, spec: HttpSpec) -> None:
        super().__init__(name, spec.url, spec.auth)
        secret = spec.secret
        self._signer = None if secret is None else signer(name, secret.get_secret_value())

    def extra_headers(self, out: Outbound, body: bytes) -> dict[str, str]:
        """Standard Webhooks headers; the id is the delivery id, stable across attempts."""
        if self._signer is None:
            return {}
        msg_id = str(out.delivery_id)
        # Whole seconds: the signed timestamp and the header must be the same number.
        now = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()), UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(msg_id, now, body.decode()),
        }
