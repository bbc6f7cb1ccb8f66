"""`mmhub targets …`, `mmhub audit`, `mmhub stats` and `mmhub admin-token`."""

from __future__ import annotations

import hashlib
import json
import re

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hubconfig import HubConfig
from app.models import TargetState
from tests.cli.helpers import Mmhub, audit_rows, rows, seed


async def _state(engine: AsyncEngine, target: str) -> TargetState | None:
    async with engine.connect() as conn:
        query = select(TargetState).where(TargetState.target == target)
        row = (await conn.execute(query)).one_or_none()
    return row  # type: ignore[return-value]


async def test_pause_holds_and_resume_releases_with_audit(
    mmhub: Mmhub, engine: AsyncEngine
) -> None:
    waiting = await seed(engine, status="pending", count=2)
    [dead] = await seed(engine, status="dead")
    paused = await mmhub("targets", "pause", "erp", "--reason", "1C update", "--actor", "anna")
    assert paused.exit_code == 0, paused.output
    assert "2 waiting deliveries held" in paused.stdout
    state = await _state(engine, "erp")
    assert state is not None
    assert (state.paused, state.paused_reason, state.paused_by) == (True, "1C update", "anna")
    after = await rows(engine)
    assert {after[i].status for i in waiting} == {"held"} and after[dead].status == "dead"

    listed = json.loads((await mmhub("targets", "list", "--json")).stdout)
    erp = next(t for t in listed if t["target"] == "erp")
    assert (erp["paused"], erp["paused_by"], erp["kind"]) == (True, "anna", "onec")
    assert erp["by_status"] == {"held": 2, "dead": 1}
    assert {t["target"] for t in listed} == {"erp", "ww", "crm", "audit"}

    resumed = await mmhub("targets", "resume", "erp", "--actor", "anna", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["released"] == 2
    state = await _state(engine, "erp")
    assert state is not None and state.paused is False
    assert {(await rows(engine))[i].status for i in waiting} == {"pending"}
    assert [(e.action, e.actor, e.count) for e in await audit_rows(engine)] == [
        ("pause", "anna", 2),
        ("resume", "anna", 2),
    ]


async def test_unknown_target_is_a_clear_error(mmhub: Mmhub, engine: AsyncEngine) -> None:
    for command in ("pause", "resume"):
        result = await mmhub("targets", command, "erp2")
        assert result.exit_code == 2
        assert "unknown target 'erp2' (known: audit, crm, erp, ww)" in result.stderr
        assert "Traceback" not in result.output
    assert await audit_rows(engine) == []


async def test_audit_lists_the_mutations_newest_first(mmhub: Mmhub, engine: AsyncEngine) -> None:
    [one, _] = await seed(engine, status="dead", count=2)
    await mmhub("replay", one, "--reason", "retry after fix", "--actor", "anna")
    await mmhub("targets", "pause", "ww", "--reason", "maintenance", "--actor", "boris")
    await mmhub("replay", "--status", "dead", "--since", "1h", "--yes", "--actor", "anna")

    entries = json.loads((await mmhub("audit", "--json")).stdout)
    assert [(e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("bulk_replay", "anna", None),
        ("pause", "boris", "maintenance"),
        ("replay", "anna", "retry after fix"),
    ]
    assert entries[2]["delivery_id"] == one
    assert entries[0]["filter"]["status"] == ["dead"]
    assert entries[0]["at"].endswith("Z")
    assert len(json.loads((await mmhub("audit", "--json", "--limit", "1")).stdout)) == 1
    assert json.loads((await mmhub("audit", "--since", "2030-01-01", "--json")).stdout) == []

    people = await mmhub("audit", env={"COLUMNS": "200"})
    assert people.exit_code == 0, people.output
    assert "boris" in people.stdout and "maintenance" in people.stdout and one in people.stdout


async def test_stats(mmhub: Mmhub, engine: AsyncEngine) -> None:
    await seed(engine, status="dead", count=2)
    await seed(engine, target="ww", status="delivered")
    result = await mmhub("stats", "--json")
    assert result.exit_code == 0, result.output
    counts = {k: v["by_status"] for k, v in json.loads(result.stdout)["targets"].items()}
    assert counts == {"erp": {"dead": 2}, "ww": {"delivered": 1}}
    people = await mmhub("stats")
    assert people.exit_code == 0 and "erp" in people.stdout


async def test_admin_token_prints_a_token_and_its_hash_for_the_yaml(mmhub: Mmhub) -> None:
    result = await mmhub("admin-token", "--name", "grafana", "--role", "viewer")
    assert result.exit_code == 0, result.output
    token = re.search(r"^    (\S{40,})$", result.stdout, re.MULTILINE)
    assert token is not None
    snippet = result.stdout[result.stdout.index("admin:") :]
    config = HubConfig.model_validate(yaml.safe_load(snippet))
    [entry] = config.admin.tokens
    assert (entry.name, entry.role) == ("grafana", "viewer")
    assert entry.token_sha256 == hashlib.sha256(token.group(1).encode()).hexdigest()

    as_json = json.loads(
        (await mmhub("admin-token", "--name", "ci", "--role", "operator", "--json")).stdout
    )
    assert as_json["token_sha256"] == hashlib.sha256(as_json["token"].encode()).hexdigest()
    assert as_json["token"] != token.group(1)

    bad = await mmhub("admin-token", "--name", "x", "--role", "admin")
    assert bad.exit_code == 2
