"""Bearer tokens: 401 without or with a wrong one, 403 for a viewer on every mutating endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from app.admin.auth import match_token
from app.hubconfig import AdminToken
from tests.admin.support import (
    OPERATOR,
    VIEWER,
    VIEWER_TOKEN,
    AdminHub,
    Seeded,
    assert_problem,
    audit_rows,
    delivery_rows,
    job_rows,
)

SOME_ID = "00000000-0000-0000-0000-000000000001"
READS = [
    "/admin/v1/deliveries",
    f"/admin/v1/deliveries/{SOME_ID}",
    "/admin/v1/events",
    f"/admin/v1/events/{SOME_ID}",
    f"/admin/v1/replays/{SOME_ID}",
    "/admin/v1/targets",
    "/admin/v1/stats",
    "/admin/v1/audit",
]
# (path with {dead} for the seeded dead delivery, body)
WRITES: list[tuple[str, dict[str, Any] | None]] = [
    ("/admin/v1/deliveries/{dead}/replay", {"reason": "r"}),
    ("/admin/v1/deliveries/{dead}/edit-replay", {"data": {"x": 1}, "reason": "r"}),
    ("/admin/v1/deliveries/{dead}/cancel", {"reason": "r"}),
    ("/admin/v1/replays", {"status": ["dead"], "reason": "r"}),
    ("/admin/v1/replays", {"status": ["dead"], "dry_run": True}),
    (f"/admin/v1/replays/{SOME_ID}/cancel", None),
    ("/admin/v1/targets/erp/pause", {"reason": "r"}),
    ("/admin/v1/targets/erp/resume", {"reason": "r"}),
]
WRONG = [
    {},
    {"authorization": "Bearer not-a-configured-token"},
    {"authorization": f"Basic {VIEWER_TOKEN}"},
    {"authorization": "Bearer "},
]


@pytest.mark.parametrize("headers", WRONG)
async def test_reads_need_a_valid_token(admin: AdminHub, headers: dict[str, str]) -> None:
    for path in READS:
        reply = await admin.client.get(path, headers=headers)
        assert_problem(reply, 401)
        assert reply.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "send Authorization: Bearer <admin token>"),
        ({"authorization": "Bearer "}, "send Authorization: Bearer <admin token>"),
        ({"authorization": "Bearer not-a-configured-token"}, "the admin token is not valid"),
    ],
)
async def test_the_401_says_whether_the_token_is_missing_or_wrong(
    admin: AdminHub, headers: dict[str, str], detail: str
) -> None:
    reply = await admin.client.get("/admin/v1/targets", headers=headers)
    assert_problem(reply, 401)
    assert reply.json()["detail"] == detail


@pytest.mark.parametrize("headers", WRONG[:2])
async def test_writes_need_a_valid_token(admin: AdminHub, headers: dict[str, str]) -> None:
    for path, body in WRITES:
        reply = await admin.client.post(path.format(dead=SOME_ID), json=body, headers=headers)
        assert_problem(reply, 401)
        assert reply.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("path", "body"), WRITES)
async def test_a_viewer_cannot_change_anything(
    admin: AdminHub, seeded: Seeded, path: str, body: dict[str, Any] | None
) -> None:
    before = await delivery_rows(admin.engine)
    url = path.format(dead=seeded.deliveries["dead"])
    problem = assert_problem(await admin.client.post(url, json=body, headers=VIEWER), 403)
    assert "vera" in problem["detail"]
    assert await delivery_rows(admin.engine) == before
    assert await audit_rows(admin.engine) == []
    assert await job_rows(admin.engine) == []
    reply = await admin.client.get("/admin/v1/targets", headers=VIEWER)
    assert {t["name"]: t["paused"] for t in reply.json()} == {
        "erp": False,
        "log": False,
        "ww": False,
    }


async def test_both_roles_read(admin: AdminHub) -> None:
    for headers in (VIEWER, OPERATOR):
        for path in READS:
            reply = await admin.client.get(path, headers=headers)
            assert reply.status_code in (200, 404), (path, reply.text)


def test_match_token_compares_hashes_of_every_entry() -> None:
    sha = "d74ff0ee8da3b9806b18c877dbf29bbde50b5bd8e4dad7a3a725000feb82e8f1"  # sha256("pass")
    tokens = [
        AdminToken(name="a", role="viewer", token_sha256="0" * 64),
        AdminToken(name="b", role="operator", token_sha256=sha),
    ]
    assert match_token("pass", tokens) == tokens[1]
    assert match_token("Pass", tokens) is None
    assert match_token("", tokens) is None
