"""`onec`: the CloudEvent POSTed to a 1C HTTP service (usually with Basic auth).

1C answers errors as text/html pages; the attempt's excerpt keeps that text for the operator.
"""

from __future__ import annotations

from app.hubconfig import OneCTarget as OneCSpec
from dispatch.targets.cloudevent import CloudEventTarget


class OneCTarget(CloudEventTarget):
    """A 1C HTTP service: 2xx delivered, the rest judged by HTTP status."""

    def __init__(self, name: str, spec: OneCSpec) -> None:
        super().__init__(name, spec.url, spec.auth)
