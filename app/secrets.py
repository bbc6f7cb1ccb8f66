"""Remove secret-looking keys from parsed payloads before they are stored, logged or forwarded."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Exact names, and also suffixes after "_" (client_secret, x_auth_token, db_password).
SECRET_NAMES = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "application_token",
        "authorization",
        "api_key",
        "apikey",
    }
)
_SUFFIXES = tuple("_" + name for name in SECRET_NAMES)
_SEGMENTS = re.compile(r"[^\[\]]+")


def is_secret_key(key: str) -> bool:
    """Tell whether a mapping key names a secret (case-insensitive, ``-`` same as ``_``).

    A flat PHP-style key such as ``auth[access_token]`` is judged by its last segment, so
    payloads that were never unflattened are covered too.
    """
    segments = _SEGMENTS.findall(key)
    if not segments:
        return False
    name = segments[-1].strip().lower().replace("-", "_")
    return name in SECRET_NAMES or name.endswith(_SUFFIXES)


def redact(obj: Any) -> Any:
    """Return a copy of ``obj`` with every secret-named key removed at any depth.

    Mappings become new dicts and lists/tuples new lists; leaves are shared (JSON scalars
    are immutable). The input is not modified. The walk is iterative so a deeply nested
    client body cannot exhaust the interpreter stack.
    """
    root: list[Any] = [None]
    # (source node, container receiving its copy, slot in that container)
    stack: list[tuple[Any, Any, Any]] = [(obj, root, 0)]
    while stack:
        node, parent, slot = stack.pop()
        if isinstance(node, Mapping):
            copied: dict[Any, Any] = {}
            parent[slot] = copied
            for key, value in node.items():
                if isinstance(key, str) and is_secret_key(key):
                    continue
                copied[key] = None  # reserve the slot now so key order is kept
                stack.append((value, copied, key))
        elif isinstance(node, (list, tuple)):
            items: list[Any] = [None] * len(node)
            parent[slot] = items
            stack.extend((value, items, index) for index, value in enumerate(node))
        else:
            parent[slot] = node
    return root[0]


def secret_values(obj: Any) -> list[str]:
    """List the values held under secret-named keys anywhere in ``obj``, without duplicates.

    Used to mask those values in the raw body we keep; numbers are given as text, and a
    container under a secret key contributes every scalar inside it.
    """
    found: dict[str, None] = {}  # ordered set
    stack: list[tuple[Any, bool]] = [(obj, False)]  # (node, under a secret key)
    while stack:
        node, secret = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                stack.append((value, secret or (isinstance(key, str) and is_secret_key(key))))
        elif isinstance(node, (list, tuple)):
            stack.extend((value, secret) for value in node)
        elif secret and isinstance(node, (str, int, float)) and not isinstance(node, bool):
            text = str(node)
            if text:
                found[text] = None
    return list(found)
