"""Echo suppression (`echo_user_id` on a portal): the hub's own Bitrix24 writes do not come back as new work.

A `bitrix24` target that updates a record (crm.deal.update, crm.item.update, tasks.task.update) makes the portal fire
ONCRM…UPDATE for it, which a route may send on to 1C, which writes back: a loop. The hub remembers each such write
(`bitrix24_writes`). When an enriched event's record was last changed by `echo_user_id` (the user the hub's calls are
made as) and that change follows a write the hub made to the same record, within WINDOW, the delivery ends
`suppressed`, naming the write. A change by anyone else, or one long after the write, is delivered as usual.
On an application portal with `offline`, the `auth_connector` already keeps the hub's writes out of the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from app.bitrix24.portals import portal_key, target_portal
from app.bitrix24.records import Read
from app.hubconfig import Bitrix24Target as Bitrix24Spec
from app.hubconfig import Portal
from dispatch.targets.bitrix24 import Bitrix24Target

if TYPE_CHECKING:
    from dispatch.deliver import Claimed, Sent
    from dispatch.runtime import Runtime

WINDOW = timedelta(minutes=10)  # a change this long after the hub's write is somebody's own
SKEW = timedelta(seconds=30)  # the portal's clock against ours
# (modifying user, modification time) in each record style: classic CRM, crm.item, tasks.
_STYLES = (
    ("MODIFY_BY_ID", "DATE_MODIFY"),
    ("updatedBy", "updatedTime"),
    ("changedBy", "changedDate"),
)

_REMEMBER = """
INSERT INTO bitrix24_writes (portal, subject, method, delivery_id, written_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[])
"""
_WRITES = text("""
SELECT id, subject, method, delivery_id, written_at FROM bitrix24_writes
WHERE portal = :portal AND subject = ANY(CAST(:subjects AS text[])) AND written_at >= :since
ORDER BY written_at
""")


async def remember_writes(conn: Any, rt: Runtime, target: str, sent: list[Sent]) -> None:
    """Keep the records a `bitrix24` target's delivered calls wrote, on a portal that suppresses echoes."""
    spec, sender = rt.settings.hub.targets.get(target), rt.targets.get(target)
    if not isinstance(spec, Bitrix24Spec) or not isinstance(sender, Bitrix24Target):
        return
    portal = target_portal(rt.settings.hub, spec)
    if portal is None or portal.echo_user_id is None:
        return
    rows = [
        (
            portal_key(portal),
            subject,
            item.claimed.outbound.method or "",
            item.claimed.delivery_id,
            item.started_at,
        )
        for item in sent
        if item.result.outcome == "delivered"
        and (subject := sender.written_subject(item.claimed.outbound)) is not None
    ]
    if rows:
        await conn.execute(_REMEMBER, *(list(column) for column in zip(*rows, strict=True)))


async def echoes(
    rt: Runtime, portal: Portal, group: list[Claimed], reads: Mapping[str, Read]
) -> dict[int, str]:
    """The deliveries of ``group`` that are the hub's own echo: id(claimed) -> what the suppression names."""
    if portal.echo_user_id is None:
        return {}
    changed = {}
    for claimed in group:
        subject = claimed.outbound.event["subject"]
        read = reads.get(subject)
        change = _last_change(read.record if read else None)
        if change is not None and change[0] == str(portal.echo_user_id):
            changed[id(claimed)] = (subject, change[1])
    if not changed:
        return {}
    since = min(at for _, at in changed.values()) - WINDOW
    subjects = sorted({subject for subject, _ in changed.values()})
    async with rt.engine.connect() as conn:
        writes = (
            await conn.execute(
                _WRITES, {"portal": portal_key(portal), "subjects": subjects, "since": since}
            )
        ).all()
    found = {}
    for key, (subject, at) in changed.items():
        match = [
            w for w in writes if w.subject == subject and at - WINDOW <= w.written_at <= at + SKEW
        ]
        if match:
            write = match[-1]
            found[key] = (
                f"echo of the hub's write #{write.id} ({write.method} by delivery {write.delivery_id}"
                f" at {write.written_at:%Y-%m-%d %H:%M:%S}): changed last by user {portal.echo_user_id}"
            )
    return found


def _last_change(record: Any) -> tuple[str, datetime] | None:
    """(who, when) of the record's last change, in whichever style its method returns."""
    if not isinstance(record, Mapping):
        return None
    for by, at in _STYLES:
        if record.get(by) is not None and isinstance(record.get(at), str):
            try:
                when = datetime.fromisoformat(record[at])
            except ValueError:
                return None
            return str(record[by]), when
    return None
