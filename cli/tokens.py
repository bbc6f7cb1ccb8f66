"""`mmhub admin-token`: a new bearer token for the admin API, shown once, stored only as its hash."""

from __future__ import annotations

import enum
import hashlib
import secrets
from typing import Annotated

import typer
import yaml

from cli.output import emit_json
from cli.support import JsonOpt, fail


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"


def admin_token(
    name: Annotated[str, typer.Option("--name", help="who or what uses the token")],
    role: Annotated[Role, typer.Option("--role", help="viewer reads; operator also acts")],
    json_out: JsonOpt = False,
) -> None:
    """Make a random admin API token: print it once, and the snippet for admin.tokens in mmhub.yaml."""
    if not name.strip():
        fail("--name: must not be empty")
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    entry = {"name": name.strip(), "role": role.value, "token_sha256": digest}
    if json_out:
        emit_json({**entry, "token": token})
        return
    snippet = yaml.safe_dump({"admin": {"tokens": [entry]}}, sort_keys=False, allow_unicode=True)
    typer.echo(f"token for {entry['name']} ({role.value}):\n\n    {token}\n")
    typer.echo("It is shown only this once: store it now (mmhub keeps only its SHA-256).")
    typer.echo("Add this to admin.tokens in mmhub.yaml, then restart `mmhub api`:\n")
    typer.echo(snippet.rstrip())
