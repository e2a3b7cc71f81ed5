"""Corpus sources: what a job indexes, listed item by item before anything is encoded.

A source is scanned once, when a job is planned, into ``PlannedItem``s (an id, a ``ref``
saying how to read the item later, a human-readable location and metadata) and
``RejectedItem``s (found, but unusable, with the reason). The plan is stored, so a resumed
job reads exactly the items it planned, whatever happened to the source since.

Formats:
* ``directory``: image files under a folder, recursively, in sorted order; id = the path
  relative to the folder. Hidden files and symlinked folders are skipped.
* ``csv`` / ``jsonl``: a manifest, one item per row: ``id``, an image (a path, relative
  to the manifest's folder, or an http(s) URL) and/or a caption, ``metadata`` (a JSON
  object) and any other columns (kept as metadata).
* ``webdataset``: tar shards (``shards-{000..009}.tar``, a glob or one file); samples are
  grouped by key (the member name up to its first dot): an image member, ``.txt`` caption
  and ``.json`` metadata. Items are read later straight from their offset in the shard.

Refs: ``{"path": p, "stat": [bytes, mtime_ns]}``, ``{"url": u}``, ``{"tar": shard, "offset": o,
"size": n, "stat": [shard bytes, shard mtime_ns]}`` or ``{"text": caption}``. Two plans of the
same source give equal refs for an item exactly when it was not changed in between, as far as
can be told without reading it (a URL is taken to be unchanged), which is how a re-run skips
what an earlier completed job indexed already.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from models.patterns import BRACES, expand, is_pattern
from models.preprocess import decodable_extensions

from .config import MAX_ID_BYTES
from .errors import InvalidInputError
from .fetch import check_url, is_url
from .roots import Confinement, PathNotAllowedError

log = logging.getLogger(__name__)

FORMATS = ("directory", "csv", "jsonl", "webdataset")
MODALITIES = ("image", "text")
# what models.preprocess decodes (HEIC/HEIF through pillow-heif, AVIF through Pillow)
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm",
                              "heic", "heif", "avif"})
# Files people keep pictures in. A folder's files of these kinds are indexed when this installation
# can decode them (``models.preprocess.decodable_extensions``: a decoder plugin such as pillow-heif
# counts as soon as it is registered) and otherwise listed as failed with the reason, never skipped.
KNOWN_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS | {
    "jfif", "jpe", "apng", "hif", "jxl", "jp2", "j2k", "jpx", "psd", "ico", "tga", "qoi",
    "dng", "cr2", "cr3", "nef", "arw", "raf", "orf", "rw2", "svg"}
CAPTION_EXTENSIONS = ("txt", "text", "caption")
ID_FIELDS = ("id", "key")
IMAGE_FIELDS = ("image", "path", "url", "image_path", "image_url", "filepath", "file")
CAPTION_FIELDS = ("caption", "text", "title")
MAX_SIDECAR_BYTES = 1024 * 1024  # .txt / .json members of a shard; anything larger is not a caption


@dataclass
class PlannedItem:
    item_id: str
    ref: dict
    location: str
    metadata: dict = field(default_factory=dict)


@dataclass
class RejectedItem:
    item_id: str | None
    location: str
    reason: str


ScanResult = PlannedItem | RejectedItem


class SourceError(InvalidInputError):
    """The source as a whole cannot be read (missing, wrong format, not UTF-8 ...)."""


class SourceNotFoundError(SourceError):
    """Nothing exists where the source points (the service answers 404, as for any unknown name)."""


def names_shards(source: str) -> bool:
    """Whether a source string names WebDataset shards (a pattern or a .tar), judged without the filesystem."""
    return _is_shard_pattern(source) or source.lower().endswith(".tar")


def detect_format(source: str) -> str:
    """The format of a source string, judged from what it names."""
    if names_shards(source):
        return "webdataset"
    path = Path(source).expanduser()
    if path.is_dir():
        return "directory"
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if not path.exists():
        raise SourceNotFoundError(f"source {source!r} does not exist")
    raise SourceError(f"cannot tell the format of {source!r}: expected a folder of images, a .csv/.tsv or "
                      f".jsonl manifest, or .tar WebDataset shards (or pass the format explicitly)")


def default_modality(source: str, fmt: str) -> str:
    """What a new collection built from this source holds: images, unless a manifest has none."""
    if fmt != "csv" and fmt != "jsonl":
        return "image"
    return "image" if _manifest_keys(source, fmt) & set(IMAGE_FIELDS) else "text"


def _manifest_keys(source: str, fmt: str) -> set[str]:
    """The column names of a csv manifest, or the keys of a jsonl manifest's first object."""
    path = Path(source).expanduser()
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if fmt == "csv":
                header = next(csv.reader(handle, delimiter=_delimiter(path)), [])
                return {name.strip().lower() for name in header}
            for line in itertools.islice(handle, 100):
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    return {str(k).lower() for k in row}
    except (UnicodeDecodeError, csv.Error):
        pass  # planning reports it, row by row or for the whole file
    return set()


def check_source_fits(name: str, holds: str | None, modality: str | None, source: str, fmt: str) -> None:
    """InvalidInputError when ``source`` cannot fill collection ``name`` (which ``holds`` images or texts,
    None: it does not exist yet) as ``modality`` (None: what the collection or the source suggests)."""
    if modality is not None and holds is not None and holds != modality:
        raise InvalidInputError(f"collection {name!r} holds {holds}s, not {modality}s")
    wanted = modality or holds or default_modality(source, fmt)
    gives, described = source_modalities(source, fmt)
    if wanted not in gives:
        where = f"collection {name!r} holds {wanted}s" if holds else f"a {wanted} collection was asked for"
        kind = "images" if wanted == "image" else "captions"
        raise InvalidInputError(f"{where}, but {source} is {described}: it has no {kind}; index it into a "
                                f"{'text' if wanted == 'image' else 'image'} collection instead")


def source_modalities(source: str, fmt: str) -> tuple[set[str], str]:
    """What a source can give (a subset of MODALITIES), judged from a glance at it, and what it holds in words.

    A folder gives images; a manifest images when it has an image column and captions when it has a
    caption column; shards what their first members are. When a glance cannot tell, both.
    """
    if fmt == "directory":
        return {"image"}, "a folder of images"
    if fmt in ("csv", "jsonl"):
        keys = _manifest_keys(source, fmt)
        if not keys:
            return set(MODALITIES), "a manifest"
        found = ({"image"} if keys & set(IMAGE_FIELDS) else set()) | ({"text"} if keys & set(CAPTION_FIELDS) else set())
        return found, f"a manifest with the columns {', '.join(sorted(keys))}"
    try:
        first = expand_shards(source)[0]
        with tarfile.open(Path(first).expanduser(), mode="r:") as tar:
            exts = {_split_key(member.name)[1] for member in itertools.islice(tar, 64) if member.isfile()}
    except (OSError, tarfile.TarError, SourceError, IndexError):
        return set(MODALITIES), "WebDataset shards"
    found = ({"image"} if exts & KNOWN_IMAGE_EXTENSIONS else set()) | (
        {"text"} if exts & set(CAPTION_EXTENSIONS) else set())
    return found or set(MODALITIES), f"WebDataset shards whose members are .{', .'.join(sorted(exts))}"


def scan(source: str, fmt: str, modality: str, confinement: Confinement) -> Iterator[ScanResult]:
    """Every item of ``source``, in a stable order, planned or rejected with its reason.

    Raises ``SourceError`` / ``PathNotAllowedError`` when the source itself is unusable.
    Duplicate ids are rejected (the first occurrence wins), so no item is indexed twice.
    """
    if fmt not in FORMATS:
        raise SourceError(f"unknown source format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if modality not in MODALITIES:
        raise SourceError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
    if fmt == "directory":
        if modality != "image":
            raise SourceError("a folder source holds images; index captions from a csv/jsonl manifest or "
                              "WebDataset shards with .txt members")
        items = _scan_directory(source, confinement)
    elif fmt == "csv":
        items = _scan_manifest(source, modality, confinement, _csv_rows)
    elif fmt == "jsonl":
        items = _scan_manifest(source, modality, confinement, _jsonl_rows)
    else:
        items = _scan_webdataset(source, modality, confinement)
    yield from _reject_duplicates(items)


def _reject_duplicates(items: Iterator[ScanResult]) -> Iterator[ScanResult]:
    first_seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, PlannedItem):
            if item.item_id in first_seen:
                yield RejectedItem(item.item_id, item.location,
                                   f"duplicate id (first seen at {first_seen[item.item_id]})")
                continue
            first_seen[item.item_id] = item.location
        yield item


def unsupported(extension: str) -> str:
    """The reason recorded for an image of a format this installation cannot decode."""
    return (f"unsupported image format .{extension}: no decoder for it is installed (Pillow, and its plugins "
            "registered here, cannot open it)")


def _stat(real: Path) -> list[int]:
    """[bytes, mtime_ns] of a file: what tells, without reading it, that it changed."""
    try:
        info = real.stat()
    except OSError as error:
        raise FileNotFoundError(f"{real}: {error.strerror or error}") from None
    return [info.st_size, info.st_mtime_ns]


def _check_id(value: object) -> str:
    text = "" if value is None else str(value).strip()
    if not text:
        raise ValueError("empty id")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError(f"id longer than {MAX_ID_BYTES} bytes")
    return text


# --- folders of images -------------------------------------------------------------------

def _scan_directory(source: str, confinement: Confinement) -> Iterator[ScanResult]:
    root = confinement.resolve(source)
    if not root.is_dir():
        raise SourceError(f"{source} is not a folder")
    decodable = decodable_extensions()
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        # sorted in place, so os.walk descends in a stable order; hidden folders pruned
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if name.startswith(".") or extension not in KNOWN_IMAGE_EXTENSIONS:
                continue
            path = Path(folder) / name
            item_id = path.relative_to(root).as_posix()
            if extension not in decodable:
                yield RejectedItem(item_id, str(path), unsupported(extension))
                continue
            try:
                found = os.lstat(path)
                if stat.S_ISLNK(found.st_mode):  # a symlinked file may lead anywhere: judged by its target
                    recorded = _stat(confinement.resolve(path))
                else:  # os.walk does not follow links from the resolved root: the path is its real path
                    recorded = [found.st_size, found.st_mtime_ns]
                ref = {"path": str(path), "stat": recorded}
            except (PathNotAllowedError, FileNotFoundError) as error:
                yield RejectedItem(item_id, str(path), str(error))
                continue
            except OSError as error:  # gone or unreadable since the listing
                yield RejectedItem(item_id, str(path), f"{path}: {error.strerror or error}")
                continue
            yield PlannedItem(item_id, ref, str(path), {"path": item_id})


# --- manifests -------------------------------------------------------------------------

def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _csv_rows(path: Path) -> Iterator[tuple[int, dict | str]]:
    """(line number, row dict or the reason it is unreadable)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=_delimiter(path))
            if reader.fieldnames is None:
                return
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as error:
                    yield reader.line_num, f"unreadable CSV row ({error})"
                    continue
                extra = row.pop(None, None)
                if extra:
                    yield reader.line_num, f"row has {len(extra)} more fields than the header"
                    continue
                row = {str(k).strip().lower(): v for k, v in row.items() if k is not None and v not in (None, "")}
                yield reader.line_num, row
    except UnicodeDecodeError as error:
        raise SourceError(f"{path} is not UTF-8 text ({error})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | str]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig"))
            except UnicodeDecodeError:
                yield number, "line is not UTF-8 text"
                continue
            except ValueError as error:
                yield number, f"invalid JSON ({error})"
                continue
            if not isinstance(row, dict):
                yield number, f"expected a JSON object, got {type(row).__name__}"
                continue
            yield number, {str(k).lower(): v for k, v in row.items() if v is not None}


def _first(row: dict, names: tuple[str, ...]) -> tuple[str | None, object]:
    for name in names:
        if name in row:
            return name, row[name]
    return None, None


def _scan_manifest(source: str, modality: str, confinement: Confinement, rows) -> Iterator[ScanResult]:
    manifest = confinement.resolve(source)
    if not manifest.is_file():
        raise SourceError(f"{source} is not a file")
    base = Path(source).expanduser().absolute().parent  # relative paths are relative to the manifest
    for line, row in rows(manifest):
        location = f"{manifest.name}:{line}"
        if isinstance(row, str):
            yield RejectedItem(None, location, row)
            continue
        try:
            yield _manifest_item(row, modality, base, location, confinement)
        except (ValueError, FileNotFoundError) as error:
            id_field, raw_id = _first(row, ID_FIELDS)
            yield RejectedItem(str(raw_id) if id_field else None, location, str(error))


def _manifest_item(row: dict, modality: str, base: Path, location: str, confinement: Confinement) -> PlannedItem:
    id_field, raw_id = _first(row, ID_FIELDS)
    image_field, image = _first(row, IMAGE_FIELDS)
    caption_field, caption = _first(row, CAPTION_FIELDS)
    metadata = row.pop("metadata", None)
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError as error:
            raise ValueError(f"metadata is not valid JSON ({error})") from None
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    used = {id_field, image_field, caption_field}
    extra = {k: v for k, v in row.items() if k not in used}
    metadata = {**extra, **metadata}
    if image is not None and not isinstance(image, str):
        raise ValueError(f"{image_field} must be a string")
    if caption is not None and not isinstance(caption, str):
        raise ValueError(f"{caption_field} must be a string")

    if modality == "image":
        if not image:
            raise ValueError(f"no image ({' / '.join(IMAGE_FIELDS)}) in this row")
        if is_url(image):
            ref, where = {"url": check_url(image)}, image
            metadata.setdefault("url", image)
        else:
            path = Path(image).expanduser()
            path = path if path.is_absolute() else base / path
            extension = path.name.rsplit(".", 1)[-1].lower() if "." in path.name else ""
            if extension in KNOWN_IMAGE_EXTENSIONS and extension not in decodable_extensions():
                raise ValueError(unsupported(extension))
            ref, where = {"path": str(path), "stat": _stat(confinement.resolve(path))}, str(path)
            metadata.setdefault("path", image)
        if caption:
            metadata.setdefault("caption", caption)
        item_id = _check_id(raw_id if id_field else image)
    else:
        if not caption or not caption.strip():
            raise ValueError(f"no caption ({' / '.join(CAPTION_FIELDS)}) in this row")
        ref, where = {"text": caption}, location
        metadata.setdefault("text", caption)
        if image:
            metadata.setdefault("image", image)
        item_id = _check_id(raw_id if id_field else location)
    return PlannedItem(item_id, ref, where, metadata)


# --- WebDataset shards ---------------------------------------------------------------------

def _is_shard_pattern(source: str) -> bool:
    return bool(BRACES.search(source)) or (is_pattern(source) and ".tar" in source.lower())


def expand_shards(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar; globs are expanded and sorted."""
    try:
        return expand(pattern)
    except FileNotFoundError:
        raise SourceNotFoundError(f"no shard matches {pattern!r}") from None
    except ValueError as error:
        raise SourceError(f"shard {error}") from None


def _split_key(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _scan_webdataset(source: str, modality: str, confinement: Confinement) -> Iterator[ScanResult]:
    for shard in expand_shards(source):
        real = confinement.resolve(shard)
        recorded = _stat(real)
        try:
            tar = tarfile.open(real, mode="r:")  # plain tar only: items are read back by offset
        except tarfile.ReadError as error:
            raise SourceError(f"{shard}: not a plain (uncompressed) tar shard ({error})") from None
        with tar:
            samples: dict[str, dict[str, tarfile.TarInfo]] = {}
            for member in tar:
                if member.isfile():
                    key, ext = _split_key(member.name)
                    samples.setdefault(key, {})[ext] = member
            for key, members in samples.items():
                yield _shard_item(tar, str(shard), key, members, modality, recorded)


def _shard_item(tar: tarfile.TarFile, shard: str, key: str, members: dict[str, tarfile.TarInfo],
                modality: str, shard_stat: list[int]) -> ScanResult:
    location = f"{shard}#{key}"
    metadata: dict = {"shard": os.path.basename(shard)}
    try:
        if "json" in members:
            loaded = json.loads(_read_sidecar(tar, members["json"]))
            if not isinstance(loaded, dict):
                raise ValueError(f"{key}.json is not a JSON object")
            metadata.update(loaded)
        caption = next((_read_sidecar(tar, members[e]).decode("utf-8").strip()
                        for e in CAPTION_EXTENSIONS if e in members), None)
        item_id = _check_id(key)
    except (ValueError, UnicodeDecodeError) as error:
        return RejectedItem(key, location, f"unreadable sample ({error})")
    image_ext = next((e for e in members if e in KNOWN_IMAGE_EXTENSIONS), None)
    image = members[image_ext] if image_ext is not None else None
    if modality == "image":
        if image is None:
            return RejectedItem(key, location, "sample has no image member")
        if image_ext not in decodable_extensions():
            return RejectedItem(key, location, unsupported(image_ext))
        if image.issparse():
            return RejectedItem(key, location, "sparse tar members are not supported")
        if caption:
            metadata["caption"] = caption
        ref = {"tar": shard, "offset": image.offset_data, "size": image.size, "stat": shard_stat}
        return PlannedItem(item_id, ref, location, metadata)
    if not caption:
        return RejectedItem(key, location, "sample has no caption (.txt) member")
    metadata["text"] = caption
    return PlannedItem(item_id, {"text": caption}, location, metadata)


def _read_sidecar(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > MAX_SIDECAR_BYTES:
        raise ValueError(f"{member.name} is larger than {MAX_SIDECAR_BYTES} bytes")
    handle = tar.extractfile(member)
    return handle.read() if handle else b""
