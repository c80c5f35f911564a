"""The segment rule language, compiled to one ``Q``.

A node is a group ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": node}`` or a
condition ``{"field"|"attribute"|"consent": ..., "op": ..., "value": ...}``.
``validate`` rejects a bad tree naming the node's path (``all[1].value``);
``compile_rules`` turns a valid tree into a ``Q`` over ``Customer``, so counting,
listing and snapshotting an audience is a single SQL statement.

Missing values: a customer without the field or attribute matches ``neq``,
``not_in`` and ``is_not_set`` and no other operator.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from customers.models import Channel
from customers.querysets import consent_q

FIELDS = {
    "email": str,
    "phone": str,
    "external_id": str,
    "first_name": str,
    "last_name": str,
    "locale": str,
    "timezone": str,
    "country": str,
    "city": str,
}
SCALAR_OPS = {"eq", "neq", "contains", "starts_with", "gt", "gte", "lt", "lte"}
LIST_OPS = {"in", "not_in"}
PRESENCE_OPS = {"is_set", "is_not_set"}
CONSENT_VALUES = {"opted_in", "opted_out", "unknown"}
_LOOKUP = {
    "eq": "exact",
    "contains": "icontains",
    "starts_with": "istartswith",
    "gt": "gt",
    "gte": "gte",
    "lt": "lt",
    "lte": "lte",
}


class RuleError(ValueError):
    def __init__(self, path: str, reason: str):
        self.path = path or "(root)"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def validate(tree: Any, *, for_persona: bool = False) -> None:
    _check(tree, "")


def compile_rules(tree: Any) -> Q:
    validate(tree)
    return _compile(tree)


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path and not part.startswith("[") else f"{path}{part}"


def _check(node: Any, path: str) -> None:
    if not isinstance(node, dict) or not node:
        raise RuleError(path, "a rule must be a non-empty JSON object")
    for group in ("all", "any"):
        if group in node:
            children = node[group]
            if len(node) != 1:
                raise RuleError(path, f"a '{group}' group takes no other keys")
            if not isinstance(children, list) or not children:
                raise RuleError(_join(path, group), "must be a non-empty list of rules")
            for i, child in enumerate(children):
                _check(child, _join(_join(path, group), f"[{i}]"))
            return
    if "not" in node:
        if len(node) != 1:
            raise RuleError(path, "a 'not' group takes no other keys")
        _check(node["not"], _join(path, "not"))
        return
    if "consent" in node:
        if node["consent"] not in Channel.values:
            raise RuleError(
                _join(path, "consent"), f"unknown channel {node['consent']!r}; use one of {', '.join(Channel.values)}"
            )
        if node.get("op", "eq") != "eq":
            raise RuleError(_join(path, "op"), "consent conditions only support 'eq'")
        if node.get("value") not in CONSENT_VALUES:
            raise RuleError(_join(path, "value"), f"must be one of {', '.join(sorted(CONSENT_VALUES))}")
        return
    if "field" in node:
        if node["field"] not in FIELDS:
            raise RuleError(_join(path, "field"), f"unknown field {node['field']!r}; use one of {', '.join(FIELDS)}")
    elif "attribute" in node:
        if not isinstance(node["attribute"], str) or not node["attribute"].strip():
            raise RuleError(_join(path, "attribute"), "must be a non-empty attribute name")
    else:
        raise RuleError(path, "expected one of all, any, not, field, attribute, consent")
    _check_operator(node, path)


def _check_operator(node: dict, path: str) -> None:
    op = node.get("op")
    value = node.get("value")
    if op in PRESENCE_OPS:
        return
    if op in LIST_OPS:
        if not isinstance(value, list) or not value or not all(isinstance(v, str | int | float) for v in value):
            raise RuleError(_join(path, "value"), f"'{op}' needs a non-empty list of values")
        return
    if op in SCALAR_OPS:
        if not isinstance(value, str | int | float | bool) or value is None:
            raise RuleError(_join(path, "value"), f"'{op}' needs a single value")
        if op in {"contains", "starts_with"} and not isinstance(value, str):
            raise RuleError(_join(path, "value"), f"'{op}' needs a text value")
        return
    ops = sorted(SCALAR_OPS | LIST_OPS | PRESENCE_OPS)
    raise RuleError(_join(path, "op"), f"unknown operator {op!r}; use one of {', '.join(ops)}")


def _compile(node: dict) -> Q:
    if "all" in node:
        q = Q()
        for child in node["all"]:
            q &= _compile(child)
        return q
    if "any" in node:
        q = Q(pk__in=[])
        for child in node["any"]:
            q |= _compile(child)
        return q
    if "not" in node:
        return ~_compile(node["not"])
    if "consent" in node:
        return consent_q(node["consent"], node["value"])
    if "field" in node:
        return _condition(node["field"], node["op"], node.get("value"), blank_is_missing=True)
    return _condition(f"attributes__{node['attribute']}", node["op"], node.get("value"), blank_is_missing=False)


def _condition(lookup: str, op: str, value: Any, *, blank_is_missing: bool) -> Q:
    present = Q(**{f"{lookup}__isnull": False})
    if blank_is_missing:
        present &= ~Q(**{lookup: ""})
    if op == "is_set":
        return present
    if op == "is_not_set":
        return ~present
    if op == "in":
        return present & Q(**{f"{lookup}__in": value})
    if op == "not_in":
        return ~(present & Q(**{f"{lookup}__in": value}))
    if op == "neq":
        return ~(present & Q(**{lookup: value}))
    return present & Q(**{f"{lookup}__{_LOOKUP[op]}": value})
