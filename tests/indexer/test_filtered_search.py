"""Filtered search: the exact top-k *within* the filter, for every index kind and rank mode, against brute
force over the filtered items; kept right through upserts, deletes, compaction and reopening."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import Catalog, IndexSpec, InvalidInputError
from indexer import search as search_module

from .conftest import DIM, assert_same_ranking

KINDS = {
    "flat": IndexSpec(kind="flat"),
    # exhaustive ANN settings: FAISS's filtered search must then agree with brute force too
    "hnsw": IndexSpec(kind="hnsw", codec="flat", hnsw_m=16, ef_search=2000),
    "ivf": IndexSpec(kind="ivf", codec="flat", nlist=16, nprobe=16),
}


def metadata_of(row: int) -> dict:
    return {"row": row, "group": row % 10, "folder": f"f{row % 100:02d}/sub{row % 7}",
            "tags": ["odd" if row % 2 else "even", f"t{row % 3}"], "when": f"2020-{1 + row % 12:02d}-01"}


FILTERS = {  # name -> (filter, which rows match)
    "1%": ({"field": "folder", "prefix": "f03/"}, lambda r: r % 100 == 3),
    "10%": ({"field": "group", "eq": 3}, lambda r: r % 10 == 3),
    "30% (the index's own filtered search)": ({"field": "group", "in": [1, 4, 7]}, lambda r: r % 10 in (1, 4, 7)),
    "70% (combined)": ({"or": [{"field": "tags", "contains": "odd"}, {"field": "when", "range": {"lt": "2020-05"}}]},
                       lambda r: r % 2 == 1 or 1 + r % 12 < 5),
    "100%": ({"field": "row", "range": {"gte": 0}}, lambda r: True),
}


@pytest.fixture(scope="module")
def collections(tmp_path_factory, dataset):
    catalog = Catalog(tmp_path_factory.mktemp("filtered") / "data", auto_snapshot=False)
    metadata = [metadata_of(r) for r in range(len(dataset.ids))]
    built = {}
    for name, spec in KINDS.items():
        index = catalog.create(name, "image", DIM, "synthetic", spec=spec)
        index.add(dataset.ids, dataset.mean, dataset.logvar, metadata)
        index.snapshot()
        built[name] = index
    yield built
    catalog.close()


def rows_of(matches) -> np.ndarray:
    return np.array([r for r in range(1500) if matches(r)])


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("which", list(FILTERS))
def test_csd_top_k_within_the_filter_equals_brute_force(collections, dataset, kind, which):
    raw, matches = FILTERS[which]
    rows = rows_of(matches)
    truth = dataset.brute_csd(rows)
    ids = [dataset.ids[r] for r in rows]
    results = collections[kind].search(dataset.query_mean, dataset.query_logvar, k=10, filter=raw)
    for hits, row in zip(results, truth, strict=True):
        assert_same_ranking([h.id for h in hits], [h.csd for h in hits], row, ids, 10)
        assert all(matches(h.metadata["row"]) for h in hits)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
@pytest.mark.parametrize("which", ["1%", "30% (the index's own filtered search)"])
def test_cosine_and_two_stage_within_the_filter(collections, dataset, kind, which):
    raw, matches = FILTERS[which]
    rows = rows_of(matches)
    ids = [dataset.ids[r] for r in rows]
    cosine = dataset.query_mean.astype(np.float64) @ dataset.mean[rows].astype(np.float64).T
    results = collections[kind].search(dataset.query_mean, dataset.query_logvar, k=7, rank="cosine", filter=raw)
    for hits, row in zip(results, cosine, strict=True):
        assert_same_ranking([h.id for h in hits], [h.cosine for h in hits], row, ids, 7, lower_is_better=False)
    # two-stage with a shortlist as large as the filtered set is exact CSD again
    results = collections[kind].search(dataset.query_mean, dataset.query_logvar, k=5, exact=False,
                                       shortlist=len(rows), filter=raw)
    for hits, row in zip(results, dataset.brute_csd(rows), strict=True):
        assert_same_ranking([h.id for h in hits], [h.csd for h in hits], row, ids, 5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_inclusion_within_the_filter_equals_inclusion_over_a_collection_of_just_those_items(
        collections, dataset, tmp_path, kind):
    raw, matches = FILTERS["10%"]
    rows = rows_of(matches)
    with Catalog(tmp_path / "alone", auto_snapshot=False) as catalog:
        alone = catalog.create("alone", "image", DIM, "synthetic", spec=IndexSpec(kind="flat"))
        alone.add([dataset.ids[r] for r in rows], dataset.mean[rows], dataset.logvar[rows])
        for direction in ("query_in_item", "item_in_query"):
            expected = alone.search(dataset.query_mean, dataset.query_logvar, k=6, rank="inclusion",
                                    inclusion_direction=direction)
            got = collections[kind].search(dataset.query_mean, dataset.query_logvar, k=6, rank="inclusion",
                                           inclusion_direction=direction, filter=raw)
            for want, have in zip(expected, got, strict=True):
                assert [h.id for h in have] == [h.id for h in want]
                np.testing.assert_allclose([h.score for h in have], [h.score for h in want], atol=1e-9)


@pytest.mark.parametrize(("kind", "knobs"), [("flat", {}), ("ivf", {"nprobe": 1}), ("hnsw", {"ef_search": 10})])
def test_a_filter_far_from_the_query_still_gets_k_exact_results(collections, dataset, kind, knobs):
    """The 30 % of items least similar to the query (above the scan fraction, so the index is asked): the flat
    scan skips the other slots (exact); FAISS's filtered search with a narrow probe (IVF, HNSW) finds too few
    of them, so the exact scan of the selected items answers: never fewer than k, never a post-filtered top k."""
    query = dataset.query_mean[:1]
    far = np.argsort(dataset.mean @ query[0])[:450]  # 30 %: above the scan fraction, so the index is asked first
    assert len(far) > search_module.SUBSET_SCAN_FRACTION * len(dataset.ids)
    raw = {"field": "row", "in": [int(r) for r in far[:256]]}
    raw = {"or": [raw, {"field": "row", "in": [int(r) for r in far[256:]]}]}
    hits = collections[kind].search(query, dataset.query_logvar[:1], k=10, filter=raw, **knobs)[0]
    truth = dataset.brute_csd(np.sort(far))[:1]
    assert_same_ranking([h.id for h in hits], [h.csd for h in hits], truth[0], [dataset.ids[r] for r in np.sort(far)],
                        10)


def test_fewer_matches_than_k_returns_exactly_the_matches(collections, dataset):
    raw = {"field": "row", "in": [5, 17, 999]}
    for kind, index in collections.items():
        hits = index.search(dataset.query_mean[:2], dataset.query_logvar[:2], k=10, filter=raw)
        assert all(sorted(h.id for h in row) == [dataset.ids[5], dataset.ids[17], dataset.ids[999]] for row in hits), \
            kind
        assert index.search(dataset.query_mean[:1], dataset.query_logvar[:1], k=3,
                            filter={"field": "row", "eq": -1}) == [[]]


def test_count_and_matching(collections, dataset):
    index = collections["flat"]
    assert index.count_matching(FILTERS["10%"][0]) == 150
    assert index.count_matching({"field": "nowhere", "ne": 1}) == 1500  # absent fields are "not equal"
    items = index.matching({"field": "folder", "prefix": "f03/"}, limit=15)
    assert [i.id for i in items] == sorted(dataset.ids[r] for r in range(3, 1500, 100))
    np.testing.assert_allclose(items[0].mean, dataset.mean[3], atol=1e-6)
    with pytest.raises(InvalidInputError, match="matches 150 items"):
        index.matching(FILTERS["10%"][0], limit=100)
    with pytest.raises(InvalidInputError, match="unknown operator"):
        index.search(dataset.query_mean[:1], dataset.query_logvar[:1], filter={"field": "row", "like": "1%"})


def test_filters_follow_upserts_deletes_compaction_and_reopening(tmp_path, dataset):
    n = 600
    path = tmp_path / "data"
    raw = {"field": "group", "eq": 3}
    with Catalog(path, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "synthetic", spec=IndexSpec(kind="flat"))
        index.add(dataset.ids[:n], dataset.mean[:n], dataset.logvar[:n], [metadata_of(r) for r in range(n)])
        assert index.count_matching(raw) == 60  # builds the metadata index
        # after the build: new items, changed metadata, deletions
        index.add(dataset.ids[n:n + 100], dataset.mean[n:n + 100], dataset.logvar[n:n + 100],
                  [metadata_of(r) for r in range(n, n + 100)])
        moved = [dataset.ids[r] for r in range(3, 300, 10)]  # 30 items leave group 3
        index.add(moved, dataset.mean[3:300:10], dataset.logvar[3:300:10], [{"group": 99}] * len(moved))
        index.delete([dataset.ids[r] for r in range(303, 600, 10)][:10])
        expected = {dataset.ids[r] for r in range(n + 100) if r % 10 == 3} - set(moved) - \
            {dataset.ids[r] for r in range(303, 600, 10)[:10]}
        assert index.count_matching(raw) == len(expected)
        got = {h.id for h in index.search(dataset.query_mean[:1], dataset.query_logvar[:1], k=1000, filter=raw)[0]}
        assert got == expected
        assert index.stats()["filter_index"]["built"]
        index.snapshot(rebuild=True)  # compaction renumbers the slots
        assert index.stats()["dead_slots"] == 0
        after = {h.id for h in index.search(dataset.query_mean[:1], dataset.query_logvar[:1], k=1000, filter=raw)[0]}
        assert after == expected
        index.add([dataset.ids[5]], dataset.mean[5:6], dataset.logvar[5:6], [{"group": 3}])
        assert index.count_matching(raw) == len(expected) + 1
    with Catalog(path, auto_snapshot=False) as catalog:  # reopened: built again from the store
        assert catalog.get("c").count_matching(raw) == len(expected) + 1


def test_filtered_search_on_a_redis_store(redis_url, tmp_path, dataset):
    raw, matches = FILTERS["10%"]
    with Catalog(tmp_path / "data", redis_url=redis_url, auto_snapshot=False) as catalog:
        index = catalog.create("r", "image", DIM, "synthetic")
        index.add(dataset.ids[:500], dataset.mean[:500], dataset.logvar[:500], [metadata_of(r) for r in range(500)])
        rows = rows_of(lambda r: r < 500 and matches(r))
        hits = index.search(dataset.query_mean[:3], dataset.query_logvar[:3], k=5, filter=raw)
        for got, truth in zip(hits, dataset.brute_csd(rows)[:3], strict=True):
            assert_same_ranking([h.id for h in got], [h.csd for h in got], truth, [dataset.ids[r] for r in rows], 5)


def test_ties_are_broken_by_id(tmp_path):
    """Exact duplicates score the same: their order is by id, however many there are beyond the k-th place."""
    with Catalog(tmp_path / "data", auto_snapshot=False) as catalog:
        index = catalog.create("t", "image", 4, "synthetic", spec=IndexSpec(kind="flat"))
        mean = np.tile(np.array([[1.0, 0, 0, 0]], np.float32), (60, 1))
        ids = [f"dup-{i:02d}" for i in np.random.default_rng(0).permutation(60)]
        index.add(ids, mean, np.full((60, 4), -3.0, np.float32))
        index.add(["other"], np.array([[0.0, 1, 0, 0]], np.float32), np.full((1, 4), -3.0, np.float32))
        for k in (5, 12, 59):
            for rank in ("csd", "cosine"):
                hits = index.search(mean[:1], np.full((1, 4), -3.0, np.float32), k=k, rank=rank)[0]
                assert [h.id for h in hits] == sorted(ids)[:k]


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_rank_probability_within_the_filter_equals_brute_force(tmp_path, monkeypatch, kind):
    """Calibrated probability (cosine rounds with a stopping bound, then an exhaustive scan) within a filter."""
    from indexer import probability_rank
    from indexer.synthetic import corpus, queries

    from .test_probability_rank import DIM as PDIM
    from .test_probability_rank import SIZE, brute_force, calibrator

    # the image world of test_probability_rank: uncertainties over two orders of magnitude
    mean, logvar = corpus(SIZE, PDIM, seed=1, clusters=20, spread=0.6, s_median=0.02, s_spread=1.2)
    world = {"queries": {"text": queries(mean, 10, seed=3, noise=0.4, s_median=0.15, s_spread=0.6)}}
    rows = np.flatnonzero(np.arange(SIZE) % 7 == 2)  # 14 %: cosine rounds over the selected items
    spec = KINDS[kind] if kind == "flat" else IndexSpec(kind="ivf", codec="flat", nlist=16, nprobe=16)
    cal = calibrator(log_image_uncertainty=-6.0)
    truth = brute_force(cal, "text", world["queries"]["text"], (mean[rows], logvar[rows]))
    ids = [f"i{r:05d}" for r in rows]
    with Catalog(tmp_path / "data", auto_snapshot=False) as catalog:
        index = catalog.create("p", "image", PDIM, "synthetic", spec=spec)
        index.add([f"i{r:05d}" for r in range(SIZE)], mean, logvar, [{"r": r % 7} for r in range(SIZE)])
        index.snapshot()
        for cap in (probability_rank.MAX_FETCH, 16):  # then forced onto the scan of the selected items
            monkeypatch.setattr(probability_rank, "MAX_FETCH", cap)
            results = index.search(*world["queries"]["text"], k=8, rank="probability", calibrator=cal,
                                   query_modality="text", filter={"field": "r", "eq": 2})
            for hits, row in zip(results, truth, strict=True):
                assert_same_ranking([h.id for h in hits], [h.score for h in hits], row, ids, 8, lower_is_better=False)


def test_filters_on_a_deterministic_collection_of_points(tmp_path, dataset):
    """A CLIP model's collection (logvar None): filtered search, counts, matching items and means work on points."""
    raw, matches = FILTERS["10%"]
    rows = rows_of(lambda r: r < 400 and matches(r))
    with Catalog(tmp_path / "data", auto_snapshot=False) as catalog:
        index = catalog.create("points", "image", DIM, "clip-model", model_family="clip", deterministic=True)
        index.add(dataset.ids[:400], dataset.mean[:400], None, [metadata_of(r) for r in range(400)])
        hits = index.search(dataset.query_mean[:2], None, k=5, filter=raw)
        cosine = dataset.query_mean[:2].astype(np.float64) @ dataset.mean[rows].astype(np.float64).T
        for got, truth in zip(hits, cosine, strict=True):
            assert_same_ranking([h.id for h in got], [h.cosine for h in got], truth, [dataset.ids[r] for r in rows],
                                5, lower_is_better=False)
            assert all(h.uncertainty is None for h in got)
        assert index.count_matching(raw) == len(rows)
        items = index.matching(raw, limit=len(rows))
        assert [i.id for i in items] == sorted(dataset.ids[r] for r in rows) and items[0].logvar is None
        np.testing.assert_allclose(index.means([dataset.ids[rows[0]]])[0], dataset.mean[rows[0]], atol=1e-6)
