"""Multi-positive retrieval metrics and Spearman correlation against their definitions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.evaluation import auroc, rank_average, retrieval_metrics, risk_coverage, spearman


def _brute_force(scores, positives, k):
    """The definitions, one query at a time."""
    recall, r_precision, map_r = [], [], []
    for row, truth in zip(scores, positives, strict=True):
        if not truth.any():
            continue
        ranked = truth[np.argsort(-row, kind="stable")]
        r = int(truth.sum())
        recall.append(ranked[:k].any())
        r_precision.append(ranked[:r].sum() / r)
        map_r.append(sum(ranked[:i + 1].sum() / (i + 1) for i in range(r) if ranked[i]) / r)
    return np.mean(recall), np.mean(r_precision), np.mean(map_r)


def test_hand_checked_example():
    scores = np.array([[0.9, 0.8, 0.7, 0.1],   # positives at ranks 1 and 3
                       [0.1, 0.2, 0.3, 0.4]])  # single positive at rank 4
    positives = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=bool)
    m = retrieval_metrics(scores, positives, ks=(1, 3))
    assert m["R@1"] == 0.5 and m["R@3"] == 0.5
    assert m["R-Precision"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["mAP@R"] == pytest.approx(((1 / 1) / 2 + 0) / 2)  # rank 3 lies beyond R = 2


def test_queries_without_positives_are_left_out_and_counted():
    m = retrieval_metrics(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[1, 0], [0, 0]], dtype=bool))
    assert m["queries"] == 1 and m["queries_without_positive"] == 1 and m["R@1"] == 1.0
    with pytest.raises(ValueError, match="no query"):
        retrieval_metrics(np.zeros((1, 2)), np.zeros((1, 2), dtype=bool))
    with pytest.raises(ValueError, match="same"):
        retrieval_metrics(np.zeros((1, 2)), np.zeros((2, 2), dtype=bool))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 12))
def test_metrics_equal_brute_force(seed, queries, gallery):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(queries, gallery))
    positives = rng.random((queries, gallery)) < 0.4
    positives[0, rng.integers(gallery)] = True
    k = int(rng.integers(1, gallery + 1))
    m = retrieval_metrics(scores, positives, ks=(k,))
    recall, r_precision, map_r = _brute_force(scores, positives, k)
    assert m[f"R@{k}"] == pytest.approx(recall)
    assert m["R-Precision"] == pytest.approx(r_precision)
    assert m["mAP@R"] == pytest.approx(map_r)


def test_spearman():
    x = np.arange(10)
    assert spearman(x, x ** 3) == pytest.approx(1.0)
    assert spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.ones(10)))
    # ties get average ranks: the Pearson correlation of [0,0,1,1] with [0.5,0.5,2.5,2.5]-ranks
    assert rank_average(np.array([3, 1, 3, 1])).tolist() == [2.5, 0.5, 2.5, 0.5]
    assert spearman([0, 0, 1, 1], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([0.5, 0.5, 2.5, 2.5], [0, 1, 2, 3])[0, 1])
    with pytest.raises(ValueError):
        spearman([1], [2])


def test_risk_coverage_against_a_direct_computation():
    rng = np.random.default_rng(3)
    errors = rng.random(200) < 0.3
    confidence = rng.random(200) - errors  # informative: wrong answers tend to be less confident
    out = risk_coverage(errors, confidence)
    order = np.argsort(-confidence)
    direct = [errors[order[:k]].mean() for k in range(1, 201)]
    assert out["aurc"] == pytest.approx(np.mean(direct))
    assert out["risk@50%"] == pytest.approx(errors[order[:100]].mean())
    assert out["risk@80%"] == pytest.approx(errors[order[:160]].mean())
    assert out["risk@100%"] == pytest.approx(errors.mean())
    assert out["aurc"] < errors.mean()  # an informative confidence beats answering in random order
    flat = risk_coverage(errors, np.zeros(200))  # no information: the given order
    assert flat["risk@100%"] == pytest.approx(errors.mean())


def test_auroc_against_pairwise_counting():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    positive = rng.random(60) < 0.4
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[positive] for n in scores[~positive]]
    assert auroc(scores, positive) == pytest.approx(np.mean(pairs))
    assert np.isnan(auroc(scores, np.zeros(60, bool)))
