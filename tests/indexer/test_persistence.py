"""Reopening, snapshots, replay, and detection of every kind of damaged file."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

from indexer import Catalog, CorruptIndexError, IndexSpec

from .conftest import DIM


def _state(index, dataset):
    """(sorted ids, metadata of each, top-5 ids per query): what a reopened index must reproduce."""
    ids = sorted(i for i in dataset.ids if i in index)
    hits = index.search(dataset.query_mean, dataset.query_logvar, k=5)
    return ids, {i: index.get(i).metadata for i in ids[:20]}, [[h.id for h in q] for q in hits]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("snapshot_first", [False, True])
def test_reopen_restores_the_last_committed_state(tmp_path, dataset, kind, snapshot_first):
    spec = IndexSpec(kind=kind, codec="flat", nlist=8, nprobe=8, ef_search=2000)
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m", spec=spec)
        index.add(dataset.ids[:600], dataset.mean[:600], dataset.logvar[:600], dataset.metadata[:600])
        if snapshot_first:
            index.snapshot()
        index.add(dataset.ids[600:700], dataset.mean[600:700], dataset.logvar[600:700])
        index.add(dataset.ids[:5], dataset.mean[800:805], dataset.logvar[800:805], [{"v": 2}] * 5)
        index.delete(dataset.ids[100:150])
        before = _state(index, dataset)
        catalog.unload("c", snapshot=False)  # as if the process died: only the store has the tail
        reopened = catalog.get("c")
        assert _state(reopened, dataset) == before
        stats = reopened.stats()
        assert stats["pending_changes"] == (stats["seq"] if not snapshot_first else 100 + 5 + 50)


def test_snapshot_compacts_and_switches_auto_kind(tmp_path, dataset):
    spec = IndexSpec(kind="auto", auto_ann_min=1000, codec="flat", nprobe=64)
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m", spec=spec)
        index.add(dataset.ids[:900], dataset.mean[:900], dataset.logvar[:900])
        index.delete(dataset.ids[:10])
        assert index.snapshot()["rebuilt"] and index.kind == "flat"  # rebuilt to drop dead slots
        assert index.stats()["dead_slots"] == 0
        index.add(dataset.ids[900:], dataset.mean[900:], dataset.logvar[900:])
        assert index.kind == "flat"
        result = index.snapshot()
        assert result["rebuilt"] and result["kind"] == "ivf" == index.kind
        assert not index.snapshot()["written"]  # nothing changed since
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.get("c")
        assert index.kind == "ivf" and len(index) == len(dataset.ids) - 10


def test_writes_during_a_rebuild_are_not_lost(tmp_path, dataset, monkeypatch):
    """A rebuild builds aside; writes landing meanwhile are replayed into the new index before the swap."""
    from indexer import faiss_backend

    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m", spec=IndexSpec(kind="flat"))
        index.add(dataset.ids[:500], dataset.mean[:500], dataset.logvar[:500])
        index.delete(dataset.ids[:3])
        real_build = faiss_backend.FaissIndex.build

        def build_and_write_meanwhile(*args, **kwargs):
            built = real_build(*args, **kwargs)
            index.add(dataset.ids[500:520], dataset.mean[500:520], dataset.logvar[500:520])  # other thread in reality
            index.delete(dataset.ids[3:5])
            return built

        monkeypatch.setattr(faiss_backend.FaissIndex, "build", build_and_write_meanwhile)
        assert index.snapshot()["rebuilt"]
        monkeypatch.undo()
        assert len(index) == 515 and "item-00519" in index and "item-00004" not in index
        assert index.stats()["pending_changes"] == 22
        top = index.search(dataset.mean[510:511], dataset.logvar[510:511] - 30, k=1)[0][0]
        assert top.id == "item-00510"


def test_ivf_rebuild_reuses_its_centroids(tmp_path, dataset):
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        spec = IndexSpec(kind="ivf", codec="sq8", nlist=16, nprobe=16, refine=10, compact_dead_fraction=0.2)
        index = catalog.create("c", "image", DIM, "m", spec=spec)
        index.add(dataset.ids, dataset.mean, dataset.logvar)
        index.snapshot()
        before = index._index.centroids()
        index.delete(dataset.ids[: len(dataset.ids) // 3])
        assert index.snapshot(rebuild=True)["rebuilt"]  # compacts without re-running k-means
        assert index.stats()["dead_slots"] == 0 and index.kind == "ivf"
        np.testing.assert_array_equal(index._index.centroids(), before)


@pytest.fixture
def snapshotted(tmp_path, dataset):
    """A closed catalog with an HNSW collection whose snapshot is committed; yields its folder."""
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m", spec=IndexSpec(kind="hnsw", codec="flat", ef_search=2000))
        index.add(dataset.ids[:400], dataset.mean[:400], dataset.logvar[:400], dataset.metadata[:400])
        index.snapshot()
        expected = _state(index, dataset)
    return tmp_path, expected


def _snapshot_file(folder, role):
    manifest = json.loads((folder / "c" / "snapshot" / "MANIFEST.json").read_text())
    return folder / "c" / "snapshot" / manifest["files"][role]["name"]


def _flip_bit(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    "truncate-vectors", "flip-vectors", "flip-ids", "flip-uncertainty", "flip-live", "flip-index",
    "missing-index", "edit-manifest", "garbage-manifest"])
def test_damaged_snapshot_is_detected_and_rebuild_recovers(snapshotted, dataset, damage):
    folder, expected = snapshotted
    action, role = damage.split("-", 1)
    if role == "manifest":
        path = folder / "c" / "snapshot" / "MANIFEST.json"
        if action == "edit":
            document = json.loads(path.read_text())
            document["seq"] -= 1
            path.write_text(json.dumps(document))
        else:
            path.write_bytes(b"\x00" * 64)
    else:
        path = _snapshot_file(folder, role)
        if action == "truncate":
            with open(path, "r+b") as handle:
                handle.truncate(path.stat().st_size - 4096)
        elif action == "missing":
            path.unlink()
        else:
            _flip_bit(path, offset_from_end=min(100, path.stat().st_size - 1))
    with Catalog(folder, auto_snapshot=False) as catalog:
        with pytest.raises(CorruptIndexError):
            catalog.get("c")
        rebuilt = catalog.rebuild("c")
        assert _state(rebuilt, dataset) == expected
    with Catalog(folder, auto_snapshot=False) as catalog:  # the rebuilt snapshot verifies
        assert _state(catalog.get("c"), dataset) == expected


def test_store_behind_snapshot_is_detected(tmp_path, dataset):
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m")
        index.add(dataset.ids[:10], dataset.mean[:10], dataset.logvar[:10])
        catalog.unload("c")
        backup = tmp_path / "backup"
        backup.mkdir()
        for path in (tmp_path / "c").glob("store.sqlite*"):
            shutil.copy(path, backup / path.name)
        index = catalog.get("c")
        index.add(dataset.ids[10:20], dataset.mean[10:20], dataset.logvar[10:20])
    for path in (tmp_path / "c").glob("store.sqlite*"):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy(path, tmp_path / "c" / path.name)
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        with pytest.raises(CorruptIndexError, match="lost writes"):
            catalog.get("c")


def test_bit_rot_in_a_store_row_is_detected(tmp_path, dataset):
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m")
        index.add(dataset.ids[:10], dataset.mean[:10], dataset.logvar[:10], dataset.metadata[:10])
        catalog.unload("c", snapshot=False)
    connection = sqlite3.connect(tmp_path / "c" / "store.sqlite")
    blob = bytearray(connection.execute("SELECT mean FROM items WHERE id = 'item-00003'").fetchone()[0])
    blob[5] ^= 0x01
    connection.execute("UPDATE items SET mean = ? WHERE id = 'item-00003'", (bytes(blob),))
    connection.commit()
    connection.close()
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        with pytest.raises(CorruptIndexError, match="item-00003"):
            catalog.get("c")


def test_garbage_store_file_is_detected(tmp_path):
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        catalog.create("c", "image", DIM, "m")
    for path in (tmp_path / "c").glob("store.sqlite*"):
        path.unlink()
    (tmp_path / "c" / "store.sqlite").write_bytes(b"this is not a database" * 200)
    with Catalog(tmp_path, auto_snapshot=False) as catalog:
        with pytest.raises(CorruptIndexError):
            catalog.get("c")


def test_leftovers_of_an_interrupted_snapshot_are_removed(snapshotted):
    folder, _ = snapshotted
    snapshot_dir = folder / "c" / "snapshot"
    (snapshot_dir / ".vectors.123.npy.abcd1234.tmp").write_bytes(b"half written")
    (snapshot_dir / "vectors.999-deadbeef.npy").write_bytes(b"never committed")
    with Catalog(folder, auto_snapshot=False) as catalog:
        catalog.get("c")
    names = {p.name for p in snapshot_dir.iterdir()}
    assert ".vectors.123.npy.abcd1234.tmp" not in names and "vectors.999-deadbeef.npy" not in names


def test_snapshot_files_are_memory_mapped_not_copied(snapshotted):
    folder, _ = snapshotted
    with Catalog(folder, auto_snapshot=False) as catalog:
        index = catalog.get("c")
        assert isinstance(index._table.all_vectors(), np.memmap)
