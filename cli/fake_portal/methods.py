"""The REST methods the fake portal answers, with Bitrix24's documented result and error shapes.

A handler takes the records, the call's params and the calling user, and returns `(result, extra)`
where extra holds `total`/`next` for list methods; a refusal is raised as `Fault`. Error shapes:
crm.deal.get and its classic siblings answer a missing record with an empty `error` and
`error_description: "Not found"` (HTTP 400); crm.item.get with `NOT_FOUND`, "Element not found";
tasks.task.get with `ERROR_CORE` and an ACTION_NOT_ALLOWED description (the task pages show that
shape for tasks that cannot be reached; they do not document the missing-task reply itself).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from cli.fake_portal.records import (
    CLASSIC,
    Records,
    as_item,
    entity_of_type,
    matches,
    ordered,
    page,
    selected,
    style_of,
)

Result = tuple[Any, dict[str, Any]]
Handler = Callable[[Records, Mapping[str, Any], int], Result]


class Fault(Exception):
    """A Bitrix24 error reply: HTTP status, `error` and `error_description`."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


TASK_NOT_FOUND = (
    "TASKS_ERROR_EXCEPTION_#8; Task not found or not accessible; 8/TE/ACTION_NOT_ALLOWED"
)


def _number(params: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = params.get(name)
        if value is not None and str(value).isdigit() and int(value) > 0:
            return int(value)
    raise Fault(400, "", "ID is not defined or invalid")


def _listing(
    records: Records, entity: str, params: Mapping[str, Any], shown: Callable[[Any], Any]
) -> tuple[list[Any], dict[str, Any]]:
    id_field = style_of(entity).id
    rows = [shown(r) for r in records.all(entity)]
    filters = params.get("filter") or {}
    if not isinstance(filters, Mapping):
        raise Fault(400, "", "Parameter 'filter' must be array.")
    rows = [r for r in rows if matches(r, filters)]
    order = params.get("order") or {}
    if not isinstance(order, Mapping):
        raise Fault(400, "", "Parameter 'order' must be array.")
    rows = ordered(rows, order, id_field)
    chunk, extra = page(rows, params.get("start"))
    return [selected(r, params.get("select"), id_field) for r in chunk], extra


def _fields(params: Mapping[str, Any]) -> Mapping[str, Any]:
    fields = params.get("fields") or {}
    if not isinstance(fields, Mapping):
        raise Fault(400, "", "Parameter 'fields' must be array.")
    return fields


# ---- crm.deal.* / crm.lead.* / crm.contact.* / crm.company.* ----


def _classic(entity: str) -> dict[str, Handler]:
    def get(records: Records, params: Mapping[str, Any], _user: int) -> Result:
        record = records.get(entity, _number(params, "id", "ID"))
        if record is None:
            raise Fault(400, "", "Not found")
        return dict(record), {}

    def list_(records: Records, params: Mapping[str, Any], _user: int) -> Result:
        return _listing(records, entity, params, dict)

    def add(records: Records, params: Mapping[str, Any], user: int) -> Result:
        return int(records.put(entity, _fields(params), by=user)["ID"]), {}

    def update(records: Records, params: Mapping[str, Any], user: int) -> Result:
        if records.update(entity, _number(params, "id", "ID"), _fields(params), by=user) is None:
            raise Fault(400, "", "Not found")
        return True, {}

    def delete(records: Records, params: Mapping[str, Any], _user: int) -> Result:
        if not records.delete(entity, _number(params, "id", "ID")):
            raise Fault(400, "", "Not found")
        return True, {}

    prefix = f"crm.{entity}."
    handlers = {"get": get, "list": list_, "add": add, "update": update, "delete": delete}
    return {prefix + name: handler for name, handler in handlers.items()}


# ---- crm.item.* (any CRM type, smart processes included) ----


def _item_entity(params: Mapping[str, Any]) -> str:
    value = params.get("entityTypeId")
    if value is None or not str(value).isdigit():
        raise Fault(400, "NOT_FOUND", "Smart process not found")
    return entity_of_type(int(value))


def _shown_item(entity: str) -> Callable[[Any], Any]:
    return as_item if entity in CLASSIC else dict


_CAMEL_WORD = re.compile(r"(?<!^)([A-Z])")
_UPPER_NAMES = {"id": "ID", "updatedTime": "DATE_MODIFY", "updatedBy": "MODIFY_BY_ID"}


def _stored_fields(entity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """crm.item's camelCase fields in the entity's own style (classic entities keep UPPER_CASE)."""
    if entity not in CLASSIC:
        return dict(fields)
    return {_UPPER_NAMES.get(k) or _CAMEL_WORD.sub(r"_\1", k).upper(): v for k, v in fields.items()}


def item_get(records: Records, params: Mapping[str, Any], _user: int) -> Result:
    entity = _item_entity(params)
    record = records.get(entity, _number(params, "id"))
    if record is None:
        raise Fault(400, "NOT_FOUND", "Element not found")
    return {"item": _shown_item(entity)(record)}, {}


def item_list(records: Records, params: Mapping[str, Any], _user: int) -> Result:
    entity = _item_entity(params)
    rows, extra = _listing(records, entity, params, _shown_item(entity))
    return {"items": rows}, extra


def item_add(records: Records, params: Mapping[str, Any], user: int) -> Result:
    entity = _item_entity(params)
    record = records.put(entity, _stored_fields(entity, _fields(params)), by=user)
    return {"item": _shown_item(entity)(record)}, {}


def item_update(records: Records, params: Mapping[str, Any], user: int) -> Result:
    entity = _item_entity(params)
    fields = _stored_fields(entity, _fields(params))
    record = records.update(entity, _number(params, "id"), fields, by=user)
    if record is None:
        raise Fault(400, "NOT_FOUND", "Element not found")
    return {"item": _shown_item(entity)(record)}, {}


def item_delete(records: Records, params: Mapping[str, Any], _user: int) -> Result:
    if not records.delete(_item_entity(params), _number(params, "id")):
        raise Fault(400, "NOT_FOUND", "Element not found")
    return [], {}


# ---- tasks.task.* ----


def task_get(records: Records, params: Mapping[str, Any], _user: int) -> Result:
    try:
        number = _number(params, "taskId", "id")
    except Fault:
        raise Fault(400, "0", "wrong task id") from None
    record = records.get("task", number)
    if record is None:
        raise Fault(400, "ERROR_CORE", TASK_NOT_FOUND)
    return {"task": selected(record, params.get("select"), "id")}, {}


def task_list(records: Records, params: Mapping[str, Any], _user: int) -> Result:
    rows, extra = _listing(records, "task", params, dict)
    return {"tasks": rows}, extra


def task_update(records: Records, params: Mapping[str, Any], user: int) -> Result:
    record = records.update("task", _number(params, "taskId", "id"), _fields(params), by=user)
    if record is None:
        raise Fault(400, "ERROR_CORE", TASK_NOT_FOUND)
    return {"task": dict(record)}, {}


def timeline_comment_add(records: Records, params: Mapping[str, Any], user: int) -> Result:
    fields = dict(_fields(params))
    fields.setdefault("AUTHOR_ID", str(user))
    return int(records.put("timeline-comment", fields, by=user)["id"]), {}


METHODS: dict[str, Handler] = {
    **{name: h for entity in sorted(CLASSIC) for name, h in _classic(entity).items()},
    "crm.item.get": item_get,
    "crm.item.list": item_list,
    "crm.item.add": item_add,
    "crm.item.update": item_update,
    "crm.item.delete": item_delete,
    "tasks.task.get": task_get,
    "tasks.task.list": task_list,
    "tasks.task.update": task_update,
    "crm.timeline.comment.add": timeline_comment_add,
}


def call(records: Records, method: str, params: Mapping[str, Any], user: int) -> Result:
    """Run one method; an unknown one is Bitrix24's ERROR_METHOD_NOT_FOUND (HTTP 404)."""
    handler = METHODS.get(method.lower())
    if handler is None:
        raise Fault(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    return handler(records, params, user)
