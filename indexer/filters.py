"""Metadata filters: one JSON form, checked into a small tree, compiled to a Milvus boolean expression.

The JSON form (the HTTP API takes it as is)::

    {"and": [{"field": "year", "range": {"gte": 2010, "lt": 2020}},
             {"field": "folder", "eq": "a"},
             {"or": [{"field": "tags", "contains": "cat"},
                     {"not": {"field": "path", "prefix": "tmp/"}}]}]}

A filter is a condition or a group: ``{"and": [f, ...]}``, ``{"or": [f, ...]}`` (1 to
``MAX_GROUP`` members) or ``{"not": f}``, nested at most ``MAX_DEPTH`` groups deep. A condition
names a ``field`` (a top-level metadata key, or a list of keys into nested objects) and exactly
one operator:

=================  ==========================================================  ===================================
operator           true when the field holds                                   Milvus expression
=================  ==========================================================  ===================================
``eq`` v           a value equal to v (string, number or boolean; 3 == 3.0)    ``meta["f"] == v``
``ne`` v           anything but such a value, absent included (= not eq)       ``meta["f"] != v``
``in`` [v, ...]    a value equal to one of them (one kind per list)             ``meta["f"] in [...]``
``not_in`` [...]   none of them, absent included (= not in)                    ``meta["f"] not in [...]``
``range`` {...}    a number (or a string) within ``gt``/``gte``/``lt``/``lte``  ``meta["f"] >= a and meta["f"] < b``
``prefix`` p       a string starting with p (folder paths)                     ``meta["f"] like "p%"``
``contains`` v     an array with an element equal to v (tags)                  ``json_contains(meta["f"], v)``
``contains_any``   an array with an element equal to one of them               ``json_contains_any(meta["f"], [...])``
=================  ==========================================================  ===================================

Kinds never mix: a number equals no string ("3" != 3) and no boolean (1 != true), a numeric
range holds numbers only and a string range strings only, compared by code point, so ISO 8601
dates ("2021-06-01", "2021-06-01T10:00:00") of one format and time zone compare in time order.
Numbers compare as IEEE doubles (integers beyond 2**53 are not exact). A field that is absent,
null, an object, or of another kind matches no operator except ``ne`` and ``not_in``. These are
Milvus' semantics, checked against Milvus Lite 2.5.1 (``tests/indexer/test_filters.py``).

Strings (keys and values) may not contain control characters (U+0000-U+001F, U+007F) or lone
surrogates: Milvus string literals have no escape for them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError

MAX_DEPTH = 3  # nested and/or/not groups above a condition
MAX_GROUP = 8  # members of one and/or group (so at most MAX_GROUP ** MAX_DEPTH = 512 conditions)
MAX_VALUES = 256  # values of one in / not_in / contains_any list
MAX_PATH = 4  # keys in a field path (nested objects)
MAX_KEY_CHARS = 128  # characters of one key
MAX_STRING_CHARS = 1024  # characters of one string value
OPERATORS = ("eq", "ne", "in", "not_in", "range", "prefix", "contains", "contains_any")
RANGE_BOUNDS = ("gt", "gte", "lt", "lte")
GROUPS = ("and", "or", "not")

Scalar = str | float | bool


# ----------------------------------------------------------------------------- the checked tree

@dataclass(frozen=True)
class Condition:
    """One operator on one field; ``value`` is a scalar, a tuple of scalars, a ``Bounds`` or a prefix."""

    path: tuple[str, ...]
    op: str  # one of OPERATORS
    value: Any


@dataclass(frozen=True)
class Bounds:
    """A range: ``low``/``high`` (None = unbounded), of one kind (numbers or strings)."""

    low: float | str | None
    low_inclusive: bool
    high: float | str | None
    high_inclusive: bool


@dataclass(frozen=True)
class Group:
    op: str  # and | or | not (a not has one part)
    parts: tuple[Filter, ...]


Filter = Condition | Group


# ----------------------------------------------------------------------------- parsing

def parse(raw: Any) -> Filter:
    """Check a filter in the JSON form (module docstring); ``InvalidInputError`` says what is wrong and where."""
    if isinstance(raw, Condition | Group):
        return raw
    return _parse(raw, "filter", 0)


def canonical(filter_: Filter) -> str:
    """A stable text of a checked filter (cache keys, cursors): equal filters give equal texts."""
    return json.dumps(to_json(filter_), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_json(filter_: Filter) -> dict[str, Any]:
    """The JSON form of a checked filter (numbers as floats)."""
    if isinstance(filter_, Group):
        if filter_.op == "not":
            return {"not": to_json(filter_.parts[0])}
        return {filter_.op: [to_json(part) for part in filter_.parts]}
    field: Any = filter_.path[0] if len(filter_.path) == 1 else list(filter_.path)
    value = filter_.value
    if filter_.op == "range":
        bounds = {}
        if value.low is not None:
            bounds["gte" if value.low_inclusive else "gt"] = value.low
        if value.high is not None:
            bounds["lte" if value.high_inclusive else "lt"] = value.high
        value = bounds
    elif isinstance(value, tuple):
        value = list(value)
    return {"field": field, filter_.op: value}


def _parse(raw: Any, where: str, depth: int) -> Filter:
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where}: a filter is a JSON object (a condition, or and/or/not), not "
                                f"{_kind_name(raw)}")
    groups = [key for key in GROUPS if key in raw]
    if groups:
        if len(raw) != 1:
            raise InvalidInputError(f"{where}: a group has one key ({', '.join(GROUPS)}), not "
                                    f"{', '.join(sorted(map(str, raw)))}")
        if depth >= MAX_DEPTH:
            raise InvalidInputError(f"{where}: filters nest at most {MAX_DEPTH} and/or/not groups deep")
        op = groups[0]
        if op == "not":
            return Group("not", (_parse(raw["not"], f"{where}.not", depth + 1),))
        members = raw[op]
        if not isinstance(members, list) or not members:
            raise InvalidInputError(f"{where}.{op}: give a list of 1 to {MAX_GROUP} filters")
        if len(members) > MAX_GROUP:
            raise InvalidInputError(f"{where}.{op}: at most {MAX_GROUP} filters per group, not {len(members)} "
                                    "(use in / not_in for many values of one field)")
        return Group(op, tuple(_parse(member, f"{where}.{op}[{i}]", depth + 1) for i, member in enumerate(members)))
    return _condition(raw, where)


def _condition(raw: dict[str, Any], where: str) -> Condition:
    if "field" not in raw:
        raise InvalidInputError(f"{where}: a condition needs a 'field' and one operator "
                                f"({', '.join(OPERATORS)}), or use a group ({', '.join(GROUPS)})")
    path = _path(raw["field"], f"{where}.field")
    ops = [key for key in raw if key != "field"]
    unknown = [str(key) for key in ops if key not in OPERATORS]
    if unknown:
        raise InvalidInputError(f"{where}: unknown operator {unknown[0]!r}; use one of {', '.join(OPERATORS)}")
    if len(ops) != 1:
        raise InvalidInputError(f"{where}: a condition has exactly one operator ({', '.join(OPERATORS)}), not "
                                f"{len(ops)}; combine conditions with and/or")
    op = ops[0]
    value = raw[op]
    at = f"{where}.{op}"
    if op in ("eq", "ne", "contains"):
        return Condition(path, op, _scalar(value, at))
    if op in ("in", "not_in", "contains_any"):
        return Condition(path, op, _values(value, at, one_kind=op != "contains_any"))
    if op == "prefix":
        if not isinstance(value, str):
            raise InvalidInputError(f"{at}: a prefix is a string, not {_kind_name(value)}")
        return Condition(path, op, _string(value, at))
    return Condition(path, op, _bounds(value, at))


def _path(raw: Any, where: str) -> tuple[str, ...]:
    keys = [raw] if isinstance(raw, str) else raw
    if not isinstance(keys, list) or not keys or len(keys) > MAX_PATH:
        raise InvalidInputError(f"{where}: a metadata key, or a list of 1 to {MAX_PATH} keys into nested objects")
    for i, key in enumerate(keys):
        at = where if isinstance(raw, str) else f"{where}[{i}]"
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"{at}: keys are non-empty strings, not {key!r}")
        if len(key) > MAX_KEY_CHARS:
            raise InvalidInputError(f"{at}: keys are at most {MAX_KEY_CHARS} characters")
        _check_characters(key, at)
    return tuple(keys)


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _number(value, where)
    if isinstance(value, str):
        return _string(value, where)
    raise InvalidInputError(f"{where}: a string, number or boolean, not {_kind_name(value)}")


def _number(value: int | float, where: str) -> float:
    try:
        number = float(value)
    except OverflowError:
        raise InvalidInputError(f"{where}: {value} is too large for a double") from None
    if not math.isfinite(number):
        raise InvalidInputError(f"{where}: numbers must be finite")
    return number


def _string(value: str, where: str) -> str:
    if len(value) > MAX_STRING_CHARS:
        raise InvalidInputError(f"{where}: strings are at most {MAX_STRING_CHARS} characters, not {len(value)}")
    _check_characters(value, where)
    return value


def _check_characters(text: str, where: str) -> None:
    for char in text:
        code = ord(char)
        if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            raise InvalidInputError(f"{where}: control characters and lone surrogates are not allowed in filters "
                                    f"(found U+{code:04X})")


def _values(value: Any, where: str, one_kind: bool) -> tuple[Scalar, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_VALUES:
        raise InvalidInputError(f"{where}: give a list of 1 to {MAX_VALUES} values")
    values = tuple(_scalar(v, f"{where}[{i}]") for i, v in enumerate(value))
    if one_kind and len({_kind(v) for v in values}) > 1:
        raise InvalidInputError(f"{where}: the values must all be strings, all numbers or all booleans")
    return values


def _bounds(value: Any, where: str) -> Bounds:
    if not isinstance(value, dict) or not value:
        raise InvalidInputError(f"{where}: a range is an object with gt or gte and/or lt or lte")
    unknown = [str(key) for key in value if key not in RANGE_BOUNDS]
    if unknown:
        raise InvalidInputError(f"{where}: unknown bound {unknown[0]!r}; use gt, gte, lt, lte")
    if "gt" in value and "gte" in value or "lt" in value and "lte" in value:
        raise InvalidInputError(f"{where}: give at most one lower bound (gt or gte) and one upper bound (lt or lte)")
    bounds: dict[str, float | str] = {}
    for key, bound in value.items():
        if isinstance(bound, bool) or not isinstance(bound, int | float | str):
            raise InvalidInputError(f"{where}.{key}: range bounds are numbers or strings (e.g. ISO 8601 dates), not "
                                    f"{_kind_name(bound)}")
        bounds[key] = _string(bound, f"{where}.{key}") if isinstance(bound, str) else _number(bound, f"{where}.{key}")
    if len({_kind(bound) for bound in bounds.values()}) > 1:
        raise InvalidInputError(f"{where}: both bounds must be numbers or both strings")
    low_key = "gte" if "gte" in bounds else "gt" if "gt" in bounds else None
    high_key = "lte" if "lte" in bounds else "lt" if "lt" in bounds else None
    return Bounds(bounds.get(low_key) if low_key else None, low_key == "gte",
                  bounds.get(high_key) if high_key else None, high_key == "lte")


def _kind(value: Scalar) -> str:
    return "boolean" if isinstance(value, bool) else "number" if isinstance(value, float) else "string"


def _kind_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def fields(filter_: Filter) -> set[tuple[str, ...]]:
    """Every field path a filter reads."""
    if isinstance(filter_, Condition):
        return {filter_.path}
    return set().union(*(fields(part) for part in filter_.parts))


# ----------------------------------------------------------------------------- Milvus

def to_milvus(filter_: Filter, field: str = "metadata") -> str:
    """The filter as a Milvus boolean expression over the JSON field ``field`` (same matches, same semantics).

    ``not`` is pushed down to the conditions (De Morgan) and written with Milvus' own negated
    operators where they exist (``!=``, ``not in``: both include absent fields, as ``not`` does);
    a negated range, prefix or contains stays ``not (...)``, which Milvus parses but Milvus Lite
    2.5.1 does not evaluate ("unsupported expr proto node").
    Prefixes with ``%``, ``_`` or ``\\`` become a string range (Milvus' ``like`` has no escape for them),
    and so does the empty prefix (``like "%"`` matches nothing in Milvus Lite 2.5.1).
    """
    return _milvus(filter_, _identifier(field), negate=False)


def _identifier(field: str) -> str:
    if not field.replace("_", "").isalnum() or not field.isascii() or field[0].isdigit():
        raise ValueError(f"{field!r} is not a Milvus field name")
    return field


def _milvus(filter_: Filter, field: str, negate: bool) -> str:
    if isinstance(filter_, Group):
        if filter_.op == "not":
            return _milvus(filter_.parts[0], field, not negate)
        joiner = {("and", False): " and ", ("or", False): " or ", ("and", True): " or ", ("or", True): " and "}
        parts = [_milvus(part, field, negate) for part in filter_.parts]
        return parts[0] if len(parts) == 1 else "(" + joiner[filter_.op, negate].join(parts) + ")"
    ref = field + "".join(f"[{_literal(key)}]" for key in filter_.path)
    value, op = filter_.value, filter_.op
    if op in ("eq", "ne"):
        equal = (op == "eq") != negate
        return f"{ref} {'==' if equal else '!='} {_literal(value)}"
    if op in ("in", "not_in"):
        inside = (op == "in") != negate
        return f"{ref} {'in' if inside else 'not in'} {_list(value)}"
    if op == "contains":
        text = f"json_contains({ref}, {_literal(value)})"
    elif op == "contains_any":
        text = _contains_any(ref, value)
    elif op == "prefix":
        text = _prefix(ref, value)
    else:
        text = _range(ref, value)
    return f"not ({text})" if negate else text


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # a float literal: Milvus compares an int field with 3.0 too, and cannot mix 3 and 3.5
    # JSON escaping: Milvus reads \" and \\ (control characters are refused when parsing, see _check_characters)
    return json.dumps(value, ensure_ascii=False)


def _list(values: tuple[Scalar, ...]) -> str:
    return "[" + ", ".join(_literal(v) for v in values) + "]"


def _range(ref: str, bounds: Bounds) -> str:
    parts = []
    if bounds.low is not None:
        parts.append(f"{ref} {'>=' if bounds.low_inclusive else '>'} {_literal(bounds.low)}")
    if bounds.high is not None:
        parts.append(f"{ref} {'<=' if bounds.high_inclusive else '<'} {_literal(bounds.high)}")
    return parts[0] if len(parts) == 1 else f"({parts[0]} and {parts[1]})"


def _contains_any(ref: str, values: tuple[Scalar, ...]) -> str:
    # Milvus Lite 2.5.1 fails json_contains_any with a boolean among the values (VAL_NOT_SET);
    # json_contains takes one fine, so booleans get one each
    others = [v for v in values if not isinstance(v, bool)]
    parts = [f"json_contains_any({ref}, {_list(tuple(others))})"] if others else []
    parts += [f"json_contains({ref}, {_literal(v)})" for v in dict.fromkeys(v for v in values if isinstance(v, bool))]
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def _prefix(ref: str, prefix: str) -> str:
    if prefix and not any(char in prefix for char in "%_\\"):
        return f"{ref} like {_literal(prefix + '%')}"
    upper = prefix_successor(prefix)
    if upper is None:
        return f"{ref} >= {_literal(prefix)}"
    return f"({ref} >= {_literal(prefix)} and {ref} < {_literal(upper)})"


def prefix_successor(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: there is none).

    Strings order by code point (as Python's and Milvus' comparisons do), so the strings starting
    with p are exactly those s with p <= s < successor(p).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:
            code = 0xE000  # skip the surrogates: no valid string holds them
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None
