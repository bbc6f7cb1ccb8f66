"""A directory or an unreadable file as MMHUB_CONFIG ends a role with one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import ConfigError, load_hub_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="mmhub-config-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def _start_api(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MMHUB_CONFIG": str(config),
        "MMHUB_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
        "MMHUB_REDIS_URL": "redis://127.0.0.1:1/0",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", "api"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_directory_is_one_line(public_dir: Path) -> None:
    mounted = public_dir / "mmhub.yaml"
    mounted.mkdir()  # what Docker makes of a missing ./mmhub.yaml
    result = _start_api(mounted, public_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"configuration error: MMHUB_CONFIG: {mounted} is a directory, not a YAML file"
    ]


def test_an_undecodable_file_is_one_line(public_dir: Path) -> None:
    config = public_dir / "mmhub.yaml"
    config.write_bytes(b"targets: {}\n# \xff\xfe not UTF-8\n")
    result = _start_api(config, public_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"configuration error: MMHUB_CONFIG: cannot read {config}: UnicodeDecodeError"
    ]


def test_an_unreadable_file_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mmhub.yaml"
    config.write_text("targets: {}\n")
    config.chmod(0o000)
    if os.access(config, os.R_OK):  # root reads any file: make the read fail as it would for others

        def refuse(self: Path, *args: object, **kwargs: object) -> str:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigError) as error:
        load_hub_config(config)
    assert str(error.value) == f"MMHUB_CONFIG: cannot read {config}: Permission denied"
