"""Search against brute force on a seeded synthetic set: every index kind, every rank mode."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import IndexSpec, InvalidInputError
from models.gaussian import inclusion, inclusion_margin

from .conftest import DIM, assert_same_ranking

# ANN kinds made exhaustive (every list probed, beam wider than the corpus) must match brute force exactly
EXHAUSTIVE = {
    "flat": IndexSpec(kind="flat"),
    "hnsw": IndexSpec(kind="hnsw", codec="flat", hnsw_m=16, ef_search=2000),
    "ivf-flat": IndexSpec(kind="ivf", codec="flat", nlist=16, nprobe=16),
    "ivf-sq8": IndexSpec(kind="ivf", codec="sq8", nlist=16, nprobe=16, refine=10),
}


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, dataset):
    from indexer import Catalog

    catalog = Catalog(tmp_path_factory.mktemp("search") / "data", auto_snapshot=False)
    built = {}
    for name, spec in EXHAUSTIVE.items():
        index = catalog.create(name, "image", DIM, "synthetic", spec=spec)
        index.add(dataset.ids, dataset.mean, dataset.logvar, dataset.metadata)
        index.snapshot()  # trains IVF
        built[name] = index
    yield built
    catalog.close()


@pytest.mark.parametrize("name", list(EXHAUSTIVE))
def test_index_kind_is_what_was_asked(indexes, name):
    assert indexes[name].kind == EXHAUSTIVE[name].kind


@pytest.mark.parametrize("name", list(EXHAUSTIVE))
def test_csd_top_k_equals_brute_force(indexes, dataset, name):
    truth = dataset.brute_csd()
    results = indexes[name].search(dataset.query_mean, dataset.query_logvar, k=10)
    for hits, row in zip(results, truth, strict=True):
        assert_same_ranking([h.id for h in hits], [h.csd for h in hits], row, dataset.ids, 10)
        assert all(h.score == h.csd for h in hits)


@pytest.mark.parametrize("name", list(EXHAUSTIVE))
def test_cosine_top_k_equals_brute_force(indexes, dataset, name):
    truth = dataset.query_mean.astype(np.float64) @ dataset.mean.astype(np.float64).T
    results = indexes[name].search(dataset.query_mean, dataset.query_logvar, k=7, rank="cosine")
    for hits, row in zip(results, truth, strict=True):
        assert_same_ranking([h.id for h in hits], [h.cosine for h in hits], row, dataset.ids, 7,
                            lower_is_better=False)


@pytest.mark.parametrize("name", list(EXHAUSTIVE))
@pytest.mark.parametrize("direction", ["query_in_item", "item_in_query"])
def test_inclusion_reranks_the_csd_shortlist(indexes, dataset, name, direction):
    shortlist = 60
    truth = dataset.brute_csd()
    results = indexes[name].search(dataset.query_mean, dataset.query_logvar, k=5, rank="inclusion",
                                   shortlist=shortlist, inclusion_direction=direction)
    q64 = dataset.query_mean.astype(np.float64), dataset.query_logvar.astype(np.float64)
    for i, hits in enumerate(results):
        candidates = np.argsort(truth[i], kind="stable")[:shortlist]
        m, lv = dataset.mean[candidates].astype(np.float64), dataset.logvar[candidates].astype(np.float64)
        qm, ql = q64[0][i:i + 1], q64[1][i:i + 1]
        # ordered by the signed margin of the chosen direction, the quantity the inclusion loss trains
        if direction == "query_in_item":
            margins = inclusion_margin(qm, ql, m, lv)[0]
        else:
            margins = inclusion_margin(m, lv, qm, ql)[:, 0]
        np.testing.assert_allclose(margins, (inclusion(qm, ql, m, lv)[0] - inclusion(m, lv, qm, ql)[:, 0])
                                   * (1 if direction == "query_in_item" else -1), atol=1e-9)
        candidate_ids = [dataset.ids[j] for j in candidates]
        assert_same_ranking([h.id for h in hits], [h.score for h in hits], margins, candidate_ids, 5,
                            lower_is_better=False, tol=1e-4)
        by_id = dict(zip(candidate_ids, margins, strict=True))
        np.testing.assert_allclose([h.inclusion for h in hits], [by_id[h.id] for h in hits], atol=1e-4)


def test_two_stage_with_full_shortlist_is_exact(indexes, dataset):
    index = indexes["flat"]
    truth = dataset.brute_csd()
    results = index.search(dataset.query_mean, dataset.query_logvar, k=10, exact=False, shortlist=len(dataset.ids))
    for hits, row in zip(results, truth, strict=True):
        assert_same_ranking([h.id for h in hits], [h.csd for h in hits], row, dataset.ids, 10)


def test_two_stage_with_short_shortlist_can_miss_uncertain_neighbours(indexes, dataset):
    """Cosine shortlists ignore the variances: a k' = k shortlist is not the CSD top-k on this data."""
    index = indexes["flat"]
    exact = index.search(dataset.query_mean, dataset.query_logvar, k=10)
    short = index.search(dataset.query_mean, dataset.query_logvar, k=10, exact=False, shortlist=10)
    overlap = np.mean([len({h.id for h in a} & {h.id for h in b}) / 10 for a, b in zip(exact, short, strict=True)])
    assert overlap < 1.0


def test_hits_carry_metadata_and_consistent_scores(indexes, dataset):
    hits = indexes["flat"].search(dataset.query_mean[:1], dataset.query_logvar[:1], k=3)[0]
    s_query = np.exp(dataset.query_logvar[0].astype(np.float64)).sum()
    for hit in hits:
        row = dataset.ids.index(hit.id)
        assert hit.metadata == dataset.metadata[row]
        assert hit.uncertainty == pytest.approx(np.exp(dataset.logvar[row].astype(np.float64)).sum(), rel=1e-9)
        assert hit.csd == pytest.approx(2 - 2 * hit.cosine + s_query + hit.uncertainty, abs=1e-9)
        assert hit.inclusion is None


@pytest.mark.parametrize("name", ["hnsw", "ivf-sq8"])
def test_per_call_knobs_do_not_change_the_shared_index(indexes, dataset, name):
    index = indexes[name]
    before = index.search(dataset.query_mean, dataset.query_logvar, k=10)
    index.search(dataset.query_mean, dataset.query_logvar, k=10, nprobe=1, ef_search=10)
    after = index.search(dataset.query_mean, dataset.query_logvar, k=10)
    assert [[h.id for h in q] for q in before] == [[h.id for h in q] for q in after]


def test_k_larger_than_collection_returns_everything(catalog, dataset):
    index = catalog.create("small", "text", DIM, "synthetic")
    index.add(dataset.ids[:5], dataset.mean[:5], dataset.logvar[:5])
    hits = index.search(dataset.query_mean[:2], dataset.query_logvar[:2], k=50)
    assert [len(h) for h in hits] == [5, 5]


def test_empty_collection_returns_no_hits(catalog, dataset):
    index = catalog.create("empty", "text", DIM, "synthetic")
    assert index.search(dataset.query_mean[:3], dataset.query_logvar[:3], k=5) == [[], [], []]


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k must be"),
    ({"k": 5000}, "at most"),
    ({"rank": "l2"}, "rank must be"),
    ({"inclusion_direction": "sideways"}, "inclusion_direction"),
    ({"k": 20, "shortlist": 10}, "at least k"),
])
def test_bad_search_arguments_are_refused(indexes, dataset, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        indexes["flat"].search(dataset.query_mean, dataset.query_logvar, **kwargs)


def test_bad_queries_are_refused(indexes, dataset):
    index = indexes["flat"]
    with pytest.raises(InvalidInputError, match="shape"):
        index.search(dataset.query_mean[:, :5], dataset.query_logvar[:, :5])
    with pytest.raises(InvalidInputError, match="NaN"):
        bad = dataset.query_mean.copy()
        bad[0, 0] = np.nan
        index.search(bad, dataset.query_logvar)
    with pytest.raises(InvalidInputError, match="L2-normalised"):
        index.search(dataset.query_mean * 3, dataset.query_logvar)
    with pytest.raises(InvalidInputError, match="floating-point"):
        index.search(np.ones((1, DIM), dtype=np.int64), dataset.query_logvar[:1])


@pytest.mark.parametrize("spec", [
    IndexSpec(kind="ivf", codec="pq", nlist=16, nprobe=16, refine=10),
    IndexSpec(kind="hnsw", codec="sq8", hnsw_m=16, ef_search=400, refine=10),
    IndexSpec(kind="hnsw", codec="fp16", hnsw_m=16, ef_search=400, refine=10),
], ids=["ivf-pq-fastscan", "hnsw-sq8", "hnsw-fp16"])
def test_compressed_codecs_recall_and_respect_deletes(catalog, dataset, spec):
    index = catalog.create("compressed", "image", DIM, "synthetic", spec=spec)
    index.add(dataset.ids, dataset.mean, dataset.logvar)
    index.snapshot()  # trains the codec
    assert index.kind == spec.kind
    deleted = set(dataset.ids[::3])
    index.delete(sorted(deleted))
    alive = np.array([i for i, item_id in enumerate(dataset.ids) if item_id not in deleted])
    truth = dataset.brute_csd(alive)
    results = index.search(dataset.query_mean, dataset.query_logvar, k=10)
    found = [h.id for hits in results for h in hits]
    assert not deleted & set(found)
    expected = [{dataset.ids[alive[j]] for j in np.argsort(row)[:10]} for row in truth]
    recall = np.mean([len(e & {h.id for h in hits}) / 10 for e, hits in zip(expected, results, strict=True)])
    assert recall >= 0.9
