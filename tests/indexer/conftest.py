"""Fixtures for the indexer: a seeded synthetic corpus, catalogs, a real redis-server, brute force."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from indexer import Catalog
from indexer.synthetic import corpus, queries
from models.gaussian import csd
from tests.processes import start_redis  # noqa: F401  (also imported from here by the tests)

DIM = 32
SIZE = 1500


@dataclass(frozen=True)
class Dataset:
    ids: list[str]
    mean: np.ndarray  # [N, D] float32
    logvar: np.ndarray  # [N, D] float32
    metadata: list[dict]
    query_mean: np.ndarray  # [Q, D]
    query_logvar: np.ndarray

    def brute_csd(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Exact CSD [Q, N'] in float64 against all items (or the given rows)."""
        rows = np.arange(len(self.ids)) if rows is None else rows
        return csd(self.query_mean.astype(np.float64), self.query_logvar.astype(np.float64),
                   self.mean[rows].astype(np.float64), self.logvar[rows].astype(np.float64))


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    # uncertainties large enough that CSD and cosine top-k differ clearly on 32 dimensions
    mean, logvar = corpus(SIZE, DIM, seed=7, clusters=12, spread=0.7, s_median=0.3)
    query_mean, query_logvar = queries(mean, 12, seed=8, noise=0.5, s_median=0.3)
    ids = [f"item-{i:05d}" for i in range(SIZE)]
    return Dataset(ids, mean, logvar, [{"row": i, "caption": f"thing {i}"} for i in range(SIZE)],
                   query_mean, query_logvar)


@pytest.fixture
def catalog(tmp_path: Path):
    with Catalog(tmp_path / "data", auto_snapshot=False) as opened:
        yield opened


@pytest.fixture
def redis_url(tmp_path: Path):
    process, url = start_redis(tmp_path / "redis")
    yield url
    process.terminate()
    process.wait(10)


def assert_same_ranking(got_ids: list[str], got_scores: list[float], truth: np.ndarray, all_ids: list[str],
                        k: int, lower_is_better: bool = True, tol: float = 1e-6) -> None:
    """Top-k ids equal the brute-force ones, except swaps between scores closer than ``tol``."""
    order = np.argsort(truth if lower_is_better else -truth, kind="stable")
    expected = [all_ids[j] for j in order[:k]]
    assert len(got_ids) == min(k, len(all_ids))
    kth = truth[order[k - 1]]
    by_id = {all_ids[j]: truth[j] for j in range(len(all_ids))}
    for item_id in set(got_ids) ^ set(expected):
        assert abs(by_id[item_id] - kth) < tol, f"{item_id} wrongly in/out of the top {k}"
    np.testing.assert_allclose(got_scores, [by_id[i] for i in got_ids], rtol=0, atol=1e-5)
    steps = np.diff(got_scores)
    assert (steps >= -tol).all() if lower_is_better else (steps <= tol).all()
