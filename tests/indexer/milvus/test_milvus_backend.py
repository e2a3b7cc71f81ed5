"""The Milvus backend against a real Milvus Lite server, checked against the FAISS backend on the same items.

The FAISS path is itself checked against brute force (tests/indexer/test_search.py); here every
rank mode, statistic and read of the Milvus backend must give what it gives.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest

from indexer import Catalog, CollectionExistsError, InvalidInputError, UnknownCollectionError
from indexer.milvus import MilvusCatalog, schema, statistics
from indexer.synthetic import corpus_chunks, queries
from tests.processes import free_port, start_milvus_lite

DIM = 32
N = 1500


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("milvus")
    process, uri = start_milvus_lite(workdir)
    yield uri
    process.terminate()
    process.wait(20)


@pytest.fixture(scope="module")
def corpus():
    mean, logvar = next(iter(corpus_chunks(N, DIM, seed=3, clusters=24)))
    ids = [f"item/{i}" for i in range(N)]
    metadata = [{"n": i, "folder": "ab"[i % 2]} for i in range(N)]
    query_mean, query_logvar = queries(mean, 12, seed=4)
    return ids, mean, logvar, metadata, query_mean, query_logvar


@pytest.fixture(scope="module")
def pair(milvus, corpus, tmp_path_factory):
    """The same items in a FAISS collection and a Milvus one."""
    ids, mean, logvar, metadata, _, _ = corpus
    faiss_catalog = Catalog(tmp_path_factory.mktemp("faiss"), auto_snapshot=False)
    milvus_catalog = MilvusCatalog(milvus, prefix="t_backend")
    reference = faiss_catalog.create("pair", "image", DIM, "synthetic")
    candidate = milvus_catalog.create("pair", "image", DIM, "synthetic")
    for index in (reference, candidate):
        index.add(ids, mean, logvar, metadata)
    yield reference, candidate
    milvus_catalog.drop("pair")
    milvus_catalog.close()
    faiss_catalog.close()


@pytest.mark.parametrize("rank,exact", [("csd", True), ("csd", False), ("cosine", True), ("inclusion", True),
                                        ("inclusion", False)])
def test_every_rank_mode_returns_what_the_faiss_backend_returns(pair, corpus, rank, exact):
    reference, candidate = pair
    *_, query_mean, query_logvar = corpus
    for direction in ("query_in_item", "item_in_query") if rank == "inclusion" else ("query_in_item",):
        expected = reference.search(query_mean, query_logvar, 10, rank=rank, exact=exact,
                                    inclusion_direction=direction)
        found = candidate.search(query_mean, query_logvar, 10, rank=rank, exact=exact, inclusion_direction=direction)
        for want, got in zip(expected, found, strict=True):
            assert [h.id for h in got] == [h.id for h in want]  # exact-CSD top-10 identical, and every other mode
            for a, b in zip(want, got, strict=True):
                assert (a.uncertainty, a.metadata) == (b.uncertainty, b.metadata)
                # scores from Milvus' float32 inner products (CSD, cosine) agree to float32 rounding;
                # inclusion re-scores the fetched vectors as the FAISS path does: identical
                assert (b.score, b.csd, b.cosine) == pytest.approx((a.score, a.csd, a.cosine), abs=2e-6)
                if rank == "inclusion":
                    assert (a.score, a.csd, a.cosine, a.inclusion) == (b.score, b.csd, b.cosine, b.inclusion)


def test_reads_and_statistics_agree_with_the_faiss_backend(pair, corpus):
    reference, candidate = pair
    assert len(candidate) == len(reference) == N and "item/7" in candidate and "nope" not in candidate
    want, got = reference.get("item/7"), candidate.get("item/7")
    assert np.array_equal(want.mean, got.mean) and np.array_equal(want.logvar, got.logvar)
    assert (want.uncertainty, want.metadata) == (got.uncertainty, got.metadata)
    assert candidate.get("nope") is None
    ordered = np.sort([reference.get(f"item/{i}").uncertainty for i in range(0, N, 97)])
    values = np.concatenate([ordered, [0.0, ordered[0] / 2, ordered[-1] * 2]])
    np.testing.assert_array_equal(candidate.uncertainty_percentile(values), reference.uncertainty_percentile(values))
    a, b = reference.stats(bins=16), candidate.stats(bins=16)
    assert b["uncertainty"]["sample"] == {"exact": True, "size": N, "fraction": 1.0}
    for key in ("count", "min", "max", "quantiles"):
        assert a["uncertainty"][key] == b["uncertainty"][key]
    assert a["uncertainty"]["mean"] == pytest.approx(b["uncertainty"]["mean"], rel=1e-12)
    assert a["histogram"] == b["histogram"] and b["store"] == "milvus" and b["kind"] == "flat"
    for want_side, got_side in zip(reference.extremes(7), candidate.extremes(7), strict=True):
        assert [i.id for i in got_side] == [i.id for i in want_side]


def test_extremes_stay_exact_when_statistics_come_from_a_hash_sample(pair, monkeypatch):
    """Above SAMPLE_TARGET items the summary is sampled; extremes still bisect to the exact answer."""
    reference, candidate = pair
    monkeypatch.setattr(statistics, "SAMPLE_TARGET", 200)
    assert candidate.stats()["uncertainty"]["sample"]["exact"] is False
    for n in (1, 25):
        for want_side, got_side in zip(reference.extremes(n), candidate.extremes(n), strict=True):
            assert [i.id for i in got_side] == [i.id for i in want_side]
            for want, got in zip(want_side, got_side, strict=True):  # whole items, vectors and metadata
                assert np.array_equal(want.mean, got.mean) and np.array_equal(want.logvar, got.logvar)
                assert (want.uncertainty, want.metadata) == (got.uncertainty, got.metadata)


def test_writes_upserts_deletes_and_validation_follow_the_contract(milvus):
    catalog = MilvusCatalog(milvus, prefix="t_writes")
    try:
        index = catalog.create("w", "text", 4, "m")
        with pytest.raises(CollectionExistsError):
            catalog.create("w", "text", 4, "m")
        unit = np.eye(4, dtype=np.float32)
        index.add(["a", "b", "c"], unit[:3], np.full((3, 4), -2.0, np.float32), [{"v": 1}, None, {"v": 3}])
        index.add(["a"], unit[3:], np.full((1, 4), -1.0, np.float32), [{"v": 9}])  # upsert replaces the whole item
        item = index.get("a")
        assert np.array_equal(item.mean, unit[3]) and item.metadata == {"v": 9} and len(index) == 3
        assert item.uncertainty == pytest.approx(4 * np.exp(-1.0))
        assert index.delete(["b", "zz"]) == 1 and len(index) == 2 and index.get("b") is None
        assert index.delete(["b"]) == 0
        for bad in (lambda: index.add(["x"], unit[:1] * 3, unit[:1]),  # not unit norm
                    lambda: index.add(["x", "x"], unit[:2], unit[:2]),  # duplicate id
                    lambda: index.add(["x"], unit[:1, :3], unit[:1, :3]),  # wrong dimension
                    lambda: index.search(unit[:1], unit[:1], k=0),
                    lambda: index.search(unit[:1], unit[:1], rank="nearest")):
            with pytest.raises(InvalidInputError):
                bad()
        assert len(index) == 2
        hits = index.search(unit[3:], np.zeros((1, 4), np.float32), k=5)[0]
        assert [h.id for h in hits] == ["a", "c"] and hits[0].metadata == {"v": 9}
        odd = 'quote " back\\slash é'
        index.add([odd], unit[:1], unit[:1])
        assert index.get(odd).id == odd and index.delete([odd]) == 1
    finally:
        catalog.close()


def test_another_client_opens_the_collection_from_what_milvus_keeps_and_sees_drops(milvus):
    first = MilvusCatalog(milvus, prefix="t_shared", verify_interval_s=0)
    second = MilvusCatalog(milvus, prefix="t_shared", verify_interval_s=0)
    try:
        created = first.create("shared-one", "image", 8, "model-x", spec={"kind": "ivf", "codec": "flat", "nlist": 4})
        opened = second.get("shared-one")
        assert opened.info == created.info and opened.kind == "ivf" and opened.index_choice.index_type == "IVF_FLAT"
        assert [info.name for info in second.list()] == ["shared-one"] and "shared-one" in second
        first.drop("shared-one")
        with pytest.raises(UnknownCollectionError):
            second.get("shared-one")
        assert "shared-one" not in second
    finally:
        first.close()
        second.close()


def test_names_map_to_milvus_and_back_without_collisions():
    names = ["a-b", "a_b", "a__b", "a_hb", "-_-", "X9", "_h"]
    mapped = {schema.collection_name("p", name) for name in names}
    assert len(mapped) == len(names)
    assert all(schema.name_of("p", schema.collection_name("p", name)) == name for name in names)
    assert schema.name_of("p", "other_x") is None and schema.name_of("p", "p_a_x") is None


def test_what_survives_kill_9_of_milvus_lite(tmp_path, corpus):
    """Every acknowledged write survives SIGKILL of the server; the collection comes back unloaded and is reloaded."""
    ids, mean, logvar, metadata, query_mean, query_logvar = corpus
    port = free_port()
    process, uri = start_milvus_lite(tmp_path, port)
    try:
        catalog = MilvusCatalog(uri, prefix="t_restart")
        index = catalog.create("kept", "image", DIM, "synthetic")
        index.add(ids[:500], mean[:500], logvar[:500], metadata[:500])
        index.delete(ids[:10])
        before = index.search(query_mean, query_logvar, 10)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        catalog.close()
        process, uri = start_milvus_lite(tmp_path, port)
        catalog = MilvusCatalog(uri, prefix="t_restart")
        index = catalog.get("kept")
        assert len(index) == 490 and index.get(ids[3]) is None and index.get(ids[10]).metadata == metadata[10]
        assert [[h.id for h in q] for q in index.search(query_mean, query_logvar, 10)] == \
               [[h.id for h in q] for q in before]
        catalog.close()
    finally:
        process.kill()
        process.wait(10)


def test_probability_rank_returns_what_the_faiss_backend_returns(pair, corpus, monkeypatch):
    """rank="probability" over Milvus' cosine search: the same exact top 10, by rounds and by the page scan."""
    from indexer import probability_rank
    from models.calibration import Calibrator
    from models.gaussian import PairLogit

    reference, candidate = pair
    *_, query_mean, query_logvar = corpus
    calibrator = Calibrator("synthetic", PairLogit.ppcl(18.4, -10.0),
                            {"pair_logit": 2.1, "cosine": 30.0, "log_text_uncertainty": -1.3,
                             "log_image_uncertainty": -6.0, "cosine_x_log_text_uncertainty": 22.0},
                            10.8, text_range=(0.05, 0.4), image_range=(1e-3, 0.3))
    kwargs = dict(rank="probability", calibrator=calibrator, query_modality="text")
    expected = reference.search(query_mean, query_logvar, 10, **kwargs)
    for cap in (probability_rank.MAX_FETCH, 16):  # 16: past one round the exhaustive page scan takes over
        monkeypatch.setattr(probability_rank, "MAX_FETCH", cap)
        found = candidate.search(query_mean, query_logvar, 10, **kwargs)
        for want, got in zip(expected, found, strict=True):
            assert [h.id for h in got] == [h.id for h in want]
            for a, b in zip(want, got, strict=True):
                assert (b.score, b.csd, b.cosine) == pytest.approx((a.score, a.csd, a.cosine), abs=2e-5)


def test_iter_items_pages_every_item_once(pair):
    reference, candidate = pair
    pages = list(candidate.iter_items())
    items = [item for page in pages for item in page]
    assert len(items) == N and len({item.id for item in items}) == N
    for item in items[::149]:
        want = reference.get(item.id)
        assert np.array_equal(want.mean, item.mean) and np.array_equal(want.logvar, item.logvar)
        assert (want.uncertainty, want.metadata) == (item.uncertainty, item.metadata)


FILTERS = [
    {"field": "folder", "eq": "a"},                                                  # 50 %
    {"and": [{"field": "n", "range": {"gte": 100, "lt": 400}}, {"field": "folder", "in": ["b"]}]},  # 10 %
    {"or": [{"field": "n", "in": list(range(0, 1500, 97))}, {"field": "n", "range": {"gt": 1490}}]},  # ~2 %
    {"not": {"or": [{"field": "folder", "eq": "a"}, {"field": "n", "ne": 7}]}},     # pushed down to != and ==
]


@pytest.mark.parametrize("rank,exact", [("csd", True), ("cosine", True), ("inclusion", True), ("csd", False)])
def test_filters_push_down_and_return_what_the_faiss_backend_returns(pair, corpus, rank, exact):
    reference, candidate = pair
    *_, query_mean, query_logvar = corpus
    for where in FILTERS:
        expected = reference.search(query_mean, query_logvar, 10, rank=rank, exact=exact, filter=where)
        found = candidate.search(query_mean, query_logvar, 10, rank=rank, exact=exact, filter=where)
        for want, got in zip(expected, found, strict=True):
            assert [h.id for h in got] == [h.id for h in want], where
        assert candidate.count_matching(where) == reference.count_matching(where)


def test_matching_items_means_and_what_milvus_lite_cannot_evaluate(pair):
    reference, candidate = pair
    where = {"field": "n", "range": {"lt": 5}}
    want, got = reference.matching(where, limit=5), candidate.matching(where, limit=5)
    assert [i.id for i in got] == [i.id for i in want] == sorted(f"item/{n}" for n in range(5))
    assert all(np.array_equal(a.mean, b.mean) and a.metadata == b.metadata for a, b in zip(want, got, strict=True))
    with pytest.raises(InvalidInputError, match="at most 4 can be taken"):
        candidate.matching(where, limit=4)
    ids = ["item/3", "nope", "item/3"]
    np.testing.assert_array_equal(candidate.means(ids), reference.means(ids))
    assert np.isnan(candidate.means(ids)[1]).all()
    with pytest.raises(InvalidInputError, match="cannot evaluate a negated range"):
        candidate.search(np.eye(1, DIM, dtype=np.float32), np.full((1, DIM), -4.0, np.float32),
                         filter={"not": {"field": "n", "range": {"lt": 5}}})


def test_a_deterministic_collection_holds_points_as_the_faiss_backend_does(milvus, tmp_path):
    """A CLIP model's points: logvar None in and out, CSD = 2 - 2 cos, no inclusion or uncertainty ranks."""
    rng = np.random.default_rng(7)
    mean = rng.standard_normal((40, DIM)).astype(np.float32)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    ids = [f"p{i}" for i in range(40)]
    with Catalog(tmp_path / "faiss", auto_snapshot=False) as faiss_catalog:
        milvus_catalog = MilvusCatalog(milvus, prefix="t_points")
        try:
            made = [catalog.create("points", "image", DIM, "clip-model", model_family="clip", deterministic=True)
                    for catalog in (faiss_catalog, milvus_catalog)]
            for index in made:
                index.add(ids, mean, None, [{"n": i} for i in range(40)])
            reference, candidate = made
            reopened = MilvusCatalog(milvus, prefix="t_points").get("points")
            assert (reopened.info.deterministic, reopened.info.model_family) == (True, "clip")
            query = mean[:3]
            for rank in ("csd", "cosine"):
                want, got = reference.search(query, None, 5, rank=rank), candidate.search(query, None, 5, rank=rank)
                for a, b in zip(want, got, strict=True):
                    assert [h.id for h in b] == [h.id for h in a]
                    assert all(h.uncertainty is None for h in b)
                    np.testing.assert_allclose([h.csd for h in b], [2 - 2 * h.cosine for h in b], atol=1e-5)
            item = candidate.get("p3")
            assert item.logvar is None and item.uncertainty is None and np.allclose(item.mean, mean[3])
            assert candidate.extremes(3) == ([], []) and candidate.stats()["deterministic"] is True
            for call in (lambda: candidate.search(query, None, 5, rank="inclusion"),
                         lambda: candidate.uncertainty_percentile([0.1]),
                         lambda: candidate.add(["x"], mean[:1], np.zeros((1, DIM), np.float32))):
                with pytest.raises(InvalidInputError, match="deterministic"):
                    call()
        finally:
            milvus_catalog.drop("points")
            milvus_catalog.close()
