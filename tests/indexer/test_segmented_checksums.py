"""Snapshot checksums per segment: every byte still verified at open, damage located; old manifests load."""

from __future__ import annotations

import hashlib

import pytest

from indexer import Catalog, CorruptIndexError, IndexSpec, persistence

from .conftest import DIM


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(persistence, "SEGMENT_BYTES", 4096)


def _snapshot(tmp_path, dataset):
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m", spec=IndexSpec(kind="flat"))
        index.add(dataset.ids[:300], dataset.mean[:300], dataset.logvar[:300])
        index.snapshot()
        hits = [h.id for h in index.search(dataset.query_mean[:1], dataset.query_logvar[:1], k=5)[0]]
    folder = tmp_path / "c" / "snapshot"
    return folder, persistence.read_manifest(folder), hits


def test_every_segment_is_listed_and_a_flip_in_any_one_is_caught(tmp_path, dataset, small_segments):
    folder, manifest, _ = _snapshot(tmp_path, dataset)
    record = manifest["files"]["vectors"]
    assert record["segment_bytes"] == 4096 and len(record["sha256_segments"]) == -(-record["size"] // 4096) > 3
    path = folder / record["name"]
    data = bytearray(path.read_bytes())
    data[3 * 4096 + 17] ^= 0x01  # one bit in the fourth segment
    path.write_bytes(bytes(data))
    with Catalog(tmp_path, auto_snapshot=False) as catalog, pytest.raises(CorruptIndexError, match="at byte 12288"):
        catalog.get("c")


def test_a_manifest_listing_too_few_segments_is_refused(tmp_path, dataset, small_segments):
    folder, manifest, _ = _snapshot(tmp_path, dataset)
    manifest["files"]["vectors"]["sha256_segments"].pop()
    persistence.write_checked_json(folder / persistence.MANIFEST_NAME, manifest)
    with Catalog(tmp_path, auto_snapshot=False) as catalog, pytest.raises(CorruptIndexError, match="segment"):
        catalog.get("c")


@pytest.mark.parametrize("damaged", [False, True])
def test_a_format_1_manifest_with_whole_file_digests_still_loads_and_verifies(tmp_path, dataset, damaged):
    folder, manifest, hits = _snapshot(tmp_path, dataset)
    for record in manifest["files"].values():
        content = (folder / record["name"]).read_bytes()
        record.pop("segment_bytes"), record.pop("sha256_segments")
        record["sha256"] = hashlib.sha256(content).hexdigest()
    persistence.write_checked_json(folder / persistence.MANIFEST_NAME, {**manifest, "format": 1})
    if damaged:
        path = folder / manifest["files"]["uncertainty"]["name"]
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x80
        path.write_bytes(bytes(data))
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        if damaged:
            with pytest.raises(CorruptIndexError, match="checksum"):
                catalog.get("c")
        else:
            index = catalog.get("c")
            assert [h.id for h in index.search(dataset.query_mean[:1], dataset.query_logvar[:1], k=5)[0]] == hits


@pytest.fixture
def lazy(monkeypatch):
    """Every vectors file counts as large: verified in the background after open."""
    from indexer import snapshot

    monkeypatch.setattr(snapshot, "LAZY_VERIFY_BYTES", 1)


def test_large_vectors_are_verified_after_open_and_before_any_answer(tmp_path, dataset, small_segments, lazy):
    folder, manifest, hits = _snapshot(tmp_path, dataset)
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.get("c")
        assert [h.id for h in index.search(dataset.query_mean[:1], dataset.query_logvar[:1], k=5)[0]] == hits
        assert index._verifying is None  # waited for, and it passed
    path = folder / manifest["files"]["vectors"]["name"]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x04  # a bit in the last segment of the vectors
    path.write_bytes(bytes(data))
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.get("c")  # opens: only the size was checked so far
        for _ in range(2):  # and stays refused
            with pytest.raises(CorruptIndexError, match="checksum"):
                index.search(dataset.query_mean[:1], dataset.query_logvar[:1], k=5)
        index.add(["new"], dataset.mean[:1], dataset.logvar[:1])  # writes go to the store, as ever
        with pytest.raises(CorruptIndexError, match="checksum"):
            index.snapshot()


def test_a_truncated_large_vectors_file_is_refused_at_open(tmp_path, dataset, lazy):
    folder, manifest, _ = _snapshot(tmp_path, dataset)
    path = folder / manifest["files"]["vectors"]["name"]
    path.write_bytes(path.read_bytes()[:-100])
    with Catalog(tmp_path, auto_snapshot=False) as catalog, pytest.raises(CorruptIndexError, match="truncated"):
        catalog.get("c")
