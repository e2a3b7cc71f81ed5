"""What a running service holds: settings, encoder, catalog, jobs, limits, metrics.

Built when the app is, filled in by the lifespan (``open``: the heavy part, in a worker
thread) and emptied on shutdown. Routes reach it through ``service.deps``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .encoding import EncoderLike, QueryEncoder, load_encoder
from .errors import Conflict, Unavailable, UnknownCollection, translate
from .limits import Limits
from .media import MediaStore
from .metrics import ServiceMetrics
from .security import ApiKeys, RateLimiter
from .settings import Settings

log = logging.getLogger(__name__)

DEMO_COLLECTIONS = {"image": "demo-images", "text": "demo-captions"}


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    encoder: EncoderLike | None = None  # injected (tests, benchmarks) or loaded by open()
    queries: QueryEncoder | None = None
    catalog: Any = None  # indexer.Catalog
    jobs: Any = None  # indexer.jobs.JobManager
    problems: dict[str, str] = field(default_factory=dict)  # component -> why it is not ready
    cache: dict[str, Any] = field(default_factory=dict)  # small derived values (e.g. the root caption)

    def __post_init__(self) -> None:
        self.limits = Limits(self.settings)
        self.api_keys = ApiKeys([key.get_secret_value() for key in self.settings.api_keys])
        self.rate_limiter = RateLimiter(self.settings.rate_limit_per_minute, self.settings.rate_limit_burst)
        self.media = MediaStore(self.settings.data_dir / "media")

    # --- lifecycle

    def open(self) -> None:
        """Load the model and open the catalog and the job manager (blocking; run in a thread)."""
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if self.encoder is None:
            self.encoder = load_encoder(settings)
        self.queries = QueryEncoder.from_settings(self.encoder, settings, self.metrics)
        from indexer import Catalog

        self.catalog = Catalog(settings.data_dir / "collections", redis_url=settings.redis_url)
        self.check_collections()
        self.jobs = self._open_jobs()
        self.metrics.watch(index_sizes=self._index_sizes, job_progress=self._job_progress)

    def _open_jobs(self) -> Any:
        try:
            from indexer.jobs import JobManager
        except ImportError:
            self.problems.pop("jobs", None)
            log.info("batch jobs are not available in this build")
            return None
        return JobManager(self.catalog, self.encoder, data_dir=self.settings.data_dir / "jobs",
                          allowed_roots=[str(root) for root in self.settings.job_roots],
                          redis_url=self.settings.redis_url)

    async def start(self) -> None:
        if self.queries is not None:
            await self.queries.start()

    async def close(self) -> None:
        if self.queries is not None:
            await self.queries.stop()
        if self.jobs is not None and hasattr(self.jobs, "close"):
            self.jobs.close()
        if self.catalog is not None and hasattr(self.catalog, "close"):
            self.catalog.close()

    # --- readiness

    def check_collections(self) -> dict[str, str]:
        """Open every collection; remember the ones that cannot be opened (e.g. corrupt)."""
        checks = {}
        for name in self.collection_names():
            try:
                self.catalog.get(name)
                checks[name] = "ok"
                self.problems.pop(f"collection:{name}", None)
            except Exception as error:  # a corrupt index must not stop the others from serving
                reason = f"{type(error).__name__}: {error}"
                checks[name] = reason
                self.problems[f"collection:{name}"] = reason
                log.error("collection %s cannot be opened: %s", name, reason)
        return checks

    def readiness(self) -> dict[str, str]:
        checks = {"model": "ok" if self.queries is not None else "not loaded"}
        if self.catalog is None:
            checks["index"] = "not open"
        else:
            for name, status in self.check_collections().items():
                checks[f"collection:{name}"] = status
        health = getattr(self.encoder, "health", None)
        if callable(health):  # remote encoders report whether workers answer
            try:
                problem = health()
            except Exception as error:
                problem = str(error)
            checks["encoder"] = problem or "ok"
        return checks

    # --- collections

    def collection_names(self) -> list[str]:
        if self.catalog is None:
            return []
        return sorted(entry if isinstance(entry, str) else entry.name for entry in self.catalog.list())

    def collection(self, name: str, modality: str | None = None) -> Any:
        """An open collection; checks it was built with this model (and of ``modality`` if given)."""
        if self.catalog is None:
            raise Unavailable("the index is not open yet")
        self.limits.collection(name)
        try:
            index = self.catalog.get(name)
        except Exception as error:
            translated = translate(error)
            if translated is None:
                raise
            raise translated from error
        if modality is not None and index.modality != modality:
            raise Conflict(f"collection {name!r} holds {index.modality}s, not {modality}s")
        if index.model_id != self.queries.model_id:
            raise Conflict(f"collection {name!r} was built with model {index.model_id!r} but this service runs "
                           f"{self.queries.model_id!r}; its embeddings are not comparable")
        return index

    def collection_or_create(self, name: str, modality: str) -> tuple[Any, bool]:
        try:
            return self.collection(name, modality), False
        except UnknownCollection:
            self.catalog.create(name, modality=modality, dim=self.queries.embed_dim, model_id=self.queries.model_id,
                                spec="flat")
            log.info("created %s collection %s", modality, name)
            return self.collection(name, modality), True

    def default_collection(self, modality: str, name: str | None) -> Any | None:
        """The named collection, else the demo collection of ``modality`` when it exists, else None."""
        if name is not None:
            return self.collection(name)
        demo = DEMO_COLLECTIONS[modality]
        if demo in self.collection_names():
            try:
                return self.collection(demo)
            except (Conflict, Unavailable):
                return None
        return None

    # --- metrics sources

    def _index_sizes(self):
        for name in self.collection_names():
            try:
                index = self.catalog.get(name)
            except Exception:
                continue
            yield name, index.modality, len(index)

    def _job_progress(self):
        if self.jobs is None:
            return
        for job in self.jobs.list():
            yield job.id, job.state, job.done, job.failed, job.total or 0
