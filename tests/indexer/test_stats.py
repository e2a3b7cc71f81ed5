"""Uncertainty statistics: percentiles, quantiles, histogram, most certain / uncertain items."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import InvalidInputError

from .conftest import DIM


@pytest.fixture
def filled(catalog, dataset):
    index = catalog.create("stats", "text", DIM, "synthetic")
    index.add(dataset.ids[:400], dataset.mean[:400], dataset.logvar[:400], dataset.metadata[:400])
    index.delete(dataset.ids[:50])
    s = np.exp(dataset.logvar[50:400].astype(np.float64)).sum(1)
    return index, s, dataset.ids[50:400]


def test_percentile_of_values_against_the_live_items(filled):
    index, s, _ = filled
    ordered = np.sort(s)
    values = np.array([ordered[0] - 1, ordered[0], ordered[174], ordered[-1], ordered[-1] + 1])
    got = index.uncertainty_percentile(values)
    below = np.array([(s < v).sum() for v in values])
    at = np.array([(s == v).sum() for v in values])
    np.testing.assert_allclose(got, 100 * (below + at / 2) / len(s))
    assert got[0] == 0 and got[-1] == 100


def test_percentile_follows_writes(filled, dataset):
    index, s, _ = filled
    before = index.uncertainty_percentile(np.median(s))
    index.add(["calm"], dataset.mean[:1], np.full((1, DIM), -30.0, np.float32))  # far below everything
    after = index.uncertainty_percentile(np.median(s))
    assert after > before


def test_stats_report_quantiles_and_a_histogram(filled):
    index, s, _ = filled
    stats = index.stats(bins=10)
    assert stats["size"] == 350 and stats["dim"] == DIM and stats["modality"] == "text"
    assert stats["uncertainty"]["min"] == pytest.approx(s.min())
    assert stats["uncertainty"]["max"] == pytest.approx(s.max())
    assert stats["uncertainty"]["quantiles"]["p50"] == pytest.approx(np.quantile(s, 0.5))
    counts, edges = np.histogram(s, bins=10)
    assert stats["histogram"]["counts"] == counts.tolist()
    np.testing.assert_allclose(stats["histogram"]["edges"], edges)
    assert stats["dead_slots"] == 50 and stats["kind"] == "flat"
    assert stats["histogram"]["scale"] == ("log" if s.max() / s.min() > 100 else "linear")


def test_uncertainties_spanning_orders_of_magnitude_get_log_spaced_bins(catalog):
    index = catalog.create("spread", "image", DIM, "synthetic")
    rng = np.random.default_rng(4)
    mean = rng.standard_normal((200, DIM)).astype(np.float32)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    # total variance S = DIM * exp(logvar): from 1e-4 to 1e1 in log-uniform steps
    s = np.logspace(-4, 1, 200)
    logvar = np.repeat(np.log(s / DIM)[:, None], DIM, axis=1).astype(np.float32)
    index.add([f"i-{n}" for n in range(200)], mean, logvar)
    histogram = index.stats(bins=10)["histogram"]
    assert histogram["scale"] == "log"
    np.testing.assert_allclose(histogram["edges"], np.geomspace(s.min(), s.max(), 11), rtol=1e-4)
    # log-uniform values fill log-spaced bins evenly; equal-width bins would hold 180+ in the first
    assert max(histogram["counts"]) - min(histogram["counts"]) <= 2 and sum(histogram["counts"]) == 200

def test_extremes_are_the_lowest_and_highest_uncertainty_items(filled):
    index, s, ids = filled
    certain, uncertain = index.extremes(4)
    order = np.argsort(s)
    assert [i.id for i in certain] == [ids[j] for j in order[:4]]
    assert [i.id for i in uncertain] == [ids[j] for j in order[::-1][:4]]
    assert certain[0].uncertainty == pytest.approx(s.min())
    assert certain[0].metadata["row"] == int(certain[0].id.split("-")[1])


def test_empty_collection_statistics(catalog):
    index = catalog.create("nothing", "image", DIM, "synthetic")
    assert np.isnan(index.uncertainty_percentile([1.0])).all()
    assert index.stats()["size"] == 0 and index.stats()["histogram"]["counts"] == []
    assert index.extremes(3) == ([], [])


def test_bad_statistics_arguments(filled):
    index, _, _ = filled
    with pytest.raises(InvalidInputError):
        index.uncertainty_percentile([np.nan])
    with pytest.raises(InvalidInputError):
        index.extremes(0)
    with pytest.raises(InvalidInputError):
        index.stats(bins=0)
