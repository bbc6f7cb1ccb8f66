"""`mmhub migrate`: alembic upgrade head, wherever the command is run from."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

# In a checkout and in an installed wheel alike, `migrations/` sits next to `app/` (the wheel ships
# it as a top-level directory); pyproject.toml only exists in a checkout (it only matters there,
# for `alembic revision`'s file names).
_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    """The project's Alembic configuration bound to one database."""
    pyproject = _ROOT / "pyproject.toml"
    config = Config(toml_file=str(pyproject)) if pyproject.exists() else Config()
    config.set_main_option("script_location", str(_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    """Apply every migration (idempotent)."""
    command.upgrade(alembic_config(database_url), "head")
