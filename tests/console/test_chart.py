"""The overview's chart geometry: bars per hour stacked delivered / retry / dead, scaled to the
busiest hour, nothing drawn outside the last 24 hours or for unknown targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.console import chart

NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
THIS_HOUR = NOW.replace(minute=0)


def test_bars_stack_and_scale_to_the_busiest_hour() -> None:
    rows = [
        ("erp", THIS_HOUR, "delivered", 6),
        ("erp", THIS_HOUR, "dead", 2),
        ("erp", THIS_HOUR - timedelta(hours=23), "retry", 4),
        ("erp", THIS_HOUR - timedelta(hours=24), "delivered", 99),  # older than the window
        ("gone", THIS_HOUR, "delivered", 50),  # no longer configured
    ]
    [erp, ww] = chart.build(["erp", "ww"], rows, now=NOW)
    assert erp.totals == {"delivered": 6, "retry": 4, "dead": 2}
    assert ww.totals == {"delivered": 0, "retry": 0, "dead": 0} and ww.rects == []
    last = [r for r in erp.rects if r.x == 23 * (chart.BAR + chart.GAP)]
    assert [(r.outcome, r.height) for r in last] == [("delivered", 36.0), ("dead", 12.0)]
    assert last[0].y == 12.0 and last[1].y == 0.0  # delivered at the bottom, dead on top
    [first] = [r for r in erp.rects if r.x == 0]
    assert (first.outcome, first.height, first.y) == ("retry", 24.0, 24.0)
    assert first.title == "10:00 UTC: 4 retry"
