"""`make mutation`: mutmut over the modules that guard data, order and access, then the kill rate.

One embedded PostgreSQL 16 and one Valkey serve the whole run: a database and a Redis db index per
mutmut worker (see tests/mutation/slots.py), so a mutant's tests do not start servers of their own.
What is mutated and which tests run is `[tool.mutmut]` in pyproject.toml. Every run starts from a
fresh `mutants/` directory, so the figures never mix results of older code or tests.

    uv run python -m tests.mutation.run [--max-children N] [--keep] [MUTANT_NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg

from app.embedded import EmbeddedServers, remove_state
from app.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = ROOT / "mutants"

# mutmut's exit codes per mutant (mutmut/stats.py), folded into what the kill rate counts.
_KILLED = {1, 3, 24, -24, 152, 255, 36, 37}  # failing tests, timeouts, type check
_SURVIVED = {0}
_NO_TESTS = {5, 33}


async def _create_databases(admin_url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _slots(database_url: str, redis_url: str, count: int, lock_dir: Path) -> list[dict[str, str]]:
    base, _, _ = database_url.rpartition("/")
    names = [f"mmhub_mutation_{i}" for i in range(count)]
    asyncio.run(_create_databases(database_url.replace("+asyncpg", ""), names))
    redis_base = redis_url.rpartition("/")[0]
    slots = []
    for i, name in enumerate(names):
        url = f"{base}/{name}"
        upgrade(url)  # once here; each session's own upgrade then finds nothing to do
        slots.append(
            {
                "lock": str(lock_dir / f"slot-{i}.lock"),
                "database_url": url,
                "redis_url": f"{redis_base}/{i + 1}",
            }
        )
    return slots


def report(mutants: Path = MUTANTS) -> float | None:
    """Print mutants and kill rate per module from mutants/**/*.meta; returns the overall rate."""
    rows = []
    total: Counter[str] = Counter()
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"].values()
        counts: Counter[str] = Counter()
        for code in codes:
            if code in _KILLED:
                counts["killed"] += 1
            elif code in _SURVIVED:
                counts["survived"] += 1
            elif code in _NO_TESTS:
                counts["no tests"] += 1
            elif code is None:
                counts["not checked"] += 1
            else:
                counts["suspicious"] += 1
        if not codes:
            continue
        rows.append((str(meta.relative_to(mutants))[: -len(".meta")], counts))
        total.update(counts)
    if not rows:
        print("no mutants found under mutants/")
        return None

    def line(name: str, c: Counter[str]) -> str:
        checked = c["killed"] + c["survived"] + c["no tests"] + c["suspicious"]
        rate = f"{100 * c['killed'] / checked:5.1f} %" if checked else "    -  "
        return (
            f"{name:40} {sum(c.values()):7} {c['killed']:7} {c['survived']:8} {c['no tests']:8}"
            f" {c['suspicious'] + c['not checked']:6}  {rate}"
        )

    print()
    print(
        f"{'module':40} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'other':>6}  kill rate"
    )
    for name, counts in rows:
        print(line(name, counts))
    print(line("TOTAL", total))
    checked = total["killed"] + total["survived"] + total["no tests"] + total["suspicious"]
    rate = 100 * total["killed"] / checked if checked else 0.0
    print(
        f"\nkill rate {rate:.1f} % (target >= 85 %); `uv run mutmut results` lists the survivors,"
    )
    print(
        "`uv run mutmut show NAME` shows one; tests/mutation/SURVIVORS.md says why some are left."
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ (mutmut's cache)")
    parser.add_argument("--report-only", action="store_true", help="print the last run's figures")
    parser.add_argument("--mutants-dir", type=Path, default=MUTANTS, help="for --report-only")
    parser.add_argument("mutants", nargs="*", help="only these mutants (mutmut names, globs)")
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.report_only:
        return 0 if report(args.mutants_dir) is not None else 1
    if not args.keep:
        shutil.rmtree(MUTANTS, ignore_errors=True)

    state = Path(tempfile.mkdtemp(prefix="mmhub-mutation-"))
    state.chmod(0o755)  # the PostgreSQL system user must reach its data directory
    servers = EmbeddedServers(state, durable=False)
    started = time.monotonic()
    try:
        runtime, _ = servers.start()
        slots = _slots(runtime.database_url, runtime.redis_url, args.max_children, state)
        env = {**os.environ, "MMHUB_MUTATION_SLOTS": json.dumps(slots)}
        # mutmut's own entry point: `python -m mutmut` re-executes its module and warns about it
        mutmut = [str(Path(sys.executable).with_name("mutmut")), "run"]
        mutmut += ["--max-children", str(args.max_children)]
        code = subprocess.call([*mutmut, *args.mutants], env=env)
    finally:
        servers.stop()
        remove_state(state)
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(f"\nmutmut exited with {code} after {minutes} min {seconds} s")
    report()
    return code


if __name__ == "__main__":
    sys.exit(main())
