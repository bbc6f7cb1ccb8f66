"""`mmhub --help` loads only Typer: no SQLAlchemy, FastAPI, pydantic settings or support module;
a support command loads its own module when it runs (and still works: see the other CLI tests)."""

from __future__ import annotations

import subprocess
import sys

from cli.lazy import COMMANDS

HEAVY = (
    "sqlalchemy",
    "fastapi",
    "pydantic_settings",
    "rich",
    "app.outbox.queries",
    "cli.deliveries",
)

PROBE = """
import sys
from cli import cli
try:
    cli(["--help"])
except SystemExit:
    pass
print("LOADED", *sorted(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded(code: str) -> tuple[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    marker = done.stdout.rsplit("LOADED", 1)
    return marker[0], marker[1].split()


def test_help_lists_every_command_without_loading_them() -> None:
    text, loaded = _loaded(PROBE.format(heavy=HEAVY))
    assert loaded == []
    for name in (*COMMANDS, "api", "relay", "worker", "dev", "migrate"):
        assert f"  {name} " in text, name


def test_a_support_command_loads_its_module_when_asked() -> None:
    code = PROBE.format(heavy=HEAVY).replace('cli(["--help"])', 'cli(["deliveries", "--help"])')
    text, loaded = _loaded(code)
    assert "list" in text and "show" in text
    assert "cli.deliveries" in loaded and "fastapi" not in loaded
