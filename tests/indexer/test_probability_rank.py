"""rank="probability": the exact top k by calibrated probability, against brute force over every item."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import IndexSpec, InvalidInputError, probability_rank, ranking
from indexer.synthetic import corpus, queries
from models.calibration import Calibrator
from models.gaussian import PairLogit

from .conftest import assert_same_ranking

DIM = 16
SIZE = 2000
EXHAUSTIVE = {
    "flat": IndexSpec(kind="flat"),
    "hnsw": IndexSpec(kind="hnsw", codec="flat", hnsw_m=16, ef_search=4000),
    "ivf-flat": IndexSpec(kind="ivf", codec="flat", nlist=16, nprobe=16),
}


def calibrator(**weights: float) -> Calibrator:
    """A calibrator of the shape the demo model's fit has (strong cosine x text-uncertainty term)."""
    values = {"pair_logit": 2.1, "cosine": 30.0, "log_text_uncertainty": -1.3, "log_image_uncertainty": -0.4,
              "cosine_x_log_text_uncertainty": 22.0, **weights}
    return Calibrator("synthetic", PairLogit.ppcl(18.4, -10.0), values, 10.8, text_range=(0.05, 0.4),
                      image_range=(1e-3, 0.3))


@pytest.fixture(scope="module")
def world():
    # images: clustered means, uncertainties spread over two orders of magnitude (clean to corrupted);
    # texts: the same structure at text-like uncertainties
    image_mean, image_logvar = corpus(SIZE, DIM, seed=1, clusters=20, spread=0.6, s_median=0.02, s_spread=1.2)
    text_mean, text_logvar = corpus(SIZE, DIM, seed=2, clusters=20, spread=0.6, s_median=0.12, s_spread=0.6)
    text_q = queries(image_mean, 10, seed=3, noise=0.4, s_median=0.15, s_spread=0.6)
    image_q = queries(text_mean, 10, seed=4, noise=0.4, s_median=0.02, s_spread=1.2)
    return {"image": (image_mean, image_logvar), "text": (text_mean, text_logvar),
            "queries": {"text": text_q, "image": image_q}}


@pytest.fixture(scope="module")
def collections(tmp_path_factory, world):
    from indexer import Catalog

    catalog = Catalog(tmp_path_factory.mktemp("prob") / "data", auto_snapshot=False)
    built = {}
    for modality in ("image", "text"):
        mean, logvar = world[modality]
        for name, spec in EXHAUSTIVE.items():
            index = catalog.create(f"{modality}-{name}", modality, DIM, "synthetic", spec=spec)
            index.add([f"{modality}-{i:05d}" for i in range(SIZE)], mean, logvar)
            index.snapshot()
            built[modality, name] = index
    yield built
    catalog.close()


def brute_force(cal: Calibrator, query_modality: str, query, items) -> np.ndarray:
    """The calibrated logit of every (query, item) pair [Q, N], straight from the calibrator."""
    (q_mean, q_logvar), (mean, logvar) = query, items
    cosine = q_mean.astype(np.float64) @ mean.astype(np.float64).T
    q_unc = np.exp(q_logvar.astype(np.float64)).sum(1)[:, None]
    x_unc = np.exp(logvar.astype(np.float64)).sum(1)[None, :]
    if query_modality == "text":
        return cal.logit(cosine, q_unc, x_unc)
    return cal.logit(cosine, x_unc, q_unc)


@pytest.mark.parametrize("name", list(EXHAUSTIVE))
@pytest.mark.parametrize("query_modality", ["text", "image"])
def test_probability_top_k_equals_brute_force(collections, world, name, query_modality):
    items = "image" if query_modality == "text" else "text"
    cal = calibrator()
    truth = brute_force(cal, query_modality, world["queries"][query_modality], world[items])
    ids = [f"{items}-{i:05d}" for i in range(SIZE)]
    results = collections[items, name].search(*world["queries"][query_modality], k=10, rank="probability",
                                              calibrator=cal, query_modality=query_modality)
    for hits, row in zip(results, truth, strict=True):
        assert_same_ranking([h.id for h in hits], [h.score for h in hits], row, ids, 10, lower_is_better=False)


def test_the_stopping_bound_needs_several_rounds_and_stays_exact(world):
    """Items of high cosine but large uncertainty score low: the first cosine round cannot settle the top k."""
    cal = calibrator(log_image_uncertainty=-6.0)  # uncertain images lose a lot
    mean, logvar = world["image"]
    q_mean, q_logvar = world["queries"]["text"]
    unc = np.exp(logvar.astype(np.float64)).sum(1)
    q_unc = np.exp(q_logvar.astype(np.float64)).sum(1)
    cosine = q_mean.astype(np.float64) @ mean.astype(np.float64).T
    fetched = []

    class Block:
        def __init__(self, rows, n):
            order = np.argsort(-cosine[rows], axis=1, kind="stable")[:, :n]
            self.cosine = np.take_along_axis(cosine[rows], order, axis=1)
            self.uncertainty = unc[order]
            self.index = order

    def fetch(rows, n):
        fetched.append(n)
        return Block(rows, n)

    scorers = [cal.for_query("text", "image", s) for s in q_unc]
    choices = probability_rank.top_k(fetch, scorers, 5, SIZE, (float(unc.min()), float(unc.max())), first=8)
    assert max(choice.rounds for choice in choices) > 1 and len(fetched) > 1
    truth = brute_force(cal, "text", (q_mean, q_logvar), (mean, logvar))
    for choice, row in zip(choices, truth, strict=True):
        got = choice.block.index[choice.row, choice.columns]
        np.testing.assert_array_equal(np.sort(got), np.sort(np.argsort(-row, kind="stable")[:5]))
        np.testing.assert_allclose(choice.logit, row[got], atol=1e-9)


def test_the_exhaustive_scan_takes_over_past_the_fetch_cap(collections, world, monkeypatch):
    """A cap of one fetch round forces the bounded-memory scan; it finds the same top k."""
    index = collections["image", "flat"]
    cal = calibrator(log_image_uncertainty=-6.0)
    truth = brute_force(cal, "text", world["queries"]["text"], world["image"])
    monkeypatch.setattr(probability_rank, "MAX_FETCH", 64)
    monkeypatch.setattr("indexer.ranking._MAX_GATHER", 17 * 300)  # several blocks of 300 vectors
    scans = []
    original = ranking.scan_best
    monkeypatch.setattr(ranking, "scan_best", lambda *args: scans.append(1) or original(*args))
    results = index.search(*world["queries"]["text"], k=12, rank="probability", calibrator=cal,
                           query_modality="text")
    assert scans
    ids = [f"image-{i:05d}" for i in range(SIZE)]
    for hits, row in zip(results, truth, strict=True):
        assert_same_ranking([h.id for h in hits], [h.score for h in hits], row, ids, 12, lower_is_better=False)


def test_two_stage_reranks_exactly_the_cosine_shortlist(collections, world):
    index = collections["image", "flat"]
    cal = calibrator(log_image_uncertainty=-6.0)
    mean, logvar = world["image"]
    q_mean, q_logvar = world["queries"]["text"]
    truth = brute_force(cal, "text", (q_mean, q_logvar), (mean, logvar))
    cosine = q_mean.astype(np.float64) @ mean.astype(np.float64).T
    results = index.search(q_mean, q_logvar, k=5, rank="probability", exact=False, shortlist=40, calibrator=cal,
                           query_modality="text")
    for hits, row, cos in zip(results, truth, cosine, strict=True):
        shortlist = np.argsort(-cos, kind="stable")[:40]
        expected = shortlist[np.argsort(-row[shortlist], kind="stable")[:5]]
        assert [h.id for h in hits] == [f"image-{i:05d}" for i in expected]


def test_deleted_items_never_come_back(tmp_path, world):
    from indexer import Catalog

    mean, logvar = world["image"]
    cal = calibrator()
    with Catalog(tmp_path / "data", auto_snapshot=False) as catalog:
        index = catalog.create("images", "image", DIM, "synthetic", spec=IndexSpec(kind="flat"))
        ids = [f"image-{i:05d}" for i in range(300)]
        index.add(ids, mean[:300], logvar[:300])
        first = index.search(*world["queries"]["text"], k=5, rank="probability", calibrator=cal,
                             query_modality="text")
        gone = sorted({hit.id for hits in first for hit in hits})
        assert index.delete(gone) == len(gone)
        again = index.search(*world["queries"]["text"], k=5, rank="probability", calibrator=cal,
                             query_modality="text")
        assert not {hit.id for hits in again for hit in hits} & set(gone)
        keep = np.array([i not in set(gone) for i in ids])
        truth = brute_force(cal, "text", world["queries"]["text"], (mean[:300][keep], logvar[:300][keep]))
        for hits, row in zip(again, truth, strict=True):
            np.testing.assert_allclose([h.score for h in hits], np.sort(row)[::-1][:5], atol=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "needs the model's calibrator"),
    ({"calibrator": calibrator(), "query_modality": "image"}, "text-image pairs"),
    ({"calibrator": calibrator(), "query_modality": "audio"}, "text or image"),
])
def test_probability_without_what_it_needs_is_refused(collections, world, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        collections["image", "flat"].search(*world["queries"]["text"], k=3, rank="probability", **kwargs)
