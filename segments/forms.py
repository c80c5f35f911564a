"""The segment builder's form state, and its round trip to a rule tree.

The builder is one HTML form. Every node of the tree is a block of inputs named
``<node id>-<name>``; a repeated ``nodes`` input lists the node ids in document
order (a pre-order walk) and ``<id>-parent`` names each node's group, which is
enough to rebuild the tree from any POST. ``builder_from_post`` reads that state
(keeping half-finished conditions so the page can re-render them),
``builder_from_rules`` loads a saved tree, ``builder_apply`` adds or removes a
node, and ``builder_rules`` turns the state into a rule tree, setting ``error``
on the node a problem belongs to: conversion problems ("enter a number") and
``segments.rules.validate`` errors, whose node path is mapped back to the node.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.http import QueryDict

from customers.models import Activity, Channel, Customer
from segments.models import Segment
from segments.rules import (
    DAYS_OPS,
    FIELDS,
    LIST_OPS,
    OPERATORS,
    PRESENCE_OPS,
    RuleError,
    join_path,
    operators_for,
    parse_iso,
    validate,
)

MAX_NODES = 200
ATTRIBUTE_SAMPLE = 1000
KIND_SAMPLE = 1000

KINDS = {
    "field": "Profile field",
    "attribute": "Attribute",
    "consent": "Consent",
    "persona": "Persona",
    "segment": "Segment",
    "activity": "Activity",
}
# How an attribute's value is typed. "auto": as the attribute usually is among the newest
# customers (see attribute_keys), else as the value reads (12 -> number, true -> yes/no,
# 2025-06-01 -> date, anything else -> text).
VALUE_TYPES = {"auto": "Auto type", "text": "Text", "number": "Number", "boolean": "Yes / no", "datetime": "Date"}
CONSENT_STATES = {"opted_in": "opted in", "opted_out": "opted out", "unknown": "unknown (never asked)"}
CONDITION_INPUTS = (
    "field", "attribute", "value_type", "op", "value", "value2", "channel", "consent",
    "persona", "segment", "activity", "campaign", "min_count", "within_days", "performed",
)  # fmt: skip


class SegmentForm(forms.Form):
    """Name, description and (when creating) kind; the rules come from the builder.

    A plain form: the model's own checks (unique name, valid rules) run in the
    ``segments.services`` call, whose errors the view puts back on these fields.
    """

    name = forms.CharField(
        max_length=200,
        widget=forms.TextInput(attrs={"class": "input", "placeholder": "e.g. Engaged customers in Poland"}),
    )
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(
            attrs={"class": "input", "rows": 2, "placeholder": "What this audience is for (optional)"}
        ),
    )
    kind = forms.ChoiceField(choices=Segment.Kind.choices, initial=Segment.Kind.DYNAMIC, widget=forms.RadioSelect)

    def __init__(self, *args: Any, instance: Segment | None = None, **kwargs: Any) -> None:
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {"name": instance.name, "description": instance.description, "kind": instance.kind}
        super().__init__(*args, **kwargs)
        if instance is not None:
            # The kind is fixed once a segment exists (members vs rules).
            del self.fields["kind"]


# --- Form state ------------------------------------------------------------------


def new_node_id() -> str:
    return "n" + secrets.token_hex(4)


@dataclass
class Node:
    """One node of the builder: a group (all/any, maybe negated) or a condition."""

    id: str
    group: bool
    match: str = "all"
    negate: bool = False
    children: list[Node] = field(default_factory=list)
    kind: str = "field"
    data: dict[str, str] = field(default_factory=dict)
    error: str = ""

    def get(self, name: str) -> str:
        return self.data.get(name, "")

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    # Derived for rendering and conversion.

    @property
    def value_type(self) -> str:
        if self.kind == "field":
            spec = FIELDS.get(self.get("field"))
            return spec.type if spec else "text"
        if self.kind == "attribute":
            return self.get("value_type") if self.get("value_type") in VALUE_TYPES else "auto"
        return ""

    @property
    def operators(self) -> list[tuple[str, str]]:
        return [(op, OPERATORS.get(op, op)) for op in _ops_for(self.value_type)]

    @property
    def value_mode(self) -> str:
        op = self.get("op")
        if op in PRESENCE_OPS:
            return "none"
        if op in LIST_OPS:
            return "list"
        if op == "between":
            return "pair"
        if op in DAYS_OPS:
            return "days"
        return "boolean" if self.value_type == "boolean" else "single"

    @property
    def input_type(self) -> str:
        if self.value_type == "datetime" and any(len(self.get(n)) > 10 for n in ("value", "value2")):
            return "text"  # a date-time (2025-06-01T10:00:00+02:00) that a date picker would cut to the day
        return {"number": "number", "datetime": "date"}.get(self.value_type, "text")


def _ops_for(value_type: str) -> list[str]:
    if value_type == "boolean":
        return ["eq", "neq", "is_set", "is_not_set"]
    if value_type == "auto":
        return list(operators_for("attribute"))
    return list(operators_for(value_type or "text"))


def _default_field() -> str:
    return "country" if "country" in FIELDS else next(iter(FIELDS))


def new_condition() -> Node:
    node = Node(id=new_node_id(), group=False, kind="field", data={"field": _default_field()})
    _normalise(node)
    return node


def new_group(match: str = "all") -> Node:
    return Node(id=new_node_id(), group=True, match=match, children=[new_condition()])


def new_builder() -> Node:
    return new_group("all")


def _normalise(node: Node) -> None:
    """Make a condition's choices consistent after its kind, field or type changed."""
    if node.kind not in KINDS:
        node.kind = "field"
    if node.kind == "field" and node.get("field") not in FIELDS:
        node.data["field"] = _default_field()
    if node.kind in ("field", "attribute"):
        ops = _ops_for(node.value_type)
        if node.get("op") not in ops:
            node.data["op"] = ops[0]
    if node.kind == "consent":
        if node.get("channel") not in Channel.values:
            node.data["channel"] = Channel.EMAIL
        if node.get("consent") not in CONSENT_STATES:
            node.data["consent"] = "opted_in"
    if node.kind == "activity" and node.get("performed") not in ("true", "false"):
        node.data["performed"] = "true"


def builder_from_post(data: QueryDict) -> Node:
    """Rebuild the builder state from the form; a tampered or empty form yields a fresh builder."""
    root: Node | None = None
    by_id: dict[str, Node] = {}
    for node_id in data.getlist("nodes")[:MAX_NODES]:
        if not node_id or node_id in by_id or not node_id.isalnum():
            continue
        is_group = data.get(f"{node_id}-type") == "group"
        node = Node(id=node_id, group=is_group)
        if is_group:
            node.match = "any" if data.get(f"{node_id}-match") == "any" else "all"
            node.negate = bool(data.get(f"{node_id}-negate"))
        else:
            node.kind = data.get(f"{node_id}-kind", "field")
            node.data = {name: data.get(f"{node_id}-{name}", "").strip() for name in CONDITION_INPUTS}
            _normalise(node)
        parent = by_id.get(data.get(f"{node_id}-parent", ""))
        if root is None and not data.get(f"{node_id}-parent") and is_group:
            root = node
        elif parent is not None and parent.group:
            parent.children.append(node)
        else:
            continue  # an orphan: its parent was not sent before it
        by_id[node_id] = node
    return root or new_builder()


def builder_apply(root: Node, action: str, target: str) -> Node:
    """Add a condition or group to the group ``target``, or remove the node ``target``."""
    for node in root.walk():
        if action == "remove":
            if any(child.id == target for child in node.children):
                node.children = [child for child in node.children if child.id != target]
                break
        elif node.id == target and node.group and sum(1 for _ in root.walk()) < MAX_NODES:
            if action == "add_condition":
                node.children.append(new_condition())
            elif action == "add_group":
                node.children.append(new_group("any" if node.match == "all" else "all"))
            break
    return root


# --- Rule tree -> state -----------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _infer_type(value: Any) -> str:
    """The builder's value type for a JSON value, as the rule language compares it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str) and parse_iso(value) is not None:
        return "datetime"
    return "text"


def _value_type_of(value: Any) -> str:
    sample = value[0] if isinstance(value, list) and value else value
    return "auto" if sample is None else _infer_type(sample)


def _condition_from_rule(rule: dict) -> Node:
    node = Node(id=new_node_id(), group=False)
    data: dict[str, str] = {}
    if "field" in rule or "attribute" in rule:
        node.kind = "field" if "field" in rule else "attribute"
        data[node.kind] = _text(rule.get(node.kind))
        op, value = rule.get("op", ""), rule.get("value")
        data["op"] = op
        if node.kind == "attribute":
            data["value_type"] = _value_type_of(value) if op not in DAYS_OPS else "datetime"
        if op in LIST_OPS and isinstance(value, list):
            data["value"] = ", ".join(_text(v) for v in value)
        elif op == "between" and isinstance(value, list) and len(value) == 2:
            data["value"], data["value2"] = _text(value[0]), _text(value[1])
        else:
            data["value"] = _text(value)
    elif "consent" in rule:
        node.kind = "consent"
        data = {"channel": _text(rule["consent"]), "consent": _text(rule.get("value"))}
    elif "persona" in rule:
        node.kind = "persona"
        data = {"persona": _text(rule["persona"])}
    elif "segment" in rule:
        node.kind = "segment"
        data = {"segment": _text(rule["segment"])}
    elif "activity" in rule:
        node.kind = "activity"
        data = {
            "activity": _text(rule["activity"]),
            "channel": _text(rule.get("channel")),
            "campaign": _text(rule.get("campaign")),
            "min_count": _text(rule.get("min_count")),
            "within_days": _text(rule.get("within_days")),
            "performed": "false" if rule.get("performed") is False else "true",
        }
    node.data = data
    _normalise(node)
    return node


def _from_rule(rule: Any) -> Node:
    if isinstance(rule, dict) and len(rule) == 1 and ("all" in rule or "any" in rule):
        match = "all" if "all" in rule else "any"
        children = rule[match] if isinstance(rule[match], list) else []
        return Node(id=new_node_id(), group=True, match=match, children=[_from_rule(c) for c in children])
    if isinstance(rule, dict) and len(rule) == 1 and "not" in rule:
        inner = _from_rule(rule["not"])
        if inner.group and not inner.negate:
            inner.negate = True
            return inner
        return Node(id=new_node_id(), group=True, negate=True, children=[inner])
    if isinstance(rule, dict):
        return _condition_from_rule(rule)
    return new_condition()


def builder_from_rules(tree: Any) -> Node:
    """The builder state for a saved tree; a bare condition is shown inside an "all" group."""
    if not tree:
        return new_builder()
    root = _from_rule(tree)
    return root if root.group else Node(id=new_node_id(), group=True, children=[root])


# --- State -> rule tree --------------------------------------------------------------


class _Incomplete(ValueError):
    pass


_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")


def _read_type(text: str) -> str:
    """The type a value typed into an "auto" attribute condition reads as."""
    if text in ("true", "false"):
        return "boolean"
    if _NUMBER.match(text):  # "007" and "01234" stay text: codes, not quantities
        return "number"
    if parse_iso(text) is not None:
        return "datetime"
    return "text"


def _parse_value(text: str, value_type: str) -> Any:
    if value_type == "auto":
        value_type = _read_type(text) if text else "text"
    if value_type == "number":
        try:
            number = float(text.replace(",", ".")) if text else None
        except ValueError:
            number = None
        if number is None or number != number or number in (float("inf"), float("-inf")):
            raise _Incomplete(f"“{text}” is not a number." if text else "Enter a number.")
        return int(number) if number.is_integer() and "." not in text else number
    if value_type == "datetime":
        if not text:
            raise _Incomplete("Pick a date.")
        if parse_iso(text) is None:
            raise _Incomplete(f"“{text}” is not a date (YYYY-MM-DD).")
        return text
    if value_type == "boolean":
        if text not in ("true", "false"):
            raise _Incomplete("Choose yes or no.")
        return text == "true"
    if not text:
        raise _Incomplete("Enter a value.")
    return text


def _positive_int(text: str, what: str, *, minimum: int = 1) -> int:
    try:
        number = int(text)
    except ValueError:
        raise _Incomplete(f"{what} must be a whole number.") from None
    if number < minimum:
        raise _Incomplete(f"{what} must be at least {minimum}.")
    return number


def _condition_rule(node: Node, attribute_types: dict[str, str]) -> dict:
    kind, get = node.kind, node.get
    if kind in ("field", "attribute"):
        if kind == "attribute" and not get("attribute"):
            raise _Incomplete("Enter the attribute name.")
        rule: dict[str, Any] = {kind: get(kind), "op": get("op")}
        mode, value_type = node.value_mode, node.value_type
        if value_type == "auto":
            value_type = attribute_types.get(get("attribute"), "auto")
        if mode == "list":
            items = [item.strip() for item in get("value").split(",") if item.strip()]
            if not items:
                raise _Incomplete("Enter one or more values, separated by commas.")
            rule["value"] = [_parse_value(item, value_type) for item in items]
        elif mode == "pair":
            rule["value"] = [_parse_value(get("value"), value_type), _parse_value(get("value2"), value_type)]
        elif mode == "days":
            rule["value"] = _positive_int(get("value"), "The number of days")
        elif mode != "none":
            rule["value"] = _parse_value(get("value"), "boolean" if mode == "boolean" else value_type)
        return rule
    if kind == "consent":
        return {"consent": get("channel"), "op": "eq", "value": get("consent")}
    if kind == "persona":
        if not get("persona"):
            raise _Incomplete("Choose a persona.")
        return {"persona": get("persona")}
    if kind == "segment":
        if not get("segment").isdigit():
            raise _Incomplete("Choose a segment.")
        return {"segment": int(get("segment"))}
    # activity
    if not get("activity"):
        raise _Incomplete("Enter an activity kind, e.g. message.clicked.")
    rule = {"activity": get("activity")}
    if get("channel"):
        rule["channel"] = get("channel")
    if get("campaign"):
        if not get("campaign").isdigit():
            raise _Incomplete("Choose a campaign.")
        rule["campaign"] = int(get("campaign"))
    if get("min_count"):
        rule["min_count"] = _positive_int(get("min_count"), "“At least” count")
    if get("within_days"):
        rule["within_days"] = _positive_int(get("within_days"), "The number of days")
    rule["performed"] = get("performed") != "false"
    return rule


def _to_rule(
    node: Node, path: str, paths: dict[str, Node], errors: list[Node], attribute_types: dict[str, str]
) -> dict | None:
    paths[path] = node
    if not node.group:
        try:
            return _condition_rule(node, attribute_types)
        except _Incomplete as exc:
            node.error = str(exc)
            errors.append(node)
            return None
    inner_path = join_path(path, "not") if node.negate else path
    if node.negate:
        paths[inner_path] = node
    if not node.children:
        node.error = "This group is empty: add a condition or remove the group."
        errors.append(node)
    if node.negate and node.match == "all" and len(node.children) == 1:
        # "not all of [X]" is "not X": store the shorter form, which is also how
        # {"not": X} written through the API loads into the builder.
        child = _to_rule(node.children[0], inner_path, paths, errors, attribute_types)
        return {"not": child}
    children = [
        _to_rule(child, join_path(join_path(inner_path, node.match), f"[{i}]"), paths, errors, attribute_types)
        for i, child in enumerate(node.children)
    ]
    group = {node.match: children}
    return {"not": group} if node.negate else group


def _node_for_path(paths: dict[str, Node], error_path: str) -> Node | None:
    """The deepest builder node whose rule path is a prefix of ``error_path``."""
    if error_path in ("(root)", "$"):
        error_path = ""
    best, best_len = None, -1
    for path, node in paths.items():
        covers = error_path == path or (error_path.startswith(path) and (path == "" or error_path[len(path)] in ".["))
        if covers and len(path) > best_len:
            best, best_len = node, len(path)
    return best


@dataclass
class BuilderResult:
    """A builder state checked: the tree when valid, else the error and the node it belongs to."""

    root: Node
    tree: dict | None
    error: str = ""
    error_node: Node | None = None

    @property
    def valid(self) -> bool:
        return self.tree is not None


def builder_rules(
    root: Node, *, segment_id: int | None = None, attribute_types: dict[str, str] | None = None
) -> BuilderResult:
    """Convert and validate the builder state; errors land on the offending node.

    ``attribute_types`` (key -> type, from :func:`attribute_keys`) types the values of
    "auto" attribute conditions; when None, they are read only if such a condition has a value.
    """
    for node in root.walk():
        node.error = ""
    if attribute_types is None:
        auto = any(
            node.kind == "attribute" and node.value_type == "auto" and node.value_mode != "none"
            for node in root.walk()
            if not node.group
        )
        attribute_types = dict(attribute_keys()) if auto else {}
    paths: dict[str, Node] = {}
    errors: list[Node] = []
    tree = _to_rule(root, "", paths, errors, attribute_types)
    if errors:
        first = errors[0]
        return BuilderResult(root=root, tree=None, error=first.error, error_node=first)
    try:
        validate(tree, segment_id=segment_id)
    except RuleError as exc:
        node = _node_for_path(paths, exc.path)
        message = exc.reason
        if node is not None:
            node.error = message[:1].upper() + message[1:]
        return BuilderResult(root=root, tree=None, error=f"{exc.path}: {exc.reason}", error_node=node)
    return BuilderResult(root=root, tree=tree)


# --- Choices for the builder's selects ---------------------------------------------------


def attribute_keys(*, sample: int = ATTRIBUTE_SAMPLE) -> list[tuple[str, str]]:
    """Attribute keys in use, with the value type most of them have, from the newest customers.

    Reads at most ``sample`` rows through the primary key index, so it costs the
    same with a thousand customers or a million.
    """
    types: dict[str, Counter] = {}
    for attributes in Customer.objects.order_by("-pk").values_list("attributes", flat=True)[:sample]:
        if isinstance(attributes, dict):
            for key, value in attributes.items():
                types.setdefault(str(key), Counter())[_infer_type(value)] += 1
    return sorted((key, counter.most_common(1)[0][0]) for key, counter in types.items())


def activity_kinds(*, sample: int = KIND_SAMPLE) -> list[str]:
    """Canonical activity kinds, then custom kinds seen among the newest activities."""
    canonical = list(Activity.Kind.values)
    recent = Activity.objects.order_by("-pk").values_list("kind", flat=True)[:sample]
    return canonical + sorted(set(recent) - set(canonical))
