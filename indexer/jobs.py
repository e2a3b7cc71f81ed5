"""``JobManager``: batch indexing jobs with progress, cancel, resume and failure lists.

The service and the CLI use this one class::

    manager = JobManager(data_dir, encoder=encoder)              # in-process encoding
    manager = JobManager(data_dir, redis_url=url, model=source)  # encoding on Redis workers
    job_id = manager.submit("/data/photos", "photos")
    manager.status(job_id)      # JobStatus: state, done, failed, total, items/s, ETA
    manager.failures(job_id)    # [ItemFailure(item_id, location, reason)]
    manager.cancel(job_id); manager.list(); manager.resume(job_id)

Each job runs in a background thread of this process: it plans (lists the source into the
job store), then runs its chunks, locally or through the Redis coordinator. All state is in
``<data dir>/jobs.sqlite3``, so a restarted process sees every job; ``resume_unfinished``
(which the service calls at start-up) picks up those that were running. A job is run by one
process at a time (a lock file per job); a job seen "running" with nobody holding its lock
is reported "interrupted".

Submitting a source to a collection that already has an unfinished job from that source
resumes that job rather than starting a second one, so "run it again" after a crash is
always the right move and indexes nothing twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .coordinator import CoordinatorSettings, RedisCoordinator
from .errors import IndexerError, InvalidInputError
from .fetch import FetchPolicy, is_url
from .jobstore import ACTIVE_STATES, ItemFailure, JobStatus, JobStore
from .local_runner import LocalRunner
from .pipeline import DEFAULT_MAX_ITEM_BYTES, ChunkEncoder
from .planner import PlanningStopped, plan_job
from .redis_queue import RedisQueue
from .remote_encoder import EncoderUnavailableError
from .roots import Confinement, PathNotAllowedError, Roots
from .sources import MODALITIES, SourceError, SourceNotFoundError, default_modality, detect_format, expand_shards

log = logging.getLogger(__name__)

LOCK_DIR = "job-locks"


class UnknownJobError(IndexerError, LookupError):
    """No job has that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown job"


class JobBusyError(IndexerError, RuntimeError):
    """The job is being run by another process (one process runs a job at a time)."""


@dataclass(frozen=True)
class JobSettings:
    """Everything tunable about running jobs, in one place."""

    chunk_size: int = 128                 # items per chunk: the unit of commit, resume and distribution
    decode_workers: int = 4               # threads reading and decoding images
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    encoder_retries: int = 3              # in-process: retries of a failing encoder call before pausing
    retry_backoff_s: float = 1.0
    namespace: str = "prolip"             # Redis key prefix shared with the workers
    coordinator: CoordinatorSettings = field(default_factory=CoordinatorSettings)
    device: str = "auto"                  # for the encoder loaded on demand
    batch_size: int = 64

    def __post_init__(self):
        if self.chunk_size < 1 or self.decode_workers < 1 or self.encoder_retries < 0:
            raise ValueError("chunk_size and decode_workers must be >= 1, encoder_retries >= 0")


class _StopSignal:
    """Why a run should stop: "cancelled" (by anyone, any process) or "interrupted" (shutdown).

    ``reason()`` is asked at every chunk boundary; it also reads the job's cancel flag from the
    store (one indexed row: microseconds), which is how a cancel from another process arrives.
    """

    def __init__(self, store: JobStore, job_id: str):
        self.store, self.job_id = store, job_id
        self.event = threading.Event()
        self._reason: str | None = None

    def stop(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        self.event.set()

    def reason(self) -> str | None:
        if self._reason is None and self.store.cancel_requested(self.job_id):
            self.stop("cancelled")
        return self._reason

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when a stop came meanwhile."""
        return self.event.wait(seconds) or self.reason() is not None


class _JobLock:
    """An exclusive flock on ``<data dir>/job-locks/<job>.lock``; the kernel frees it if we die."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def held_elsewhere(self) -> bool:
        """True when some run (this process's or another's) holds the lock now."""
        if self.acquire():
            self.release()
            return False
        return True


@dataclass
class _Run:
    thread: threading.Thread
    signal: _StopSignal


class JobManager:
    def __init__(self, data_dir: str | os.PathLike, *, catalog=None, encoder=None, model: str | None = None,
                 redis_url: str | None = None, allowed_roots: Roots = None, settings: JobSettings | None = None,
                 model_family: str | None = None):
        """``encoder``: the in-process encoder (loaded from ``model`` on first use when None).
        ``redis_url``: run jobs on the Redis workers instead; then ``encoder`` (a ``RemoteEncoder``
        will do) or ``model`` only names the model and its dimension. ``allowed_roots``: folders
        every source path must lie in (None: no confinement). ``catalog``: the collections
        (default ``indexer.Catalog(data_dir)``, closed by ``close``; a given one is left open).
        """
        if encoder is not None and redis_url is None and not hasattr(encoder, "encode_pixels"):
            raise ValueError("in-process jobs need a local models.encoder.Encoder; to encode on the Redis "
                             "workers pass redis_url (and model) instead of a RemoteEncoder")
        self.data_dir = Path(data_dir)
        self.store = JobStore(self.data_dir)
        self.settings = settings or JobSettings()
        self.confinement = Confinement(allowed_roots)
        self.redis_url = redis_url
        self._catalog = catalog
        self._owns_catalog = catalog is None
        self._encoder = encoder
        self._model = model
        self._model_family = model_family  # overrides the family detected from the model's config
        self._queue: RedisQueue | None = None
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()
        self._closed = False

    # --- the model and the collections ----------------------------------------------------------

    @property
    def mode(self) -> str:
        return "redis" if self.redis_url else "local"

    def encoder(self):
        """The in-process encoder, loaded on first use."""
        with self._lock:
            if self._encoder is None:
                from models.encoder import Encoder

                self._encoder = Encoder.load(self._model, device=self.settings.device, family=self._model_family,
                                             batch_size=self.settings.batch_size)
            return self._encoder

    def _model_description(self) -> tuple[str, int, str, bool]:
        """(model id, embedding dim, model family, deterministic) of the model jobs run."""
        if self._encoder is not None or self.mode == "local":
            encoder = self.encoder()
            return (str(encoder.model_id), int(encoder.embed_dim), str(getattr(encoder, "family", "prolip")),
                    bool(getattr(encoder, "deterministic", False)))
        from models.families import DETERMINISTIC
        from models.loading import default_model_source, load_config, model_id

        source = self._model if self._model is not None else default_model_source()
        config = load_config(source, self._model_family)
        return model_id(source), config.embed_dim, config.family, DETERMINISTIC[config.family]

    def catalog(self):
        with self._lock:
            if self._catalog is None:
                from . import Catalog

                self._catalog = Catalog(self.data_dir)
            return self._catalog

    def _collection(self, name: str, modality: str | None, source: str, fmt: str, model_id: str, dim: int,
                    family: str | None = None, deterministic: bool = False):
        """The collection to fill, created when missing; refuses one built by another model."""
        from . import UnknownCollectionError

        catalog = self.catalog()
        try:
            index = catalog.get(name)
        except UnknownCollectionError:
            modality = modality or default_modality(source, fmt)
            log.info("creating collection %r (%s, dim %d, model %s)", name, modality, dim, model_id)
            return catalog.create(name, modality=modality, dim=dim, model_id=model_id, model_family=family,
                                  deterministic=deterministic)
        info = index.info
        if modality is not None and info.modality != modality:
            raise InvalidInputError(f"collection {name!r} holds {info.modality}s, not {modality}s")
        if info.model_id != model_id or info.dim != dim:
            raise InvalidInputError(f"collection {name!r} was built with model {info.model_id} (dim {info.dim}); "
                             f"this indexer runs {model_id} (dim {dim})")
        return index

    def _queue_client(self) -> RedisQueue:
        with self._lock:
            if self._queue is None:
                self._queue = RedisQueue.from_url(self.redis_url, self.settings.namespace)
            return self._queue

    # --- submitting -------------------------------------------------------------------------------

    def normalise_source(self, source: str | os.PathLike) -> str:
        """An absolute form of a local source (jobs are matched and resumed by it)."""
        text = str(source)
        if is_url(text):
            raise SourceError("a source must be a local folder, manifest or shard pattern, not a URL "
                              "(list URLs in a csv/jsonl manifest)")
        return os.path.abspath(os.path.expanduser(text))

    def check_source(self, source: str, fmt: str) -> None:
        """Raise now (PathNotAllowedError, FileNotFoundError, SourceError) for an unusable source path."""
        paths = expand_shards(source) if fmt == "webdataset" else [source]
        for path in paths:
            try:
                self.confinement.resolve(path)
            except FileNotFoundError:
                raise SourceNotFoundError(f"source {path} does not exist") from None

    def submit(self, source: str | os.PathLike, collection: str, *, format: str | None = None,
               modality: str | None = None) -> str:
        """Start (or resume) indexing ``source`` into ``collection``; returns the job id at once."""
        if self._closed:
            raise RuntimeError("the job manager is closed")
        if modality is not None and modality not in MODALITIES:
            raise InvalidInputError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
        source = self.normalise_source(source)
        fmt = format or detect_format(source)
        self.check_source(source, fmt)
        existing = self.store.find_unfinished(source, collection)
        if existing is not None:
            log.info("resuming job %s: it already indexes %s into %r", existing, source, collection)
            self.resume(existing)
            return existing
        model_id, dim, family, deterministic = self._model_description()
        index = self._collection(collection, modality, source, fmt, model_id, dim, family, deterministic)
        job_id = uuid.uuid4().hex
        self.store.create_job(job_id, collection=collection, source=source, fmt=fmt, modality=index.info.modality,
                              model_id=model_id, mode=self.mode, chunk_size=self.settings.chunk_size,
                              options={"dim": dim})
        log.info("job %s: %s (%s) -> collection %r, %s", job_id, source, fmt, collection, self.mode)
        self._start(job_id)
        return job_id

    def resume(self, job_id: str) -> JobStatus:
        """Run an unfinished job again (paused, failed, interrupted or cancelled) from where it stopped."""
        status = self.status(job_id)
        if status.state == "completed":
            return status
        with self._lock:
            run = self._runs.get(job_id)
            if run is not None and run.thread.is_alive():
                return status
            if _JobLock(self._lock_path(job_id)).held_elsewhere():
                raise JobBusyError(f"job {job_id} is being run by another process")
            if status.mode == "redis" and not self.redis_url:
                raise JobBusyError(f"job {job_id} encodes on Redis workers; resume it from a process given "
                                   f"the Redis URL")
            self.store.request_cancel(job_id, False)
            self._start(job_id)
        return self.status(job_id)

    def resume_unfinished(self) -> list[str]:
        """Resume every job that was running when its process stopped; returns their ids."""
        resumed = []
        for job_id in self.store.job_ids(ACTIVE_STATES + ("interrupted",)):
            if self.status(job_id).state == "interrupted":
                try:
                    self.resume(job_id)
                    resumed.append(job_id)
                except JobBusyError as error:
                    log.warning("not resuming %s: %s", job_id, error)
        return resumed

    def _start(self, job_id: str) -> None:
        signal = _StopSignal(self.store, job_id)
        thread = threading.Thread(target=self._run, args=(job_id, signal), name=f"job-{job_id[:8]}", daemon=True)
        with self._lock:
            self._runs[job_id] = _Run(thread, signal)
        thread.start()

    def _lock_path(self, job_id: str) -> Path:
        return self.data_dir / LOCK_DIR / f"{job_id}.lock"

    # --- running ----------------------------------------------------------------------------------

    def _run(self, job_id: str, signal: _StopSignal) -> None:
        lock = _JobLock(self._lock_path(job_id))
        if not lock.acquire():
            log.warning("job %s is being run by another process; not starting it here", job_id)
            return
        try:
            outcome = self._run_locked(job_id, signal)
            self.store.set_state(job_id, outcome)
            log.info("job %s: %s", job_id, outcome)
        except PlanningStopped:
            self.store.set_state(job_id, signal.reason() or "interrupted")
        except EncoderUnavailableError as error:
            log.error("job %s paused: %s", job_id, error)
            self.store.set_state(job_id, "paused", str(error))
        except redis.RedisError as error:
            log.error("job %s paused, Redis unreachable: %s", job_id, error)
            self.store.set_state(job_id, "paused", f"Redis unreachable: {error}")
        except (SourceError, PathNotAllowedError, FileNotFoundError, ValueError) as error:
            log.error("job %s failed: %s", job_id, error)
            self.store.set_state(job_id, "failed", str(error))
        except Exception as error:  # noqa: BLE001 - recorded on the job, with the traceback in the log
            log.exception("job %s failed", job_id)
            self.store.set_state(job_id, "failed", f"{type(error).__name__}: {error}")
        finally:
            lock.release()
            self.store.close()

    def _run_locked(self, job_id: str, signal: _StopSignal) -> str:
        job = self.store.job(job_id)
        if not job["planned"]:
            self.store.set_state(job_id, "planning")
            plan_job(self.store, job_id, source=job["source"], fmt=job["format"], modality=job["modality"],
                     chunk_size=job["chunk_size"], confinement=self.confinement, stop=signal.event)
        if signal.reason() is not None:
            return signal.reason()
        self.store.start_run(job_id)
        index = self.catalog().get(job["collection"])
        if job["mode"] == "redis":
            if not self.redis_url:
                raise ValueError(f"job {job_id} runs on Redis workers but this process has no redis_url")
            coordinator = RedisCoordinator(self._queue_client(), self.store, self.settings.coordinator)
            return coordinator.run(job_id, index, signal, dim=int(index.dim))
        settings = self.settings
        with ChunkEncoder(self.encoder(), self.confinement, settings.fetch, settings.decode_workers,
                          settings.max_item_bytes) as chunk_encoder:
            runner = LocalRunner(self.store, chunk_encoder, settings.encoder_retries, settings.retry_backoff_s)
            return runner.run(job_id, job["modality"], index, signal)

    # --- looking and steering -----------------------------------------------------------------------

    def status(self, job_id: str) -> JobStatus:
        try:
            status = self.store.status(job_id)
        except KeyError:
            raise UnknownJobError(f"no job {job_id!r}") from None
        if status.state in ACTIVE_STATES and not self._running_here(job_id):
            if not _JobLock(self._lock_path(job_id)).held_elsewhere():
                status.state = "interrupted"  # its process died; resume() or resubmit picks it up
                status.items_per_s = status.eta_s = None
        return status

    def list(self) -> list[JobStatus]:
        """Every job, newest first."""
        return [self.status(job_id) for job_id in reversed(self.store.job_ids())]

    def failures(self, job_id: str, limit: int = 100, offset: int = 0) -> list[ItemFailure]:
        """Items skipped with their reason (unreadable, corrupt, duplicate ...), in source order."""
        if limit < 1 or offset < 0:
            raise InvalidInputError("limit must be >= 1 and offset >= 0")
        try:
            return self.store.failures(job_id, limit, offset)
        except KeyError:
            raise UnknownJobError(f"no job {job_id!r}") from None

    def cancel(self, job_id: str) -> JobStatus:
        """Stop a job at the next chunk boundary (wherever it runs); what is committed stays."""
        status = self.status(job_id)
        if status.state in ("completed", "cancelled"):
            return status
        self.store.request_cancel(job_id, True)
        run = self._runs.get(job_id)
        if run is not None and run.thread.is_alive():
            run.signal.stop("cancelled")
        elif not _JobLock(self._lock_path(job_id)).held_elsewhere():
            self.store.set_state(job_id, "cancelled")  # nobody runs it: cancel it here
        if status.mode == "redis" and self.redis_url:
            self._queue_client().cancel(job_id)
        return self.status(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the job's run in this process ends (or ``timeout``); returns its status."""
        run = self._runs.get(job_id)
        if run is not None:
            run.thread.join(timeout)
        return self.status(job_id)

    def _running_here(self, job_id: str) -> bool:
        run = self._runs.get(job_id)
        return run is not None and run.thread.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """Stop every run at its next chunk boundary, leaving the jobs resumable ("interrupted").

        Closes the catalog too when this manager opened it (not one it was given).
        """
        self._closed = True
        runs = list(self._runs.values())
        for run in runs:
            run.signal.stop("interrupted")
        deadline = time.monotonic() + timeout
        for run in runs:
            run.thread.join(max(deadline - time.monotonic(), 0))
        if self._owns_catalog and self._catalog is not None:
            self._catalog.close()
