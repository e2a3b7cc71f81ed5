"""Training data: (image, caption) pairs from manifests or tar shards, in a resumable order.

Sources, mixed freely:

* a JSONL manifest, one object per line with ``image`` (path, relative to the manifest's
  folder unless absolute) and ``caption``, and optionally ``broader``: a list of captions
  that describe the same image more generally (a caption hierarchy; for the
  broader-inclusion loss; each batch row takes one of them);
* a CSV manifest with a header naming an image column (image / filepath / path) and a
  caption column (caption / title / text);
* WebDataset-style tar shards (or a folder of them): members sharing a key form a sample,
  an image (jpg / jpeg / png / webp) plus a caption (``.txt``, or ``.json`` with "caption").
  Shards are indexed once (member offsets), then read by seeking, so any sample can be
  fetched in any order.

Bad rows never stop a run: empty captions and malformed rows are dropped while indexing,
missing or undecodable images when read; each kind is counted (``skipped``) and logged.

``PairStream`` deals each process its share of a seeded per-epoch permutation and keeps a
cursor, so a checkpoint of (epoch, cursor, skipped) resumes the exact same order.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..patterns import expand, is_pattern
from ..preprocess import ImageDecodeError, ImagePreprocessor, load_image
from ..tokenizer import Tokenizer

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
IMAGE_COLUMNS = ("image", "filepath", "path")
CAPTION_COLUMNS = ("caption", "title", "text")


@dataclass(frozen=True)
class PairRef:
    """Where one pair's image lives: a file path, or (shard index, byte offset, size) in a tar."""

    caption: str
    path: str | None = None
    broader: tuple[str, ...] = ()  # more general captions of the same image (manifest rows only)
    shard: int = -1
    offset: int = 0
    size: int = 0


def _expanded(source: str) -> list[str]:
    """A source as given, or the shards its pattern names (``train-{000..002}.tar``, ``shards/*.tar``)."""
    if not is_pattern(source):
        return [source]
    try:
        return expand(source)
    except FileNotFoundError:
        raise FileNotFoundError(f"training data {source}: no file matches the pattern") from None
    except ValueError as error:
        raise ValueError(f"training data {source}: {error}") from None


class PairIndex:
    """All usable (image, caption) references of the given sources, plus what was dropped."""

    def __init__(self, sources: Iterable[str | os.PathLike]):
        sources = [Path(path) for source in sources for path in _expanded(str(source))]
        self.refs: list[PairRef] = []
        self.shards: list[Path] = []
        self.skipped: Counter[str] = Counter()
        self._handles: dict[int, object] = {}
        for source in sources:
            self._add(source)
        if self.skipped:
            log.warning("dropped while indexing: %s", dict(self.skipped))
        if not self.refs:
            raise ValueError(f"no usable (image, caption) pairs in {[str(s) for s in sources]}")
        log.info("indexed %d pairs from %d source(s)", len(self.refs), len(sources))

    def __len__(self) -> int:
        return len(self.refs)

    # -- indexing -------------------------------------------------------------------------
    def _add(self, source: Path) -> None:
        if source.is_dir():
            shards = sorted(source.glob("*.tar"))
            if not shards:
                raise ValueError(f"data folder {source} holds no .tar shards")
            for shard in shards:
                self._add_shard(shard)
        elif not source.is_file():
            raise FileNotFoundError(f"training data {source} does not exist")
        elif source.suffix == ".jsonl":
            self._add_jsonl(source)
        elif source.suffix == ".csv":
            self._add_csv(source)
        elif source.suffix == ".tar":
            self._add_shard(source)
        else:
            raise ValueError(f"training data {source}: expected a .jsonl or .csv manifest, a .tar shard or a folder")

    def _add_row(self, image: object, caption: object, base: Path, broader: object = None) -> None:
        if not isinstance(image, str) or not image.strip():
            self.skipped["no image path"] += 1
            return
        if not isinstance(caption, str) or not caption.strip():
            self.skipped["empty caption"] += 1
            return
        if broader is not None and not (isinstance(broader, list) and all(isinstance(b, str) for b in broader)):
            self.skipped["malformed broader captions"] += 1
            return
        path = Path(image)
        self.refs.append(PairRef(caption.strip(), str(path if path.is_absolute() else base / path),
                                 broader=tuple(b.strip() for b in broader or () if b.strip())))

    def _add_jsonl(self, manifest: Path) -> None:
        with open(manifest, encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    self.skipped["malformed row"] += 1
                    continue
                if not isinstance(row, dict):
                    self.skipped["malformed row"] += 1
                    continue
                self._add_row(row.get("image"), row.get("caption"), manifest.parent, row.get("broader"))

    def _add_csv(self, manifest: Path) -> None:
        with open(manifest, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            image_col = next((c for c in IMAGE_COLUMNS if c in columns), None)
            caption_col = next((c for c in CAPTION_COLUMNS if c in columns), None)
            if image_col is None or caption_col is None:
                raise ValueError(f"{manifest}: the header {columns} needs an image column ({'/'.join(IMAGE_COLUMNS)})"
                                 f" and a caption column ({'/'.join(CAPTION_COLUMNS)})")
            for row in reader:
                self._add_row(row.get(image_col), row.get(caption_col), manifest.parent)

    def _add_shard(self, shard: Path) -> None:
        shard_id = len(self.shards)
        self.shards.append(shard)
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            tar = tarfile.open(shard, "r:")
        except (tarfile.TarError, OSError) as error:
            log.warning("shard %s is unreadable (%s); skipped", shard, error)
            self.skipped["unreadable shard"] += 1
            return
        with tar:
            try:
                for info in tar:
                    if not info.isfile():
                        continue
                    name = info.name.rsplit("/", 1)[-1]
                    key, _, ext = name.partition(".")
                    members.setdefault(str(Path(info.name).parent / key), {})[ext.lower()] = info
            except (tarfile.TarError, OSError) as error:
                # a truncated shard keeps the samples read before the damage
                log.warning("shard %s is damaged (%s); keeping the samples before the damage", shard, error)
                self.skipped["damaged shard"] += 1
            captions = {key: self._shard_caption(tar, parts) for key, parts in members.items()}
        for key, parts in members.items():
            image = next((parts[ext] for ext in IMAGE_EXTENSIONS if ext in parts), None)
            caption = captions.get(key)
            if image is None:
                self.skipped["no image in sample"] += 1
            elif not caption:
                self.skipped["empty caption"] += 1
            else:
                self.refs.append(PairRef(caption, shard=shard_id, offset=image.offset_data, size=image.size))

    def _shard_caption(self, tar: tarfile.TarFile, parts: dict[str, tarfile.TarInfo]) -> str | None:
        try:
            if "txt" in parts:
                return tar.extractfile(parts["txt"]).read().decode("utf-8").strip()
            if "json" in parts:
                caption = json.loads(tar.extractfile(parts["json"]).read()).get("caption")
                return caption.strip() if isinstance(caption, str) else None
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, tarfile.TarError, OSError):
            return None
        return None

    # -- reading --------------------------------------------------------------------------
    def read_image(self, ref: PairRef):
        """Decode a reference's image; raises ImageDecodeError (missing, truncated, not an image)."""
        if ref.path is not None:
            return load_image(ref.path)
        handle = self._handles.get(ref.shard)
        if handle is None:
            handle = self._handles[ref.shard] = open(self.shards[ref.shard], "rb")  # noqa: SIM115 - kept open
        handle.seek(ref.offset)
        return load_image(handle.read(ref.size))

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


@dataclass
class Batch:
    pixels: torch.Tensor  # [B, 3, S, S] float32
    input_ids: torch.Tensor  # [B, L] int64
    broader_rows: torch.Tensor  # [N] int64: rows that have a broader caption
    broader_ids: torch.Tensor  # [N, L] int64: one broader caption for each of those rows


class PairStream:
    """This process's endless, seeded, resumable stream of decoded batches.

    Epoch ``e`` visits ``permutation(seed, e)[rank::world_size]``; ``state_dict`` is the
    (epoch, cursor) position plus the skip counts, all a resume needs.
    """

    def __init__(self, index: PairIndex, preprocessor: ImagePreprocessor, tokenizer: Tokenizer,
                 seed: int, rank: int = 0, world_size: int = 1):
        if len(index) < world_size:
            raise ValueError(f"{len(index)} pairs cannot feed {world_size} processes")
        self.index = index
        self.preprocessor = preprocessor
        self.tokenizer = tokenizer
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.cursor = 0
        self.skipped: Counter[str] = Counter()
        self._order: np.ndarray | None = None

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            permutation = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.index))
            self._order = permutation[self.rank::self.world_size]
        return self._order

    def _advance(self) -> tuple[PairRef, int]:
        """The next reference and a draw number unique to this visit (picks its broader caption)."""
        order = self._epoch_order()
        ref = self.index.refs[int(order[self.cursor])]
        draw = self.epoch * len(order) + self.cursor
        self.cursor += 1
        if self.cursor == len(order):
            self.epoch, self.cursor, self._order = self.epoch + 1, 0, None
        return ref, draw

    def next_batch(self, size: int) -> Batch:
        """The next ``size`` readable pairs, with a broader caption for the rows that have some."""
        images, captions, broader, failures = [], [], [], 0
        per_epoch = len(self._epoch_order())
        while len(images) < size:
            ref, draw = self._advance()
            try:
                images.append(self.preprocessor.array([self.index.read_image(ref)])[0])
            except ImageDecodeError as error:
                reason = "missing image" if "no such file" in str(error) else "undecodable image"
                self.skipped[reason] += 1
                log.warning("skipping pair (%s): %s", reason, error)
                failures += 1
                if failures > per_epoch:
                    raise RuntimeError("no readable image in a whole epoch of training data") from error
                continue
            captions.append(ref.caption)
            # a fixed function of the visit, so a resumed run picks the same broader caption
            broader.append(ref.broader[_spread(draw) % len(ref.broader)] if ref.broader else None)
        rows = [row for row, text in enumerate(broader) if text is not None]
        input_ids = self.tokenizer(captions)  # (B, L)
        broader_ids = (self.tokenizer([broader[row] for row in rows]) if rows
                       else input_ids.new_zeros((0, input_ids.shape[1])))
        return Batch(torch.from_numpy(np.stack(images)), input_ids, torch.tensor(rows, dtype=torch.long), broader_ids)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "skipped": dict(self.skipped)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.skipped = Counter(state.get("skipped", {}))
        self._order = None


def _spread(draw: int) -> int:
    """Knuth's multiplicative hash: consecutive visits of a row pick different broader captions."""
    return (draw * 2654435761) % 2**32
