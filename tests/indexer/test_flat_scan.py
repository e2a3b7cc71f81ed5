"""The sharded exact scan and the blocked vector table, checked against brute force at block boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import IndexSpec, flat_scan, table
from indexer.table import VectorTable


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 7 rows, so a few dozen rows cross many block boundaries."""
    monkeypatch.setattr(table, "BLOCK_ROWS", 7)


def brute_top(vectors: np.ndarray, queries: np.ndarray, k: int, live: np.ndarray) -> list[list[int]]:
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    out = []
    for row in scores:
        slots = np.flatnonzero(live)
        order = np.lexsort((slots, -row[slots]))
        out.append(slots[order[:k]].tolist())
    return out


@pytest.mark.parametrize("n_queries", [1, 3, 20])  # 20: tasks of 2 rows (SCORE_FLOATS // 20)
@pytest.mark.parametrize("dead_share", [0.0, 0.1, 0.8])
def test_top_k_equals_brute_force(small_blocks, monkeypatch, n_queries, dead_share):
    monkeypatch.setattr(flat_scan, "SCORE_FLOATS", 40)  # big query batches cut a block into smaller tasks
    monkeypatch.setattr(flat_scan, "_MIN_TASK_ROWS", 2)
    rng = np.random.default_rng(n_queries)
    n, width, k = 93, 9, 12
    vectors = rng.standard_normal((n, width)).astype(np.float32)
    live = rng.random(n) >= dead_share
    queries = rng.standard_normal((n_queries, width)).astype(np.float32)
    base, tail = vectors[:30], [vectors[30 + i:30 + i + 7] for i in range(0, 63, 7)]
    blocks = table.row_blocks(base, tail)
    assert len(blocks) == 5 + 9
    scores, slots = flat_scan.top_k(blocks, queries, k, None if live.all() else live)
    expected = brute_top(vectors, queries, k, live)
    for q in range(n_queries):
        found = [s for s in slots[q].tolist() if s >= 0]
        assert found == expected[q]
        np.testing.assert_allclose(scores[q, :len(found)], vectors[found] @ queries[q], rtol=1e-5, atol=1e-5)
    if live.sum() < k:  # fewer live rows than asked: padded with -1
        assert (slots[:, live.sum():] == -1).all()


def test_numpy_blas_is_single_threaded_during_a_scan_and_restored_after():
    controller = flat_scan._numpy_blas()

    def blas_threads():
        return [lib.num_threads for lib in controller.lib_controllers]

    before = blas_threads()
    with flat_scan.single_threaded_blas(), flat_scan.single_threaded_blas():  # nested: counted
        assert set(blas_threads()) == {1}
    assert blas_threads() == before


def test_blocked_table_gathers_and_views_what_was_appended(small_blocks):
    rng = np.random.default_rng(0)
    dim = 4
    base = rng.standard_normal((10, dim + 1)).astype(np.float32)
    t = VectorTable(dim, base, [f"b{i}" for i in range(10)], np.arange(10.0), np.ones(10, bool))
    rows = [base]
    for size in (3, 7, 1, 12, 5):  # appends that fill, straddle and open blocks
        new = rng.standard_normal((size, dim + 1)).astype(np.float32)
        t.append([f"a{t.n_slots + i}" for i in range(size)], new, np.zeros(size))
        rows.append(new)
    everything = np.concatenate(rows)
    slots = rng.integers(0, len(everything), (6, 5))
    np.testing.assert_array_equal(t.vectors(slots), everything[slots])
    np.testing.assert_array_equal(t.all_vectors(), everything)
    view = t.view()
    np.testing.assert_array_equal(np.concatenate(list(view.chunks(np.arange(len(everything)), rows=4))), everything)
    assert sum(len(block) for _, block in t.blocks()) == len(everything)
    assert [first for first, _ in t.blocks()] == sorted(first for first, _ in t.blocks())


def test_flat_collection_searches_across_blocks_like_brute_force(small_blocks, catalog, dataset):
    """Adds in uneven batches, deletes, upserts, a snapshot and more adds: exact CSD top-k throughout."""
    from models.gaussian import csd

    index = catalog.create("blocks", "image", dataset.mean.shape[1], "m", spec=IndexSpec(kind="flat"))
    n = 200
    for start, stop in ((0, 13), (13, 90), (90, 150)):
        index.add(dataset.ids[start:stop], dataset.mean[start:stop], dataset.logvar[start:stop])
    index.delete(dataset.ids[5:40:3])
    index.add(dataset.ids[20:30], dataset.mean[20:30], dataset.logvar[20:30])  # re-adds some deleted ones
    index.snapshot()
    index.add(dataset.ids[150:n], dataset.mean[150:n], dataset.logvar[150:n])
    live = [i for i in range(n) if dataset.ids[i] in index]
    truth = csd(dataset.query_mean.astype(np.float64), dataset.query_logvar.astype(np.float64),
                dataset.mean[live].astype(np.float64), dataset.logvar[live].astype(np.float64))
    for rows in (slice(0, 1), slice(0, len(dataset.query_mean))):
        hits = index.search(dataset.query_mean[rows], dataset.query_logvar[rows], k=15)
        for q, found in enumerate(hits):
            expected = [dataset.ids[live[j]] for j in np.argsort(truth[rows][q], kind="stable")[:15]]
            assert [h.id for h in found] == expected
