"""The hub configuration the ingest tests run with: the fixture portals and their tokens."""

from __future__ import annotations

from typing import Any

ONEC_USER, ONEC_PASSWORD = "exchange", "s3cret-1c-password"

PORTALS = [
    {
        "member_id": "010b6886ebc205e43ae65000ee00addb",
        "application_token": "3c6c9248ec54af6bea1159b43ee0ab32",
    },
    {
        "member_id": "d897063e1ce7c5eb9f04b9751eef5915",
        "domain": "some-domain.bitrix24.ru",
        "application_token": "jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
    },
    {
        "member_id": "995c2cbaf3edb993c1d640820f802149",
        "application_token": "0zhkhllfzn5z3dfuulqqerwr3wduyx42",
    },
    # Matched by domain only: the portal's member_id is not configured.
    {"domain": "some-domain.bitrix24.com", "application_token": "51856fefc120afa4b628cc82d3935cce"},
]

HUB_CONFIG: dict[str, Any] = {
    "sources": {
        "bitrix24": {"portals": PORTALS},
        "onec": {"auth": {"type": "basic", "username": ONEC_USER, "password": ONEC_PASSWORD}},
    },
    "targets": {
        "erp": {"kind": "onec", "url": "http://127.0.0.1:9/erp", "allow_private": True},
        "ww": {"kind": "walking_warehouse", "url": "http://127.0.0.1:9/ww", "allow_private": True},
        "crm": {
            "kind": "bitrix24",
            "webhook_url": "http://127.0.0.1:9/rest/1/code/",
            "allow_private": True,
        },
        "audit": {"kind": "http", "url": "http://127.0.0.1:9/audit", "allow_private": True},
    },
    "routes": [
        {
            "name": "deals-to-erp",
            "from": {"source": "bitrix24", "events": ["ONCRMDEAL*"]},
            "to": ["erp"],
        },
        {"name": "everything-to-audit", "from": {"source": "bitrix24"}, "to": ["audit"]},
        {
            "name": "orders-to-ww-and-crm",
            "from": {"source": "onec", "events": ["Документ.ЗаказКлиента.*"]},
            "to": [
                "ww",
                {
                    "target": "crm",
                    "method": "crm.timeline.comment.add",
                    "params": {"fields": {"ENTITY_TYPE": "deal", "COMMENT": "{{ data.number }}"}},
                },
            ],
        },
        {"name": "1c-to-audit", "from": {"source": "onec"}, "to": ["audit"]},
    ],
}
