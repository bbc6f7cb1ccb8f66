"""The fake portal's events: handlers (`event.bind`/`unbind`/`get`), the offline queue and the application.

From Bitrix24's REST docs (api-reference/events/*, settings/oauth/*):
- `event.bind` with `event_type=offline` and an `auth_connector` makes a queue of its own for that source key; a change
  made by a call that carries the same `auth_connector` is not queued there (how an application avoids echoes).
- The queue keeps one entry per changed object: saving a deal a thousand times leaves one entry, with the time of the
  last change. `event.offline.get` with `clear=0` reserves the entries it returns under a `process_id` (hidden from
  other reads, returned again to a read with that `process_id`); `event.offline.clear` removes a process's entries,
  `event.offline.error` marks them erroneous (returned only with `error=1`); `event.offline.list` reads without
  reserving.
- Online handlers get the event POSTed as a PHP-style form; `ONOFFLINEEVENT` handlers are told when entries arrive,
  at most once per `minTimeout` seconds.
- The authorization server renews token pairs (`GET /oauth/token/?grant_type=refresh_token…`); `install()` plays
  the application's installation: it POSTs ONAPPINSTALL with a fresh pair to the application's handler.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cli.fake_portal.methods import Fault
from cli.fake_portal.records import CLASSIC, now_text

Change = tuple[str, int, str]  # (entity, record number, "ADD" | "UPDATE" | "DELETE")


def event_name(entity: str, kind: str) -> str:
    """The Bitrix24 event a change raises: ONCRMDEALUPDATE, ONCRMDYNAMICITEMADD, ONTASKDELETE."""
    if entity in CLASSIC:
        return f"ONCRM{entity.upper()}{kind}"
    if entity == "task":
        return f"ONTASK{kind}"
    return f"ONCRMDYNAMICITEM{kind}"


def event_data(entity: str, number: int) -> dict[str, Any]:
    """What the event carries: ids only."""
    if entity.startswith("dynamic-"):
        return {"FIELDS": {"ID": number, "ENTITY_TYPE_ID": int(entity.split("-", 1)[1])}}
    if entity == "task":
        return {"FIELDS_AFTER": {"ID": number}}
    return {"FIELDS": {"ID": number}}


@dataclass
class Binding:
    event: str
    handler: str
    offline: bool
    auth_connector: str | None
    min_timeout: float = 1.0
    notified_at: float = 0.0


@dataclass
class Entry:
    id: int
    object: tuple[str, int]
    event: str
    data: dict[str, Any]
    timestamp: str
    message_id: str
    process_id: str | None = None
    error: bool = False

    def shown(self) -> dict[str, Any]:
        return {
            "ID": str(self.id),
            "TIMESTAMP_X": self.timestamp,
            "EVENT_NAME": self.event,
            "EVENT_DATA": self.data,
            "EVENT_ADDITIONAL": False,
            "MESSAGE_ID": self.message_id,
        }


@dataclass
class Application:
    """The local application installed on the portal (what ONAPPINSTALL tells its handler)."""

    client_id: str
    client_secret: str
    member_id: str = field(default_factory=lambda: secrets.token_hex(16))
    application_token: str = field(default_factory=lambda: secrets.token_hex(16))
    refresh_tokens: dict[str, int] = field(default_factory=dict)  # live refresh token -> user
    renewals: int = 0


@dataclass
class Post:
    """An outgoing call to a handler: URL and form fields."""

    url: str
    form: dict[str, str]


class EventBus:
    """Bindings, offline queues (one per source key) and what the handlers are to be sent."""

    def __init__(self) -> None:
        self.bindings: list[Binding] = []
        self.queues: dict[str | None, list[Entry]] = {}
        self.outbox: list[Post] = []  # drained by the server, which POSTs them
        self._next_id = 1

    # ---- methods ----

    def bind(self, params: Mapping[str, Any]) -> bool:
        event, handler = str(params.get("event") or "").upper(), str(params.get("handler") or "")
        offline = str(params.get("event_type") or "online").lower() == "offline"
        if not event or (not handler and not offline):
            raise Fault(400, "ERROR_ARGUMENT", "event and handler are required")
        connector = str(params["auth_connector"]) if params.get("auth_connector") else None
        options = params.get("options")
        timeout = float(options.get("minTimeout", 1)) if isinstance(options, Mapping) else 1.0
        for known in self.bindings:
            if (known.event, known.handler, known.offline) == (event, handler, offline):
                raise Fault(400, "ERROR_EVENT_BIND", "Handler already binded")
        self.bindings.append(Binding(event, handler, offline, connector, timeout))
        return True

    def unbind(self, params: Mapping[str, Any]) -> dict[str, int]:
        event, handler = str(params.get("event") or "").upper(), str(params.get("handler") or "")
        offline = str(params.get("event_type") or "online").lower() == "offline"
        before = len(self.bindings)
        self.bindings = [
            b
            for b in self.bindings
            if not (b.event == event and b.handler == handler and b.offline == offline)
        ]
        return {"count": before - len(self.bindings)}

    def get(self) -> list[dict[str, Any]]:
        return [
            {
                "event": b.event,
                "handler": b.handler,
                "auth_type": "0",
                "offline": int(b.offline),
                **({"connector_id": b.auth_connector} if b.auth_connector else {}),
            }
            for b in self.bindings
        ]

    def offline_get(self, params: Mapping[str, Any]) -> dict[str, Any]:
        queue = self.queues.setdefault(_connector(params), [])
        limit = max(1, min(int(params.get("limit") or 50), 1000))
        clear = str(params.get("clear", "1")) != "0"
        wanted = str(params.get("process_id") or "") or None
        errors = str(params.get("error", "0")) == "1"
        chosen = [
            e
            for e in queue
            if (e.process_id is None or e.process_id == wanted) and e.error == errors
        ][:limit]
        if clear:
            self.queues[_connector(params)] = [e for e in queue if e not in chosen]
            return {"process_id": None, "events": [e.shown() for e in chosen]}
        process = wanted or uuid.uuid4().hex
        for entry in chosen:
            entry.process_id = process
        return {"process_id": process if chosen else None, "events": [e.shown() for e in chosen]}

    def offline_clear(self, params: Mapping[str, Any]) -> bool:
        process = str(params.get("process_id") or "")
        if not process:
            raise Fault(400, "ERROR_ARGUMENT", "process_id is required")
        ids, messages = _strings(params.get("id")), _strings(params.get("message_id"))
        for key, queue in self.queues.items():
            self.queues[key] = [
                e for e in queue if not (e.process_id == process and _picked(e, ids, messages))
            ]
        return True

    def offline_error(self, params: Mapping[str, Any]) -> bool:
        process = str(params.get("process_id") or "")
        messages = _strings(params.get("message_id"))
        for queue in self.queues.values():
            for entry in queue:
                if entry.process_id == process and (not messages or entry.message_id in messages):
                    entry.error, entry.process_id = True, None
        return True

    def offline_list(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [e.shown() for e in self.queues.get(_connector(params), [])]

    # ---- changes ----

    def changed(self, change: Change, connector: str | None, auth: dict[str, str]) -> None:
        """Queue and announce one change; `connector` is the auth_connector of the call that made it."""
        entity, number, kind = change
        name = event_name(entity, kind)
        for binding in self.bindings:
            if binding.event != name:
                continue
            if binding.offline:
                if binding.auth_connector is None or binding.auth_connector != connector:
                    self._queue(binding.auth_connector, (entity, number), name, auth)
            else:
                self.outbox.append(
                    Post(binding.handler, _form(name, event_data(entity, number), auth))
                )

    def _queue(
        self, connector: str | None, obj: tuple[str, int], name: str, auth: dict[str, str]
    ) -> None:
        queue = self.queues.setdefault(connector, [])
        waiting = next((e for e in queue if e.object == obj and e.process_id is None), None)
        if waiting is not None:  # one entry per object: the latest change replaces it
            queue.remove(waiting)
        self._next_id += 1
        queue.append(
            Entry(
                self._next_id,
                obj,
                name,
                event_data(*obj),
                now_text(),
                waiting.message_id if waiting else uuid.uuid4().hex,
            )
        )
        self._notify(auth)

    def _notify(self, auth: dict[str, str]) -> None:
        now = time.monotonic()
        for binding in self.bindings:
            if (
                binding.event == "ONOFFLINEEVENT"
                and now - binding.notified_at >= binding.min_timeout
            ):
                binding.notified_at = now
                self.outbox.append(Post(binding.handler, _form("ONOFFLINEEVENT", {}, auth)))


def _connector(params: Mapping[str, Any]) -> str | None:
    return str(params["auth_connector"]) if params.get("auth_connector") else None


def _strings(value: Any) -> set[str]:
    if value is None:
        return set()
    items = (
        value.values()
        if isinstance(value, Mapping)
        else value if isinstance(value, list) else [value]
    )
    return {str(item) for item in items}


def _picked(entry: Entry, ids: set[str], messages: set[str]) -> bool:
    if ids:
        return str(entry.id) in ids
    return not messages or entry.message_id in messages


def _form(name: str, data: Mapping[str, Any], auth: Mapping[str, str]) -> dict[str, str]:
    """An event as Bitrix24 POSTs it: event, data[…], ts, auth[…] (PHP-style keys)."""
    form = {"event": name, "ts": str(int(time.time()))}
    for key, value in data.items():
        if isinstance(value, Mapping):
            form.update({f"data[{key}][{k}]": str(v) for k, v in value.items()})
        else:
            form[f"data[{key}]"] = str(value)
    form.update({f"auth[{key}]": value for key, value in auth.items()})
    return form
