"""What a running service holds: settings, encoder, catalog, jobs, limits, metrics.

Built when the app is, filled in by the lifespan (``open``: the heavy part, in a worker
thread) and emptied on shutdown. Routes reach it through ``service.deps``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from .encoding import EncoderLike, QueryEncoder, load_encoder, policy_from_settings
from .errors import Conflict, Unavailable, UnknownCollection, translate
from .images import ImageDecoder
from .limits import Limits
from .media import MediaStore
from .metrics import ServiceMetrics
from .search import SearchBatcher
from .security import ApiKeys, RateLimiter, RedisRateLimiter
from .settings import Settings

log = logging.getLogger(__name__)

DEMO_COLLECTIONS = {"image": "demo-images", "text": "demo-captions"}


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    encoder: EncoderLike | None = None  # injected (tests, benchmarks) or loaded by open()
    queries: QueryEncoder | None = None
    searches: SearchBatcher | None = None
    catalog: Any = None  # indexer.Catalog
    jobs: Any = None  # indexer.jobs.JobManager
    cache: dict[str, Any] = field(default_factory=dict)  # small derived values (e.g. the root caption)

    def __post_init__(self) -> None:
        self.limits = Limits(self.settings)
        self.images = ImageDecoder(self.limits)
        self.api_keys = ApiKeys([key.get_secret_value() for key in self.settings.api_keys])
        self.rate_limiter = self._rate_limiter()
        # a dot folder: no collection can be named so (names are [A-Za-z0-9_-]), and the catalog skips it
        self.media = MediaStore(self.settings.media_dir or self.settings.data_dir / ".media")
        self._create_lock = threading.Lock()
        self._data_dir_lock: Any = None  # indexer.datadir.DataDirLock while open

    def _rate_limiter(self) -> Any:
        """Per-process token buckets, or buckets in Redis that every replica shares (``shared_state``)."""
        settings = self.settings
        if settings.shared_state and settings.rate_limit_per_minute > 0:
            return RedisRateLimiter(settings.redis_url, settings.rate_limit_per_minute, settings.rate_limit_burst,
                                    prefix=settings.milvus_prefix)
        return RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)

    # --- lifecycle

    def open(self) -> None:
        """Load the model and open the catalog and the job manager (blocking; run in a thread)."""
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        from indexer.datadir import DataDirLock

        # one process per data dir (the `serve` command took it already; then this only counts up)
        self._data_dir_lock = DataDirLock(settings.data_dir, "prolip-retrieval serve").acquire()
        if self.encoder is None:
            self.encoder = load_encoder(settings)
        self.queries = QueryEncoder.from_settings(self.encoder, settings, self.metrics)
        self.searches = SearchBatcher(policy=policy_from_settings(settings, settings.search_batches_in_flight),
                                      metrics=self.metrics)
        from indexer import open_catalog

        if settings.milvus_uri:
            options = {"token": settings.milvus_token.get_secret_value() if settings.milvus_token else None,
                       "prefix": settings.milvus_prefix, "consistency": settings.milvus_consistency,
                       "index_type": settings.milvus_index}
        else:
            options = {"redis_require_fsync": settings.redis_require_fsync}
        self.catalog = open_catalog(settings.data_dir, redis_url=settings.redis_url, milvus_uri=settings.milvus_uri,
                                    **options)
        self.check_collections()
        self.jobs = self._open_jobs()
        self.metrics.watch(index_sizes=self._index_sizes, job_progress=self._job_progress)

    def _open_jobs(self) -> Any:
        """Batch jobs run on the Redis workers when queries do (ENCODER=remote), else in-process.

        Sources are confined to ``job_roots``; with none configured every source is refused
        (an empty list, never None, which would mean no confinement at all).
        """
        from indexer.fetch import FetchPolicy
        from indexer.jobs import JobManager, JobSettings

        remote = self.settings.encoder == "remote"
        job_settings = JobSettings(chunk_size=self.settings.job_chunk_size,
                                   fetch=FetchPolicy(allow_private_networks=self.settings.allow_private_urls))
        store = None
        if self.settings.shared_state:  # job records and leases in Redis: any replica sees and takes over any job
            from indexer.jobstore_redis import RedisJobStore

            store = RedisJobStore.from_url(self.settings.redis_url, self.settings.milvus_prefix,
                                           lease_ttl_s=self.settings.job_lease_s)
        manager = JobManager(self.settings.data_dir, catalog=self.catalog, encoder=None if remote else self.encoder,
                             model=self.settings.model_source, model_family=self.settings.model_family,
                             redis_url=self.settings.redis_url if remote else None,
                             allowed_roots=[str(root) for root in self.settings.job_roots], settings=job_settings,
                             store=store)
        resumed = manager.resume_unfinished()
        if resumed:
            log.info("resumed %d interrupted jobs", len(resumed))
        manager.start_takeover()
        return manager

    async def start(self) -> None:
        if self.queries is not None:
            await self.queries.start()
        if self.searches is not None:
            await self.searches.start()

    async def close(self) -> None:
        if self.queries is not None:
            await self.queries.stop()
        if self.searches is not None:
            await self.searches.stop()
        if self.jobs is not None:
            self.jobs.close()  # stops running jobs at a chunk boundary; they resume at the next start
        if self.catalog is not None:
            self.catalog.close()
        if self._data_dir_lock is not None:
            self._data_dir_lock.release()

    # --- readiness

    def check_collections(self) -> dict[str, str]:
        """Open every collection: name -> "ok" or why it cannot be opened (e.g. corrupt)."""
        checks = {}
        for name in self.collection_names():
            try:
                self.catalog.get(name)
                checks[name] = "ok"
            except Exception as error:  # a corrupt index must not stop the others from serving
                checks[name] = f"{type(error).__name__}: {error}"
                log.error("collection %s cannot be opened: %s", name, checks[name])
        return checks

    def readiness(self) -> dict[str, str]:
        checks = {"model": "ok" if self.queries is not None else "not loaded"}
        if self.catalog is None:
            checks["index"] = "not open"
        else:
            for name, status in self.check_collections().items():
                checks[f"collection:{name}"] = status
            for name, reason in self.catalog.broken().items():  # its data is there, its description is not
                checks[f"collection:{name}"] = f"CorruptIndexError: {reason}"
        worker_info = getattr(self.encoder, "worker_info", None)
        if callable(worker_info):  # a remote encoder: is a worker alive?
            try:
                worker_info(refresh=True)
                checks["encoder"] = "ok"
            except Exception as error:
                checks["encoder"] = str(error)
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
        if modality is not None and index.info.modality != modality:
            raise Conflict(f"collection {name!r} holds {index.info.modality}s, not {modality}s")
        if index.info.model_id != self.queries.model_id:
            raise Conflict(f"collection {name!r} was built with model {index.info.model_id!r} but this service runs "
                           f"{self.queries.model_id!r}; its embeddings are not comparable")
        return index

    def collection_or_create(self, name: str, modality: str) -> tuple[Any, bool]:
        """The collection, created first when missing (concurrent first uses create it once)."""
        from indexer import CollectionExistsError

        with self._create_lock:
            try:
                return self.collection(name, modality), False
            except UnknownCollection:
                try:
                    self.catalog.create(name, modality=modality, dim=self.queries.embed_dim,
                                        model_id=self.queries.model_id, model_family=self.queries.family,
                                        deterministic=self.queries.deterministic)
                except CollectionExistsError:  # another replica created it meanwhile
                    return self.collection(name, modality), False
                log.info("created %s collection %s", modality, name)
                return self.collection(name, modality), True

    def default_collection(self, modality: str, name: str | None) -> tuple[str, Any] | tuple[None, None]:
        """(name, index) of the named collection, else of the demo collection of ``modality``
        when it exists and is usable, else (None, None)."""
        if name is not None:
            return name, self.collection(name)
        demo = DEMO_COLLECTIONS[modality]
        if demo in self.collection_names():
            try:
                return demo, self.collection(demo)
            except (Conflict, Unavailable):
                pass
        return None, None

    def percentile_reference(self, modality: str, name: str, index: Any) -> tuple[str, Any] | tuple[None, None]:
        """The collection a ``modality`` query's uncertainty is ranked against when it searches ``index``.

        Text and image uncertainties live on different scales, so a text query searching
        images is compared with the demo collection of texts, not with the images it searches.
        """
        if index.info.modality == modality:
            return name, index
        return self.default_collection(modality, None)

    # --- metrics sources

    def _index_sizes(self):
        for name in self.collection_names():
            try:
                index = self.catalog.get(name)
            except Exception:
                continue
            yield name, index.info.modality, len(index)

    def _job_progress(self):
        if self.jobs is None:
            return
        try:
            jobs = self.jobs.list()
        except Exception as error:  # metrics go on without job progress when the job history is unreadable
            log.warning("job progress left out of the metrics: %s", error)
            return
        for job in jobs:
            yield job.job_id, job.state, job.done, job.failed, job.total or 0
