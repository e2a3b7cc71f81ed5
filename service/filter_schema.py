"""The published JSON Schema of metadata filters (``indexer.filters``), written out level by level.

JSON Schema could say "a filter is a condition or a group of filters" recursively, but then it
could not bound the nesting, and test generators cannot follow recursive references. So the
schema spells the levels out: ``Filter`` is a group of ``FilterLevel2``s (or one), which is a group
of ``FilterLevel1``s, which is a group of ``FilterCondition``s: exactly the ``MAX_DEPTH`` nested
groups of at most ``MAX_GROUP`` members that ``indexer.filters.parse`` accepts, so any filter the
schema allows is accepted, and the cost of one is bounded by the schema itself.
"""

from __future__ import annotations

from typing import Any

from indexer.filters import MAX_DEPTH, MAX_GROUP, MAX_KEY_CHARS, MAX_PATH, MAX_STRING_CHARS, MAX_VALUES

REF = "#/components/schemas/"
# no control characters (Milvus string literals cannot carry them)
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"

FILTER_HELP = (
    "Restrict the search to items whose metadata matches: a condition {field, operator: value} or a group "
    "{and: [...]}, {or: [...]}, {not: ...} (at most 3 groups deep, 8 members each). Operators: eq, ne, in, "
    "not_in, range {gt|gte, lt|lte} (numbers, or strings such as ISO 8601 dates), prefix (strings, e.g. "
    "folder paths), contains and contains_any (arrays, e.g. tags). Results are the exact top k among the "
    "matching items. Example: {\"and\": [{\"field\": \"year\", \"range\": {\"gte\": 2010}}, "
    "{\"field\": \"path\", \"prefix\": \"photos/\"}]}")


def _string(max_length: int, min_length: int = 0, description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "minLength": min_length, "maxLength": max_length,
                           "pattern": _NO_CONTROL}
    if description:
        out["description"] = description
    return out


def _condition(op: str, value: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "object", "description": description,
            "properties": {"field": {"$ref": REF + "FilterField"}, op: value},
            "required": ["field", op], "additionalProperties": False}


def _list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_VALUES}


def _bounds(kind: dict[str, Any], what: str) -> dict[str, Any]:
    return {"type": "object", "description": f"bounds of a range of {what}: a lower (gt or gte) and/or an upper "
                                             "(lt or lte)",
            "properties": {bound: kind for bound in ("gt", "gte", "lt", "lte")},
            "minProperties": 1, "additionalProperties": False,
            "not": {"anyOf": [{"required": ["gt", "gte"]}, {"required": ["lt", "lte"]}]}}


def _level(name: str, member: str, depth: int) -> dict[str, dict[str, Any]]:
    """The schemas of one level: the level itself and its and / or / not groups (named, for generated clients)."""
    group = {"type": "array", "items": {"$ref": REF + member}, "minItems": 1, "maxItems": MAX_GROUP}
    out = {f"{name}And": {"type": "object", "description": "every member matches", "properties": {"and": group},
                          "required": ["and"], "additionalProperties": False},
           f"{name}Or": {"type": "object", "description": "at least one member matches", "properties": {"or": group},
                         "required": ["or"], "additionalProperties": False},
           f"{name}Not": {"type": "object", "description": "the member does not match",
                          "properties": {"not": {"$ref": REF + member}}, "required": ["not"],
                          "additionalProperties": False}}
    out[name] = {"description": f"a filter with at most {depth} nested and/or/not groups",
                 "anyOf": [{"$ref": REF + member}, *({"$ref": REF + group_name} for group_name in list(out))]}
    return out


def components() -> dict[str, dict[str, Any]]:
    """The schemas to add to ``components.schemas``; ``Filter`` is the one request bodies point at."""
    key = _string(MAX_KEY_CHARS, 1)
    scalar = {"anyOf": [_string(MAX_STRING_CHARS), {"type": "number"}, {"type": "boolean"}],
              "description": "a string, number or boolean (numbers compare as doubles: 3 == 3.0; 1 != true)"}
    one_kind = {"oneOf": [_list_of(_string(MAX_STRING_CHARS)), _list_of({"type": "number"}),
                          _list_of({"type": "boolean"})], "description": "1 to 256 values, all of one kind"}
    conditions = {
        "FilterEq": _condition("eq", scalar, "the field equals the value"),
        "FilterNe": _condition("ne", scalar, "the field does not equal the value (absent fields included)"),
        "FilterIn": _condition("in", one_kind, "the field equals one of the values"),
        "FilterNotIn": _condition("not_in", one_kind, "the field equals none of the values (absent fields included)"),
        "FilterRange": _condition("range", {"oneOf": [{"$ref": REF + "NumberRange"}, {"$ref": REF + "StringRange"}]},
                                  "the field lies within the bounds: numbers, or strings in code-point order (ISO "
                                  "8601 dates of one format compare in time order)"),
        "FilterPrefix": _condition("prefix", _string(MAX_STRING_CHARS), "the field is a string starting with this"),
        "FilterContains": _condition("contains", scalar, "the field is an array with an element equal to the value"),
        "FilterContainsAny": _condition("contains_any", _list_of(scalar),
                                        "the field is an array with an element equal to one of the values"),
    }
    out: dict[str, dict[str, Any]] = {
        "FilterField": {"description": "a top-level metadata key, or the keys leading into nested objects",
                        "anyOf": [key, {"type": "array", "items": key, "minItems": 1, "maxItems": MAX_PATH}]},
        "NumberRange": _bounds({"type": "number"}, "numbers"),
        "StringRange": _bounds(_string(MAX_STRING_CHARS), "strings"),
        **conditions,
        "FilterCondition": {"description": "one operator on one metadata field; a field that is absent or of "
                                           "another kind matches nothing, except for ne and not_in",
                            "oneOf": [{"$ref": REF + name} for name in conditions]},
    }
    member = "FilterCondition"
    for depth in range(1, MAX_DEPTH + 1):
        name = "Filter" if depth == MAX_DEPTH else f"FilterLevel{depth}"
        out.update(_level(name, member, depth))
        member = name
    out["Filter"]["description"] = FILTER_HELP
    return out


def publish(schema: dict[str, Any]) -> None:
    """Add the filter schemas to a generated OpenAPI document (the request models point at ``Filter``).

    A form field marked ``x-filter`` (JSON text in a multipart part of type application/json) is
    published as the ``Filter`` object it carries.
    """
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for component in schemas.values():
        for name, prop in component.get("properties", {}).items():
            if isinstance(prop, dict) and prop.get("x-filter"):
                component["properties"][name] = {"$ref": REF + "Filter", "description": prop.get("description", "")}
    schemas.update(components())
