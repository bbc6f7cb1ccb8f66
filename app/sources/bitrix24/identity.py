"""Which record a Bitrix24 event is about: one rule per event family, as data.

Bitrix24 sends no event id, only the ids of what changed (api-reference/*/events/* in Bitrix24's REST docs). The
subject names the record the event is about, so that events of one record keep their order and events of different
records never share an ordering lane (CONTRACT.md, Event identity):

- the record's own id where the event carries it (`FIELDS[ID]`, else `FIELDS_AFTER[ID]` / `FIELDS_BEFORE[ID]`);
- the parent's, for events about a child: a task comment is `task/{TASK_ID}`, a call `call/{CALL_ID}`, a chat
  message `chat/{CHAT_ID}`, an address its owner's record;
- `{entity}/~{first 16 hex digits of SHA-256 of the canonical data}` when no id can be found: unrelated events never
  share a subject. `0` and empty values are not ids.

Each rule is a row of RULES: the family, the event-name pattern, the subject's entity and where the id is read (paths
into `data`, tried in order). The entity may name a value: `dynamic-{FIELDS.ENTITY_TYPE_ID}`, or `{crm:…}` for a CRM
entity type id (`8` is a requisite). Unknown events fall back to the entity in their name and the usual id places.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

_CRM_IDS = ("FIELDS.ID", "FIELDS_AFTER.ID", "FIELDS_BEFORE.ID", "ID", "id")
# CRM object type ids (crm.enum.ownertype); others are smart processes.
CRM_TYPES = {
    "1": "lead",
    "2": "deal",
    "3": "contact",
    "4": "company",
    "5": "invoice",
    "7": "quote",
    "8": "requisite",
}


@dataclass(frozen=True)
class Rule:
    family: str  # what the events are about, for people (and the fixture manifest)
    pattern: str  # the whole event name, a regular expression (upper case)
    entity: str  # the subject's entity; `{path}` and `{crm:path}` read the data
    ids: tuple[str, ...] = _CRM_IDS  # where the id is, first found wins

    def matches(self, event: str) -> bool:
        return re.fullmatch(self.pattern, event) is not None


_VERB = r"(ADD|UPDATE|DELETE)"
RULES: tuple[Rule, ...] = (
    # ---- CRM ----
    Rule(
        "crm user fields",
        r"ONCRM(LEAD|DEAL|CONTACT|COMPANY|QUOTE|INVOICE|REQUISITE|TYPE)USERFIELD"
        r"(ADD|UPDATE|DELETE|SETENUMVALUES)",
        "crm-userfield",
    ),
    Rule("recurring deals", rf"ONCRMDEALRECURRING({_VERB[1:-1]}|EXPOSE)", "deal-recurring"),
    Rule(
        "recurring invoices", rf"ONCRMINVOICERECURRING({_VERB[1:-1]}|EXPOSE)", "invoice-recurring"
    ),
    Rule("deals", rf"ONCRMDEAL({_VERB[1:-1]}|MOVETOCATEGORY)", "deal"),
    Rule("leads", rf"ONCRMLEAD{_VERB}", "lead"),
    Rule("contacts", rf"ONCRMCONTACT{_VERB}", "contact"),
    Rule("companies", rf"ONCRMCOMPANY{_VERB}", "company"),
    Rule("quotes", rf"ONCRMQUOTE{_VERB}", "quote"),
    Rule("invoices (old)", rf"ONCRMINVOICE({_VERB[1:-1]}|SETSTATUS)", "invoice"),
    # Smart processes and smart invoices (entity type 31): the subject names the process.
    Rule("smart-process items", rf"ONCRMDYNAMICITEM{_VERB}", "dynamic-{FIELDS.ENTITY_TYPE_ID}"),
    Rule("smart-process types", rf"ONCRMTYPE{_VERB}", "crm-type"),
    Rule("activities", rf"ONCRMACTIVITY{_VERB}", "activity"),
    Rule("timeline comments", rf"ONCRMTIMELINECOMMENT{_VERB}", "timeline-comment"),
    Rule(
        "timeline log entries",
        rf"(ONCRMTIMELINEITEMACTION|ONCRMTIMELINELOGMESSAGE{_VERB})",
        "timeline-item",
    ),
    Rule("requisites", rf"ONCRMREQUISITE{_VERB}", "requisite"),
    Rule("bank details", rf"ONCRMBANKDETAIL{_VERB}", "bankdetail"),
    # An address has no id of its own: it belongs to its owner (ENTITY_TYPE_ID 8 = a requisite).
    Rule(
        "addresses",
        r"ONCRMADDRESS(REGISTER|UNREGISTER)",
        "{crm:FIELDS.ENTITY_TYPE_ID}",
        ("FIELDS.ENTITY_ID",),
    ),
    Rule("currencies", rf"ONCRMCURRENCY{_VERB}", "currency"),
    Rule("generated documents", rf"ONCRMDOCUMENTGENERATORDOCUMENT{_VERB}", "crm-document"),
    Rule("crm products (old catalog)", rf"ONCRMPRODUCT{_VERB}", "product"),
    Rule("crm product properties", rf"ONCRMPRODUCTPROPERTY{_VERB}", "product-property"),
    Rule("crm product sections", rf"ONCRMPRODUCTSECTION{_VERB}", "product-section"),
    Rule("crm measures", rf"ONCRMMEASURE{_VERB}", "measure"),
    # ---- tasks ----
    Rule(
        "task comments",
        rf"ONTASKCOMMENT{_VERB}",
        "task",
        ("FIELDS_AFTER.TASK_ID", "FIELDS_BEFORE.TASK_ID"),
    ),
    Rule("tasks", rf"ONTASK{_VERB}", "task", ("FIELDS_AFTER.ID", "FIELDS_BEFORE.ID", "FIELDS.ID")),
    # ---- telephony: every event of a call is about the call ----
    Rule("telephony calls", r"ONVOXIMPLANTCALL(INIT|START|END)", "call", ("CALL_ID",)),
    Rule("external calls", r"ONEXTERNALCALL(START|BACKSTART)", "call", ("CALL_ID",)),
    # ---- users, groups, live feed ----
    Rule("users", rf"ONUSER{_VERB}", "user", ("ID", "FIELDS.ID")),
    Rule("workgroups", rf"ONSONETGROUP({_VERB[1:-1]}|SUBJECT{_VERB})", "workgroup"),
    Rule("live feed posts", rf"ONLIVEFEEDPOST{_VERB}", "livefeed-post", ("FIELDS.POST_ID",)),
    # ---- IM, bots, open lines: every message of a chat is about the chat ----
    Rule(
        "bot messages",
        r"ONIMBOTMESSAGE(ADD|UPDATE|DELETE)|ONIMBOTJOINCHAT|ONIMCOMMANDADD",
        "chat",
        ("PARAMS.CHAT_ID", "PARAMS.TO_CHAT_ID", "PARAMS.DIALOG_ID"),
    ),
    Rule("bots (v2)", r"ONIMBOTV2[A-Z]+", "chat", ("chat.id", "message.chatId", "dialogId")),
    Rule("bot removal", r"ONIMBOTDELETE", "bot", ("BOT_ID",)),
    Rule(
        "open line connector messages",
        r"ONIMCONNECTORMESSAGE(ADD|UPDATE|DELETE)",
        "chat",
        ("MESSAGES.0.im.chat_id", "MESSAGES.0.chat.id"),
    ),
    Rule("open line dialogs", r"ONIMCONNECTORDIALOG(START|FINISH)", "chat", ("DATA.0.chat.id",)),
    Rule(
        "open line connectors",
        r"ONIMCONNECTOR(LINEDELETE|STATUSDELETE)",
        "openline",
        ("LINE", "line", ""),
    ),
    Rule(
        "open line messages",
        r"ONOPENLINEMESSAGE(ADD|UPDATE|DELETE)",
        "chat",
        ("DATA.0.chat.id", "DATA.0.im.chat_id"),
    ),
    Rule("open line sessions", r"ONSESSION(START|FINISH)", "chat", ("DATA.0.chat.id",)),
    Rule(
        "chat messages",
        r"ONIMMESSAGE(ADD|UPDATE|DELETE)",
        "chat",
        ("PARAMS.CHAT_ID", "PARAMS.TO_CHAT_ID"),
    ),
    # ---- sale (online store) ----
    Rule(
        "orders", r"ONSALEORDERSAVED|ONSALEBEFOREORDERDELETE|ONORDER(ENTITYSAVED|DELETED)", "order"
    ),
    Rule("payments", r"ONPAYMENT(ENTITYSAVED|DELETED)", "payment"),
    Rule("shipments", r"ONSHIPMENT(ENTITYSAVED|DELETED)", "shipment"),
    Rule("order properties", r"ONPROPERTYVALUE(ENTITYSAVED|DELETED)", "order-property-value"),
    # ---- catalog ----
    Rule("catalog products", r"CATALOG\.PRODUCT\.ON\.(ADD|UPDATE|DELETE)", "catalog-product"),
    Rule(
        "catalog price types",
        r"CATALOG\.PRICE\.TYPE\.ON\.(ADD|UPDATE|DELETE)",
        "catalog-price-type",
    ),
    Rule("catalog prices", r"CATALOG\.PRICE\.ON\.(ADD|UPDATE|DELETE)", "catalog-price"),
    Rule("catalog measures", r"CATALOG\.MEASURE\.ON\.(ADD|UPDATE|DELETE)", "catalog-measure"),
    Rule(
        "catalog rounding rules", r"CATALOG\.ROUNDING\.ON\.(ADD|UPDATE|DELETE)", "catalog-rounding"
    ),
    # ---- calendar, booking ----
    Rule("calendar entries", rf"ONCALENDARENTRY{_VERB}", "calendar", ("id", "ID")),
    Rule("calendar sections", rf"ONCALENDARSECTION{_VERB}", "calendar-section", ("id", "ID")),
    Rule("bookings", rf"ONBOOKING{_VERB}", "booking"),
    Rule("booking resources", rf"ONBOOKINGRESOURCE{_VERB}", "booking-resource"),
    Rule("booking resource types", rf"ONBOOKINGRESOURCETYPE{_VERB}", "booking-resource-type"),
    Rule("booking waitlist", rf"ONBOOKINGWAITLISTITEM{_VERB}", "booking-waitlist"),
    # ---- e-signature ----
    Rule(
        "e-signature documents",
        r"ONSIGNB2E(DOCUMENT|MEMBER)STATUSCHANGED",
        "sign-document",
        ("documentUid",),
    ),
    Rule(
        "e-signature HR documents", r"ONSIGNHCMLINKB2EDOCUMENTSIGNED", "sign-hcm-document", ("id",)
    ),
    # ---- lists, disk: not in the public reference (no body to check); their FIELDS[ID] names the element ----
    Rule("lists", r"ONLISTS?[A-Z]*(ADD|UPDATE|DELETE)", "list-element"),
    Rule("disk", r"ONDISK[A-Z]*", "disk-object"),
    # ---- the application's own lifecycle: about the installation, no record ----
    Rule(
        "application lifecycle",
        r"ONAPP(INSTALL|UNINSTALL|UPDATE|PAYMENT|METHODCONFIRM|TEST)",
        "app",
        (),
    ),
    Rule("offline queue notices", r"ONOFFLINEEVENT", "offline", ()),
)

_PREFIX = re.compile(r"^(ONCRM|ON)")
_SUFFIX = re.compile(r"(ADD|UPDATE|DELETE|SETSTATUS|MOVETOCATEGORY|REGISTER|UNREGISTER)$")


def rule_for(event: str) -> Rule:
    """The rule of an (upper-case) event name; unknown events get one from the name itself."""
    # A portal sends a few dozen names over and over; a long one is nobody's and is not kept.
    return _cached_rule(event) if len(event) <= 100 else _rule_for(event)


def _rule_for(event: str) -> Rule:
    for rule in RULES:
        if rule.matches(event):
            return rule
    name = _SUFFIX.sub("", _PREFIX.sub("", event.replace(".", ""))) or event
    return Rule("unknown", re.escape(event), name.lower())


_cached_rule = functools.lru_cache(maxsize=1024)(_rule_for)


def subject_of(event: str, data: Any) -> str:
    """`{entity}/{id}` for the event's record; `{entity}/~{hash}` when it carries no id."""
    rule = rule_for(event)
    entity = _entity(rule.entity, data)
    for path in rule.ids:
        found = text(_at(data, path))
        if found:
            return f"{entity}/{found}"
    return f"{entity}/~{data_hash(data)[:16]}"


def canonical(value: Any) -> bytes:
    """The data as one byte string whatever its encoding: form and JSON bodies of one event give the same bytes.

    A form is what PHP's http_build_query writes: strings only (`true` as "1", `false` as "0"), nulls and empty arrays
    left out, lists as keys 0..n-1; Bitrix24 writes JavaScript's `undefined` for a missing part. So leaves become
    strings, empty values and `undefined` disappear, mappings are sorted, and a mapping keyed 0..n-1 is a list.
    """
    canon = _canon(value)
    return orjson.dumps({} if canon is _EMPTY else canon, option=orjson.OPT_SORT_KEYS)


def data_hash(data: Any) -> str:
    """SHA-256 of the canonical data, hex."""
    return hashlib.sha256(canonical(data)).hexdigest()


def text(value: Any) -> str | None:
    """A value as an id: a stripped non-empty string that is not "0" (JSON numbers become text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str):
        value = value.strip()
        return value if value and value != "0" and value.lower() != "undefined" else None
    return None


_EMPTY = object()  # what PHP leaves out of a form: null, and an empty array


def _canon(value: Any) -> Any:
    if isinstance(value, str):  # the common leaf, ahead of the (slow) abstract-class check
        # the form parser reads Bitrix24's literal `undefined` as null; JSON bodies send it as text
        return _EMPTY if value == "undefined" else str(value)
    if type(value) is dict or isinstance(value, Mapping):
        items = [(str(k), _canon(v)) for k, v in value.items()]
        kept = [(k, v) for k, v in items if v is not _EMPTY]
        if not kept:
            return _EMPTY
        if [k for k, _ in items] == [str(i) for i in range(len(items))]:
            return [v for _, v in kept]
        return dict(kept)
    if isinstance(value, (list, tuple)):
        return _canon(dict(enumerate(value)))
    if value is None:
        return _EMPTY
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _at(data: Any, path: str) -> Any:
    """The value at a dotted path (`FIELDS.ID`, `DATA.0.chat.id`); "" is the data itself."""
    node = data
    for part in filter(None, path.split(".")):
        if type(node) is dict or isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


_PLACEHOLDER = re.compile(r"\{(crm:)?([^}]+)\}")


def _entity(template: str, data: Any) -> str:
    def fill(match: re.Match[str]) -> str:
        value = text(_at(data, match.group(2))) or ""
        if match.group(1):  # a CRM entity type id
            return CRM_TYPES.get(value, f"dynamic-{value}" if value else "crm")
        return value

    entity = _PLACEHOLDER.sub(fill, template).strip("-")
    return entity or "unknown"
