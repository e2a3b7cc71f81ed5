"""Export a collection's Gaussians to files other tools read, and import such files.

Two layouts, both written page by page (memory bounded by one page, whatever the size):

``parquet``: one file, one row per item::

    id           string
    mean         fixed_size_list<float32>[D]   unit-norm mean
    logvar       fixed_size_list<float32>[D]   log sigma^2 per dimension
    uncertainty  float64                       sum of sigma^2 (S; larger = more general / ambiguous)
    metadata     string                        the item's metadata as a JSON object

The file's key-value metadata holds the manifest under the key ``prolip-retrieval``
(format, version, collection, modality, model_id, dim, count). Spark reads it as is
(``from_json`` on metadata), autofaiss with ``--file_format parquet --embedding_column_name mean``.

``npy``: a folder laid out as clip-retrieval writes embeddings, so autofaiss can be pointed at
``mean/`` directly::

    manifest.json                  the manifest above
    mean/mean_0.npy                float32 [N, D]
    logvar/logvar_0.npy            float32 [N, D]
    uncertainty/uncertainty_0.npy  float64 [N]
    metadata/metadata_0.parquet    id, metadata (JSON), row i <-> row i of the arrays

Import reads either layout (any number of ``_K`` parts, in K order), for instance vectors
computed on a GPU cluster: ``id``, ``mean`` and ``logvar`` are required; ``uncertainty``, when
present, must equal the sum of exp(logvar); ``metadata`` is optional. Every row is validated
before anything is written (ids, dimension, finite values, unit-norm means, metadata JSON, no
id twice), and the model that computed the vectors must be the collection's. The write is an
upsert by id, page by page: an import stopped half-way is completed by running it again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import validation
from .config import MAX_METADATA_BYTES, UNIT_NORM_TOLERANCE
from .errors import InvalidInputError
from .persistence import fsync_dir

log = logging.getLogger(__name__)

FORMATS = ("parquet", "npy")
MANIFEST_KEY = b"prolip-retrieval"
FORMAT_NAME = "prolip-retrieval export"
FORMAT_VERSION = 1
PAGE_ROWS = 2048
UNCERTAINTY_RTOL = 1e-3  # a given Σσ² must match exp(logvar) summed this closely (float32 rounding passes)
_PART = re.compile(r"_(\d+)\.(npy|parquet)$")


@dataclass(frozen=True)
class Manifest:
    collection: str | None
    modality: str | None
    model_id: str | None
    dim: int | None
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "collection": self.collection,
                "modality": self.modality, "model_id": self.model_id, "dim": self.dim, "count": self.count}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: the manifest is not a JSON object")
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise InvalidInputError(f"{where}: export format version {version!r}; this version reads {FORMAT_VERSION}")
        dim = data.get("dim")
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            raise InvalidInputError(f"{where}: manifest dim must be a positive integer, not {dim!r}")
        text = {key: data.get(key) for key in ("collection", "modality", "model_id")}
        for key, value in text.items():
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{where}: manifest {key} must be a string, not {value!r}")
        return cls(text["collection"], text["modality"], text["model_id"], dim, data.get("count"))


@dataclass(frozen=True)
class Page:
    """Rows ``start`` .. ``start + len(ids)`` of a file."""

    start: int
    ids: list[str]
    mean: np.ndarray                 # [n, D] float32
    logvar: np.ndarray               # [n, D] float32
    uncertainty: np.ndarray | None   # [n] float64, when the file has it
    metadata: list[str | None]       # JSON object text per row, or None


@dataclass(frozen=True)
class Report:
    path: Path
    count: int
    seconds: float
    bytes: int
    created: bool = False

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


# --- export ---------------------------------------------------------------------------------------


def export_collection(index, out: str | os.PathLike, fmt: str) -> Report:
    """Write every live item of ``index`` to ``out`` (a .parquet file, or a folder for npy)."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = Path(out)
    if out.exists():
        raise InvalidInputError(f"{out} already exists; choose a new path (an export never overwrites)")
    info = index.info
    manifest = Manifest(info.name, info.modality, info.model_id, info.dim)
    started = time.perf_counter()
    # written beside the target and renamed into place at the end: a crash leaves no half export under its name
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        if fmt == "parquet":
            count = _write_parquet(index.iter_items(), staging, manifest)
        else:
            count = _write_npy(index.iter_items(), staging, manifest)
        os.rename(staging, out)
        fsync_dir(out.parent)
    except BaseException:
        _remove(staging)
        raise
    size = out.stat().st_size if out.is_file() else sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    seconds = time.perf_counter() - started
    log.info("exported %d items of %r to %s (%s) in %.2fs", count, info.name, out, fmt, seconds)
    return Report(out, count, seconds, size)


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _vector_type(dim: int):
    import pyarrow as pa

    return pa.list_(pa.float32(), dim)


def _schema(manifest: Manifest, with_vectors: bool = True):
    import pyarrow as pa

    fields = [pa.field("id", pa.string(), nullable=False)]
    if with_vectors:
        fields += [pa.field("mean", _vector_type(manifest.dim), nullable=False),
                   pa.field("logvar", _vector_type(manifest.dim), nullable=False),
                   pa.field("uncertainty", pa.float64(), nullable=False)]
    fields.append(pa.field("metadata", pa.string()))
    return pa.schema(fields, metadata={MANIFEST_KEY: json.dumps(manifest.to_dict())})


def _vectors(values: np.ndarray, dim: int):
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def _metadata_texts(items) -> list[str]:
    return [json.dumps(item.metadata, ensure_ascii=False, separators=(",", ":")) for item in items]


def _write_parquet(pages: Iterator[list], path: Path, manifest: Manifest) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(manifest)
    count = 0
    # float vectors neither dictionary-encode nor compress (random mantissas): trying costs time, saves nothing
    options = dict(use_dictionary=False, write_statistics=["uncertainty"],
                   compression={"id": "snappy", "mean": "none", "logvar": "none", "uncertainty": "none",
                                "metadata": "snappy"})
    with pq.ParquetWriter(path, schema, **options) as writer:
        for items in pages:
            if not items:
                continue
            batch = pa.record_batch([
                pa.array([item.id for item in items], pa.string()),
                _vectors(np.stack([item.mean for item in items]), manifest.dim),
                _vectors(np.stack([item.logvar for item in items]), manifest.dim),
                pa.array([item.uncertainty for item in items], pa.float64()),
                pa.array(_metadata_texts(items), pa.string()),
            ], schema=schema)
            writer.write_batch(batch)
            count += len(items)
    _fsync(path)
    return count


class NpyWriter:
    """A .npy file written row block by row block, its row count fixed in the header at the end.

    The header is padded to a fixed size first, so the final one (any row count) fits in place.
    """

    HEADER_BYTES = 128  # magic + version + length + dict, padded; a multiple of 64 as numpy aligns

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), row_shape
        self.rows = 0
        self._handle = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._handle.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        shape = (rows, *self.row_shape)
        text = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape})
        body_length = self.HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
        text = text.ljust(body_length - 1) + "\n"
        if len(text) != body_length:
            raise ValueError(f"npy header for shape {shape} does not fit in {self.HEADER_BYTES} bytes")
        return b"\x93NUMPY\x01\x00" + body_length.to_bytes(2, "little") + text.encode("latin1")

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {block.shape[1:]} written to a file of rows {self.row_shape}")
        self._handle.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self._handle.seek(0)
        self._handle.write(self._header(self.rows))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()


def _write_npy(pages: Iterator[list], folder: Path, manifest: Manifest) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for part in ("mean", "logvar", "uncertainty", "metadata"):
        (folder / part).mkdir(parents=True)
    dim = manifest.dim
    arrays = {"mean": NpyWriter(folder / "mean" / "mean_0.npy", np.float32, (dim,)),
              "logvar": NpyWriter(folder / "logvar" / "logvar_0.npy", np.float32, (dim,)),
              "uncertainty": NpyWriter(folder / "uncertainty" / "uncertainty_0.npy", np.float64, ())}
    schema = _schema(manifest, with_vectors=False)
    metadata_path = folder / "metadata" / "metadata_0.parquet"
    count = 0
    try:
        with pq.ParquetWriter(metadata_path, schema) as table:
            for items in pages:
                if not items:
                    continue
                arrays["mean"].write(np.stack([item.mean for item in items]))
                arrays["logvar"].write(np.stack([item.logvar for item in items]))
                arrays["uncertainty"].write(np.array([item.uncertainty for item in items], np.float64))
                table.write_batch(pa.record_batch([pa.array([item.id for item in items], pa.string()),
                                                   pa.array(_metadata_texts(items), pa.string())], schema=schema))
                count += len(items)
    finally:
        for writer in arrays.values():
            writer.close()
    _fsync(metadata_path)
    manifest_path = folder / "manifest.json"
    manifest_path.write_text(json.dumps({**manifest.to_dict(), "count": count}, indent=1) + "\n")
    _fsync(manifest_path)
    for sub in (folder, *(folder / part for part in ("mean", "logvar", "uncertainty", "metadata"))):
        fsync_dir(sub)
    return count


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# --- reading files (import) ---------------------------------------------------------------------------


def detect_format(path: str | os.PathLike) -> str:
    path = Path(path)
    if path.is_dir():
        return "npy"
    if path.is_file():
        return "parquet"
    raise FileNotFoundError(f"{path} does not exist")


def read_manifest(path: str | os.PathLike) -> Manifest:
    """What the file says about itself (all fields None for a parquet file written without one)."""
    path = Path(path)
    if detect_format(path) == "npy":
        where = path / "manifest.json"
        if not where.is_file():
            return Manifest(None, None, None, None)
        try:
            return Manifest.from_dict(json.loads(where.read_text()), str(where))
        except ValueError as error:
            raise InvalidInputError(f"{where}: not valid JSON ({error})") from None
    schema = _parquet_file(path).schema_arrow
    raw = (schema.metadata or {}).get(MANIFEST_KEY)
    if raw is None:
        return Manifest(None, None, None, None)
    try:
        return Manifest.from_dict(json.loads(raw), str(path))
    except ValueError as error:
        raise InvalidInputError(f"{path}: its {MANIFEST_KEY.decode()} metadata is not valid JSON ({error})") from None


def _parquet_file(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise InvalidInputError(f"{path}: not a readable Parquet file ({error})") from None


def _vector_column(batch, name: str, where: str) -> np.ndarray:
    """A list<float> column -> float32 [n, D]; every row must have the same length."""
    import pyarrow as pa

    column = batch.column(name)
    if column.null_count:
        raise InvalidInputError(f"{where}: column {name!r} has empty (null) rows")
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = np.asarray(column.value_lengths())
        width = int(lengths[0]) if len(lengths) else 0
        if len(lengths) and (lengths != width).any():
            row = int(np.flatnonzero(lengths != width)[0])
            raise InvalidInputError(f"{where}: row {row} of {name!r} has {lengths[row]} values, row 0 has {width}")
    else:
        raise InvalidInputError(f"{where}: column {name!r} must be a list of floats, not {column.type}")
    values = column.flatten()
    if not pa.types.is_floating(values.type):
        raise InvalidInputError(f"{where}: column {name!r} holds {values.type}, not floats")
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(column), width)


def _text_column(batch, name: str) -> list:
    return batch.column(name).to_pylist() if name in batch.schema.names else [None] * batch.num_rows


def _parquet_pages(path: Path) -> Iterator[Page]:
    import pyarrow as pa

    reader = _parquet_file(path)
    names = set(reader.schema_arrow.names)
    missing = {"id", "mean", "logvar"} - names
    if missing:
        raise InvalidInputError(f"{path}: missing column(s) {', '.join(sorted(missing))}; a file to import "
                                "needs id, mean and logvar (uncertainty and metadata are optional)")
    columns = [c for c in ("id", "mean", "logvar", "uncertainty", "metadata") if c in names]
    start = 0
    for batch in reader.iter_batches(batch_size=PAGE_ROWS, columns=columns):
        where = f"{path} rows {start}-{start + batch.num_rows - 1}"
        uncertainty = None
        if "uncertainty" in names:
            column = batch.column("uncertainty")
            if column.null_count or not pa.types.is_floating(column.type):
                raise InvalidInputError(f"{where}: uncertainty must be a float column without nulls")
            uncertainty = np.asarray(column.to_numpy(zero_copy_only=False), np.float64)
        yield Page(start, _text_column(batch, "id"), _vector_column(batch, "mean", where),
                   _vector_column(batch, "logvar", where), uncertainty, _text_column(batch, "metadata"))
        start += batch.num_rows


def _parts(folder: Path, name: str, suffix: str) -> list[Path]:
    found = [(int(m.group(1)), p) for p in (folder / name).glob(f"{name}_*.{suffix}")
             if (m := _PART.search(p.name)) is not None]
    return [p for _, p in sorted(found)]


def _npy_pages(folder: Path) -> Iterator[Page]:
    import pyarrow as pa

    parts = {name: _parts(folder, name, "npy") for name in ("mean", "logvar", "uncertainty")}
    parts["metadata"] = _parts(folder, "metadata", "parquet")
    if not parts["mean"] or not parts["logvar"] or not parts["metadata"]:
        raise InvalidInputError(f"{folder}: expected mean/mean_0.npy, logvar/logvar_0.npy and "
                                "metadata/metadata_0.parquet (ids) as an npy export writes them")
    counts = {name: len(paths) for name, paths in parts.items() if paths}
    if len(set(counts.values())) != 1:
        raise InvalidInputError(f"{folder}: the folders hold different numbers of parts: {counts}")
    start = 0
    for k in range(len(parts["mean"])):
        try:
            mean = np.load(parts["mean"][k], mmap_mode="r", allow_pickle=False)
            logvar = np.load(parts["logvar"][k], mmap_mode="r", allow_pickle=False)
            uncertainty = (np.load(parts["uncertainty"][k], mmap_mode="r", allow_pickle=False)
                           if parts["uncertainty"] else None)
        except (ValueError, OSError) as error:
            raise InvalidInputError(f"{folder}: part {k} is not a readable .npy array ({error})") from None
        if mean.ndim != 2 or logvar.shape != mean.shape:
            raise InvalidInputError(f"{folder}: part {k}: mean {list(mean.shape)} and logvar {list(logvar.shape)} "
                                    "must both be [N, D]")
        if uncertainty is not None and uncertainty.shape != (len(mean),):
            raise InvalidInputError(f"{folder}: part {k}: uncertainty has shape {list(uncertainty.shape)}, "
                                    f"not [{len(mean)}]")
        table = _parquet_file(parts["metadata"][k])
        if "id" not in table.schema_arrow.names:
            raise InvalidInputError(f"{parts['metadata'][k]}: no id column")
        if table.metadata.num_rows != len(mean):
            raise InvalidInputError(f"{folder}: part {k} has {len(mean)} vectors but {table.metadata.num_rows} ids")
        offset = 0
        columns = [c for c in ("id", "metadata") if c in table.schema_arrow.names]
        for batch in table.iter_batches(batch_size=PAGE_ROWS, columns=columns):
            rows = slice(offset, offset + batch.num_rows)
            ids = batch.column("id")
            if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
                raise InvalidInputError(f"{parts['metadata'][k]}: id must be a string column, not {ids.type}")
            yield Page(start, ids.to_pylist(), np.asarray(mean[rows], np.float32), np.asarray(logvar[rows], np.float32),
                       None if uncertainty is None else np.asarray(uncertainty[rows], np.float64),
                       _text_column(batch, "metadata"))
            offset += batch.num_rows
            start += batch.num_rows


def read_pages(path: str | os.PathLike) -> Iterator[Page]:
    """The rows of an export (either layout), a page at a time."""
    path = Path(path)
    return _npy_pages(path) if detect_format(path) == "npy" else _parquet_pages(path)


# --- import ------------------------------------------------------------------------------------------------


def check_page(page: Page, dim: int, seen: set[str]) -> list[dict[str, Any]]:
    """Validate one page; returns its metadata dicts. InvalidInputError names the first bad row."""

    def fail(row: int, reason: str):
        item = page.ids[row] if row < len(page.ids) else None
        raise InvalidInputError(f"row {page.start + row}{f' (id {item!r})' if isinstance(item, str) else ''}: "
                                f"{reason}")

    n = len(page.ids)
    for name, values in (("mean", page.mean), ("logvar", page.logvar)):
        if values.shape != (n, dim):
            raise InvalidInputError(f"rows {page.start}-{page.start + n - 1}: {name} has {values.shape[1]} "
                                    f"dimensions; the collection has {dim}")
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            fail(int(np.flatnonzero(bad)[0]), f"{name} has NaN or infinite values")
    norms = np.linalg.norm(page.mean.astype(np.float64), axis=1)  # [n]
    bad = np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        fail(row, f"mean has norm {norms[row]:.4f}; means must be L2-normalised (ProLIP outputs unit means)")
    with np.errstate(over="ignore"):
        variance_sum = np.exp(page.logvar.astype(np.float64)).sum(axis=1)  # [n]
    if not np.isfinite(variance_sum).all() or (variance_sum > 1e30).any():
        fail(int(np.flatnonzero(~(variance_sum <= 1e30))[0]), "logvar is too large: the sum of variances overflows")
    if page.uncertainty is not None:
        bad = ~np.isclose(page.uncertainty, variance_sum, rtol=UNCERTAINTY_RTOL, atol=0.0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            fail(row, f"uncertainty {page.uncertainty[row]:.6g} is not the sum of exp(logvar) "
                      f"({variance_sum[row]:.6g}); is logvar log sigma^2?")
    metadata = []
    for row, (item_id, text) in enumerate(zip(page.ids, page.metadata, strict=True)):
        try:
            validation.item_id(item_id)
        except InvalidInputError as error:
            fail(row, str(error))
        if item_id in seen:
            fail(row, "this id appears earlier in the file")
        seen.add(item_id)
        metadata.append(_metadata(text, lambda reason, row=row: fail(row, reason)))
    return metadata


def _metadata(text: Any, fail) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    if not isinstance(text, str):
        fail(f"metadata must be JSON text, not {type(text).__name__}")
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        fail(f"metadata is over the {MAX_METADATA_BYTES}-byte limit")
    try:
        value = json.loads(text)
    except ValueError as error:
        fail(f"metadata is not valid JSON ({error})")
    if not isinstance(value, dict):
        fail("metadata must be a JSON object")
    return value


def _same_model(a: str, b: str) -> bool:
    from .redis_queue import same_model

    return same_model(a, b)


def import_vectors(catalog, name: str, path: str | os.PathLike, *, model_id: str | None = None,
                   modality: str | None = None) -> Report:
    """Validate every row of ``path``, then upsert them into collection ``name`` (created when missing).

    ``model_id`` asserts which model computed the vectors (required when the file does not say);
    it must agree with the file and with the collection. ``modality`` is needed to create a
    collection when the file does not say it.
    """
    from .errors import UnknownCollectionError

    path = Path(path)
    name = validation.collection_name(name)
    manifest = read_manifest(path)
    if manifest.model_id and model_id and not _same_model(manifest.model_id, model_id):
        raise InvalidInputError(f"{path} says its vectors come from model {manifest.model_id}, not {model_id}")
    claimed = model_id or manifest.model_id
    if not claimed:
        raise InvalidInputError(f"{path} does not say which model computed its vectors; pass --model-id "
                                "(the collection's model, as `collections list` shows it)")
    if modality and manifest.modality and modality != manifest.modality:
        raise InvalidInputError(f"{path} holds {manifest.modality} embeddings, not {modality}")
    modality = modality or manifest.modality
    try:
        index = catalog.get(name)
    except UnknownCollectionError:
        index = None
    if index is not None:
        info = index.info
        if not _same_model(info.model_id, claimed):
            raise InvalidInputError(f"collection {name!r} holds vectors of model {info.model_id}; these come from "
                                    f"{claimed}: vectors of different models are not comparable")
        if modality and modality != info.modality:
            raise InvalidInputError(f"collection {name!r} holds {info.modality}s, not {modality}s")
        dim = info.dim
    else:
        if modality is None:
            raise InvalidInputError(f"{path} does not say whether it holds image or text embeddings; pass --modality")
        validation.modality(modality)
        dim = None
    started = time.perf_counter()
    seen: set[str] = set()
    count = 0
    for page in read_pages(path):  # pass 1: everything is checked before anything is written
        if dim is None:
            dim = page.mean.shape[1]
        if manifest.dim is not None and manifest.dim != dim:
            raise InvalidInputError(f"{path}: the manifest says dim {manifest.dim}, the vectors have {dim}")
        check_page(page, dim, seen)
        count += len(page.ids)
    if manifest.count is not None and manifest.count != count:
        raise InvalidInputError(f"{path}: the manifest counts {manifest.count} items, the file holds {count}")
    del seen
    created = False
    if index is None:
        if dim is None:
            raise InvalidInputError(f"{path} holds no items; nothing to create a collection from")
        index = catalog.create(name, modality=modality, dim=dim, model_id=claimed)
        created = True
    for page in read_pages(path):  # pass 2: upsert page by page (durable when add returns)
        metadata = check_page(page, dim, set())
        if page.ids:
            index.add(page.ids, page.mean, page.logvar, metadata)
    seconds = time.perf_counter() - started
    log.info("imported %d items into %r from %s in %.2fs", count, name, path, seconds)
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return Report(path, count, seconds, size, created)
