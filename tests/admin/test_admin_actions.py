"""Replay, edit-and-replay, cancel, pause and resume: what changes, what is sent, what is audited."""

from __future__ import annotations

from tests.admin.support import (
    OPERATOR,
    VIEWER,
    AdminHub,
    Seeded,
    assert_problem,
    audit_rows,
    delivery_rows,
    event_rows,
)


async def test_replay_one_is_manual_and_audited(admin: AdminHub, seeded: Seeded) -> None:
    dead = seeded.deliveries["dead"]
    reply = await admin.client.post(
        f"/admin/v1/deliveries/{dead}/replay",
        json={"reason": "counterparty created in 1C"},
        headers=OPERATOR,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["status"], body["manual_next"]) == ("pending", True)
    [entry] = await audit_rows(admin.engine)
    assert (entry.actor, entry.action, str(entry.delivery_id), entry.count, entry.reason) == (
        "oscar",
        "replay",
        dead,
        1,
        "counterparty created in 1C",
    )
    assert entry.target == "erp"

    await admin.drain("erp")  # the fake target now answers 200
    delivery = (await admin.client.get(f"/admin/v1/deliveries/{dead}", headers=VIEWER)).json()
    assert delivery["status"] == "delivered"
    assert [(a["number"], a["http_status"], a["manual"]) for a in delivery["attempts"]] == [
        (1, 400, False),
        (2, 200, True),
    ]


async def test_replay_audit_records_the_previous_status(admin: AdminHub, seeded: Seeded) -> None:
    url = f"/admin/v1/deliveries/{seeded.deliveries['dead']}/replay"
    assert (await admin.client.post(url, headers=OPERATOR)).status_code == 200
    [entry] = await audit_rows(admin.engine)
    assert entry.details == {"previous_status": "dead"}


async def test_replay_without_a_body_and_of_an_unknown_delivery(
    admin: AdminHub, seeded: Seeded
) -> None:
    url = f"/admin/v1/deliveries/{seeded.deliveries['delivered']}/replay"
    reply = await admin.client.post(url, headers=OPERATOR)
    assert reply.json()["status"] == "pending"
    [entry] = await audit_rows(admin.engine)
    assert entry.reason is None
    missing = "/admin/v1/deliveries/00000000-0000-0000-0000-000000000000/replay"
    assert_problem(await admin.client.post(missing, headers=OPERATOR), 404)


async def test_edit_and_replay_needs_a_reason_and_changes_nothing_without(
    admin: AdminHub, seeded: Seeded
) -> None:
    url = f"/admin/v1/deliveries/{seeded.deliveries['dead']}/edit-replay"
    before = await delivery_rows(admin.engine)
    for body in (
        {"data": {"FIELDS": {"ID": "2"}}},
        {"data": {"FIELDS": {"ID": "2"}}, "reason": ""},
        {"data": {"FIELDS": {"ID": "2"}}, "reason": "   "},
        {"reason": "no data"},
    ):
        assert_problem(await admin.client.post(url, json=body, headers=OPERATOR), 422)
    assert await delivery_rows(admin.engine) == before
    assert await audit_rows(admin.engine) == []


async def test_edit_and_replay_sends_the_corrected_data_and_keeps_the_event(
    admin: AdminHub, seeded: Seeded
) -> None:
    dead = seeded.deliveries["dead"]
    events_before = await event_rows(admin.engine)
    corrected = {"FIELDS": {"ID": "2", "COMPANY_ID": "77"}, "password": "hunter2"}
    reply = await admin.client.post(
        f"/admin/v1/deliveries/{dead}/edit-replay",
        json={"data": corrected, "reason": "company was missing"},
        headers=OPERATOR,
    )
    assert reply.status_code == 200, reply.text
    # Secret-named keys are removed before the data is stored.
    assert reply.json()["payload_override"] == {"FIELDS": {"ID": "2", "COMPANY_ID": "77"}}
    await admin.drain("erp")

    request = admin.fake.requests[-1]
    assert request.path == "/erp"
    assert request.json()["data"] == {"FIELDS": {"ID": "2", "COMPANY_ID": "77"}}
    assert request.json()["subject"] == "deal/2"
    assert await event_rows(admin.engine) == events_before  # the original payload is kept
    event = await admin.client.get(f"/admin/v1/events/{seeded.events['deal2']}", headers=VIEWER)
    assert "COMPANY_ID" not in str(event.json()["payload"])
    actions = [(e.action, e.actor, e.reason, e.count) for e in await audit_rows(admin.engine)]
    assert actions == [
        ("replay", "oscar", "company was missing", 1),
        ("edit", "oscar", "company was missing", 1),
    ]


async def test_cancel_a_waiting_delivery_not_a_delivered_one(
    admin: AdminHub, seeded: Seeded
) -> None:
    contact = seeded.deliveries["contact"]
    reply = await admin.client.post(
        f"/admin/v1/deliveries/{contact}/cancel",
        json={"reason": "contact was a test"},
        headers=OPERATOR,
    )
    assert reply.json()["status"] == "cancelled"
    await admin.drain("ww")
    assert not [r for r in admin.fake.requests if r.json()["subject"] == "contact/134806"]
    [entry] = await audit_rows(admin.engine)
    assert (entry.action, entry.actor, str(entry.delivery_id), entry.reason) == (
        "cancel",
        "oscar",
        contact,
        "contact was a test",
    )

    delivered = f"/admin/v1/deliveries/{seeded.deliveries['delivered']}/cancel"
    assert_problem(await admin.client.post(delivered, headers=OPERATOR), 409)
    assert len(await audit_rows(admin.engine)) == 1


async def test_pause_and_resume_a_target(admin: AdminHub, seeded: Seeded) -> None:
    reply = await admin.client.post(
        "/admin/v1/targets/ww/pause", json={"reason": "WW maintenance"}, headers=OPERATOR
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["changed"] == 2
    targets = {
        t["name"]: t for t in (await admin.client.get("/admin/v1/targets", headers=VIEWER)).json()
    }
    ww = targets["ww"]
    assert (ww["kind"], ww["paused"], ww["paused_reason"], ww["paused_by"]) == (
        "walking_warehouse",
        True,
        "WW maintenance",
        "oscar",
    )
    assert ww["paused_at"] is not None and ww["breaker"] == "closed"
    assert (targets["erp"]["paused"], targets["log"]["paused"]) == (False, False)
    statuses = {str(r.id): r.status for r in await delivery_rows(admin.engine)}
    assert [statuses[seeded.deliveries[n]] for n in ("contact", "order_ww")] == ["held", "held"]

    reply = await admin.client.post(
        "/admin/v1/targets/ww/resume", json={"reason": "done"}, headers=OPERATOR
    )
    assert (reply.json()["changed"], reply.json()["paused"]) == (2, False)
    statuses = {str(r.id): r.status for r in await delivery_rows(admin.engine)}
    assert [statuses[seeded.deliveries[n]] for n in ("contact", "order_ww")] == [
        "pending",
        "pending",
    ]
    entries = [
        (e.action, e.actor, e.target, e.count, e.reason) for e in await audit_rows(admin.engine)
    ]
    assert entries == [
        ("pause", "oscar", "ww", 2, "WW maintenance"),
        ("resume", "oscar", "ww", 2, "done"),
    ]


async def test_pause_an_unknown_target_is_404(admin: AdminHub) -> None:
    for action in ("pause", "resume"):
        reply = await admin.client.post(f"/admin/v1/targets/nope/{action}", headers=OPERATOR)
        assert_problem(reply, 404)
    assert await audit_rows(admin.engine) == []
