"""The service's view of the encoder: local or remote, behind two batch queues.

``QueryEncoder`` is what routes await. It wraps an ``Encoder`` (in-process) or a
``RemoteEncoder`` (GPU workers over Redis, ``ENCODER=remote``): both offer
``encode_texts`` / ``encode_images`` and the model's ``logit_scale``, ``logit_bias``,
``embed_dim`` and ``model_id``, so nothing above this module knows which one runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from models.encoder import GaussianBatch

from .batching import BatchQueue
from .images import PreparedImage
from .metrics import ServiceMetrics
from .settings import Settings

log = logging.getLogger(__name__)


class EncoderLike(Protocol):
    model_id: str
    logit_scale: float
    logit_bias: float

    @property
    def embed_dim(self) -> int: ...

    def encode_texts(self, texts: Sequence[str]) -> GaussianBatch: ...

    def encode_images(self, images: Sequence[Any]) -> GaussianBatch: ...


def load_encoder(settings: Settings) -> EncoderLike:
    """The encoder the settings ask for (this loads the model when it is local)."""
    if settings.encoder == "remote":
        from indexer.remote_encoder import RemoteEncoder

        log.info("encoder: remote workers via %s", settings.redis_url)
        return RemoteEncoder(settings.redis_url, batch_size=settings.encoder_batch_size,
                             timeout_s=settings.remote_timeout_s)
    from models.encoder import Encoder

    return Encoder.load(settings.model_source, backend=settings.backend, device=settings.device,
                        dtype=settings.dtype, batch_size=settings.encoder_batch_size)


def _in_flight(metrics: ServiceMetrics | None):
    return None if metrics is None else (lambda: metrics.in_flight)


class QueryEncoder:
    """Awaitable text and image encoding with dynamic batching over one encoder thread."""

    def __init__(self, encoder: EncoderLike, *, batching: bool = True, max_batch_size: int = 32,
                 max_wait_s: float = 0.002, max_queue: int = 256, metrics: ServiceMetrics | None = None):
        self.encoder = encoder
        # A local encoder takes the decoded image; a remote one is sent the uploaded file's
        # bytes as they are (re-encoding a decoded photo for the wire would cost more).
        self.sends_bytes = not hasattr(encoder, "preprocessor")
        # One thread: the model is one resource, and torch already uses every core per call.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        options = dict(max_batch_size=max_batch_size, max_wait_s=max_wait_s, max_queue=max_queue,
                       batching=batching, metrics=metrics, in_flight=_in_flight(metrics))
        self.text_queue: BatchQueue[str] = BatchQueue("text", encoder.encode_texts, self.executor, **options)
        self.image_queue: BatchQueue[bytes | np.ndarray] = BatchQueue("image", self._encode_images, self.executor,
                                                                      **options)

    @classmethod
    def from_settings(cls, encoder: EncoderLike, settings: Settings, metrics: ServiceMetrics | None = None
                      ) -> QueryEncoder:
        return cls(encoder, batching=settings.batching, max_batch_size=settings.max_batch_size,
                   max_wait_s=settings.max_wait_ms / 1000.0, max_queue=settings.max_queue, metrics=metrics)

    async def start(self) -> None:
        await self.text_queue.start()
        await self.image_queue.start()

    async def stop(self) -> None:
        await self.text_queue.stop()
        await self.image_queue.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def texts(self, texts: Sequence[str]) -> GaussianBatch:
        return await self.text_queue.submit(texts)

    async def images(self, images: Sequence[PreparedImage]) -> GaussianBatch:
        """Encode uploaded images, prepared by ``service.images`` (shrunk to the model's input)."""
        return await self.image_queue.submit([image.data if self.sends_bytes else image.pixels for image in images])

    def _encode_images(self, inputs: list[bytes | np.ndarray]) -> GaussianBatch:
        """One batch of inputs: file bytes for remote workers, else prepared pixels [3, S, S]."""
        if self.sends_bytes:
            return self.encoder.encode_images(inputs)
        step = max(1, int(getattr(self.encoder, "batch_size", len(inputs))))
        parts = [self.encoder.encode_pixels(np.stack(inputs[start:start + step]))
                 for start in range(0, len(inputs), step)]
        return GaussianBatch.concat(parts, self.encoder.embed_dim)

    @property
    def image_size(self) -> int | None:
        """The side of the model's square input when images are encoded here; None when workers decode them."""
        if self.sends_bytes:
            return None
        return int(self.encoder.preprocessor.image_size)

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def logit_scale(self) -> float:
        return float(self.encoder.logit_scale)

    @property
    def logit_bias(self) -> float:
        return float(self.encoder.logit_bias)
