"""The overview's small charts: delivered / retrying / dead attempts per hour, as SVG geometry.

The server computes every rectangle; the template only draws them (no script, no library).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

HOURS = 24
BAR, GAP, HEIGHT = 8, 2, 48
OUTCOMES = ("delivered", "retry", "dead")  # bottom to top
WIDTH = HOURS * (BAR + GAP)


@dataclass(frozen=True)
class Rect:
    x: int
    y: float
    height: float
    outcome: str
    title: str


@dataclass
class Series:
    """One target's last 24 hours: counts per outcome per hour, and the bars to draw."""

    target: str
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    rects: list[Rect] = field(default_factory=list)


def _hours(now: datetime) -> list[datetime]:
    top = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [top - timedelta(hours=HOURS - 1 - i) for i in range(HOURS)]


def build(
    targets: list[str],
    rows: list[tuple[str, datetime, str, int]],
    now: datetime | None = None,
) -> list[Series]:
    """Series for every target from `queries.activity` rows, scaled to the busiest hour overall."""
    hours = _hours(now or datetime.now(UTC))
    index = {hour: i for i, hour in enumerate(hours)}
    counts: dict[str, list[dict[str, int]]] = {t: [{} for _ in hours] for t in targets}
    for target, hour, outcome, count in rows:
        slot = index.get(hour.astimezone(UTC))
        if target in counts and slot is not None and outcome in OUTCOMES:
            counts[target][slot][outcome] = count
    peak = max((sum(c.values()) for per in counts.values() for c in per), default=0) or 1
    series = []
    for target in targets:
        line = Series(target)
        for slot, by_outcome in enumerate(counts[target]):
            y = float(HEIGHT)
            for outcome in OUTCOMES:
                count = by_outcome.get(outcome, 0)
                line.totals[outcome] += count
                if count:
                    height = max(HEIGHT * count / peak, 1.0)
                    y -= height
                    label = f"{hours[slot]:%H}:00 UTC: {count} {outcome}"
                    line.rects.append(Rect(slot * (BAR + GAP), y, height, outcome, label))
        series.append(line)
    return series
