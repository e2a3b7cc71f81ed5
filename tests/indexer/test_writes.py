"""Add (upsert), delete and get by external id; refused input leaves the collection untouched."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import IndexSpec, InvalidInputError

from .conftest import DIM


@pytest.fixture(params=["flat", "hnsw"])
def index(request, catalog):
    spec = IndexSpec(kind=request.param, codec="flat", ef_search=500)
    return catalog.create("items", "image", DIM, "synthetic", spec=spec)


def _top_ids(index, mean, logvar, k=1):
    return [h.id for h in index.search(mean, logvar, k=k)[0]]


def test_add_then_get_round_trips(index, dataset):
    index.add(dataset.ids[:50], dataset.mean[:50], dataset.logvar[:50], dataset.metadata[:50])
    assert len(index) == 50 and "item-00003" in index and "nope" not in index
    item = index.get("item-00003")
    np.testing.assert_allclose(item.mean, dataset.mean[3], atol=1e-6)
    np.testing.assert_array_equal(item.logvar, dataset.logvar[3])
    assert item.metadata == dataset.metadata[3]
    assert item.uncertainty == pytest.approx(np.exp(dataset.logvar[3].astype(np.float64)).sum())
    assert index.get("absent") is None


def test_upsert_replaces_vectors_and_metadata(index, dataset):
    index.add(dataset.ids[:50], dataset.mean[:50], dataset.logvar[:50], dataset.metadata[:50])
    # item-00000 now takes row 60's vectors: a query equal to row 60 must find it, and nothing at row 0
    index.add(["item-00000"], dataset.mean[60:61], dataset.logvar[60:61], [{"replaced": True}])
    assert len(index) == 50
    assert index.get("item-00000").metadata == {"replaced": True}
    np.testing.assert_allclose(index.get("item-00000").mean, dataset.mean[60], atol=1e-6)
    assert _top_ids(index, dataset.mean[60:61], dataset.logvar[60:61]) == ["item-00000"]
    hits = index.search(dataset.mean[0:1], dataset.logvar[0:1], k=50)[0]
    assert [h.id for h in hits].count("item-00000") == 1  # the old version is gone, not returned twice


def test_delete_removes_from_search_and_get(index, dataset):
    index.add(dataset.ids[:50], dataset.mean[:50], dataset.logvar[:50])
    assert index.delete(["item-00007", "item-00008", "never-added"]) == 2
    assert len(index) == 48 and index.get("item-00007") is None
    everything = index.search(dataset.query_mean, dataset.query_logvar, k=50)
    assert all(len(hits) == 48 for hits in everything)
    assert not {"item-00007", "item-00008"} & {h.id for hits in everything for h in hits}
    assert index.delete(["item-00007"]) == 0  # already gone


def test_deleted_id_can_come_back(index, dataset):
    index.add(dataset.ids[:10], dataset.mean[:10], dataset.logvar[:10])
    index.delete(["item-00004"])
    index.add(["item-00004"], dataset.mean[4:5], dataset.logvar[4:5], [{"again": 1}])
    assert len(index) == 10 and index.get("item-00004").metadata == {"again": 1}
    assert _top_ids(index, dataset.mean[4:5], dataset.logvar[4:5] - 30) == ["item-00004"]


@pytest.mark.parametrize("mutate, message", [
    (lambda ids, m, lv, md: (ids + ["x"], m, lv, md), "ids but"),
    (lambda ids, m, lv, md: (ids[:-1] + [ids[0]], m, lv, md), "more than once"),
    (lambda ids, m, lv, md: (ids[:-1] + [""], m, lv, md), "non-empty"),
    (lambda ids, m, lv, md: (ids[:-1] + ["x" * 2000], m, lv, md), "bytes"),
    (lambda ids, m, lv, md: (ids[:-1] + [7], m, lv, md), "strings"),
    (lambda ids, m, lv, md: (ids, m[:, :-1], lv, md), "shape"),
    (lambda ids, m, lv, md: (ids, m * 2, lv, md), "L2-normalised"),
    (lambda ids, m, lv, md: (ids, m, np.where(np.arange(DIM) == 0, np.inf, lv), md), "NaN or infinite"),
    (lambda ids, m, lv, md: (ids, m, lv + 200, md), "overflows"),
    (lambda ids, m, lv, md: (ids, m, lv, md[:-1]), "metadata entries"),
    (lambda ids, m, lv, md: (ids, m, lv, md[:-1] + [{"x": object()}]), "JSON"),
    (lambda ids, m, lv, md: (ids, m, lv, md[:-1] + [{"x": "y" * 70000}]), "limit"),
])
def test_bad_adds_are_refused_and_change_nothing(index, dataset, mutate, message):
    index.add(dataset.ids[:5], dataset.mean[:5], dataset.logvar[:5], dataset.metadata[:5])
    args = mutate(dataset.ids[5:10], dataset.mean[5:10], dataset.logvar[5:10].astype(np.float64),
                  dataset.metadata[5:10])
    with pytest.raises(InvalidInputError, match=message):
        index.add(*args)
    assert len(index) == 5 and "item-00005" not in index
    assert index.get("item-00001").metadata == dataset.metadata[1]


def test_float16_and_float64_inputs_are_accepted(index, dataset):
    index.add(dataset.ids[:3], dataset.mean[:3].astype(np.float16), dataset.logvar[:3].astype(np.float16))
    index.add(dataset.ids[3:6], dataset.mean[3:6].astype(np.float64), dataset.logvar[3:6].astype(np.float64))
    assert len(index) == 6
    assert np.linalg.norm(index.get("item-00000").mean) == pytest.approx(1.0, abs=1e-6)


def test_empty_add_is_a_no_op(index):
    index.add([], np.zeros((0, DIM), np.float32), np.zeros((0, DIM), np.float32))
    assert len(index) == 0
