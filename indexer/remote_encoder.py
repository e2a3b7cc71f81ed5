"""``RemoteEncoder``: query encodings done by the Redis encoder workers (ENCODER=remote).

Same methods as ``models.encoder.Encoder`` (``encode_texts``, ``encode_images``, and the
``embed_dim`` / ``model_id`` / ``pair_logit`` / ``calibrator`` the service reads), but each
call is a request on ``ns:requests`` answered by whichever worker takes it, on a reply list
the caller waits on with BLPOP. No live worker, no answer within the timeout, or Redis
itself unreachable: ``EncoderUnavailableError``, never a hang. An image a worker cannot
decode comes back as ``ImageDecodeError``, as it would locally.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import redis

from models.calibration import Calibrator
from models.gaussian import GaussianBatch, PairLogit
from models.preprocess import ImageDecodeError, ImageInput

from .errors import IndexerError
from .redis_queue import RedisQueue, connect

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 32 * 1024 * 1024


class EncoderUnavailableError(IndexerError, RuntimeError):
    """No encoder could answer (no live worker, timeout, Redis down, or the encoder failed)."""


# --- reply framing: one JSON header line, then mean and logvar as raw float32 -------------------
# (a deterministic model's reply says so in the header and carries the means only)

def encode_reply(mean: np.ndarray | None = None, logvar: np.ndarray | None = None, error: str | None = None,
                 error_kind: str | None = None) -> bytes:
    if error is not None:
        return json.dumps({"error": error, "kind": error_kind or "encoder"}).encode() + b"\n"
    mean = np.ascontiguousarray(mean, dtype=np.float32)
    header = {"n": mean.shape[0], "dim": mean.shape[1]}
    if logvar is None:
        header["deterministic"] = True
        return json.dumps(header).encode() + b"\n" + mean.tobytes()
    logvar = np.ascontiguousarray(logvar, dtype=np.float32)
    return json.dumps(header).encode() + b"\n" + mean.tobytes() + logvar.tobytes()


def decode_reply(payload: bytes) -> GaussianBatch:
    header_bytes, _, body = payload.partition(b"\n")
    header = json.loads(header_bytes)
    if "error" in header:
        if header.get("kind") == "decode":
            raise ImageDecodeError(header["error"])
        raise EncoderUnavailableError(f"the encoder worker failed: {header['error']}")
    n, dim = int(header["n"]), int(header["dim"])
    deterministic = bool(header.get("deterministic", False))
    values = np.frombuffer(body, dtype=np.float32)
    if values.size != (1 if deterministic else 2) * n * dim:
        raise EncoderUnavailableError(f"malformed reply from an encoder worker ({values.size} values for {n}x{dim})")
    mean = values[:n * dim].reshape(n, dim).copy()        # [n, D]
    logvar = None if deterministic else values[n * dim:].reshape(n, dim).copy()  # [n, D]
    return GaussianBatch(mean, logvar)


def image_bytes(image: ImageInput) -> bytes:
    """What travels for one image: its file bytes as given, or PNG for an in-memory image."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ImageDecodeError(f"{path}: no such file")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageDecodeError(f"{path}: larger than {MAX_IMAGE_BYTES} bytes")
        return path.read_bytes()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class RemoteEncoder:
    """Encodes through the workers on ``redis_url``; a drop-in for ``Encoder`` in the service."""

    def __init__(self, redis_url: str | None = None, *, client: redis.Redis | None = None,
                 namespace: str = "prolip", timeout_s: float = 10.0, batch_size: int = 64,
                 model_id: str | None = None):
        if client is None and redis_url is None:
            raise ValueError("RemoteEncoder needs a redis_url")
        if timeout_s <= 0 or batch_size < 1:
            raise ValueError("timeout_s must be positive and batch_size >= 1")
        self.queue = RedisQueue(client or connect(redis_url), namespace)
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.expected_model_id = model_id
        self._info: dict | None = None
        self._calibrator: tuple[dict, Calibrator | None] | None = None

    # --- what the workers run ---------------------------------------------------------------------

    def worker_info(self, refresh: bool = False) -> dict:
        """The model description a live worker published; EncoderUnavailableError if none is alive."""
        if self._info is not None and not refresh:
            return self._info
        try:
            workers = self.queue.live_workers()
        except redis.RedisError as error:
            raise EncoderUnavailableError(self._explain(error)) from None
        if self.expected_model_id is not None:
            workers = [w for w in workers if w.get("model_id") == self.expected_model_id]
        if not workers:
            wanted = f" running {self.expected_model_id}" if self.expected_model_id else ""
            raise EncoderUnavailableError(f"no live encoder worker{wanted} on queue {self.queue.ns!r}; "
                                          f"start one with `prolip-retrieval worker`")
        self._info = workers[0]
        return self._info

    @property
    def model_id(self) -> str:
        return self.worker_info()["model_id"]

    @property
    def embed_dim(self) -> int:
        return int(self.worker_info()["embed_dim"])

    @property
    def pair_logit(self) -> PairLogit:
        return PairLogit.from_dict(self.worker_info()["pair_logit"])

    @property
    def calibrator(self) -> Calibrator | None:
        """The workers' model's calibrator (the file next to their model), or None."""
        info = self.worker_info()
        cached = self._calibrator
        if cached is None or cached[0] is not info:  # parse once per worker description
            data = info.get("calibration")
            cached = self._calibrator = (info, None if data is None else Calibrator.from_dict(data))
        return cached[1]

    @property
    def image_size(self) -> int:
        return int(self.worker_info()["image_size"])

    @property
    def family(self) -> str:
        """The workers' model family (prolip, pcmepp, clip); "prolip" from workers that predate families."""
        return str(self.worker_info().get("family", "prolip"))

    @property
    def deterministic(self) -> bool:
        return bool(self.worker_info().get("deterministic", False))

    # --- encoding ---------------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> GaussianBatch:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}")
        return self._encode_batches(
            [{"kind": "text", "texts": json.dumps(list(texts[i:i + self.batch_size]))}
             for i in range(0, len(texts), self.batch_size)])

    def encode_images(self, images: Sequence[ImageInput]) -> GaussianBatch:
        """Images (bytes, paths or PIL) -> Gaussians; an undecodable one raises ``ImageDecodeError``."""
        requests = []
        for start in range(0, len(images), self.batch_size):
            part = [image_bytes(image) for image in images[start:start + self.batch_size]]
            fields = {"kind": "image", "count": str(len(part))}
            fields.update({f"image:{i}": data for i, data in enumerate(part)})
            requests.append(fields)
        return self._encode_batches(requests)

    def _encode_batches(self, requests: list[dict]) -> GaussianBatch:
        dim = self.embed_dim  # also fails fast when no worker is alive
        if not requests:
            return GaussianBatch.concat([], dim, self.deterministic)
        try:
            # all batches go out at once, so several workers can answer them in parallel
            deadline = time.monotonic() + self.timeout_s
            pending = [self.queue.submit_request(fields, self.timeout_s) for fields in requests]
            parts = []
            for _, reply_key in pending:
                left = deadline - time.monotonic()
                payload = self.queue.wait_reply(reply_key, left) if left > 0 else None
                if payload is None:
                    for other_id, _ in pending:
                        self.queue.withdraw_request(other_id)  # nobody should work for a caller who left
                    self._info = None
                    raise EncoderUnavailableError(
                        f"no encoder worker answered within {self.timeout_s:g}s (queue {self.queue.ns!r})")
                parts.append(decode_reply(payload))
        except redis.RedisError as error:
            self._info = None
            raise EncoderUnavailableError(self._explain(error)) from None
        return GaussianBatch.concat(parts, dim, self.deterministic)

    def _explain(self, error: redis.RedisError) -> str:
        """Name the real cause: Redis down, or Redis fine and the workers not answering."""
        if not self.queue.reachable():
            return f"cannot reach Redis for the encoder workers: {error}"
        return (f"Redis answers, but the encoder workers did not ({type(error).__name__}: {error}); are workers "
                f"running on queue {self.queue.ns!r}? (`prolip-retrieval worker`)")
