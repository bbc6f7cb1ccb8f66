"""`make soak` (python -m tests.soak --help): exits 1 when anything is lost, reordered, refused or
answered 5xx other than 503."""

from __future__ import annotations

import argparse
import asyncio
import sys

from tests.soak.run import Plan, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__)
    parser.add_argument("--events", type=int, default=Plan.events)
    parser.add_argument("--rate", type=float, default=Plan.rate, help="events per second")
    parser.add_argument("--subjects", type=int, default=Plan.subjects)
    parser.add_argument("--outage", type=float, default=Plan.outage, help="PostgreSQL down, s")
    parser.add_argument("--pauses", type=int, default=Plan.pauses)
    parser.add_argument("--visibility-timeout", default=Plan.visibility_timeout)
    parser.add_argument("--settle", type=float, default=Plan.settle, help="wait at the end, s")
    parser.add_argument("--keep", action="store_true", help="keep the state dir and logs")
    args = parser.parse_args()
    plan = Plan(
        events=args.events,
        rate=args.rate,
        subjects=args.subjects,
        outage=args.outage,
        pauses=args.pauses,
        visibility_timeout=args.visibility_timeout,
        settle=args.settle,
    )
    report = asyncio.run(run(plan, keep=args.keep))
    report.print()
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
