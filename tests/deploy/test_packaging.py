"""The image's build files: hadolint, compose.yaml against the compose specification, probes per role."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_hadolint_has_no_warning() -> None:
    result = subprocess.run(
        [BIN / "hadolint", "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def _compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    result = _compose_schema(ROOT / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: a misspelt key is refused.
    broken = tmp_path / "compose.yaml"
    shutil.copy(ROOT / "compose.yaml", broken)
    broken.write_text(broken.read_text().replace("healthcheck:", "healtcheck:", 1))
    assert _compose_schema(broken).returncode != 0


def _compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded: dict[str, dict[str, dict[str, object]]] = yaml.safe_load(
        (ROOT / "compose.yaml").read_text()
    )
    return loaded


@pytest.mark.parametrize(
    ("role", "port", "path"),
    [("relay", 9100, "/metrics"), ("worker", 9100, "/metrics"), ("api", 8000, "/healthz")],
)
def test_every_role_has_its_own_probe(role: str, port: int, path: str) -> None:
    service = _compose()["services"][role]
    environment = service["environment"]
    assert isinstance(environment, dict)
    if role != "api":
        assert int(environment["MMHUB_METRICS_PORT"]) == port
    probe = service["healthcheck"]
    assert isinstance(probe, dict)
    assert f"http://127.0.0.1:{port}{path}" in " ".join(probe["test"])


def test_compose_needs_mmhub_yaml_and_migrate_has_no_probe() -> None:
    services = _compose()["services"]
    assert services["migrate"]["healthcheck"] == {"disable": True}
    mounts = services["api"]["volumes"]
    assert isinstance(mounts, list)
    (config,) = [m for m in mounts if m["target"] == "/etc/mmhub/mmhub.yaml"]
    assert config["source"] == "./mmhub.yaml"
    assert config["bind"] == {"create_host_path": False}
    assert "cp mmhub.example.yaml mmhub.yaml" in (ROOT / "README.md").read_text()


def test_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".mmhub", ".git", "**/__pycache__", ".mypy_cache", ".pytest_cache"):
        assert entry in ignored
