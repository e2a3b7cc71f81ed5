"""The service's view of the encoder: local or remote, behind two batch queues.

``QueryEncoder`` is what routes await. It wraps an ``Encoder`` (in-process) or a
``RemoteEncoder`` (GPU workers over Redis, ``ENCODER=remote``): both offer
``encode_texts`` / ``encode_images`` and the model's ``pair_logit``, ``calibrator``, ``family``,
``deterministic``, ``embed_dim`` and ``model_id``, so nothing above this module knows which
one runs. A deterministic model's batches have ``logvar`` None: routes that need variances
call ``require_uncertainty``, the rest report uncertainty as null.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from models.calibration import Calibrator
from models.encoder import GaussianBatch
from models.gaussian import PairLogit

from .batching import BatchPolicy, BatchQueue
from .errors import NoUncertainty
from .images import PreparedImage
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
                        family=settings.model_family, dtype=settings.dtype, batch_size=settings.encoder_batch_size,
                        calibration=settings.calibration)


def _in_flight(metrics: ServiceMetrics | None):
    return None if metrics is None else (lambda: metrics.in_flight)


def policy_from_settings(settings: Settings, max_in_flight: int = 1) -> BatchPolicy:
    return BatchPolicy(batching=settings.batching, max_batch_size=settings.max_batch_size,
                       max_wait_s=settings.max_wait_ms / 1000.0, latency_budget_s=settings.latency_budget_ms / 1000.0,
                       max_in_flight=max_in_flight, max_queue=settings.max_queue,
                       deadline_s=settings.deadline_ms / 1000.0)


def encoder_batches_in_flight(settings: Settings) -> int:
    """Batches the encoder runs at once: more only where a call leaves cores idle or releases the GIL."""
    if settings.encoder_batches_in_flight is not None:
        return settings.encoder_batches_in_flight
    if settings.encoder == "remote":
        return 4  # the work is on other machines; here it is waiting
    return 2 if settings.backend == "onnx" else 1


class QueryEncoder:
    """Awaitable text and image encoding with dynamic batching over the encoder's threads."""

    def __init__(self, encoder: EncoderLike, *, policy: BatchPolicy | None = None,
                 metrics: ServiceMetrics | None = None, calibrator: Calibrator | None = None, **options: Any):
        """``options``: ``BatchPolicy`` fields overriding ``policy`` (e.g. ``batching=False``)."""
        self.encoder = encoder
        # P(text true of image): the given one, else the encoder's own (calibration.json next to the model)
        self._calibrator = calibrator
        # A local encoder takes the decoded image; a remote one is sent the uploaded file's
        # bytes as they are (re-encoding a decoded photo for the wire would cost more).
        self.sends_bytes = not hasattr(encoder, "preprocessor")
        policy = BatchPolicy(**{**(policy or BatchPolicy()).__dict__, **options})
        # One thread per batch in flight: with torch one (the model is one resource, and torch
        # already uses every core per call).
        self.executor = ThreadPoolExecutor(max_workers=policy.max_in_flight, thread_name_prefix="encoder")
        common = dict(policy=policy, metrics=metrics, in_flight=_in_flight(metrics))
        self.text_queue: BatchQueue[str] = BatchQueue("text", encoder.encode_texts, self.executor, **common)
        self.image_queue: BatchQueue[bytes | np.ndarray] = BatchQueue("image", self._encode_images, self.executor,
                                                                      **common)

    @classmethod
    def from_settings(cls, encoder: EncoderLike, settings: Settings, metrics: ServiceMetrics | None = None
                      ) -> QueryEncoder:
        calibrator = None
        if settings.calibration is not None:  # an explicit file wins, and must fit these weights
            calibrator = Calibrator.load(settings.calibration, encoder.model_id)
        return cls(encoder, policy=policy_from_settings(settings, encoder_batches_in_flight(settings)),
                   metrics=metrics, calibrator=calibrator)

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
    def pair_logit(self) -> PairLogit:
        return self.encoder.pair_logit

    @property
    def calibrator(self) -> Calibrator | None:
        """The model's calibrator, or None: then results carry no calibrated ``probability``."""
        if self._calibrator is not None:
            return self._calibrator
        return getattr(self.encoder, "calibrator", None)

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
