"""The Grafana dashboards: every panel's query parses (promtool) and reads only series the hub
exports; the provisioning finds them and the datasource they name."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.telemetry import exported_series

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Prometheus' own series per scrape target, besides what the hub's instruments expose.
READABLE = exported_series() | {"up"}
# Grafana's variables, replaced by values of the same kind so that promtool can parse the query.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1d", "$target": ".*"}

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (function names, labels, keywords left out)."""
    bare = _GROUPING.sub("", _RANGES.sub("", _MATCHERS.sub("", _STRINGS.sub('""', expr))))
    return {word for word in _WORD.findall(bare) if word.lower() not in _KEYWORDS}


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, with those inside collapsed rows."""
    return [p for panel in panels for p in (panel, *_panels(panel.get("panels", [])))]


def queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every query in a dashboard, by a record name that says where it is."""
    found = {
        f"panel_{panel['id']}_{target['refId']}": target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    }
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert inner, variable["definition"]
            found[f"variable_{variable['name']}"] = inner.group(1)
    return found


def _promtool_check(rules: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    for variable, value in VARIABLES.items():
        rules = {name: expr.replace(variable, value) for name, expr in rules.items()}
    path = tmp_path / "queries.rules.yml"
    group = [{"record": f"dashboard:{name}", "expr": expr} for name, expr in rules.items()]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": group}]}))
    return subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )


def test_the_four_dashboards_are_there() -> None:
    titles = {_load(path)["title"] for path in DASHBOARDS}
    assert titles == {
        "mmhub / API overview",
        "mmhub / Integration health per target",
        "mmhub / Queue lag",
        "mmhub / SLO",
    }
    assert len({_load(path)["uid"] for path in DASHBOARDS}) == 4


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_every_query_parses(path: Path, tmp_path: Path) -> None:
    found = queries(_load(path))
    assert found
    result = _promtool_check(found, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(found)} rules found" in result.stdout


def test_promtool_refuses_a_broken_query(tmp_path: Path) -> None:
    assert _promtool_check({"broken": "sum(rate(mmhub_dead_total[1m])"}, tmp_path).returncode != 0


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_every_query_reads_only_exported_series(path: Path) -> None:
    for name, expr in queries(_load(path)).items():
        names = metric_names(expr)
        assert names, f"{path.name} {name}: no series in {expr}"
        assert names <= READABLE, f"{path.name} {name}: not exported: {names - READABLE}"


def test_metric_names_sees_every_series_and_nothing_else() -> None:
    expr = (
        'sum by (target, le) (rate(mmhub_x_bucket{target=~"a|b",le="0.4"}[5m])) / on (target) '
        "group_left max without (status) (queue_lag_seconds offset 1h) > bool 0.95 and up"
    )
    assert metric_names(expr) == {"mmhub_x_bucket", "queue_lag_seconds", "up"}


def test_provisioning_finds_the_dashboards_and_their_datasource() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/mmhub.yaml").read_text())
    [source] = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())[
        "datasources"
    ]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    for dashboard in map(_load, DASHBOARDS):
        for panel in _panels(dashboard["panels"]):
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
