"""Recognise the shape of a 1C:Enterprise body and extract what identifies the event.

Three shapes arrive (see CONTRACT.md, "Ingest"): the hub's envelope
``{type, event, ref, data_version, data}``, 1C's native XDTO JSON
``{"#type": "jcfg:DocumentObject.X", "#value": {...}}``, and, on ``/webhooks/1c/{type}``,
a bare OData-style object with ``Ref_Key``/``Ref``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.sources.errors import ShapeError

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# XDTO names metadata classes in English; routes and subjects use the Russian names 1C shows
# in the configurator ("Документ.ЗаказКлиента"), so the known classes are translated.
XDTO_KINDS: dict[str, str] = {
    "DocumentObject": "Документ",
    "CatalogObject": "Справочник",
    "InformationRegisterRecordSet": "РегистрСведений",
    "AccumulationRegisterRecordSet": "РегистрНакопления",
    "ChartOfCharacteristicTypesObject": "ПланВидовХарактеристик",
    "ExchangePlanObject": "ПланОбмена",
    "BusinessProcessObject": "БизнесПроцесс",
    "TaskObject": "Задача",
    "ChartOfAccountsObject": "ПланСчетов",
}

# 1C's "empty date" means no date at all.
_EMPTY_1C_DATE = "0001-01-01T00:00:00"


@dataclass(frozen=True)
class OneCEvent:
    """A 1C event reduced to its identity plus the object's data."""

    type: str  # "Документ.ЗаказКлиента"
    event: str  # "updated", "deleted", or whatever the envelope says
    ref: str  # lower-case GUID, so one record always has one subject
    data_version: str | None  # opaque, changes on every write in 1C
    data: dict[str, Any]
    occurred_at: str | None  # the body's Date as given: 1C dates carry no time zone

    @property
    def event_type(self) -> str:
        """The hub's event type, ``"{type}.{event}"``."""
        return f"{self.type}.{self.event}"

    @property
    def subject(self) -> str:
        """The record the event is about, ``"{type}/{ref}"``."""
        return f"{self.type}/{self.ref}"


def parse_1c(obj: Any) -> OneCEvent:
    """Read a decoded ``/webhooks/1c`` body: XDTO when it has ``#type``, else the envelope.

    Raises:
        ShapeError: not an object, or ``type``/``ref`` (``#type``/``Ref`` for XDTO) missing,
            mistyped, or the ref is not a 36-character GUID.
    """
    if not isinstance(obj, dict):
        raise ShapeError(f"1C body must be a JSON object, not {_json_kind(obj)}")
    if "#type" in obj:
        return _parse_xdto(obj)
    type_name = _required_text(obj, "type")
    event = obj.get("event")
    if event is None:
        event = "updated"  # the contract's default, as for the XDTO and OData shapes
    elif not isinstance(event, str) or not event.strip():
        raise ShapeError(f"'event' must be a non-empty string, not {_json_kind(event)}")
    data = obj.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise ShapeError(f"'data' must be a JSON object, not {_json_kind(data)}")
    return OneCEvent(
        type=type_name,
        event=event.strip(),
        ref=_guid(obj.get("ref"), "ref"),
        data_version=_optional_text(obj, "data_version"),
        data=data,
        occurred_at=_date(obj) or _date(data, strict=False),
    )


def parse_odata(type_name: str, obj: Any) -> OneCEvent:
    """Read an OData-style object posted to ``/webhooks/1c/{type}``.

    ``type_name`` comes from the URL. The ref is ``Ref_Key`` (or ``Ref``), the version the
    optional ``DataVersion``; the event is ``deleted`` when ``DeletionMark`` is true.

    Raises:
        ShapeError: empty type name, body not an object, or no valid GUID ref.
    """
    if not isinstance(type_name, str) or not type_name.strip():
        raise ShapeError("the 1C object type in the URL must not be empty")
    if not isinstance(obj, dict):
        raise ShapeError(f"1C body must be a JSON object, not {_json_kind(obj)}")
    if "Ref_Key" not in obj and "Ref" not in obj:
        raise ShapeError("1C body is missing 'Ref_Key' (or 'Ref')")
    # OData names the key Ref_Key; hand-written services often say Ref. Take the one that is set.
    ref_field = "Ref" if obj.get("Ref_Key") is None and obj.get("Ref") is not None else "Ref_Key"
    return _from_object(type_name.strip(), obj, ref_field, "")


def _parse_xdto(obj: dict[str, Any]) -> OneCEvent:
    raw_type = _required_text(obj, "#type")
    value = obj.get("#value")
    if not isinstance(value, dict):
        raise ShapeError(f"'#value' must be a JSON object, not {_json_kind(value)}")
    # "jcfg:DocumentObject.Name": the namespace prefix is optional, the dot is not.
    local = raw_type.partition(":")[2] or raw_type
    kind, _, name = local.partition(".")
    if not kind or not name:
        raise ShapeError(f"'#type' must look like 'jcfg:DocumentObject.Name', got {raw_type!r:.60}")
    return _from_object(f"{XDTO_KINDS.get(kind, kind)}.{name}", value, "Ref", "#value.")


def _from_object(type_name: str, obj: dict[str, Any], ref_field: str, where: str) -> OneCEvent:
    """Build the event from a 1C object's own fields (XDTO ``#value`` or OData row)."""
    return OneCEvent(
        type=type_name,
        event="deleted" if obj.get("DeletionMark") is True else "updated",
        ref=_guid(obj.get(ref_field), where + ref_field),
        data_version=_optional_text(obj, "DataVersion", where),
        data=obj,
        occurred_at=_date(obj, where),
    )


def _required_text(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if value is None:
        raise ShapeError(f"1C body is missing '{field}'")
    if not isinstance(value, str) or not value.strip():
        raise ShapeError(f"'{field}' must be a non-empty string, not {_json_kind(value)}")
    return value.strip()


def _optional_text(obj: dict[str, Any], field: str, where: str = "") -> str | None:
    value = obj.get(field)
    if value is None or value == "":
        return None  # an empty version identifies nothing; dedup falls back to the body hash
    if not isinstance(value, str):
        raise ShapeError(f"'{where}{field}' must be a string, not {_json_kind(value)}")
    return value


def _guid(value: Any, field: str) -> str:
    if value is None:
        raise ShapeError(f"1C body is missing '{field}'")
    if not isinstance(value, str):
        raise ShapeError(f"'{field}' must be a GUID string, not {_json_kind(value)}")
    if not _GUID.fullmatch(value):
        raise ShapeError(f"'{field}' must be a 36-character GUID, got {value!r:.60}")
    return value.lower()


def _date(obj: dict[str, Any], where: str = "", *, strict: bool = True) -> str | None:
    """The object's `Date` as given, once it is known to be an ISO 8601 date in years 1-9999.

    1C serialises its own dates that way, so a `Date` that is not one is refused (422) rather than
    passed on; inside an envelope's free-form `data` (``strict=False``) it is only not used.
    """
    for field in ("Date", "date"):
        value = obj.get(field)
        if not isinstance(value, str) or not value or value == _EMPTY_1C_DATE:
            continue
        try:
            datetime.fromisoformat(value)
        except ValueError:
            if strict:
                raise ShapeError(
                    f"'{where}{field}' must be an ISO 8601 date in years 1-9999, got {value!r:.40}"
                ) from None
            continue
        return value
    return None


def _json_kind(value: Any) -> str:
    """Name a decoded JSON value's type the way a client reads it in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string" if value.strip() else "a blank string"
    return "an array" if isinstance(value, list) else "an object"
