"""The fake portal's records: CRM entities, smart-process items and tasks, kept in memory.

Each entity is named as the hub names subjects (`deal`, `lead`, `contact`, `company`, `task`,
`dynamic-1032`). Classic CRM entities keep Bitrix24's UPPER_CASE fields (`ID`, `DATE_MODIFY`,
`MODIFY_BY_ID`, as crm.deal.get returns them); `crm.item.*` shows the same records in camelCase
(`id`, `updatedTime`, `updatedBy`), as crm.item.get does; tasks are camelCase (`changedDate`,
`changedBy`). Values are strings, as Bitrix24's classic methods return them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PAGE = 50  # Bitrix24 list methods return 50 records per page

# crm.item.* entityTypeId of the classic entities (CRM object type directory).
ENTITY_TYPE_IDS = {"lead": 1, "deal": 2, "contact": 3, "company": 4}
CLASSIC = frozenset(ENTITY_TYPE_IDS)


@dataclass(frozen=True)
class Style:
    """Where an entity keeps its id, modification time and modifying user."""

    id: str
    modified: str
    modified_by: str
    created: str
    created_by: str


UPPER = Style("ID", "DATE_MODIFY", "MODIFY_BY_ID", "DATE_CREATE", "CREATED_BY_ID")
ITEM = Style("id", "updatedTime", "updatedBy", "createdTime", "createdBy")
TASK = Style("id", "changedDate", "changedBy", "createdDate", "createdBy")


def style_of(entity: str) -> Style:
    """The field names an entity's own methods use."""
    if entity in CLASSIC:
        return UPPER
    return TASK if entity == "task" else ITEM


def entity_of_type(entity_type_id: int) -> str:
    """crm.item's entityTypeId -> our entity name (`2` -> `deal`, `1032` -> `dynamic-1032`)."""
    for name, number in ENTITY_TYPE_IDS.items():
        if number == entity_type_id:
            return name
    return f"dynamic-{entity_type_id}"


def now_text() -> str:
    """The current time as Bitrix24 writes it: ISO 8601 with an offset, whole seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


_UPPER_WORD = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    """`DATE_MODIFY`-style names in crm.item's camelCase (`ASSIGNED_BY_ID` -> `assignedById`)."""
    return _UPPER_WORD.sub(lambda m: m.group(1).upper(), name.lower())


_ITEM_NAMES = {
    "ID": "id",
    "DATE_MODIFY": "updatedTime",
    "MODIFY_BY_ID": "updatedBy",
    "DATE_CREATE": "createdTime",
    "CREATED_BY_ID": "createdBy",
}


def as_item(record: Mapping[str, Any]) -> dict[str, Any]:
    """A classic record as crm.item.get shows it (ids are numbers there)."""
    item = {_ITEM_NAMES.get(key) or camel(key): value for key, value in record.items()}
    for key in ("id", "updatedBy", "createdBy"):
        if isinstance(item.get(key), str) and item[key].isdigit():
            item[key] = int(item[key])
    return item


@dataclass
class Records:
    """Every record of the portal; tests change them through `put`, `update` and `delete`."""

    tables: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    next_id: int = 1
    # What changed since the portal last looked: (entity, number, ADD|UPDATE|DELETE), for its events.
    changes: list[tuple[str, int, str]] = field(default_factory=list)

    def put(self, entity: str, fields: Mapping[str, Any], *, by: int = 1) -> dict[str, Any]:
        """Create a record (`fields` in the entity's own style); returns it with its id."""
        style = style_of(entity)
        number = int(fields.get(style.id) or self._new_id())
        self.next_id = max(self.next_id, number + 1)
        stamp = now_text()
        record = {
            style.id: str(number) if style is UPPER else number,
            style.created: stamp,
            style.created_by: _user(style, by),
            **{k: v for k, v in fields.items() if k != style.id},
        }
        record.setdefault(style.modified, stamp)
        record.setdefault(style.modified_by, _user(style, by))
        self.tables.setdefault(entity, {})[number] = record
        self.changes.append((entity, number, "ADD"))
        return record

    def update(
        self, entity: str, number: int, fields: Mapping[str, Any], *, by: int = 1
    ) -> dict[str, Any] | None:
        """Change a record as a save in the portal does (new DATE_MODIFY/MODIFY_BY_ID); None if gone."""
        record = self.get(entity, number)
        if record is None:
            return None
        style = style_of(entity)
        record.update({k: v for k, v in fields.items() if k != style.id})
        record[style.modified] = fields.get(style.modified) or now_text()
        record[style.modified_by] = _user(style, by)
        self.changes.append((entity, number, "UPDATE"))
        return record

    def delete(self, entity: str, number: int) -> bool:
        """Remove a record; False when there was none."""
        gone = self.tables.get(entity, {}).pop(number, None) is not None
        if gone:
            self.changes.append((entity, number, "DELETE"))
        return gone

    def get(self, entity: str, number: int) -> dict[str, Any] | None:
        return self.tables.get(entity, {}).get(number)

    def all(self, entity: str) -> Iterable[dict[str, Any]]:
        return self.tables.get(entity, {}).values()

    def _new_id(self) -> int:
        number = self.next_id
        self.next_id += 1
        return number


def _user(style: Style, by: int) -> Any:
    return str(by) if style is UPPER else by


# ---- list methods: filter, order, select, pages of 50 ----

_PREFIX = re.compile(r"^(>=|<=|!@|!=|>|<|@|=|!)?(.+)$")


def matches(record: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Bitrix24's filter prefixes (`>`, `>=`, `<`, `<=`, `=`, `!`, `@`, `!@`) on one record."""
    for key, wanted in filters.items():
        found = _PREFIX.match(key)
        if found is None:
            continue
        op, name = found.group(1) or "=", found.group(2)
        if not _test(op, record.get(name), wanted):
            return False
    return True


def _test(op: str, value: Any, wanted: Any) -> bool:
    if op in ("@", "!@"):
        options = wanted.values() if isinstance(wanted, Mapping) else wanted
        inside = str(value) in {str(option) for option in options}
        return inside if op == "@" else not inside
    if op in ("=", "!", "!="):
        equal = _key(value) == _key(wanted)
        return equal if op == "=" else not equal
    if value is None:
        return False
    left, right = _key(value), _key(wanted)
    if type(left) is not type(right):
        left, right = str(left), str(right)
    checks = {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}
    return bool(checks[op])


def _key(value: Any) -> Any:
    """Compare numbers as numbers and ISO dates as instants."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return text
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def ordered(
    records: Iterable[dict[str, Any]], order: Mapping[str, Any], id_field: str
) -> list[dict[str, Any]]:
    """Records sorted by `order` ({field: ASC|DESC}); by id when none is given."""
    rows = sorted(records, key=lambda r: _key(r.get(id_field)))
    for name, direction in reversed(list((order or {}).items())):
        descending = str(direction).upper() == "DESC"
        rows.sort(key=lambda r, n=name: _key(r.get(n)), reverse=descending)  # type: ignore[misc]
    return rows


def selected(record: dict[str, Any], select: Any, id_field: str) -> dict[str, Any]:
    """Only the selected fields (always the id); `*` or nothing selects all."""
    names = list(select.values()) if isinstance(select, Mapping) else list(select or [])
    if not names or "*" in names:
        return dict(record)
    return {k: v for k, v in record.items() if k in names or k == id_field}


def page(rows: list[dict[str, Any]], start: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of 50 and the `total`/`next` keys; `start=-1` skips counting (no total, no next)."""
    try:
        offset = int(start or 0)
    except (TypeError, ValueError):
        offset = 0
    if offset == -1:
        return rows[:PAGE], {}
    offset = max(0, offset)
    chunk = rows[offset : offset + PAGE]
    extra: dict[str, Any] = {"total": len(rows)}
    if offset + PAGE < len(rows):
        extra["next"] = offset + PAGE
    return chunk, extra
