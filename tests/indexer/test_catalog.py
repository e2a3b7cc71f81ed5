"""The catalog: create, get, list, drop, names, locking, leftovers of interrupted operations."""

from __future__ import annotations

import pytest

from indexer import (
    Catalog,
    CollectionBusyError,
    CollectionExistsError,
    IndexSpec,
    InvalidInputError,
    UnknownCollectionError,
)

from .conftest import DIM


def test_create_get_list_drop(catalog, dataset):
    images = catalog.create("images", "image", DIM, "model-a", spec=IndexSpec(kind="hnsw", codec="flat"))
    catalog.create("captions", "text", DIM, "model-a")
    images.add(dataset.ids[:3], dataset.mean[:3], dataset.logvar[:3])
    assert catalog.get("images") is images
    infos = catalog.list()
    assert [i.name for i in infos] == ["captions", "images"]
    assert infos[1].size == 3 and infos[1].modality == "image" and infos[1].spec.kind == "hnsw"
    assert "images" in catalog and "nope" not in catalog and "../x" not in catalog
    catalog.drop("images")
    assert [i.name for i in catalog.list()] == ["captions"]
    with pytest.raises(UnknownCollectionError):
        catalog.get("images")
    with pytest.raises(UnknownCollectionError, match="was dropped"):  # a caller holding it: it is gone (404)
        images.search(dataset.query_mean, dataset.query_logvar)
    catalog.create("images", "image", DIM, "model-b")  # the name is free again, and the new one is empty
    assert len(catalog.get("images")) == 0


def test_list_counts_closed_collections_from_their_store(tmp_path, dataset):
    with Catalog(tmp_path) as catalog:
        catalog.create("c", "image", DIM, "m").add(dataset.ids[:7], dataset.mean[:7], dataset.logvar[:7])
    with Catalog(tmp_path) as catalog:
        assert [(i.name, i.size) for i in catalog.list()] == [("c", 7)]


@pytest.mark.parametrize("name", ["", "a/b", "..", "x" * 65, "spaces here", None])
def test_bad_names_are_refused(catalog, name):
    with pytest.raises(InvalidInputError):
        catalog.create(name, "image", DIM, "m")


@pytest.mark.parametrize("kwargs", [
    {"modality": "audio"}, {"dim": 0}, {"dim": 10**6}, {"model_id": ""}, {"spec": {"kind": "lsh"}},
    {"spec": {"colour": "red"}}, {"spec": {"kind": "hnsw", "codec": "pq"}}, {"spec": {"nprobe": 0}}])
def test_bad_create_arguments_are_refused(catalog, kwargs):
    arguments = {"name": "c", "modality": "image", "dim": DIM, "model_id": "m", **kwargs}
    with pytest.raises(InvalidInputError):
        catalog.create(**arguments)
    assert catalog.list() == []


def test_duplicate_and_unknown_names(catalog):
    catalog.create("c", "image", DIM, "m")
    with pytest.raises(CollectionExistsError):
        catalog.create("c", "text", DIM, "m")
    with pytest.raises(UnknownCollectionError, match="no collection named 'd'"):
        catalog.get("d")
    with pytest.raises(UnknownCollectionError):
        catalog.drop("d")


def test_a_collection_has_one_owner(tmp_path):
    with Catalog(tmp_path) as first:
        first.create("c", "image", DIM, "m")
        with Catalog(tmp_path) as second:
            with pytest.raises(CollectionBusyError):
                second.get("c")
            with pytest.raises(CollectionBusyError):
                second.drop("c")
        first.unload("c")
        with Catalog(tmp_path) as third:
            assert len(third.get("c")) == 0


def test_leftovers_of_interrupted_create_and_drop_are_cleaned(tmp_path):
    with Catalog(tmp_path) as catalog:
        catalog.create("kept", "image", DIM, "m")
    (tmp_path / ".creating-0123").mkdir()
    (tmp_path / ".creating-0123" / "store.sqlite").write_bytes(b"partial")
    (tmp_path / ".dropping-4567").mkdir()
    with Catalog(tmp_path) as catalog:
        assert [i.name for i in catalog.list()] == ["kept"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_closed_catalog_refuses_work(tmp_path):
    catalog = Catalog(tmp_path)
    catalog.close()
    with pytest.raises(RuntimeError):
        catalog.create("c", "image", DIM, "m")


def test_a_collection_whose_description_is_lost_is_reported_and_rebuilt_from_its_store(tmp_path, dataset):
    """Issue #16, defect 3: without collection.json a collection is reported broken, not unknown, and
    `rebuild` restores the description the store keeps."""
    from indexer import CorruptIndexError

    with Catalog(tmp_path) as catalog:
        catalog.create("lost", "image", DIM, "model-a").add(dataset.ids[:5], dataset.mean[:5], dataset.logvar[:5])
        catalog.create("garbled", "text", DIM, "model-a").add(dataset.ids[:2], dataset.mean[:2], dataset.logvar[:2])
    (tmp_path / "lost" / "collection.json").unlink()
    (tmp_path / "garbled" / "collection.json").write_text("{")
    with Catalog(tmp_path) as catalog:
        assert catalog.list() == []
        assert set(catalog.broken()) == {"lost", "garbled"}
        with pytest.raises(CorruptIndexError, match="collection.json is missing"):
            catalog.get("lost")
        with pytest.raises(CollectionExistsError):
            catalog.create("lost", "image", DIM, "model-a")  # never a second collection over the first's data
        assert len(catalog.rebuild("lost")) == 5
        assert len(catalog.rebuild("garbled")) == 2
        assert catalog.broken() == {}
        restored = {info.name: info for info in catalog.list()}
        assert (restored["lost"].modality, restored["lost"].model_id) == ("image", "model-a")
        assert restored["garbled"].modality == "text"


def test_a_store_from_before_stored_descriptions_needs_modality_and_model_said_again(tmp_path, dataset):
    import sqlite3

    with Catalog(tmp_path) as catalog:
        catalog.create("old", "image", DIM, "model-a").add(dataset.ids[:3], dataset.mean[:3], dataset.logvar[:3])
    with sqlite3.connect(tmp_path / "old" / "store.sqlite") as store:  # as stores were written before
        store.execute("DELETE FROM meta WHERE key = 'collection'")
    (tmp_path / "old" / "collection.json").unlink()
    with Catalog(tmp_path) as catalog:
        with pytest.raises(InvalidInputError, match="modality and model_id"):
            catalog.rebuild("old")
        assert len(catalog.rebuild("old", modality="image", model_id="model-a")) == 3


def test_damaged_store_files_are_refused_and_left_untouched(tmp_path, dataset):
    """Issue #16, defect 9: an empty or garbage store.sqlite is never opened for writing."""
    import os

    from indexer import CorruptIndexError

    with Catalog(tmp_path) as catalog:
        for name in ("empty", "garbage", "locked"):
            catalog.create(name, "image", DIM, "model-a")
    (tmp_path / "empty" / "store.sqlite").write_bytes(b"")
    (tmp_path / "garbage" / "store.sqlite").write_bytes(os.urandom(4096))
    (tmp_path / "locked" / "LOCK").unlink()
    (tmp_path / "locked" / "LOCK").mkdir()
    with Catalog(tmp_path) as catalog:
        def files(name):
            return sorted(p.name for p in (tmp_path / name).iterdir()), (tmp_path / name / "store.sqlite").read_bytes()

        for name in ("empty", "garbage"):
            before = files(name)
            with pytest.raises(CorruptIndexError, match="not an SQLite database"):
                catalog.get(name)
            assert files(name) == before  # no growth, no -wal / -shm
        from indexer.errors import StoreError

        with pytest.raises(StoreError, match="cannot be locked"):
            catalog.get("locked")
        catalog.drop("empty")  # a damaged collection can still be dropped
        assert not (tmp_path / "empty").exists()
