"""Keep secrets out of what the hub stores, logs and forwards.

Two rules find a secret: its key's name (English or Russian, any case, PHP-style, snake, kebab or camel case) and
the shape of a value (``Basic …`` / ``Bearer …`` credentials, wherever they stand in a string).
Secret-named keys are removed; credentials found by shape are replaced by a mask.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping
from typing import Any

MASK = "[REDACTED]"

# A key is secret when its last word is one of these (access_token, clientSecret, X-Auth-Token), ...
_LAST_WORDS = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "authorization", "apikey", "credentials"}
)
# ... or its last two words are one of these pairs (api_key, x-api-key, private_key), ...
_LAST_PAIRS = frozenset({("api", "key"), ("private", "key"), ("api", "ключ"), ("ключ", "api")})
# ... or, as Russian puts the noun first (ПарольПользователя, ТокенДоступа), any word starts with one of these stems.
_RU_STEMS = ("парол", "токен", "секрет")
_RU_NOT_SECRET = ("секретар",)  # секретарь is a secretary
_RU_PAIRS = frozenset({("ключ", "доступа"), ("ключ", "api"), ("api", "ключ")})

_SEGMENTS = re.compile(r"[^\[\]]+")
# Words of a key: camelCase humps (ApiKey, APIKey, ТокенДоступа), digits, separated by anything else.
_WORDS = re.compile(r"[A-ZА-ЯЁ]+(?![a-zа-яё])|[A-ZА-ЯЁ]?[a-zа-яё]+|\d+")
# An HTTP credential in a value: the scheme, then a token68 that does not read like a plain word.
_CREDENTIAL = re.compile(r"(?i)\b(basic|bearer)\s+([A-Za-z0-9\-._~+/]{8,}=*)")


def _key_words(key: str) -> list[str]:
    segments = _SEGMENTS.findall(key)
    return [word.lower() for word in _WORDS.findall(segments[-1])] if segments else []


@functools.lru_cache(maxsize=8192)  # the same few hundred key names come with every event
def is_secret_key(key: str) -> bool:
    """Tell whether a mapping key names a secret.

    A flat PHP-style key such as ``auth[access_token]`` is judged by its last segment, so payloads that were never
    unflattened are covered too. ``token_type_hint`` or ``tokens`` are not secrets: the secret noun must end an
    English name.
    """
    words = _key_words(key)
    if not words:
        return False
    if words[-1] in _LAST_WORDS or tuple(words[-2:]) in _LAST_PAIRS:
        return True
    pairs = set(itertools.pairwise(words))
    if pairs & _RU_PAIRS:
        return True
    return any(w.startswith(_RU_STEMS) and not w.startswith(_RU_NOT_SECRET) for w in words)


def _may_hold_credential(text: str) -> bool:
    """A cheap test before the regex: most values name no scheme at all."""
    return "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text


def _looks_like_credential(token: str) -> bool:
    """``dXNlcjpwYXNz`` or ``eyJhbGci…`` yes, ``Information`` (as in "Basic Information") no."""
    return bool(re.search(r"[\d+/=]", token)) or sum(c.isupper() for c in token) >= 2


def credentials_in(text: str) -> list[str]:
    """The credentials (``Basic``/``Bearer`` token68 parts) that stand in ``text``."""
    if not _may_hold_credential(text):
        return []
    return [m.group(2) for m in _CREDENTIAL.finditer(text) if _looks_like_credential(m.group(2))]


def mask_credentials(text: str) -> str:
    """``text`` with every ``Basic``/``Bearer`` credential in it replaced by the mask (the scheme stays)."""
    if not _may_hold_credential(text):
        return text
    return _CREDENTIAL.sub(
        lambda m: f"{m.group(1)} {MASK}" if _looks_like_credential(m.group(2)) else m.group(0), text
    )


def redact(obj: Any) -> Any:
    """Return a copy of ``obj`` without secret-named keys and with credentials in strings masked, at any depth.

    Mappings become new dicts and lists/tuples new lists. The input is not modified. The walk is iterative so a
    deeply nested client body cannot exhaust the interpreter stack.
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
        elif isinstance(node, str):
            parent[slot] = mask_credentials(node)
        else:
            parent[slot] = node
    return root[0]


def secret_values(obj: Any) -> list[str]:
    """List the secrets in ``obj``: values under secret-named keys and credentials found by shape, once each.

    Used to mask them in the raw body we keep; numbers are given as text, and a container under a secret key
    contributes every scalar inside it.
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
        elif isinstance(node, str):
            found.update(dict.fromkeys(credentials_in(node)))
    return list(found)


def scrub(obj: Any) -> tuple[Any, list[str]]:
    """``(redact(obj), secret_values(obj))`` in one walk: ingest needs both for every event."""
    found: dict[str, None] = {}  # ordered set
    root: list[Any] = [None]
    # (source node, container receiving its copy, slot in that container); a None container: the
    # node is under a secret key, so it is not copied and its scalars are secrets.
    stack: list[tuple[Any, Any, Any]] = [(obj, root, 0)]
    while stack:
        node, parent, slot = stack.pop()
        if isinstance(node, str):  # the common leaf: ahead of the (slow) abstract-class check
            if parent is None:
                if text := str(node):
                    found[text] = None
                continue
            if _may_hold_credential(node):
                found.update(dict.fromkeys(credentials_in(node)))
                node = mask_credentials(node)
            parent[slot] = node
        elif type(node) is dict or isinstance(node, Mapping):
            copied: dict[Any, Any] | None = None if parent is None else {}
            if parent is not None:
                parent[slot] = copied
            for key, value in node.items():
                if copied is None or (isinstance(key, str) and is_secret_key(key)):
                    stack.append((value, None, None))
                    continue
                copied[key] = None  # reserve the slot now so key order is kept
                stack.append((value, copied, key))
        elif isinstance(node, (list, tuple)):
            if parent is None:
                stack.extend((value, None, None) for value in node)
                continue
            items: list[Any] = [None] * len(node)
            parent[slot] = items
            stack.extend((value, items, index) for index, value in enumerate(node))
        elif parent is None:
            if isinstance(node, (int, float)) and not isinstance(node, bool):
                found[str(node)] = None
        else:
            parent[slot] = node
    return root[0], list(found)
