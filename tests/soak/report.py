"""What the soak found: lost, duplicated and reordered deliveries, refused and failed requests,
delivery stalls, memory and PostgreSQL connections."""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from tests.soak.rig import Receipt


@dataclass(frozen=True)
class Sent:
    """One webhook the load sent, and how the hub answered (status 0: no answer)."""

    index: int
    subject: str
    targets: tuple[str, ...]
    status: int
    event_id: str | None
    replied_at: float


class _Sinks(Protocol):
    @property
    def erp(self) -> _Sink: ...
    @property
    def audit(self) -> _Sink: ...


class _Sink(Protocol):
    receipts: list[Receipt]


@dataclass
class Report:
    sent: int = 0
    accepted: int = 0
    spooled: int = 0
    refused: int = 0  # 503
    unexpected: Counter[int] = field(default_factory=Counter)  # any other non-2xx, 0 = no answer
    lost: list[tuple[str, str]] = field(default_factory=list)  # (target, event id)
    duplicates: int = 0
    reordered: int = 0
    stalls: dict[str, float] = field(default_factory=dict)
    rss: tuple[dict[str, int], dict[str, int]] = ({}, {})
    connections: list[int] = field(default_factory=list)
    admin_statuses: list[int] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """Why the run failed (empty: it passed)."""
        admin_5xx = [s for s in self.admin_statuses if s >= 500 and s != 503]
        found = {
            "events lost": len(self.lost),
            "deliveries out of order": self.reordered,
            "webhooks refused (503)": self.refused,
            "webhooks answered other than 200/202/503": sum(self.unexpected.values()),
            "admin requests answered 5xx": len(admin_5xx),
        }
        return [f"{count} {what}" for what, count in found.items() if count]

    def print(self) -> None:
        print("soak results")
        print(f"  webhooks sent          {self.sent}")
        print(f"  accepted               {self.accepted} ({self.spooled} of them spooled, 202)")
        print(f"  refused (503)          {self.refused}")
        print(
            f"  other replies          {dict(self.unexpected) or 0} (5xx other than 503 included)"
        )
        print(f"  lost                   {len(self.lost)}")
        print(f"  duplicate receipts     {self.duplicates}")
        print(f"  ordering violations    {self.reordered}")
        print(f"  admin pause/resume     {dict(Counter(self.admin_statuses))}")
        for target, stall in sorted(self.stalls.items()):
            print(
                f"  longest stall {target:8} {stall:.1f} s (gap between receipts with work waiting)"
            )
        start, end = self.rss
        for name in sorted(set(start) | set(end)):
            before, after = start.get(name), end.get(name)
            print(f"  RSS {name:22} {_mib(before)} -> {_mib(after)}")
        print(f"  ended on their own     {', '.join(self.exited) or 'none'} (restarted)")
        if self.connections:
            print(
                f"  PostgreSQL connections first {self.connections[0]}, "
                f"max {max(self.connections)}, last {self.connections[-1]}"
            )
        print("FAILED: " + "; ".join(self.failures) if self.failures else "PASSED")


def analyse(
    sent: list[Sent],
    sinks: _Sinks,
    *,
    final: bool,
    excused: dict[str, list[tuple[float, float]]] | None = None,
) -> Report:
    """Compare what was accepted with what the sinks received (2xx answers only). A stall that
    overlaps a window in `excused[target]` (PostgreSQL stopped, the target down) is not counted."""
    report = Report(sent=len(sent))
    accepted = [s for s in sent if s.status in (200, 202) and s.event_id]
    report.accepted = len(accepted)
    report.spooled = sum(1 for s in accepted if s.status == 202)
    report.refused = sum(1 for s in sent if s.status == 503)
    report.unexpected = Counter(s.status for s in sent if s.status not in (200, 202, 503))
    order = {s.event_id: s.index for s in accepted}
    for target, sink in (("erp", sinks.erp), ("audit", sinks.audit)):
        delivered = [r for r in sink.receipts if 200 <= r.status < 300]
        firsts: dict[str, float] = {}
        for receipt in delivered:
            firsts.setdefault(receipt.event_id, receipt.at)
        expected = [s for s in accepted if target in s.targets]
        report.lost += [(target, str(s.event_id)) for s in expected if s.event_id not in firsts]
        if not final:
            continue
        counts = Counter(r.delivery_id for r in delivered)
        report.duplicates += sum(n - 1 for n in counts.values() if n > 1)
        report.reordered += _reordered(delivered, order)
        committed = [(s.replied_at, firsts.get(str(s.event_id), float("inf"))) for s in expected]
        windows = (excused or {}).get(target, [])
        report.stalls[target] = _longest_stall(sorted(firsts.values()), committed, windows)
    return report


def _reordered(delivered: list[Receipt], order: dict[str | None, int]) -> int:
    """Receipts of a subject that arrived after a later-accepted event of the same subject."""
    newest: dict[str, int] = defaultdict(lambda: -1)
    seen: set[str] = set()
    count = 0
    for receipt in delivered:
        if receipt.event_id in seen:
            continue
        seen.add(receipt.event_id)
        index = order.get(receipt.event_id, -1)
        if index < newest[receipt.subject]:
            count += 1
        newest[receipt.subject] = max(newest[receipt.subject], index)
    return count


def _longest_stall(
    receipts: list[float], events: list[tuple[float, float]], excused: list[tuple[float, float]]
) -> float:
    """The longest gap between receipts while an accepted event waited for this target."""
    events.sort()
    waiting: list[float] = []
    longest, pending = 0.0, 0
    for before, after in itertools.pairwise(receipts):
        while pending < len(events) and events[pending][0] < before:
            heapq.heappush(waiting, events[pending][1])
            pending += 1
        while waiting and waiting[0] <= before:
            heapq.heappop(waiting)
        if waiting and not any(start < after and before < end for start, end in excused):
            longest = max(longest, after - before)
    return longest


def _mib(size: int | None) -> str:
    return "    -   " if size is None else f"{size / 2**20:6.1f} MiB"
