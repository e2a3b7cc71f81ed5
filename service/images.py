"""Uploaded images, decoded within memory budgets: one at a time, shrunk at once to the model's input.

Decoding is where a small upload becomes large: a flat 170 KB PNG can hold 40 M pixels, 160 MB
as RGBA and twice that while it is resized. Every route that takes images therefore goes
through ``ImageDecoder.prepared``:

1. the request's files are read (their bytes are bounded by the body limit) and each header
   is looked at before any pixel is decoded: one image over ``max_image_pixels``, or all of
   them together over ``max_request_pixels``, is refused (422 / 413);
2. the request reserves its share of the process's budget, ``max_decoding_pixels``: the cost
   of its largest image plus that of its prepared inputs. Requests take turns, oldest first;
   one that waits longer than ``decode_wait_s`` gets 429 with Retry-After;
3. its images are decoded one at a time and each is shrunk at once to the model's input
   (a float32 array [3, S, S], exactly ``models.preprocess.eval_transform``), so no two
   full-size images of a request exist at once; afterwards freed memory is handed back to
   the operating system (glibc keeps it otherwise).

Costs are in "budget pixels" of ``BYTES_PER_BUDGET_PIXEL`` bytes: an image is charged its width
x height times the measured peak of its format (``FORMAT_COST``), a prepared input 3 S^2 float32
values. So whatever the number of requests, image decoding holds at most
``BYTES_PER_BUDGET_PIXEL * max_decoding_pixels`` bytes (tests/reliability/test_image_memory.py
measures it on a real server).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import io
import logging
import math
import warnings
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from fastapi import UploadFile
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from indexer.photos import photo_metadata
from models.preprocess import eval_transform, load_image

from .errors import InvalidImage, PayloadTooLarge, QueueFull
from .limits import Limits

log = logging.getLogger(__name__)

# Peak bytes per pixel of decode + eval transform, measured with Pillow 11 (RGBA PNG: 8.2, as it is
# resized premultiplied; progressive 4:4:4 JPEG: 10.0; lossless RGBA WebP: 15.8, its decoder keeps
# a frame buffer besides the image; 16-bit grey PNG: 5.1; float TIFF: 8.1 with its raw bytes).
BYTES_PER_BUDGET_PIXEL = 9
FORMAT_COST = {"WEBP": 2.0, "JPEG": 1.25, "MPO": 1.25}  # in budget pixels per pixel; others 1
TRIM_AFTER_PIXELS = 1_000_000  # hand freed memory back after decoding at least this many pixels


@dataclass
class PreparedImage:
    """One uploaded image, checked and shrunk to the model's input."""

    filename: str | None
    data: bytes                   # the file as uploaded (stored by collections, sent to remote workers)
    width: int                    # of the decoded image, after EXIF orientation
    height: int
    media_type: str
    pixels: np.ndarray | None     # float32 [3, S, S]: what the model encodes (None when workers decode)
    photo: dict = field(default_factory=dict)  # what its EXIF says (indexer.photos: date, camera, GPS, size)


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    format: str | None


class DecodeBudget:
    """A weighted semaphore of the event loop: charges are granted oldest first, never over capacity."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("the decoding budget must be >= 1 pixel")
        self.capacity = capacity
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, charge: int, timeout_s: float) -> None:
        if charge > self.capacity:
            raise ValueError(f"a charge of {charge} can never fit a budget of {self.capacity}")
        if not self._waiting and self.used + charge <= self.capacity:
            self.used += charge
            return
        granted = asyncio.get_running_loop().create_future()
        entry = (charge, granted)
        self._waiting.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(granted), timeout_s)
        except BaseException:  # timed out, or the request was cancelled (its client left)
            if granted.done() and not granted.cancelled():
                self.release(charge)  # granted just as it gave up: hand it on
            else:
                granted.cancel()
                if entry in self._waiting:
                    self._waiting.remove(entry)
                self._grant()  # it may have been the head that others waited behind
            raise

    def release(self, charge: int) -> None:
        self.used -= charge
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            charge, granted = self._waiting[0]
            if granted.cancelled():
                self._waiting.popleft()
                continue
            if self.used + charge > self.capacity:
                return
            self._waiting.popleft()
            self.used += charge
            granted.set_result(None)


class ImageDecoder:
    """Reads, checks and prepares the images of requests within the configured budgets."""

    def __init__(self, limits: Limits):
        settings = limits.settings
        self.limits = limits
        self.max_image_pixels = settings.max_image_pixels
        self.max_request_pixels = settings.max_request_pixels
        self.decode_wait_s = settings.decode_wait_s
        self.budget = DecodeBudget(settings.max_decoding_pixels)

    @asynccontextmanager
    async def prepared(self, uploads: Sequence[UploadFile], image_size: int | None, names: Sequence[str]
                       ) -> AsyncIterator[list[PreparedImage]]:
        """The uploads decoded and shrunk to ``image_size`` (None: only checked, for remote workers).

        ``names`` label each upload in errors (``labels`` makes them). Use the result inside the
        ``async with`` only: its prepared inputs are charged to the budget until the block ends.
        """
        datas = [await self.limits.read(upload, name) for upload, name in zip(uploads, names, strict=True)]
        headers = await run_in_threadpool(
            lambda: [_header(data, name, self.max_image_pixels) for data, name in zip(datas, names, strict=True)])
        total = sum(h.width * h.height for h in headers)
        if total > self.max_request_pixels:
            raise PayloadTooLarge(f"the images of this request hold {total} pixels together, over the limit of "
                                  f"{self.max_request_pixels} per request")
        decoding = max(math.ceil(h.width * h.height * FORMAT_COST.get(h.format or "", 1.0)) for h in headers)
        held = 0 if image_size is None else len(uploads) * prepared_cost(image_size)
        charge = decoding + held
        if charge > self.budget.capacity:
            raise PayloadTooLarge(f"decoding these images needs {charge} budget pixels at once, over this server's "
                                  f"budget of {self.budget.capacity}; send fewer or smaller images")
        try:
            await self.budget.acquire(charge, self.decode_wait_s)
        except TimeoutError:
            raise QueueFull(f"the server is decoding other images; retry shortly (waited {self.decode_wait_s:g}s "
                            "for room)", retry_after_s=2) from None
        try:
            try:
                prepared = []
                for upload, data, header, name in zip(uploads, datas, headers, names, strict=True):
                    prepared.append(await run_in_threadpool(_prepare, upload.filename, data, header, name,
                                                            self.max_image_pixels, image_size))
            finally:
                self.budget.release(decoding)  # the full-size images are gone; the prepared inputs stay
                charge = held
                if total >= TRIM_AFTER_PIXELS:
                    await run_in_threadpool(release_memory)
            yield prepared
        finally:
            self.budget.release(charge)


def labels(what: str, count: int) -> list[str]:
    """How errors name the uploads of one field: ``file`` for a single one, ``files[i]`` for a list."""
    return [f"{what}[{i}]" for i in range(count)]


def prepared_cost(image_size: int) -> int:
    """Budget pixels held by one prepared input: 3 x S x S float32 values."""
    return math.ceil(3 * 4 * image_size * image_size / BYTES_PER_BUDGET_PIXEL)


def _header(data: bytes, name: str, max_pixels: int) -> _Header:
    """Width, height and format from the file's header, before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height, fmt = image.width, image.height, image.format
    except Image.DecompressionBombError as error:
        raise InvalidImage(f"{name}: {error}") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{name}: not a recognised image format") from None
    except Exception as error:  # noqa: BLE001 - Pillow's plugins raise many kinds on hostile headers
        raise InvalidImage(f"{name}: cannot decode image ({type(error).__name__}: {error})") from None
    if width * height > max_pixels:
        raise InvalidImage(f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    if width < 1 or height < 1:
        raise InvalidImage(f"{name}: the image has no pixels ({width}x{height})")
    return _Header(width, height, fmt)


def _prepare(filename: str | None, data: bytes, header: _Header, name: str, max_pixels: int,
             image_size: int | None) -> PreparedImage:
    from models.preprocess import ImageDecodeError

    try:
        image = load_image(data, max_pixels=max_pixels)  # decoded in full: truncation is found here
        width, height = image.size
        pixels = None if image_size is None else eval_transform(image, image_size)
        photo = photo_metadata(image)  # read from the decoded image, before it goes
    except ImageDecodeError as error:
        raise InvalidImage(f"{name}: {str(error).removeprefix('upload: ')}") from None
    except Exception as error:  # noqa: BLE001 - an odd mode or a decoder's own error: the file's fault
        raise InvalidImage(f"{name}: cannot decode image ({type(error).__name__}: {error})") from None
    finally:
        image = None  # the full-size image goes now, before the next one is decoded
    return PreparedImage(filename=filename, data=data, width=width, height=height,
                         media_type=Image.MIME.get(header.format or "", "application/octet-stream"), pixels=pixels,
                         photo=photo)


M_MMAP_THRESHOLD = -3  # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    return _libc


def configure_allocator() -> None:
    """Serve every allocation of 1 MiB or more from its own mapping, handed back to the OS when freed.

    glibc raises its mmap threshold after large blocks are freed, and from then on serves them
    (Pillow's 16 MB image blocks, decode buffers) from per-thread arenas that keep the memory: a
    server that decoded a few large images stayed gigabytes larger. A fixed threshold stops that.
    """
    libc = _glibc()
    mallopt = getattr(libc, "mallopt", None) if libc else None
    if mallopt is not None and not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        log.warning("could not set the allocator's mmap threshold; freed image memory may stay with the process")


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps freed small blocks in its arenas otherwise)."""
    libc = _glibc()
    trim = getattr(libc, "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)
