"""Masking of personal data (phone numbers, e-mail addresses) in what a `viewer` is shown.

One function for the admin API and the console alike. Stored rows and what targets receive keep the
data: masking happens only when a record is shown to a reader whose role does not see it
(`pii.mask_for_viewers`, on by default; operators always see it).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from pydantic import BaseModel

# Keys whose string values are personal data whatever their shape (Bitrix24 multi-fields, 1C props).
_PII_KEYS = re.compile(r"phone|e-?mail|mobile|телефон|почт|мобильн", re.IGNORECASE)
_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)", re.UNICODE)
# A run of digits with phone punctuation, not glued to a word, a path or a time.
_PHONE = re.compile(r"(?<![\w/:.@-])\+?\d[\d ()-]{7,22}\d(?![\w:@/.])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HIDDEN = "•"


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    if not 10 <= digits <= 15 or _DATE.match(text.lstrip("+")):
        return text
    if text.isdigit() and not (digits == 11 and text[0] in "78"):
        return text  # a bare number (a timestamp, an amount) unless it is a Russian mobile
    seen = 0
    out = []
    for ch in text:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen > digits - 2 else _HIDDEN)
        else:
            out.append(ch)
    return "".join(out)


def mask_text(text: str) -> str:
    """The text with every e-mail address and phone number masked (last two digits kept)."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}{_HIDDEN * 3}@{m.group(2)}", text)
    return _PHONE.sub(_phone, text)


def _mask_whole(text: str) -> str:
    """A value under a personal-data key: all but its last two characters hidden, unless it holds
    neither a digit nor an `@` (a label such as `WORK`)."""
    if not any(ch.isdigit() or ch == "@" for ch in text):
        return text
    return _HIDDEN * max(len(text) - 2, 1) + text[-2:] if len(text) > 2 else _HIDDEN * len(text)


def mask_pii(value: Any, *, sensitive: bool = False) -> Any:
    """A copy of a JSON-like value with personal data masked (dicts, lists and strings)."""
    if isinstance(value, str):
        return _mask_whole(value) if sensitive else mask_text(value)
    if sensitive and isinstance(value, int) and not isinstance(value, bool):
        return _mask_whole(str(value))
    if isinstance(value, dict):
        return {
            key: mask_pii(item, sensitive=sensitive or bool(_PII_KEYS.search(str(key))))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_pii(item, sensitive=sensitive) for item in value]
    return value


def masks_for(role: str, mask_for_viewers: bool) -> bool:
    """Whether a reader with this role gets masked records."""
    return mask_for_viewers and role != "operator"


# The fields of a shown record that carry what senders and targets wrote (payloads, replies, errors).
_FREE_TEXT = {"payload", "payload_override", "raw_body", "headers", "last_error", "error"}
_FREE_TEXT |= {"response_excerpt", "data", "cloudevent"}
Shown = TypeVar("Shown", bound=BaseModel)


def _mask_raw(body: str) -> str:
    """A raw body: a form-encoded one is shown decoded, so its encoded digits can be masked."""
    if re.search(r"%[0-9A-Fa-f]{2}", body) and "{" not in body[:1]:
        body = unquote_plus(body)
    return mask_text(body)


def mask_fields(record: Any) -> Any:
    """A dumped record (dicts and lists) with its free-text fields masked, at any depth."""
    if isinstance(record, dict):
        return {
            key: (
                _mask_raw(value)
                if key == "raw_body" and isinstance(value, str)
                else mask_pii(value) if key in _FREE_TEXT else mask_fields(value)
            )
            for key, value in record.items()
        }
    if isinstance(record, list):
        return [mask_fields(item) for item in record]
    return record


def shown_to(role: str, mask_for_viewers: bool, out: Shown) -> Shown:
    """The reply model as this reader may see it: masked for viewers (when configured)."""
    if not masks_for(role, mask_for_viewers):
        return out
    # include_raw: a raw body still present was asked for; keep it (masked).
    return type(out).model_validate(mask_fields(out.model_dump()), context={"include_raw": True})
