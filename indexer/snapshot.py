"""Writing and loading a collection's FAISS snapshot: the derived, rebuildable half of its state.

A snapshot in ``<collection>/snapshot/`` is the vector table at one store sequence number plus
the FAISS index over it:

- ``vectors.<gen>.npy``      [n, D+1] float32 augmented vectors, one row per slot (memory-mapped on load)
- ``uncertainty.<gen>.npy``  [n] float64 S per slot
- ``live.<gen>.npy``         [n] bool
- ``ids.<gen>.json``         [n] external ids
- ``index.<gen>.faiss``      the FAISS index (absent for flat indexes: rebuilt from the vectors in
  about one memory copy, which is cheaper than storing the same floats twice)
- ``MANIFEST.json``          seq, collection uuid, index description, and size + SHA-256 of each file

``gen`` is unique per snapshot, so a new snapshot never overwrites a file the committed
manifest names; the manifest rename is the commit point (see ``persistence``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import IndexSpec
from .errors import CorruptIndexError
from .faiss_backend import FaissIndex
from .flat_scan import scan_threads
from .persistence import (
    MANIFEST_NAME,
    FileRecord,
    PendingVerification,
    atomic_write,
    commit_manifest,
    finish_verification,
    fsync_dir,
    read_manifest,
    start_verification,
)
from .table import TableView, VectorTable

log = logging.getLogger(__name__)

_WRITE_ROWS = 4096  # rows gathered per write of the vectors file: 12.6 MB at D = 768


# A vectors file this large is verified after open, in the background (see ``load``).
LAZY_VERIFY_BYTES = 256 << 20


@dataclass
class Loaded:
    seq: int
    table: VectorTable
    index: FaissIndex
    manifest: dict[str, Any]
    verifying: PendingVerification | None = None  # checks of the vectors file still running (see ``load``)


def _npy_writer(array: np.ndarray):
    return lambda stream: np.save(stream, array, allow_pickle=False)


def write_data_files(folder: Path, generation: str, view: TableView, slots: np.ndarray) -> dict[str, FileRecord]:
    """Write the table rows ``slots`` (in that order) of a frozen view; returns the file records."""
    n, width = len(slots), view.base.shape[1]

    def write_vectors(stream: Any) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": (n, width)}
        np.lib.format.write_array_header_1_0(stream, header)
        for chunk in view.chunks(slots, rows=_WRITE_ROWS):
            stream.write(memoryview(chunk).cast("B"))  # the gathered rows as they are: no second copy

    ids = [view.ids[s] for s in slots.tolist()]
    return {
        "vectors": atomic_write(folder / f"vectors.{generation}.npy", write_vectors),
        "uncertainty": atomic_write(folder / f"uncertainty.{generation}.npy", _npy_writer(view.uncertainty[slots])),
        "live": atomic_write(folder / f"live.{generation}.npy", _npy_writer(view.live[slots])),
        "ids": atomic_write(folder / f"ids.{generation}.json",
                            lambda stream: stream.write(json.dumps(ids, ensure_ascii=False).encode("utf-8"))),
    }


def write_index_file(folder: Path, generation: str, index: FaissIndex) -> dict[str, FileRecord]:
    if index.kind == "flat":
        return {}
    return {"index": atomic_write(folder / f"index.{generation}.faiss", index.write)}


def new_generation() -> str:
    return f"{int(time.time())}-{uuid.uuid4().hex[:8]}"


def commit(folder: Path, files: dict[str, FileRecord], seq: int, collection_uuid: str, dim: int, slots: int,
           live: int, index: FaissIndex) -> dict[str, Any]:
    manifest = {
        "collection_uuid": collection_uuid,
        "seq": seq,
        "dim": dim,
        "slots": slots,
        "live": live,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "index": {"kind": index.kind, "pending": index.pending, "params": index.params,
                  "padded_dim": index.padded_dim},
        "files": {role: record.to_dict() for role, record in files.items()},
    }
    commit_manifest(folder, manifest)
    return manifest


def forget(folder: Path) -> None:
    """Uncommit the snapshot (remove its manifest, durably); its files become leftovers to discard."""
    path = Path(folder) / MANIFEST_NAME
    if path.exists():
        path.unlink()
        fsync_dir(Path(folder))


def load(folder: Path, spec: IndexSpec, dim: int, collection_uuid: str) -> Loaded | None:
    """Load and verify the committed snapshot; None when there is none. CorruptIndexError on any mismatch."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    if manifest.get("collection_uuid") != collection_uuid:
        raise CorruptIndexError(f"{folder}: the snapshot belongs to another collection (uuid "
                                f"{manifest.get('collection_uuid')}, expected {collection_uuid})")
    if manifest.get("dim") != dim:
        raise CorruptIndexError(f"{folder}: snapshot dimension {manifest.get('dim')} != {dim}")
    # Every segment of every file is hashed on all cores while this thread parses and builds the
    # table. A large vectors file (>= LAZY_VERIFY_BYTES) goes on being verified after load
    # returns: ``Loaded.verifying``, which the index waits for before it reads any vector (a
    # search, a snapshot), so no answer ever comes from an unverified byte; its size is checked
    # now, like every other file's, which are verified before load returns.
    vectors_size = manifest["files"].get("vectors", {}).get("size", 0)
    lazy = {"vectors"} if vectors_size >= LAZY_VERIFY_BYTES else set()
    checks = start_verification(folder, manifest, scan_threads(), roles=set(manifest["files"]) - lazy)
    later = start_verification(folder, manifest, scan_threads(), roles=lazy) if lazy else []
    try:
        table = _read_table(folder, manifest, dim)
    except CorruptIndexError:
        finish_verification(checks + later)  # a damaged file explains the failure better, when there is one
        raise
    finish_verification(checks)
    files = {role: folder / record["name"] for role, record in manifest["files"].items()}
    n = manifest["slots"]
    described = manifest["index"]
    if "index" in files:
        try:
            index = FaissIndex.read(files["index"], spec, described["kind"], dim + 1, described["pending"],
                                    described["params"])
        except RuntimeError as error:  # FAISS reports unreadable files as RuntimeError
            raise CorruptIndexError(f"{files['index']}: {error}") from error
    else:
        index = FaissIndex.build(spec, "flat", table.all_vectors())  # counts the rows: the table holds them
        index.pending = described.get("pending")
    if index.ntotal != n:
        raise CorruptIndexError(f"{folder}: the FAISS index holds {index.ntotal} vectors, the table {n}")
    log.info("loaded snapshot seq %d: %d items (%d slots), %s index", manifest["seq"], len(table), n, index.kind)
    return Loaded(manifest["seq"], table, index, manifest, PendingVerification(later) if later else None)


def _read_table(folder: Path, manifest: dict[str, Any], dim: int) -> VectorTable:
    files = {role: folder / record["name"] for role, record in manifest["files"].items()}
    try:
        vectors = np.load(files["vectors"], mmap_mode="r", allow_pickle=False)
        uncertainty = np.load(files["uncertainty"], allow_pickle=False)
        live = np.load(files["live"], allow_pickle=False)
        ids = json.loads(files["ids"].read_bytes())
    except (KeyError, ValueError, OSError) as error:
        raise CorruptIndexError(f"{folder}: snapshot files cannot be read: {error}") from error
    n = manifest["slots"]
    if (vectors.shape != (n, dim + 1) or vectors.dtype != np.float32 or uncertainty.shape != (n,)
            or uncertainty.dtype != np.float64 or live.shape != (n,) or live.dtype != np.bool_
            or not isinstance(ids, list) or len(ids) != n):
        raise CorruptIndexError(f"{folder}: snapshot arrays do not match the manifest ({n} slots of {dim + 1})")
    try:
        table = VectorTable(dim, vectors, ids, uncertainty, live)
    except ValueError as error:
        raise CorruptIndexError(f"{folder}: {error}") from error
    if len(table) != manifest["live"]:
        raise CorruptIndexError(f"{folder}: {len(table)} live items, the manifest says {manifest['live']}")
    return table
