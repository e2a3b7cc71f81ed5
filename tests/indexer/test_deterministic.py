"""Deterministic collections: a CLIP-like model's points (logvar None, S = 0) through the same index paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer import Catalog, InvalidInputError

from .conftest import DIM, assert_same_ranking


@pytest.fixture
def points(dataset):
    """The synthetic corpus's means only: what a deterministic model would return."""
    return dataset.ids[:400], dataset.mean[:400], dataset.query_mean


def fill(catalog: Catalog, points, name: str = "clip") -> object:
    ids, mean, _ = points
    index = catalog.create(name, "image", DIM, "clip@test", model_family="clip", deterministic=True)
    index.add(ids, mean, None, [{"row": i} for i in range(len(ids))])
    return index


def test_csd_of_points_is_the_squared_distance_and_ranks_as_cosine(catalog, points):
    ids, mean, query = points
    index = fill(catalog, points)
    mean64, query64 = mean.astype(np.float64), query.astype(np.float64)
    squared = ((query64[:, None, :] - mean64[None, :, :]) ** 2).sum(-1)  # [Q, N], brute force
    by_csd = index.search(query, None, k=10, rank="csd")
    by_cosine = index.search(query, None, k=10, rank="cosine")
    for q, (csd_hits, cosine_hits) in enumerate(zip(by_csd, by_cosine, strict=True)):
        assert_same_ranking([h.id for h in csd_hits], [h.csd for h in csd_hits], squared[q], ids, 10)
        assert [h.id for h in csd_hits] == [h.id for h in cosine_hits]
        assert all(h.uncertainty is None for h in csd_hits)
        np.testing.assert_allclose([h.csd for h in csd_hits], [2 - 2 * h.cosine for h in csd_hits], atol=1e-6)


def test_what_needs_variances_is_refused_or_empty(catalog, points, dataset):
    ids, mean, query = points
    index = fill(catalog, points)
    with pytest.raises(InvalidInputError, match="deterministic model's points.*inclusion test needs them"):
        index.search(query, None, k=5, rank="inclusion")
    with pytest.raises(InvalidInputError, match="no uncertainty to rank against"):
        index.uncertainty_percentile([0.1])
    assert index.extremes(3) == ([], [])
    stats = index.stats()
    assert (stats["deterministic"], stats["model_family"], stats["uncertainty"]) == (True, "clip", {"count": 400})
    assert stats["histogram"]["counts"] == []
    item = index.get(ids[0])
    assert item.logvar is None and item.uncertainty is None and item.metadata == {"row": 0}
    np.testing.assert_allclose(item.mean, mean[0], atol=1e-6)


def test_points_and_gaussians_do_not_mix(catalog, points, dataset):
    ids, mean, query = points
    clip = fill(catalog, points)
    with pytest.raises(InvalidInputError, match="pass logvar=None"):
        clip.add(["x"], dataset.mean[:1], dataset.logvar[:1])
    with pytest.raises(InvalidInputError, match="pass logvar=None"):
        clip.search(query, dataset.query_logvar, k=3)
    prolip = catalog.create("prolip", "image", DIM, "prolip@test", model_family="prolip")
    with pytest.raises(InvalidInputError, match="logvar is required"):
        prolip.add(["x"], dataset.mean[:1], None)
    with pytest.raises(InvalidInputError, match="logvar is required"):
        prolip.search(query, None, k=3)


def test_reopened_from_store_and_snapshot_stays_deterministic(tmp_path, points):
    ids, mean, query = points
    with Catalog(tmp_path / "data", auto_snapshot=False) as catalog:
        index = fill(catalog, points)
        before = [[h.id for h in hits] for hits in index.search(query, None, k=5)]
        index.snapshot()
        index.add(["late"], mean[:1], None)  # replayed from the store after the snapshot
    document = json.loads((tmp_path / "data" / "clip" / "collection.json").read_text())
    assert document["deterministic"] is True and document["model_family"] == "clip"
    with Catalog(tmp_path / "data", auto_snapshot=False) as catalog:
        (info,) = catalog.list()
        assert (info.deterministic, info.model_family, info.size) == (True, "clip", 401)
        index = catalog.get("clip")
        after = index.search(query, None, k=6)
        assert [[h.id for h in hits if h.id != "late"][:5] for hits in after] == before
        assert index.get("late").uncertainty is None


def test_redis_store_keeps_points(tmp_path, points, redis_url):
    ids, mean, query = points
    with Catalog(tmp_path / "data", redis_url=redis_url, auto_snapshot=False) as catalog:
        index = fill(catalog, points)
        expected = [[h.id for h in hits] for hits in index.search(query, None, k=5)]
    with Catalog(tmp_path / "data", redis_url=redis_url, auto_snapshot=False) as catalog:
        index = catalog.get("clip")  # replayed from Redis rows with an empty logvar
        assert [[h.id for h in hits] for hits in index.search(query, None, k=5)] == expected
        assert index.get(ids[3]).logvar is None


def test_older_collections_read_as_probabilistic_with_unknown_family(tmp_path, dataset):
    with Catalog(tmp_path / "data", auto_snapshot=False) as catalog:
        catalog.create("old", "text", DIM, "m@1")
    path = tmp_path / "data" / "old" / "collection.json"
    document = json.loads(path.read_text())
    assert "model_family" in document
    from indexer.persistence import read_checked_json, write_checked_json

    document = read_checked_json(path)
    del document["model_family"], document["deterministic"]  # as written before model families
    write_checked_json(path, document)
    with Catalog(tmp_path / "data", auto_snapshot=False) as catalog:
        (info,) = catalog.list()
        assert (info.model_family, info.deterministic) == (None, False)
        catalog.get("old").add(["a"], dataset.mean[:1], dataset.logvar[:1])
