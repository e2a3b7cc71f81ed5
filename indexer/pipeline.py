"""Turning one chunk of planned items into Gaussian embeddings: read -> decode -> encode.

The two halves are separate on purpose. ``ChunkEncoder.prepare`` does all the I/O and
decoding (files, shard members and URLs read concurrently, images decoded and transformed
in a thread pool), and is where per-item failures are found: an unreadable file, a dead
link or a corrupt image fails that item, with its reason, and the rest go on.
``ChunkEncoder.encode`` is a single batched call into the encoder; an exception there
means the encoder itself is in trouble and is raised, never blamed on the items.

The in-process job runner and the Redis workers both use this class, so a chunk gives the
same vectors and the same failures wherever it is encoded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from models.gaussian import GaussianBatch
from models.preprocess import ImageDecodeError, eval_transform, load_image

from .fetch import FetchError, FetchPolicy, fetch_all
from .photos import photo_metadata
from .roots import Confinement, PathNotAllowedError

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEM_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ChunkItem:
    """One planned item as stored: its id and how to read it (see ``indexer.sources``)."""

    item_id: str
    ref: dict


@dataclass
class PreparedChunk:
    """Inputs ready for one encoder call, and the items that failed before it."""

    modality: str
    ids: list[str]
    pixels: np.ndarray | None = None          # float32 [n, 3, S, S] for images
    texts: list[str] | None = None            # for captions
    failures: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason)
    metadata: dict[str, dict] = field(default_factory=dict)  # item id -> what the file says (indexer.photos)


@dataclass
class EncodedChunk:
    """Embeddings of the items that could be encoded, in order, and the failures."""

    ids: list[str]
    mean: np.ndarray            # float32 [n, D], unit norm
    logvar: np.ndarray | None   # float32 [n, D]; None from a deterministic model
    failures: list[tuple[str, str]]
    metadata: dict[str, dict] = field(default_factory=dict)  # item id -> metadata read from the file

    def __post_init__(self):
        shape = self.mean.shape if self.logvar is None else self.logvar.shape
        if self.mean.shape != shape or self.mean.shape[0] != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but mean {self.mean.shape} / logvar {shape}")


def _deterministic(encoder) -> bool:
    """Whether the encoder's model outputs points (no logvar); encoders that predate families do not."""
    return bool(getattr(encoder, "deterministic", False))


class ItemError(Exception):
    """One item cannot be read or decoded; the message is the recorded reason."""


def read_local(ref: dict, confinement: Confinement, max_bytes: int) -> bytes:
    """The bytes of a file or shard member, re-checked against the allowed roots."""
    try:
        if "path" in ref:
            # a regular file inside the roots, judged as opened (a device or FIFO would never end reading)
            with confinement.open_file(ref["path"]) as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > max_bytes:
                    raise ItemError(f"{ref['path']}: {size} bytes exceeds the cap of {max_bytes} bytes")
                # as many bytes as it has (a read of the cap would allocate the whole cap first), one
                # more to see whether it grew since, and then on within the cap
                data = handle.read(size + 1)
                if len(data) > size:
                    data += handle.read(max_bytes + 1 - len(data))
            if len(data) > max_bytes:
                raise ItemError(f"{ref['path']}: exceeds the cap of {max_bytes} bytes")
            return data
        if "tar" in ref:
            size = int(ref["size"])
            if size > max_bytes:
                raise ItemError(f"shard member of {size} bytes exceeds the cap of {max_bytes} bytes")
            with confinement.open_file(ref["tar"]) as shard:
                shard.seek(int(ref["offset"]))
                data = shard.read(size)
            if len(data) != size:
                raise ItemError(f"{ref['tar']}: shard is truncated (member wants {size} bytes, got {len(data)})")
            return data
    except (OSError, PathNotAllowedError) as error:
        raise ItemError(str(error)) from None
    raise ItemError(f"unknown item reference {sorted(ref)}")


class ChunkEncoder:
    """Prepares and encodes chunks with one ``models.encoder.Encoder`` (or anything alike)."""

    def __init__(self, encoder, confinement: Confinement | None = None, fetch_policy: FetchPolicy | None = None,
                 decode_workers: int = 4, max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES):
        self.encoder = encoder
        self.confinement = confinement or Confinement(None)
        self.fetch_policy = fetch_policy or FetchPolicy(max_bytes=max_item_bytes)
        self.max_item_bytes = max_item_bytes
        self._pool = ThreadPoolExecutor(max_workers=max(1, decode_workers), thread_name_prefix="decode")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ChunkEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, modality: str, items: Sequence[ChunkItem]) -> EncodedChunk:
        return self.encode(self.prepare(modality, items))

    # --- read and decode ------------------------------------------------------------------

    def prepare(self, modality: str, items: Sequence[ChunkItem]) -> PreparedChunk:
        if modality == "text":
            return self._prepare_texts(items)
        if modality == "image":
            return self._prepare_images(items)
        raise ValueError(f"unknown modality {modality!r}")

    def _prepare_texts(self, items: Sequence[ChunkItem]) -> PreparedChunk:
        prepared = PreparedChunk("text", ids=[], texts=[])
        for item in items:
            text = item.ref.get("text")
            if not isinstance(text, str) or not text.strip():
                prepared.failures.append((item.item_id, "no caption text"))
                continue
            prepared.ids.append(item.item_id)
            prepared.texts.append(text)
        return prepared

    def _prepare_images(self, items: Sequence[ChunkItem]) -> PreparedChunk:
        size = self.encoder.preprocessor.image_size
        max_pixels = self.encoder.preprocessor.max_pixels
        urls = [item.ref["url"] for item in items if "url" in item.ref]
        fetched = iter(fetch_all(urls, self.fetch_policy))  # concurrently, before any decoding

        def decode(item: ChunkItem, body: bytes | FetchError | None) -> tuple[np.ndarray, dict] | str:
            try:
                if isinstance(body, FetchError):
                    return body.reason
                data = body if body is not None else read_local(item.ref, self.confinement, self.max_item_bytes)
                image = load_image(data, max_pixels)
                return eval_transform(image, size), photo_metadata(image)  # (3, S, S), EXIF date, camera, GPS
            except ItemError as error:
                return str(error)
            except ImageDecodeError as error:
                # decoded from bytes, the message names the input "upload"; the failure list has the location
                return str(error).removeprefix("upload: ")
            except Exception as error:  # noqa: BLE001 - whatever one item raises fails that item, not the job
                log.warning("item %s failed unexpectedly", item.item_id, exc_info=True)
                return f"cannot read or decode ({type(error).__name__}: {error})"

        bodies = [next(fetched) if "url" in item.ref else None for item in items]
        outcomes = list(self._pool.map(decode, items, bodies))
        prepared = PreparedChunk("image", ids=[])
        arrays = []
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, str):
                prepared.failures.append((item.item_id, outcome))
            else:
                prepared.ids.append(item.item_id)
                arrays.append(outcome[0])
                prepared.metadata[item.item_id] = outcome[1]
        prepared.pixels = (np.stack(arrays) if arrays
                           else np.zeros((0, 3, size, size), dtype=np.float32))  # [n, 3, S, S]
        return prepared

    # --- encode -----------------------------------------------------------------------------

    def encode(self, prepared: PreparedChunk) -> EncodedChunk:
        """One batched encoder call. Encoder errors propagate: they are not the items' fault."""
        dim = self.encoder.embed_dim
        if not prepared.ids:
            empty = np.zeros((0, dim), dtype=np.float32)
            return EncodedChunk([], empty, None if _deterministic(self.encoder) else empty.copy(), prepared.failures,
                                prepared.metadata)
        if prepared.modality == "text":
            batch = self.encoder.encode_texts(prepared.texts)  # batches by encoder.batch_size itself
            mean, logvar = batch.mean, batch.logvar
        else:
            step = max(1, int(getattr(self.encoder, "batch_size", len(prepared.ids))))
            parts = [self.encoder.encode_pixels(prepared.pixels[start:start + step])
                     for start in range(0, len(prepared.ids), step)]
            batch = GaussianBatch.concat(parts, dim, _deterministic(self.encoder))
            mean, logvar = batch.mean, batch.logvar  # [n, D] each; logvar None for a deterministic model
        return EncodedChunk(list(prepared.ids), np.asarray(mean, np.float32),
                            None if logvar is None else np.asarray(logvar, np.float32), prepared.failures,
                            prepared.metadata)
