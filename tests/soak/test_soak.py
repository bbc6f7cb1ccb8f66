"""`make soak`'s correctness part, short: a few hundred events through two API processes, two
relays and two workers while the shortened fault schedule plays; nothing lost, reordered, refused or
answered 500. (No timing: the stalls it prints are not asserted.)"""

from __future__ import annotations

from tests.soak.run import Plan, run

SHORT = Plan(
    events=300,
    rate=30,
    outage=3,
    pauses=3,
    target_503=2,
    visibility_timeout="3s",
    settle=240,
    durable=False,
)


async def test_short_soak_loses_nothing() -> None:
    report = await run(SHORT)
    report.print()
    assert report.accepted == report.sent == SHORT.events
    assert report.spooled > 0  # the PostgreSQL outage happened under load, and nobody got a 503
    assert report.failures == []
