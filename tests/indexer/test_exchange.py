"""Export and import: Parquet and clip-retrieval-style .npy, read back by pyarrow and numpy themselves."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer import Catalog, InvalidInputError
from indexer.exchange import PAGE_ROWS, NpyWriter, export_collection, import_vectors
from service.cli import main as cli_main

from .conftest import DIM, SIZE

MODEL = "test-model"


@pytest.fixture
def filled(catalog, dataset):
    index = catalog.create("photos", modality="image", dim=DIM, model_id=MODEL)
    metadata = [{**m, "place": "Zürich ☃", "tags": ["a", {"b": None}]} for m in dataset.metadata]
    index.add(dataset.ids, dataset.mean, dataset.logvar, metadata)
    index.delete(dataset.ids[:5])  # deleted items are not exported
    return index


def stored(index) -> dict:
    """id -> (mean, logvar, uncertainty, metadata) straight from the store, one get per item."""
    return {i: index.get(i) for i in (item.id for page in index.iter_items() for item in page)}


def test_iter_items_pages_every_live_item_once_even_while_written(catalog, dataset, filled):
    from indexer.synthetic import corpus

    extra = [f"extra-{i}" for i in range(3000)]  # three store pages in all
    filled.add(extra, *corpus(len(extra), DIM, seed=3))
    live = set(dataset.ids[5:]) | set(extra)
    pages = filled.iter_items()
    first = next(pages)
    assert len(first) == PAGE_ROWS
    # during the iteration: an item already given is rewritten, one not yet given too, one is new
    later = extra[-1]
    filled.add([first[0].id, later, "new"], dataset.mean[:3], dataset.logvar[:3])
    seen = [item.id for item in first] + [item.id for page in pages for item in page]
    assert len(seen) == len(set(seen))  # never twice
    assert "new" not in seen and set(seen) == live - {later}  # the one rewritten before it was reached is left out
    assert sum(len(page) for page in filled.iter_items()) == len(live) + 1


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_export_is_read_back_exactly_by_pyarrow_and_numpy(tmp_path, filled, fmt):
    out = tmp_path / ("out.parquet" if fmt == "parquet" else "out-npy")
    report = export_collection(filled, out, fmt)
    assert report.count == SIZE - 5 and report.bytes > 0
    if fmt == "parquet":
        table = pq.read_table(out)
        ids = table.column("id").to_pylist()
        mean = np.asarray(table.column("mean").combine_chunks().flatten()).reshape(-1, DIM)
        logvar = np.asarray(table.column("logvar").combine_chunks().flatten()).reshape(-1, DIM)
        uncertainty = table.column("uncertainty").to_numpy()
        texts = table.column("metadata").to_pylist()
        manifest = json.loads(table.schema.metadata[b"prolip-retrieval"])
    else:
        ids = pq.read_table(out / "metadata" / "metadata_0.parquet").column("id").to_pylist()
        texts = pq.read_table(out / "metadata" / "metadata_0.parquet").column("metadata").to_pylist()
        mean = np.load(out / "mean" / "mean_0.npy")
        logvar = np.load(out / "logvar" / "logvar_0.npy")
        uncertainty = np.load(out / "uncertainty" / "uncertainty_0.npy")
        manifest = json.loads((out / "manifest.json").read_text())
        assert sorted(p.name for p in (out / "mean").iterdir()) == ["mean_0.npy"]  # autofaiss --embeddings OUT/mean
    assert manifest | {"count": None} == {"format": "prolip-retrieval export", "version": 1, "collection": "photos",
                                           "modality": "image", "model_id": MODEL, "dim": DIM, "count": None}
    assert mean.dtype == np.float32 and mean.shape == (SIZE - 5, DIM) and uncertainty.dtype == np.float64
    truth = stored(filled)
    assert len(ids) == len(set(ids)) and set(ids) == set(truth)
    for row, item_id in enumerate(ids):
        item = truth[item_id]
        np.testing.assert_array_equal(mean[row], item.mean)
        np.testing.assert_array_equal(logvar[row], item.logvar)
        assert uncertainty[row] == item.uncertainty
        assert json.loads(texts[row]) == item.metadata
    np.testing.assert_allclose(uncertainty, np.exp(logvar.astype(np.float64)).sum(axis=1), rtol=1e-6)
    with pytest.raises(InvalidInputError, match="already exists"):
        export_collection(filled, out, fmt)


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_round_trip_gives_the_same_items_and_the_same_search_results(tmp_path, filled, dataset, fmt):
    out = tmp_path / f"export.{fmt}"
    export_collection(filled, out, fmt)
    with Catalog(tmp_path / "elsewhere", auto_snapshot=False) as other:
        report = import_vectors(other, "copy", out)
        assert report.created and report.count == SIZE - 5
        copy = other.get("copy")
        assert (copy.info.modality, copy.info.model_id, copy.info.dim) == ("image", MODEL, DIM)
        truth = stored(filled)
        for item_id, item in truth.items():
            again = copy.get(item_id)
            np.testing.assert_allclose(again.mean, item.mean, atol=1e-7)
            np.testing.assert_array_equal(again.logvar, item.logvar)
            assert again.metadata == item.metadata
        before = filled.search(dataset.query_mean, dataset.query_logvar, k=10)
        after = copy.search(dataset.query_mean, dataset.query_logvar, k=10)
        assert [[h.id for h in row] for row in before] == [[h.id for h in row] for row in after]
        import_vectors(other, "copy", out)  # again (an interrupted import re-run): upserts, no duplicates
        assert len(copy) == SIZE - 5


def write_parquet(path, ids, mean, logvar, *, uncertainty=None, metadata=None, manifest=None, fixed=False):
    """A file as another tool would write it: plain list<float> columns unless ``fixed``."""
    def vectors(values):
        flat = pa.array(np.asarray(values, np.float32).reshape(-1))
        if fixed:
            return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        offsets = pa.array(np.arange(0, len(values) * values.shape[1] + 1, values.shape[1], dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, flat)

    columns = {"id": pa.array(ids), "mean": vectors(mean), "logvar": vectors(logvar)}
    if uncertainty is not None:
        columns["uncertainty"] = pa.array(uncertainty, pa.float64())
    if metadata is not None:
        columns["metadata"] = pa.array(metadata, pa.string())
    table = pa.table(columns)
    if manifest is not None:
        table = table.replace_schema_metadata({b"prolip-retrieval": json.dumps(manifest)})
    pq.write_table(table, path, row_group_size=700)
    return path


def test_vectors_computed_elsewhere_are_imported_through_the_cli(tmp_path, dataset, capsys):
    n = 1000
    path = write_parquet(tmp_path / "gpu.parquet", dataset.ids[:n], dataset.mean[:n], dataset.logvar[:n],
                         metadata=[json.dumps({"shard": i // 100}) for i in range(n)])
    data = str(tmp_path / "data")
    assert cli_main(["import", str(path), "--collection", "gpu", "--data-dir", data]) == 2
    assert "does not say which model" in capsys.readouterr().err
    assert cli_main(["import", str(path), "--collection", "gpu", "--data-dir", data, "--model-id", MODEL]) == 2
    assert "--modality" in capsys.readouterr().err
    assert cli_main(["import", str(path), "--collection", "gpu", "--data-dir", data, "--model-id", MODEL,
                     "--modality", "text"]) == 0
    assert "imported 1000 items into gpu (created)" in capsys.readouterr().out
    assert cli_main(["import", str(path), "--collection", "gpu", "--data-dir", data, "--model-id", "another"]) == 2
    assert "vectors of different models are not comparable" in capsys.readouterr().err
    out = tmp_path / "gpu-export"
    assert cli_main(["export", "gpu", "--format", "npy", "--out", str(out), "--data-dir", data]) == 0
    assert "exported 1000 items of gpu" in capsys.readouterr().out
    with Catalog(data) as catalog:
        index = catalog.get("gpu")
        assert len(index) == n and index.get(dataset.ids[250]).metadata == {"shard": 2}
    np.testing.assert_allclose(np.load(out / "mean" / "mean_0.npy")[250], dataset.mean[250], atol=1e-6)


def _bad(dataset, n=1000, **changes):
    ids, mean, logvar = list(dataset.ids[:n]), dataset.mean[:n].copy(), dataset.logvar[:n].copy()
    uncertainty, metadata = np.exp(logvar.astype(np.float64)).sum(axis=1), ["{}"] * n
    for key, change in changes.items():
        change(locals()[key])
    return ids, mean, logvar, uncertainty, metadata


CASES = {
    "not unit": (lambda m: m.__setitem__(812, m[812] * 0.9), "mean", "row 812 .*norm 0.9000"),
    "nan": (lambda m: m.__setitem__((3, 1), np.nan), "logvar", "row 3 .*logvar has NaN"),
    "duplicate": (lambda ids: ids.__setitem__(900, ids[7]), "ids", "row 900 .*appears earlier"),
    "bad id": (lambda ids: ids.__setitem__(10, ""), "ids", r"row 10 \(id .*\): ids must be non-empty"),
    "metadata": (lambda md: md.__setitem__(5, "[1, 2]"), "metadata", "row 5 .*must be a JSON object"),
    "std, not logvar": (lambda u: u.__setitem__(slice(None), u * 2), "uncertainty", "row 0 .*not the sum"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_invalid_row_is_named_and_nothing_is_written(tmp_path, catalog, dataset, case):
    change, key, message = CASES[case]
    ids, mean, logvar, uncertainty, metadata = _bad(dataset, **{key: change})
    path = write_parquet(tmp_path / "bad.parquet", ids, mean, logvar, uncertainty=uncertainty, metadata=metadata,
                         manifest={"model_id": MODEL, "modality": "image"}, fixed=True)
    with pytest.raises(InvalidInputError, match=message):
        import_vectors(catalog, "bad", path)
    assert "bad" not in catalog  # validated before anything was created or written
    existing = catalog.create("existing", modality="image", dim=DIM, model_id=MODEL)
    existing.add(["keep"], dataset.mean[:1], dataset.logvar[:1])
    with pytest.raises(InvalidInputError, match=message):
        import_vectors(catalog, "existing", path)
    assert len(existing) == 1


def test_dimension_model_and_modality_mismatches_are_refused(tmp_path, catalog, dataset):
    index = catalog.create("texts", modality="text", dim=DIM, model_id=MODEL)
    wide = np.concatenate([dataset.mean[:10], np.zeros((10, 4), np.float32)], axis=1)
    path = write_parquet(tmp_path / "wide.parquet", dataset.ids[:10], wide, np.zeros_like(wide))
    with pytest.raises(InvalidInputError, match="mean has 36 dimensions; the collection has 32"):
        import_vectors(catalog, "texts", path, model_id=MODEL)
    path = write_parquet(tmp_path / "img.parquet", dataset.ids[:10], dataset.mean[:10], dataset.logvar[:10],
                         manifest={"model_id": MODEL, "modality": "image"})
    with pytest.raises(InvalidInputError, match="holds texts, not images"):
        import_vectors(catalog, "texts", path)
    with pytest.raises(InvalidInputError, match="says its vectors come from model test-model, not other"):
        import_vectors(catalog, "texts", path, model_id="other")
    assert len(index) == 0


def test_npy_writer_streams_blocks_into_a_file_numpy_loads(tmp_path):
    writer = NpyWriter(tmp_path / "x.npy", np.float32, (3,))
    blocks = [np.random.default_rng(i).standard_normal((n, 3)).astype(np.float32) for i, n in enumerate([5, 0, 7])]
    for block in blocks:
        writer.write(block)
    writer.close()
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.concatenate(blocks))
    assert np.load(tmp_path / "x.npy", mmap_mode="r").shape == (12, 3)
