"""The segment rule language: validation, compilation to one ``Q``, and "why in/out?".

The same JSON language describes segments, personas and the API's previews.

Nodes
-----
Groups: ``{"all": [nodes]}``, ``{"any": [nodes]}`` (both non-empty), ``{"not": node}``.

Conditions:

* ``{"field": f, "op": op, "value": v}`` over a profile field in :data:`FIELDS`.
* ``{"attribute": key, "op": op, "value": v}`` over ``Customer.attributes[key]``.
* ``{"consent": channel, "op": "eq", "value": "opted_in" | "opted_out" | "unknown"}``:
  the latest consent ledger row on that channel ("unknown": the customer was never asked).
* ``{"persona": slug}``: the customer's assigned persona is that persona.
* ``{"segment": id}``: the customer is in that segment (dynamic: its rules, inlined;
  static: its member rows). A segment may not refer to itself, directly or through others.
* ``{"activity": kind, "channel"?: c, "campaign"?: id, "min_count"?: N, "within_days"?: D,
  "performed"?: bool}``: the customer performed ``kind`` [on channel ``c``] [for campaign
  ``id``] at least ``N`` times (default 1) [with ``occurred_at`` within ``[now - D days, now]``];
  ``"performed": false`` negates the whole condition. Optional keys may also be ``null``
  (= absent), except ``performed`` which must be a boolean when given.

Persona rules (``validate(..., for_persona=True)``) may not use persona or segment
conditions: personas are derived from rules, and segments may refer to personas.

Operators (see :func:`operators_for` for which apply to which field type)
---------------------------------------------------------------------------
eq, neq, in, not_in, contains, starts_with, gt, gte, lt, lte, between ([low, high],
inclusive), is_set, is_not_set, within_last_days N (``now - N days <= value <= now``),
before_last_days N (``value < now - N days``).

* Text: ``eq``/``in`` are exact (case-sensitive); ``contains``/``starts_with`` are
  case-insensitive (ASCII letters only on SQLite, whose LIKE folds ASCII only);
  ``gt``/``lt``/``between`` order by code point on both backends.
* Numbers compare numerically (lifetime_value is exact decimal).
* Datetime fields take ISO strings. A date-time value (``2025-06-01T10:00:00+02:00``;
  without an offset it is in the current time zone) compares exactly. A date value
  (``2025-06-01``) means that whole day in the current time zone: ``eq`` = during that day,
  ``gt`` = after that day, ``gte`` = from the start of it, ``lt`` = before it, ``lte`` = until
  its end, ``between`` = from the start of ``low`` to the end of ``high``.

Missing values
--------------
A customer without the field (NULL, or the empty string for text fields) or the attribute
(key absent, or JSON ``null``) matches ``neq``, ``not_in`` and ``is_not_set`` and no other
operator. ``neq``/``not_in`` are exactly ``not eq``/``not in``.

Typed attributes
----------------
The JSON type of the rule's value decides how an attribute compares:

* a number (not a boolean) compares numerically, and only with attributes holding a JSON number;
* a boolean compares only with JSON booleans (``eq``, ``neq``, ``in``, ``not_in`` only);
* a string that is an ISO date or date-time (``YYYY-MM-DD`` or a full ISO date-time) compares
  as a calendar date with attribute strings that start with ``YYYY-MM-DD`` (followed by
  nothing, ``T`` or a space): both sides are reduced to their ``YYYY-MM-DD`` part as written,
  so attribute dates compare at day granularity. ``within_last_days``/``before_last_days``
  use the same day granularity: ``within_last_days N`` = the attribute's day is between the
  day of ``now - N days`` and today; ``before_last_days N`` = before the day of ``now - N days``
  (days in the current time zone);
* any other string compares as text with attributes holding a JSON string;
* ``contains``/``starts_with`` always compare as text with JSON strings.

An attribute holding a different JSON type than the rule's value (``"10"`` against the
number 10, an array, an object) is present but not equal: it matches ``neq`` and ``not_in``
(and ``is_set``), never ``eq``, ``in``, ``gt`` and the like. Elements of an ``in`` list are
typed one by one. Attribute names may not contain ``"`` or ``\\`` (SQLite JSON paths).

Compilation
-----------
:func:`compile_rules` returns one ``Q`` over ``Customer`` (with ``Exists`` subqueries), so
counting, listing, exporting and snapshotting an audience is one SQL statement. Every
compiled node is two-valued in SQL (never NULL), so ``not`` is an exact complement.
It does not exclude erased customers: ``segments.selectors`` does. References (persona
slugs, segments, campaigns) are looked up when compiling, in a few batched queries.
"""

from __future__ import annotations

import copy
import functools
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    Func,
    JSONField,
    OuterRef,
    Q,
    TextField,
    Value,
    When,
)
from django.db.models.expressions import Expression
from django.db.models.functions import Cast, Coalesce, Collate, Substr
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    IContains,
    In,
    IStartsWith,
    LessThan,
    LessThanOrEqual,
    Regex,
)
from django.utils import timezone

from customers.models import ACTIVITY_KIND, Activity, Channel, Customer, Persona
from customers.querysets import consent_status_subquery


@dataclass(frozen=True)
class FieldSpec:
    """A profile field a rule can test: its label for the UI and its type (text, number, datetime)."""

    label: str
    type: str


FIELDS: dict[str, FieldSpec] = {
    "email": FieldSpec("Email", "text"),
    "phone": FieldSpec("Phone", "text"),
    "external_id": FieldSpec("External ID", "text"),
    "mastodon_handle": FieldSpec("Mastodon handle", "text"),
    "bluesky_handle": FieldSpec("Bluesky handle", "text"),
    "first_name": FieldSpec("First name", "text"),
    "last_name": FieldSpec("Last name", "text"),
    "locale": FieldSpec("Locale", "text"),
    "timezone": FieldSpec("Time zone", "text"),
    "country": FieldSpec("Country", "text"),
    "city": FieldSpec("City", "text"),
    "lifetime_value": FieldSpec("Lifetime value", "number"),
    "orders_count": FieldSpec("Orders", "number"),
    "created_at": FieldSpec("Created", "datetime"),
    "last_purchase_at": FieldSpec("Last purchase", "datetime"),
    "last_engaged_email_at": FieldSpec("Last engaged by email", "datetime"),
    "last_engaged_sms_at": FieldSpec("Last engaged by SMS", "datetime"),
    "last_engaged_whatsapp_at": FieldSpec("Last engaged on WhatsApp", "datetime"),
    "last_engaged_social_at": FieldSpec("Last engaged on social", "datetime"),
}

OPERATORS: dict[str, str] = {
    "eq": "is",
    "neq": "is not",
    "in": "is one of",
    "not_in": "is none of",
    "contains": "contains",
    "starts_with": "starts with",
    "gt": "is greater than / after",
    "gte": "is at least / on or after",
    "lt": "is less than / before",
    "lte": "is at most / on or before",
    "between": "is between",
    "is_set": "is set",
    "is_not_set": "is not set",
    "within_last_days": "is within the last N days",
    "before_last_days": "is more than N days ago",
}

_TYPE_OPERATORS: dict[str, frozenset[str]] = {
    "text": frozenset(OPERATORS) - {"within_last_days", "before_last_days"},
    "number": frozenset(OPERATORS) - {"contains", "starts_with", "within_last_days", "before_last_days"},
    "datetime": frozenset(OPERATORS) - {"in", "not_in", "contains", "starts_with"},
    # Attribute values: the UI builder types them as text, number, datetime or boolean;
    # a rule on an attribute may use any operator (the value's JSON type decides).
    "boolean": frozenset({"eq", "neq", "in", "not_in", "is_set", "is_not_set"}),
    "attribute": frozenset(OPERATORS),
}

CONSENT_VALUES = ("opted_in", "opted_out", "unknown")
ORDER_OPS = {"gt", "gte", "lt", "lte"}
LIST_OPS = {"in", "not_in"}
PRESENCE_OPS = {"is_set", "is_not_set"}
DAYS_OPS = {"within_last_days", "before_last_days"}
TEXT_OPS = {"contains", "starts_with"}
MAX_DAYS = 36_500  # a century; larger windows would overflow datetime arithmetic
MAX_DEPTH = 20
ACTIVITY_KEYS = ("activity", "channel", "campaign", "min_count", "within_days", "performed")

# Which keys each node type takes; the first of these keys found in a node decides its type.
_NODE_KEYS: dict[str, tuple[str, ...]] = {
    "all": ("all",),
    "any": ("any",),
    "not": ("not",),
    "field": ("field", "op", "value"),
    "attribute": ("attribute", "op", "value"),
    "consent": ("consent", "op", "value"),
    "persona": ("persona",),
    "segment": ("segment",),
    "activity": ACTIVITY_KEYS,
}

_ISO_DATE_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ATTRIBUTE_KEY_FORBIDDEN = re.compile(r'["\\\x00-\x1f]')
# An attribute string "is a date" when it starts with YYYY-MM-DD followed by nothing, T or a space.
_PG_DATE_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ]|$)"
_SQLITE_DATE_GLOBS = ("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]", "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ]*")
_COMPARE = {"eq": Exact, "gt": GreaterThan, "gte": GreaterThanOrEqual, "lt": LessThan, "lte": LessThanOrEqual}


def operators_for(type_: str) -> list[str]:
    """The operators that apply to a value type: "text", "number", "datetime", "boolean", or "attribute" (all)."""
    try:
        allowed = _TYPE_OPERATORS[type_]
    except KeyError:
        raise ValueError(f"unknown field type {type_!r}; use one of {', '.join(_TYPE_OPERATORS)}") from None
    return [op for op in OPERATORS if op in allowed]


class RuleError(ValueError):
    """An invalid rule tree: ``path`` names the node (``all[1].any[0].value``), ``reason`` says why."""

    def __init__(self, path: str, reason: str):
        self.path = path or "(root)"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def parse_iso(value: Any) -> date | datetime | None:
    """An ISO date (``YYYY-MM-DD``) or date-time string parsed, else None (not an ISO string)."""
    if not isinstance(value, str) or not _ISO_DATE_PREFIX.match(value):
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        if value[10] in "T ":
            return datetime.fromisoformat(value)
    except ValueError:
        return None
    return None


def validate(tree: Any, *, for_persona: bool = False, segment_id: int | None = None) -> None:
    """Raise :class:`RuleError` naming the first bad node of ``tree``; return None if it is valid.

    ``for_persona`` forbids persona and segment conditions. ``segment_id`` is the segment
    whose rules these are (None if unsaved), so a reference back to it is reported as a cycle.
    Looks referenced personas, segments and campaigns up in the database.
    """
    _prepare(tree, for_persona=for_persona, segment_id=segment_id)


def compile_rules(tree: Any, *, now: datetime | None = None) -> Q:
    """Validate ``tree`` and compile it to one ``Q`` over ``Customer``; erased customers are not excluded.

    ``now`` anchors relative dates (within/before N days); it defaults to the current time.
    """
    references = _prepare(tree, for_persona=False, segment_id=None)
    return _Compiler(references, now=now).node(tree)


def compile_segment_rules(segments: Iterable[Any], *, now: datetime | None = None) -> dict[int, Q]:
    """Membership ``Q`` of each saved segment (static: its member rows), with shared batched look-ups.

    Dynamic segments whose rules no longer validate are left out: their own page reports the error.
    """
    segments = [s for s in segments if s.pk is not None]
    references = _References()
    references.know_segments(segments)
    structures: dict[int, list[_Ref]] = {}
    for segment in segments:
        info = references.segments[segment.pk]
        if info.kind == "dynamic" and info.error is None:
            structures[segment.pk] = info.refs
    references.load([ref for refs in structures.values() for ref in refs])
    compiler = _Compiler(references, now=now)
    result: dict[int, Q] = {}
    for segment in segments:
        if segment.kind != "dynamic":
            result[segment.pk] = compiler.segment(segment.pk)
            continue
        if segment.pk not in structures:
            continue
        try:
            references.verify(structures[segment.pk], stack=[segment.pk])
        except RuleError:
            continue
        result[segment.pk] = compiler.node(segment.rules)
    return result


def explain(tree: Any, customer: Customer, *, now: datetime | None = None) -> dict:
    """Why ``customer`` is in or out: a deep copy of ``tree`` with ``"matched": bool`` on every node.

    Every node is evaluated in one SQL query on the customer's row (after reference look-ups).
    Raises :class:`RuleError` for an invalid tree and ``Customer.DoesNotExist`` for a missing customer.
    """
    references = _prepare(tree, for_persona=False, segment_id=None)
    compiler = _Compiler(references, now=now)
    result = copy.deepcopy(tree)
    nodes: list[dict] = []

    def walk(node: dict) -> None:
        nodes.append(node)
        for group in ("all", "any"):
            for child in node.get(group, ()):
                walk(child)
        if "not" in node:
            walk(node["not"])

    walk(result)
    # Compile every node before any gets its "matched" key, from the untouched copy.
    annotations = {f"n{i}": ExpressionWrapper(compiler.node(node), BooleanField()) for i, node in enumerate(nodes)}
    row = Customer.objects.filter(pk=customer.pk).values(**annotations).first()
    if row is None:
        raise Customer.DoesNotExist(f"Customer #{customer.pk} does not exist.")
    for i, node in enumerate(nodes):
        node["matched"] = bool(row[f"n{i}"])
    return result


# --- validation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """A reference from a node to something stored: a persona slug, a segment id or a campaign id."""

    path: str
    kind: str
    key: Any


def join_path(path: str, part: str) -> str:
    """A node's path as ``RuleError.path`` names it: ``all[0].not``; the builder maps errors back by it."""
    return f"{path}.{part}" if path and not part.startswith("[") else f"{path}{part}"


def _structure(tree: Any, *, for_persona: bool) -> list[_Ref]:
    """Check ``tree`` without the database; return its references in tree order."""
    refs: list[_Ref] = []
    _check(tree, "", for_persona, refs, 0)
    return refs


def _check(node: Any, path: str, for_persona: bool, refs: list[_Ref], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise RuleError(path, f"rules nest deeper than {MAX_DEPTH} levels")
    if not isinstance(node, dict) or not node:
        raise RuleError(path, "a rule must be a non-empty JSON object")
    kind = next((k for k in _NODE_KEYS if k in node), None)
    if kind is None:
        raise RuleError(path, f"expected one of {', '.join(_NODE_KEYS)} (got keys {', '.join(map(str, node))})")
    unknown = [k for k in node if k not in _NODE_KEYS[kind]]
    if unknown:
        raise RuleError(
            join_path(path, str(unknown[0])),
            f"unknown key {unknown[0]!r} in a {kind} node; it takes {', '.join(_NODE_KEYS[kind])}",
        )
    if kind in ("all", "any"):
        children = node[kind]
        if not isinstance(children, list) or not children:
            raise RuleError(join_path(path, kind), "empty group: must be a non-empty list of rules")
        for i, child in enumerate(children):
            _check(child, join_path(join_path(path, kind), f"[{i}]"), for_persona, refs, depth + 1)
    elif kind == "not":
        _check(node["not"], join_path(path, "not"), for_persona, refs, depth + 1)
    elif kind == "consent":
        _check_consent(node, path)
    elif kind == "persona":
        if for_persona:
            raise RuleError(path, "persona rules cannot use persona conditions (personas are derived from rules)")
        if not isinstance(node["persona"], str) or not node["persona"].strip():
            raise RuleError(join_path(path, "persona"), "must be a persona slug")
        refs.append(_Ref(join_path(path, "persona"), "persona", node["persona"]))
    elif kind == "segment":
        if for_persona:
            raise RuleError(path, "persona rules cannot use segment conditions (segments may depend on personas)")
        if not _is_positive_int(node["segment"]):
            raise RuleError(join_path(path, "segment"), "must be a segment id (a positive whole number)")
        refs.append(_Ref(join_path(path, "segment"), "segment", node["segment"]))
    elif kind == "activity":
        _check_activity(node, path, refs)
    elif kind == "field":
        name = node["field"]
        if not isinstance(name, str) or name not in FIELDS:
            raise RuleError(join_path(path, "field"), f"unknown field {name!r}; use one of {', '.join(FIELDS)}")
        _check_condition(node, path, FIELDS[name].type, f"{FIELDS[name].type} field {name!r}")
    else:
        key = node["attribute"]
        if not isinstance(key, str) or not key.strip():
            raise RuleError(join_path(path, "attribute"), "must be a non-empty attribute name")
        if _ATTRIBUTE_KEY_FORBIDDEN.search(key):
            raise RuleError(
                join_path(path, "attribute"), "attribute names cannot contain '\"', '\\' or control characters"
            )
        _check_condition(node, path, "attribute", f"attribute {key!r}")


def _check_consent(node: dict, path: str) -> None:
    if node["consent"] not in Channel.values:
        raise RuleError(
            join_path(path, "consent"), f"unknown channel {node['consent']!r}; use one of {', '.join(Channel.values)}"
        )
    if node.get("op", "eq") != "eq":
        raise RuleError(join_path(path, "op"), "consent conditions only support 'eq'")
    if node.get("value") not in CONSENT_VALUES:
        raise RuleError(join_path(path, "value"), f"must be one of {', '.join(CONSENT_VALUES)}")


def _check_activity(node: dict, path: str, refs: list[_Ref]) -> None:
    kind = node["activity"]
    if not isinstance(kind, str) or not ACTIVITY_KIND.match(kind):
        raise RuleError(
            join_path(path, "activity"),
            f"bad activity kind {kind!r}: use 1-64 lower-case letters, digits, '_' and '.' (e.g. message.clicked)",
        )
    channel = node.get("channel")
    if channel is not None and channel not in Channel.values:
        raise RuleError(
            join_path(path, "channel"), f"unknown channel {channel!r}; use one of {', '.join(Channel.values)}"
        )
    campaign = node.get("campaign")
    if campaign is not None:
        if not _is_positive_int(campaign):
            raise RuleError(join_path(path, "campaign"), "must be a campaign id (a positive whole number)")
        refs.append(_Ref(join_path(path, "campaign"), "campaign", campaign))
    min_count = node.get("min_count")
    if min_count is not None and not _is_positive_int(min_count):
        raise RuleError(join_path(path, "min_count"), "min_count must be a whole number of at least 1")
    within = node.get("within_days")
    if within is not None and not (_is_positive_int(within) and within <= MAX_DAYS):
        raise RuleError(join_path(path, "within_days"), f"within_days must be a whole number from 1 to {MAX_DAYS}")
    if "performed" in node and not isinstance(node["performed"], bool):
        raise RuleError(join_path(path, "performed"), "performed must be true or false")


def _check_condition(node: dict, path: str, type_: str, what: str) -> None:
    op = node.get("op")
    if not isinstance(op, str) or op not in OPERATORS:
        raise RuleError(join_path(path, "op"), f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
    if op not in _TYPE_OPERATORS[type_]:
        raise RuleError(
            join_path(path, "op"), f"'{op}' does not apply to {what}; use one of {', '.join(operators_for(type_))}"
        )
    vpath = join_path(path, "value")
    value = node.get("value")
    if op in PRESENCE_OPS:
        return
    if op in DAYS_OPS:
        if not (_is_positive_int(value) and value <= MAX_DAYS):
            raise RuleError(vpath, f"'{op}' needs a whole number of days from 1 to {MAX_DAYS}")
        return
    if op in TEXT_OPS:
        if not isinstance(value, str):
            raise RuleError(vpath, f"'{op}' needs a text value")
        return
    if op in LIST_OPS:
        if not isinstance(value, list) or not value:
            raise RuleError(vpath, f"'{op}' needs a non-empty list of values")
        for i, item in enumerate(value):
            _check_scalar(item, join_path(vpath, f"[{i}]"), op, type_)
        return
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise RuleError(vpath, "'between' needs a list of two values [low, high]")
        for i, item in enumerate(value):
            _check_scalar(item, join_path(vpath, f"[{i}]"), op, type_)
        low, high = value
        if type_ == "attribute" and _value_kind(low) != _value_kind(high):
            raise RuleError(vpath, "'between' needs two values of the same type (numbers, dates or texts)")
        if _order_key(low, type_) > _order_key(high, type_):
            raise RuleError(vpath, "'between' needs low <= high")
        return
    if isinstance(value, list):
        raise RuleError(vpath, f"'{op}' needs a single value, not a list")
    _check_scalar(value, vpath, op, type_)


def _check_scalar(value: Any, path: str, op: str, type_: str) -> None:
    if type_ == "text":
        if not isinstance(value, str):
            raise RuleError(path, f"'{op}' on a text field needs text values")
    elif type_ == "number":
        if not _is_number(value):
            raise RuleError(path, f"'{op}' on a number field needs numbers")
    elif type_ == "datetime":
        parsed = parse_iso(value)
        if parsed is None or not 1000 <= parsed.year <= 9998:
            raise RuleError(path, f"'{op}' on a date field needs ISO dates (YYYY-MM-DD) or date-times")
    elif isinstance(value, bool):
        if op not in ("eq", "neq", "in", "not_in"):
            raise RuleError(path, f"'{op}' cannot compare booleans; use eq, neq, in or not_in")
    elif not (isinstance(value, str) or _is_number(value)):
        raise RuleError(path, f"'{op}' needs a text, number or boolean value")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value == value and value not in (float("inf"), float("-inf"))


def _value_kind(value: Any) -> str:
    """How an attribute compares with this rule value: "bool", "number", "date" or "text"."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if parse_iso(value) is not None:
        return "date"
    return "text"


def _order_key(value: Any, type_: str) -> Any:
    if type_ == "datetime":
        return _lower(value)
    if type_ == "attribute" and _value_kind(value) == "date":
        return value[:10]
    return value


def _aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


def _day_start(value: str | date) -> datetime:
    day = date.fromisoformat(value) if isinstance(value, str) else value
    return timezone.make_aware(datetime.combine(day, time.min))


# --- references -----------------------------------------------------------------------------------


@dataclass
class _SegmentInfo:
    kind: str
    rules: Any
    refs: list[_Ref] = field(default_factory=list)
    error: RuleError | None = None


class _References:
    """Personas, segments and campaigns a tree refers to, looked up in batched queries and cached."""

    def __init__(self) -> None:
        self.personas: dict[str, int] = {}
        self.campaigns: set[int] = set()
        self.segments: dict[int, _SegmentInfo] = {}
        self._asked_personas: set[str] = set()
        self._asked_campaigns: set[int] = set()
        self._asked_segments: set[int] = set()
        self._acyclic: set[int] = set()

    def know_segments(self, segments: Iterable[Any]) -> None:
        for segment in segments:
            self._add_segment(segment.pk, segment.kind, segment.rules)

    def _add_segment(self, pk: int, kind: str, rules: Any) -> None:
        self._asked_segments.add(pk)
        info = _SegmentInfo(kind=kind, rules=rules)
        if kind == "dynamic":
            try:
                info.refs = _structure(rules, for_persona=False)
            except RuleError as exc:
                info.error = exc
        self.segments[pk] = info

    def load(self, refs: list[_Ref]) -> None:
        """Look up everything ``refs`` (and the segments they reach) refer to: one query per kind and level."""
        from segments.models import Segment

        pending = list(refs)
        all_refs = list(refs)
        while True:
            wanted = {r.key for r in pending if r.kind == "segment"} - self._asked_segments
            if not wanted:
                break
            self._asked_segments |= wanted
            pending = []
            for pk, kind, rules in Segment.objects.filter(pk__in=wanted).values_list("pk", "kind", "rules"):
                self._add_segment(pk, kind, rules)
                pending.extend(self.segments[pk].refs)
            all_refs.extend(pending)
        slugs = {r.key for r in all_refs if r.kind == "persona"} - self._asked_personas
        if slugs:
            self._asked_personas |= slugs
            self.personas.update(Persona.objects.filter(slug__in=slugs).values_list("slug", "pk"))
        campaign_ids = {r.key for r in all_refs if r.kind == "campaign"} - self._asked_campaigns
        if campaign_ids:
            from campaigns.models import Campaign

            self._asked_campaigns |= campaign_ids
            self.campaigns.update(Campaign.objects.filter(pk__in=campaign_ids).values_list("pk", flat=True))

    def verify(self, refs: list[_Ref], *, stack: list[int]) -> None:
        """Raise :class:`RuleError` for the first unknown reference or segment cycle, in tree order.

        ``stack`` is the chain of segments whose rules we are inside (the segment being
        validated first); reaching one of them again is a cycle.
        """
        for ref in refs:
            if ref.kind == "persona" and ref.key not in self.personas:
                raise RuleError(ref.path, f"unknown persona {ref.key!r}")
            if ref.kind == "campaign" and ref.key not in self.campaigns:
                raise RuleError(ref.path, f"unknown campaign id {ref.key}")
            if ref.kind == "segment":
                self._verify_segment(ref, stack)

    def _verify_segment(self, ref: _Ref, stack: list[int]) -> None:
        pk = ref.key
        if pk in stack:
            chain = [*stack[stack.index(pk) :], pk]
            raise _CycleError(ref.path, "segment cycle: " + " → ".join(map(str, chain)))
        info = self.segments.get(pk)
        if info is None:
            raise RuleError(ref.path, f"unknown segment id {pk}")
        if info.kind != "dynamic" or pk in self._acyclic:
            return
        if info.error is not None:
            raise RuleError(ref.path, f"segment {pk} has invalid rules ({info.error})")
        try:
            self.verify(info.refs, stack=[*stack, pk])
        except _CycleError as exc:
            raise _CycleError(ref.path, exc.reason) from None
        except RuleError as exc:
            raise RuleError(ref.path, f"segment {pk} has invalid rules ({exc})") from None
        # Everything reachable from pk is known and cycle-free, so later visits can stop here.
        self._acyclic.add(pk)


class _CycleError(RuleError):
    """A segment cycle: reported with the same reason at each referring level."""


def _prepare(tree: Any, *, for_persona: bool, segment_id: int | None) -> _References:
    refs = _structure(tree, for_persona=for_persona)
    references = _References()
    if refs:
        references.load(refs)
        references.verify(refs, stack=[segment_id] if segment_id is not None else [])
    return references


# --- compilation ----------------------------------------------------------------------------------


class _JsonGet(Func):
    """PostgreSQL ``attributes -> 'key'`` (jsonb)."""

    template = "(%(expressions)s)"
    arg_joiner = " -> "
    output_field = JSONField()


class _JsonGetText(Func):
    """PostgreSQL ``attributes ->> 'key'`` (text)."""

    template = "(%(expressions)s)"
    arg_joiner = " ->> "
    output_field = TextField()


class _Glob(Func):
    """SQLite ``text GLOB pattern`` (case-sensitive, no regex callback into Python)."""

    template = "(%(expressions)s)"
    arg_joiner = " GLOB "
    output_field = BooleanField()


class _Attribute:
    """SQL expressions over one attribute key, for the current database backend.

    Every predicate here is two-valued: the JSON type is COALESCEd to 'missing' for an
    absent key, and each value comparison is ANDed after a type check that guarantees a
    non-NULL value, so ``NOT`` of any of them is its exact complement.
    """

    def __init__(self, key: str, vendor: str):
        self.key = key
        self.pg = vendor == "postgresql"
        if self.pg:
            key_sql = Cast(Value(key), TextField())
            self.type = Coalesce(
                Func(_JsonGet(F("attributes"), key_sql), function="jsonb_typeof", output_field=CharField()),
                Value("missing"),
            )
            self.text = _JsonGetText(F("attributes"), key_sql)
            # CASE keeps the cast away from non-numbers (PostgreSQL does not promise AND's order).
            self.number: Expression = Case(
                When(
                    Q(Exact(self.type, "number")),
                    then=Func(self.text, template="(%(expressions)s)::numeric", output_field=DecimalField()),
                ),
                output_field=DecimalField(),
            )
        else:
            path = Value('$."' + key + '"')
            self.type = Coalesce(
                Func(F("attributes"), path, function="JSON_TYPE", output_field=CharField()), Value("missing")
            )
            self.text = Func(F("attributes"), path, function="JSON_EXTRACT", output_field=TextField())
            self.number = Func(F("attributes"), path, function="JSON_EXTRACT", output_field=DecimalField())

    def present(self) -> Q:
        return ~Q(In(self.type, ["missing", "null"]))

    def is_text(self) -> Q:
        return Q(Exact(self.type, "string" if self.pg else "text"))

    def is_number(self) -> Q:
        return Q(Exact(self.type, "number")) if self.pg else Q(In(self.type, ["integer", "real"]))

    def is_date(self) -> Q:
        if self.pg:
            return self.is_text() & Q(Regex(self.text, _PG_DATE_SHAPE))
        return self.is_text() & (
            Q(_Glob(self.text, Value(_SQLITE_DATE_GLOBS[0]))) | Q(_Glob(self.text, Value(_SQLITE_DATE_GLOBS[1])))
        )

    def sortable_text(self) -> Expression:
        return Collate(self.text, "C") if self.pg else self.text

    def day(self) -> Expression:
        day = Substr(self.text, 1, 10, output_field=TextField())
        return Collate(day, "C") if self.pg else day

    def eq(self, value: Any) -> Q:
        kind = _value_kind(value)
        if kind == "date":
            return self.is_date() & Q(Exact(self.day(), value[:10]))
        if self.pg:
            # JSONB containment, so a GIN (jsonb_path_ops) index on attributes serves it.
            return Q(attributes__contains={self.key: value})
        if kind == "bool":
            return Q(Exact(self.type, "true" if value else "false"))
        if kind == "number":
            return self.is_number() & Q(Exact(self.number, _decimal(value)))
        return self.is_text() & Q(Exact(self.text, value))

    def compare(self, op: str, value: Any) -> Q:
        lookup = _COMPARE[op]
        kind = _value_kind(value)
        if kind == "number":
            return self.is_number() & Q(lookup(self.number, _decimal(value)))
        if kind == "date":
            return self.is_date() & Q(lookup(self.day(), value[:10]))
        return self.is_text() & Q(lookup(self.sortable_text(), value))


def _decimal(value: int | float) -> Value:
    # An explicit numeric parameter: Django would otherwise coerce through the column's type
    # (an integer column turns 2.5 into 2); on SQLite it becomes CAST(... AS NUMERIC).
    return Value(Decimal(str(value)), output_field=DecimalField())


def _any(qs: Iterable[Q]) -> Q:
    return functools.reduce(operator.or_, qs)


class _Compiler:
    """Turns a validated tree into a ``Q``, with references resolved by a :class:`_References`."""

    def __init__(self, references: _References, *, now: datetime | None):
        self.references = references
        self.now = now or timezone.now()
        self.vendor = connection.vendor

    def node(self, node: dict) -> Q:
        if "all" in node:
            return functools.reduce(operator.and_, (self.node(child) for child in node["all"]))
        if "any" in node:
            return _any(self.node(child) for child in node["any"])
        if "not" in node:
            return ~self.node(node["not"])
        if "consent" in node:
            return self.consent(node["consent"], node["value"])
        if "persona" in node:
            # Django adds "persona_id IS NOT NULL" under negation, so NOT stays exact.
            return Q(persona_id=self.references.personas[node["persona"]])
        if "segment" in node:
            return self.segment(node["segment"])
        if "activity" in node:
            return self.activity(node)
        if "field" in node:
            return self.field(node["field"], node["op"], node.get("value"))
        return self.attribute(node["attribute"], node["op"], node.get("value"))

    def consent(self, channel: str, status: str) -> Q:
        # COALESCE: the bare subquery is NULL for a never-asked customer, and NOT NULL is NULL.
        current = Coalesce(consent_status_subquery(channel), Value("unknown"), output_field=CharField())
        return Q(Exact(current, status))

    def segment(self, pk: int) -> Q:
        from segments.models import SegmentMember

        info = self.references.segments[pk]
        if info.kind == "dynamic":
            return self.node(info.rules)
        return Q(Exists(SegmentMember.objects.filter(segment_id=pk, customer_id=OuterRef("pk"))))

    def activity(self, node: dict) -> Q:
        activities = Activity.objects.filter(kind=node["activity"]).order_by()
        if node.get("channel") is not None:
            activities = activities.filter(channel=node["channel"])
        if node.get("campaign") is not None:
            activities = activities.filter(campaign_id=node["campaign"])
        if node.get("within_days") is not None:
            since = self.now - timedelta(days=node["within_days"])
            activities = activities.filter(occurred_at__gte=since, occurred_at__lte=self.now)
        min_count = node.get("min_count") or 1
        if min_count == 1:
            q = Q(Exists(activities.filter(customer_id=OuterRef("pk"))))
        else:
            # One grouped pass over the matching activities (served by the (kind, occurred_at)
            # covering index), hash-joined to customers: cheaper over a whole audience than a
            # correlated count per customer.
            repeaters = (
                activities.values("customer_id").annotate(n=Count("*")).filter(n__gte=min_count).values("customer_id")
            )
            q = Q(pk__in=repeaters)
        return q if node.get("performed", True) else ~q

    def field(self, name: str, op: str, value: Any) -> Q:
        type_ = FIELDS[name].type
        present = Q(**{f"{name}__isnull": False})
        if type_ == "text":
            present &= ~Q(**{name: ""})
        if op == "is_set":
            return present
        if op == "is_not_set":
            return ~present
        if op in ("neq", "not_in"):
            return ~self.field(name, "eq" if op == "neq" else "in", value)
        if type_ == "datetime":
            return present & self._datetime(name, op, value)
        column = F(name)
        if type_ == "number":
            cast = _decimal
        else:
            cast = Value
            if op in ORDER_OPS or op == "between":
                column = Collate(column, "C") if self.vendor == "postgresql" else column
        if op == "in":
            if type_ == "text":
                return present & Q(**{f"{name}__in": value})
            return present & _any(Q(Exact(column, cast(v))) for v in value)
        if op == "contains":
            return present & Q(**{f"{name}__icontains": value})
        if op == "starts_with":
            return present & Q(**{f"{name}__istartswith": value})
        if op == "between":
            low, high = value
            return present & Q(GreaterThanOrEqual(column, cast(low))) & Q(LessThanOrEqual(column, cast(high)))
        if op == "eq" and type_ == "text":
            return present & Q(**{name: value})  # a plain lookup, so the column's index serves it
        return present & Q(_COMPARE[op](column, cast(value)))

    def _datetime(self, name: str, op: str, value: Any) -> Q:
        if op == "within_last_days":
            since = self.now - timedelta(days=value)
            return Q(**{f"{name}__gte": since, f"{name}__lte": self.now})
        if op == "before_last_days":
            return Q(**{f"{name}__lt": self.now - timedelta(days=value)})
        if op == "between":
            low, high = value
            return Q(**{f"{name}__gte": _lower(low)}) & _upper_q(name, high)
        if op == "eq":
            return Q(**{f"{name}__gte": _lower(value)}) & _upper_q(name, value)
        if op in ("gt", "lte"):
            upper = _upper_q(name, value)  # on or before the value (the end of its day for a date)
            return ~upper if op == "gt" else upper
        lookup = "gte" if op == "gte" else "lt"  # gte/lt: from / before the value (the start of its day)
        return Q(**{f"{name}__{lookup}": _lower(value)})

    def attribute(self, key: str, op: str, value: Any) -> Q:
        attribute = _Attribute(key, self.vendor)
        if op == "is_set":
            return attribute.present()
        if op == "is_not_set":
            return ~attribute.present()
        if op == "eq":
            return attribute.eq(value)
        if op == "neq":
            return ~attribute.eq(value)
        if op == "in":
            return _any(attribute.eq(v) for v in value)
        if op == "not_in":
            return ~_any(attribute.eq(v) for v in value)
        if op == "contains":
            return attribute.is_text() & Q(IContains(attribute.text, value))
        if op == "starts_with":
            return attribute.is_text() & Q(IStartsWith(attribute.text, value))
        if op == "between":
            low, high = value
            return attribute.compare("gte", low) & attribute.compare("lte", high)
        if op in DAYS_OPS:
            since = timezone.localdate(self.now - timedelta(days=value)).isoformat()
            if op == "before_last_days":
                return attribute.is_date() & Q(LessThan(attribute.day(), since))
            today = timezone.localdate(self.now).isoformat()
            return (
                attribute.is_date()
                & Q(GreaterThanOrEqual(attribute.day(), since))
                & Q(LessThanOrEqual(attribute.day(), today))
            )
        return attribute.compare(op, value)


def _lower(value: str) -> datetime:
    """The first instant a datetime rule value covers: itself, or the start of its day."""
    return _day_start(value) if len(value) == 10 else _aware(value)


def _upper_q(name: str, value: str) -> Q:
    """``field <= value``: for a date, before the start of the next day."""
    if len(value) == 10:
        return Q(**{f"{name}__lt": _day_start(date.fromisoformat(value) + timedelta(days=1))})
    return Q(**{f"{name}__lte": _aware(value)})
