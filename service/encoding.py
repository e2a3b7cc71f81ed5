"""The service's view of the encoder: local or remote, behind two batch queues.

``QueryEncoder`` is what routes await. It wraps an ``Encoder`` (in-process) or a
``RemoteEncoder`` (GPU workers over Redis, ``ENCODER=remote``): both offer
``encode_texts`` / ``encode_images`` and the model's ``pair_logit``, ``family``,
``deterministic``, ``embed_dim`` and ``model_id``, so nothing above this module knows which
one runs. A deterministic model's batches have ``logvar`` None: routes that need variances
call ``require_uncertainty``, the rest report uncertainty as null.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from PIL import Image

from models.encoder import GaussianBatch
from models.gaussian import PairLogit

from .batching import BatchQueue
from .errors import NoUncertainty
from .metrics import ServiceMetrics
from .settings import Settings

log = logging.getLogger(__name__)


class EncoderLike(Protocol):
    model_id: str
    pair_logit: PairLogit  # the model's own match logit (models.gaussian.PairLogit)
    family: str  # prolip, pcmepp or clip (models.families)
    deterministic: bool  # True: batches have logvar None (no uncertainty)

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
                        family=settings.model_family,
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
        self.image_queue: BatchQueue[bytes | Image.Image] = BatchQueue("image", encoder.encode_images,
                                                                       self.executor, **options)

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

    async def images(self, images: Sequence[tuple[bytes, Image.Image]]) -> GaussianBatch:
        """Encode uploaded images, each given as (file bytes, decoded image)."""
        return await self.image_queue.submit([data if self.sends_bytes else image for data, image in images])

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def pair_logit(self) -> PairLogit:
        return self.encoder.pair_logit

    @property
    def family(self) -> str:
        return str(getattr(self.encoder, "family", "prolip"))

    @property
    def deterministic(self) -> bool:
        return bool(getattr(self.encoder, "deterministic", False))

    def require_uncertainty(self, what: str) -> None:
        """Refuse (422, code model_without_uncertainty) what needs variances when the model has none."""
        if self.deterministic:
            raise NoUncertainty(f"{what} needs the variances of a probabilistic model, and this service runs a "
                                f"deterministic one ({self.family} model {self.model_id}): it embeds inputs as points, "
                                "without uncertainty")
