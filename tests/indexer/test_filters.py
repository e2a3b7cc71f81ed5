"""Metadata filters: the checks on the JSON form, the in-memory evaluation against a plain-Python reference
of the documented semantics, and the Milvus expressions (against Milvus Lite itself when it is installed)."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest

from indexer import InvalidInputError
from indexer.filters import (
    MAX_DEPTH,
    MAX_GROUP,
    MAX_VALUES,
    canonical,
    parse,
    prefix_successor,
    to_json,
    to_milvus,
)
from indexer.metadata_index import MetadataIndex

# ----------------------------------------------------------------------------- the reference semantics

MISSING = object()


def lookup(doc, path):
    value = doc
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


def kind(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float) and math.isfinite(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def equal(a, b):
    return kind(a) is not None and kind(a) == kind(b) and (float(a) == float(b) if kind(a) == "number" else a == b)


def reference(doc, raw) -> bool:
    """The documented meaning of a filter for one metadata document, written the obvious way."""
    if "and" in raw:
        return all(reference(doc, part) for part in raw["and"])
    if "or" in raw:
        return any(reference(doc, part) for part in raw["or"])
    if "not" in raw:
        return not reference(doc, raw["not"])
    path = (raw["field"],) if isinstance(raw["field"], str) else tuple(raw["field"])
    value = lookup(doc, path)
    (op, operand), = [(k, v) for k, v in raw.items() if k != "field"]
    if op == "eq":
        return equal(value, operand)
    if op == "ne":
        return not equal(value, operand)
    if op == "in":
        return any(equal(value, v) for v in operand)
    if op == "not_in":
        return not any(equal(value, v) for v in operand)
    if op == "prefix":
        return kind(value) == "string" and value.startswith(operand)
    if op == "contains":
        return isinstance(value, list) and any(equal(e, operand) for e in value)
    if op == "contains_any":
        return isinstance(value, list) and any(equal(e, v) for e in value for v in operand)
    assert op == "range"
    bound_kind = kind(next(iter(operand.values())))
    if kind(value) != bound_kind:
        return False
    checks = {"gt": lambda b: value > b, "gte": lambda b: value >= b, "lt": lambda b: value < b,
              "lte": lambda b: value <= b}
    return all(checks[name](bound) for name, bound in operand.items())


# ----------------------------------------------------------------------------- random documents and filters

STRINGS = ["a", "ab", "abc", "b", "a%c", "a_c", "é", "éa", "2020-01-01", "2021-06-01T10:00:00", "tmp/x", "tmp/y/z",
           "Tmp", "", "3", "he said \"hi\"", "back\\slash"]
NUMBERS = [0, 1, 3, 3.0, 3.5, -2, 1e6, 2020]
KEYS = ["x", "y", "tags", "n"]


def random_scalar(rng):
    pick = rng.random()
    if pick < 0.45:
        return rng.choice(STRINGS)
    if pick < 0.85:
        return rng.choice(NUMBERS)
    return rng.choice([True, False])


def random_value(rng, depth=0):
    pick = rng.random()
    if pick < 0.65:
        return random_scalar(rng)
    if pick < 0.75:
        return None
    if pick < 0.9:
        return [random_scalar(rng) for _ in range(rng.randint(0, 3))]
    if depth < 2:
        return {key: random_value(rng, depth + 1) for key in rng.sample(KEYS, rng.randint(1, 3))}
    return random_scalar(rng)


def random_doc(rng):
    return {key: random_value(rng) for key in rng.sample(KEYS, rng.randint(0, 4))}


def random_path(rng):
    return rng.choice(KEYS) if rng.random() < 0.7 else [rng.choice(KEYS), rng.choice(KEYS)]


def random_condition(rng):
    op = rng.choice(["eq", "ne", "in", "not_in", "range", "range", "prefix", "contains", "contains_any"])
    field = random_path(rng)
    if op in ("eq", "ne", "contains"):
        return {"field": field, op: random_scalar(rng)}
    if op in ("in", "not_in"):
        pool = rng.choice([STRINGS, NUMBERS, [True, False]])
        return {"field": field, op: rng.sample(pool, rng.randint(1, min(3, len(pool))))}
    if op == "contains_any":
        return {"field": field, op: [random_scalar(rng) for _ in range(rng.randint(1, 3))]}
    if op == "prefix":
        return {"field": field, op: rng.choice(["a", "tmp/", "a%", "a_", "é", "", "2020", "ab"])}
    pool = rng.choice([sorted(STRINGS), sorted(float(n) for n in NUMBERS)])
    low, high = sorted(rng.sample(pool, 2))
    names = rng.choice([("gte", "lt"), ("gt", "lte"), ("gte",), ("lt",), ("gt", "lt")])
    bounds = dict(zip(names, (low, high) if len(names) == 2 else (rng.choice(pool),), strict=True))
    return {"field": field, "range": bounds}


def random_filter(rng, depth=0):
    if depth >= MAX_DEPTH or rng.random() < 0.45:
        return random_condition(rng)
    op = rng.choice(["and", "or", "not"])
    if op == "not":
        return {"not": random_filter(rng, depth + 1)}
    return {op: [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(17)
    docs = [random_doc(rng) for _ in range(400)]
    docs[:len(STRINGS)] = [{"x": s} for s in STRINGS]  # every string at least once, as a top-level value
    filters_ = [random_filter(rng) for _ in range(400)]
    return docs, filters_


def indexed(docs):
    index = MetadataIndex()
    index.build(np.arange(len(docs)), lambda slots: [docs[s] for s in slots], batch=64)
    return index


# ----------------------------------------------------------------------------- evaluation

def test_in_memory_evaluation_equals_the_reference_semantics(corpus):
    docs, filters_ = corpus
    index = indexed(docs)
    matched_some = 0
    for raw in filters_:
        got = index.evaluate(parse(raw), len(docs))
        expected = np.array([reference(doc, raw) for doc in docs])
        mismatch = np.flatnonzero(got != expected)
        assert mismatch.size == 0, (raw, [docs[i] for i in mismatch[:3]])
        matched_some += 0 < expected.sum() < len(docs)
    assert matched_some > len(filters_) // 3  # the random filters are not all trivially empty or full


def test_index_kept_in_step_by_additions_and_renumbered_by_compaction(corpus):
    docs, filters_ = corpus
    index = MetadataIndex()
    index.add([0], [docs[0]])  # not built yet: nothing is kept
    assert not index.built and index.paths == 0
    index.build(np.arange(100), lambda slots: [docs[s] for s in slots])
    index.add(range(100, len(docs)), [__import__("json").dumps(d) for d in docs[100:]])  # JSON texts, as stored
    keep = np.flatnonzero(np.arange(len(docs)) % 3 != 0)  # a compaction dropping every third slot
    compacted = index.remapped(keep)
    kept_docs = [docs[i] for i in keep]
    for raw in filters_[:150]:
        condition = parse(raw)
        np.testing.assert_array_equal(index.evaluate(condition, len(docs)),
                                      [reference(doc, raw) for doc in docs])
        np.testing.assert_array_equal(compacted.evaluate(condition, len(keep)),
                                      [reference(doc, raw) for doc in kept_docs])


def test_too_many_distinct_fields_refuses_the_unindexed_ones_clearly():
    docs = [{f"k{i}": i} for i in range(5)]
    index = MetadataIndex(max_paths=3)
    index.build(np.arange(5), lambda slots: [docs[s] for s in slots])
    assert index.evaluate(parse({"field": "k1", "eq": 1}), 5).tolist() == [False, True, False, False, False]
    with pytest.raises(InvalidInputError, match="more than 3 distinct fields"):
        index.evaluate(parse({"field": "k4", "eq": 4}), 5)


def test_string_ranges_order_iso_dates_in_time():
    docs = [{"taken": d} for d in ["2019-12-31", "2020-01-01", "2020-06-30T23:59:59", "2021-01-01", "2020-13"]]
    index = indexed(docs)
    got = index.evaluate(parse({"field": "taken", "range": {"gte": "2020-01-01", "lt": "2021-01-01"}}), len(docs))
    assert got.tolist() == [False, True, True, False, True]  # "2020-13" is a string inside the range too


# ----------------------------------------------------------------------------- checks on the JSON form

@pytest.mark.parametrize(("raw", "message"), [
    ([], "a filter is a JSON object"),
    ({"field": "x", "regex": "a.*"}, "unknown operator 'regex'"),
    ({"field": "x"}, "exactly one operator"),
    ({"field": "x", "eq": 1, "ne": 2}, "exactly one operator"),
    ({"eq": 1}, "needs a 'field'"),
    ({"field": "", "eq": 1}, "keys are non-empty strings"),
    ({"field": ["a", "b", "c", "d", "e"], "eq": 1}, "list of 1 to 4 keys"),
    ({"field": "x", "eq": None}, "not null"),
    ({"field": "x", "eq": [1]}, "not a list"),
    ({"field": "x", "eq": {"a": 1}}, "not an object"),
    ({"field": "x", "in": []}, "list of 1 to 256 values"),
    ({"field": "x", "in": list(range(MAX_VALUES + 1))}, "list of 1 to 256 values"),
    ({"field": "x", "in": [1, "a"]}, "must all be strings, all numbers or all booleans"),
    ({"field": "x", "in": [1, True]}, "must all be strings, all numbers or all booleans"),
    ({"field": "x", "range": {}}, "a range is an object"),
    ({"field": "x", "range": {"gt": 1, "gte": 2}}, "at most one lower bound"),
    ({"field": "x", "range": {"from": 1}}, "unknown bound 'from'"),
    ({"field": "x", "range": {"gte": 1, "lt": "b"}}, "both bounds must be numbers or both strings"),
    ({"field": "x", "range": {"gte": True}}, "numbers or strings"),
    ({"field": "x", "range": {"gte": float("inf")}}, "finite"),
    ({"field": "x", "prefix": 3}, "a prefix is a string"),
    ({"field": "x", "eq": "a\nb"}, "control characters"),
    ({"field": "x", "eq": "x" * 1025}, "at most 1024 characters"),
    ({"and": []}, "list of 1 to 8 filters"),
    ({"and": [{"field": "x", "eq": 1}] * (MAX_GROUP + 1)}, "at most 8 filters per group"),
    ({"and": [{"field": "x", "eq": 1}], "or": []}, "a group has one key"),
    ({"not": {"not": {"not": {"not": {"field": "x", "eq": 1}}}}}, "at most 3 and/or/not groups deep"),
])
def test_malformed_filters_are_refused_with_a_reason(raw, message):
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        parse(raw)


def test_the_deepest_and_widest_filter_allowed_is_accepted():
    leaf = {"field": ["a", "b", "c", "d"], "in": list(range(MAX_VALUES))}
    widest = leaf
    for _ in range(MAX_DEPTH):
        widest = {"or": [widest] * MAX_GROUP}
    parsed = parse(widest)
    assert canonical(parse(to_json(parsed))) == canonical(parsed)


def test_equal_filters_have_equal_canonical_texts():
    assert canonical(parse({"field": "y", "range": {"lt": 3, "gte": 1}})) == \
        canonical(parse({"range": {"gte": 1.0, "lt": 3.0}, "field": ["y"]}))


def test_prefix_successor_bounds_exactly_the_strings_with_that_prefix():
    for prefix in ["a", "tmp/", "a%", "é", "a\U0010ffff", "\U0010ffff", "\ud7ff"]:
        upper = prefix_successor(prefix)
        for text in [prefix, prefix + "z", prefix + "\U0010ffff" * 3, "b", "a", "", "tmp0", "\ue000"]:
            assert (text >= prefix and (upper is None or text < upper)) == text.startswith(prefix), (prefix, text)
    assert prefix_successor("\U0010ffff") is None


# ----------------------------------------------------------------------------- Milvus expressions

@pytest.mark.parametrize(("raw", "expression"), [
    ({"and": [{"field": "year", "range": {"gte": 2010, "lt": 2020}}, {"field": "folder", "eq": "a"}]},
     '((metadata["year"] >= 2010.0 and metadata["year"] < 2020.0) and metadata["folder"] == "a")'),
    ({"field": ["exif", "camera"], "in": ["X100", "Q2"]}, 'metadata["exif"]["camera"] in ["X100", "Q2"]'),
    ({"field": "path", "prefix": "photos/2020/"}, 'metadata["path"] like "photos/2020/%"'),
    ({"field": "path", "prefix": "100%_"}, '(metadata["path"] >= "100%_" and metadata["path"] < "100%`")'),
    ({"field": "tags", "contains": "cat"}, 'json_contains(metadata["tags"], "cat")'),
    ({"field": "tags", "contains_any": ["cat", 2]}, 'json_contains_any(metadata["tags"], ["cat", 2.0])'),
    ({"field": "tags", "contains_any": [True, "cat", False]},
     '(json_contains_any(metadata["tags"], ["cat"]) or json_contains(metadata["tags"], true) or '
     'json_contains(metadata["tags"], false))'),
    ({"field": "path", "prefix": ""}, 'metadata["path"] >= ""'),
    ({"field": "q", "eq": 'say "hi" \\ bye'}, 'metadata["q"] == "say \\"hi\\" \\\\ bye"'),
    ({"field": "ok", "ne": True}, 'metadata["ok"] != true'),
    # not is pushed down to the conditions; != and not in are Milvus' own complements
    ({"not": {"or": [{"field": "a", "eq": 1}, {"field": "b", "in": ["x"]}]}},
     '(metadata["a"] != 1.0 and metadata["b"] not in ["x"])'),
    ({"not": {"and": [{"field": "a", "not_in": [1, 2]}, {"field": "b", "prefix": "t"}]}},
     '(metadata["a"] in [1.0, 2.0] or not (metadata["b"] like "t%"))'),
])
def test_milvus_expressions(raw, expression):
    assert to_milvus(parse(raw)) == expression


def test_milvus_field_name_must_be_an_identifier():
    with pytest.raises(ValueError):
        to_milvus(parse({"field": "a", "eq": 1}), field='metadata"] or 1==1 or x["')


def test_milvus_lite_matches_the_same_items(corpus, tmp_path):
    """Every compiled filter selects in Milvus Lite exactly what the in-memory evaluation selects.

    Filters whose pushed-down form keeps a ``not (...)`` are left out: Milvus parses it, but Milvus
    Lite 2.5.1 does not evaluate it ("unsupported expr proto node").
    """
    pymilvus = pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    docs, filters_ = corpus
    client = pymilvus.MilvusClient(str(tmp_path / "milvus.db"))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", pymilvus.DataType.VARCHAR, is_primary=True, max_length=16)
    schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=2)
    schema.add_field("metadata", pymilvus.DataType.JSON)
    params = client.prepare_index_params()
    params.add_index("vector", index_type="FLAT", metric_type="IP")
    client.create_collection("filters", schema=schema, index_params=params)
    client.insert("filters", [{"id": str(i), "vector": [1.0, 0.0], "metadata": doc} for i, doc in enumerate(docs)])
    client.load_collection("filters")
    index = indexed(docs)
    checked = 0
    for raw in filters_:
        condition = parse(raw)
        expression = to_milvus(condition)
        if "not (" in expression:
            continue
        rows = client.query("filters", filter=expression, output_fields=["id"], limit=len(docs) + 1,
                            consistency_level="Strong")
        got = sorted(int(row["id"]) for row in rows)
        assert got == np.flatnonzero(index.evaluate(condition, len(docs))).tolist(), (raw, expression)
        checked += 1
    client.close()
    assert checked > len(filters_) // 2
