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

import json
import logging
import os
import threading
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .commit import CommitPolicy
from .coordinator import CoordinatorSettings, RedisCoordinator
from .errors import IndexerError, InvalidInputError, StoreError
from .fetch import FetchPolicy, is_url
from .jobstore import ACTIVE_STATES, ItemFailure, JobStatus, JobStore
from .local_runner import LocalRunner
from .pipeline import DEFAULT_MAX_ITEM_BYTES, ChunkEncoder
from .planner import PlanningStopped, plan_job
from .redis_queue import RedisQueue
from .remote_encoder import EncoderUnavailableError
from .roots import Confinement, PathNotAllowedError, Roots
from .sources import (
    MODALITIES,
    SourceError,
    SourceNotFoundError,
    check_source_fits,
    default_modality,
    detect_format,
    expand_shards,
    names_shards,
)
from .sync import SyncTarget, remove_gone

log = logging.getLogger(__name__)


class UnknownJobError(IndexerError, LookupError):
    """No job has that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown job"


class JobBusyError(IndexerError, RuntimeError):
    """The job is being run by another process (one process runs a job at a time)."""


def default_decode_workers() -> int:
    """Threads that read and decode images beside the encoder: a quarter of the cores, 1 to 4.

    With the encoder on the CPU they are cores it leaves free (``Encoder.sharing_cpu``); on a GPU
    host the CPU has nothing else to do.
    """
    return max(1, min(4, (os.cpu_count() or 1) // 4))


@dataclass(frozen=True)
class JobSettings:
    """Everything tunable about running jobs, in one place."""

    chunk_size: int = 128                 # items per chunk: the unit of commit, resume and distribution
    decode_workers: int = field(default_factory=default_decode_workers)  # threads reading and decoding images
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    encoder_retries: int = 3              # in-process: retries of a failing encoder call before pausing
    retry_backoff_s: float = 1.0
    namespace: str = "prolip"             # Redis key prefix shared with the workers
    coordinator: CoordinatorSettings = field(default_factory=CoordinatorSettings)
    device: str = "auto"                  # for the encoder loaded on demand
    batch_size: int = 64
    commit: CommitPolicy = field(default_factory=CommitPolicy)  # in-process: chunks per durable group commit
    overlap_decode: bool = True           # in-process: decode the next chunk while this one encodes

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


@dataclass
class _Run:
    thread: threading.Thread
    signal: _StopSignal
    note: str | None = None  # the coordinator's word on why the run is not moving


class JobManager:
    def __init__(self, data_dir: str | os.PathLike, *, catalog=None, encoder=None, model: str | None = None,
                 redis_url: str | None = None, allowed_roots: Roots = None, settings: JobSettings | None = None,
                 store=None, model_family: str | None = None):
        """``encoder``: the in-process encoder (loaded from ``model`` on first use when None).
        ``redis_url``: run jobs on the Redis workers instead; then ``encoder`` (a ``RemoteEncoder``
        will do) or ``model`` only names the model and its dimension. ``allowed_roots``: folders
        every source path must lie in (None: no confinement). ``catalog``: the collections
        (default ``indexer.Catalog(data_dir)``, closed by ``close``; a given one is left open).
        ``store``: where jobs are recorded (default ``JobStore(data_dir)``; a ``RedisJobStore``
        shares them between replicas, which then take over each other's jobs, see ``start_takeover``).
        ``model_family`` overrides the family detected from the model's config (``models.families``).
        """
        if encoder is not None and redis_url is None and not hasattr(encoder, "encode_pixels"):
            raise ValueError("in-process jobs need a local models.encoder.Encoder; to encode on the Redis "
                             "workers pass redis_url (and model) instead of a RemoteEncoder")
        self.data_dir = Path(data_dir)
        self.store = store if store is not None else JobStore(self.data_dir)
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
        self._stopping = threading.Event()
        self._takeover: threading.Thread | None = None

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

    def _check_source_fits(self, name: str, modality: str | None, source: str, fmt: str) -> None:
        """Refuse now a source that cannot give what the collection holds (every item would fail)."""
        from . import UnknownCollectionError

        try:
            holds = self.catalog().get(name).info.modality
        except UnknownCollectionError:
            holds = None
        check_source_fits(name, holds, modality, source, fmt)

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
               modality: str | None = None, sync: bool = False) -> str:
        """Start (or resume) indexing ``source`` into ``collection``; returns the job id at once.

        ``sync``: a folder sync (``indexer.sync``): index new and changed files only, and delete the
        items whose files are gone.
        """
        if self._closed:
            raise RuntimeError("the job manager is closed")
        if modality is not None and modality not in MODALITIES:
            raise InvalidInputError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
        source = self.normalise_source(source)
        # outside the roots: refused by name before anything is looked at, then by where it leads
        self.confinement.check_name(source)
        self.check_source(source, format or ("webdataset" if names_shards(source) else "path"))
        fmt = format or detect_format(source)
        if sync and fmt != "directory":
            raise SourceError(f"sync keeps a collection in step with a folder; {source} is a {fmt} source")
        existing = self.store.find_unfinished(source, collection)
        if existing is not None:
            log.info("resuming job %s: it already indexes %s into %r", existing, source, collection)
            self.resume(existing)
            return existing
        self._check_source_fits(collection, modality, source, fmt)  # before the model is loaded
        model_id, dim, family, deterministic = self._model_description()
        index = self._collection(collection, modality, source, fmt, model_id, dim, family, deterministic)
        job_id = uuid.uuid4().hex
        options = {"dim": dim, **({"sync": {"collection": index.info.uuid}} if sync else {})}
        self.store.create_job(job_id, collection=collection, source=source, fmt=fmt, modality=index.info.modality,
                              model_id=model_id, mode=self.mode, chunk_size=self.settings.chunk_size,
                              options=options)
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
            if self.store.lease(job_id).held_elsewhere():
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

    def start_takeover(self) -> bool:
        """With a shared store, look every ``store.takeover_interval_s`` for jobs whose runner died and resume them.

        A job counts as abandoned once its lease has expired (its replica stopped renewing it);
        replicas race for it and the lease lets exactly one run it. False when the store is
        this host's alone (then unfinished jobs resume at start-up, ``resume_unfinished``).
        """
        interval = self.store.takeover_interval_s
        if interval is None or self._takeover is not None:
            return False

        def watch() -> None:
            while not self._stopping.wait(interval):
                try:
                    resumed = self.resume_unfinished()
                    if resumed:
                        log.info("took over %d abandoned jobs: %s", len(resumed), ", ".join(resumed))
                except Exception:  # noqa: BLE001 - the next look retries (Redis away, a job just finishing)
                    log.exception("looking for abandoned jobs failed")

        self._takeover = threading.Thread(target=watch, name="job-takeover", daemon=True)
        self._takeover.start()
        return True

    # --- running ----------------------------------------------------------------------------------

    def _run(self, job_id: str, signal: _StopSignal) -> None:
        lock = self.store.lease(job_id)
        try:
            if not lock.acquire(on_lost=lambda: signal.stop("interrupted")):
                log.warning("job %s is being run by another process; not starting it here", job_id)
                return
        except StoreError as error:
            log.error("job %s cannot start: %s", job_id, error)
            self.store.set_state(job_id, "failed", str(error))
            return
        try:
            outcome = self._run_locked(job_id, signal)
            if lock.lost:  # another replica runs it now: its state is that run's to write
                return
            self.store.set_state(job_id, outcome)
            log.info("job %s: %s", job_id, outcome)
        except PlanningStopped:
            self.store.set_state(job_id, signal.reason() or "interrupted")
        except Exception as error:
            self._record_failure(job_id, signal, error)
        finally:
            lock.release()
            self.store.close()

    def _record_failure(self, job_id: str, signal: _StopSignal, error: Exception) -> None:
        stopping = signal.reason()
        if stopping is not None:
            # stopped meanwhile (Ctrl-C, shutdown, cancel): what broke is the stop's doing (e.g. the
            # collection closed under the run), not the job's; it stays resumable
            log.info("job %s %s (%s: %s)", job_id, stopping, type(error).__name__, error)
            self.store.set_state(job_id, stopping)
            return
        if isinstance(error, EncoderUnavailableError):
            log.error("job %s paused: %s", job_id, error)
            self.store.set_state(job_id, "paused", str(error))
        elif isinstance(error, redis.RedisError):
            log.error("job %s paused, Redis unreachable: %s", job_id, error)
            self.store.set_state(job_id, "paused", f"Redis unreachable: {error}")
        elif isinstance(error, (SourceError, PathNotAllowedError, FileNotFoundError, ValueError)):
            log.error("job %s failed: %s", job_id, error)
            self.store.set_state(job_id, "failed", str(error))
        else:  # recorded on the job, with the traceback in the log
            log.error("job %s failed", job_id, exc_info=error)
            self.store.set_state(job_id, "failed", f"{type(error).__name__}: {error}")

    def _run_locked(self, job_id: str, signal: _StopSignal) -> str:
        job = self.store.job(job_id)
        sync = json.loads(job["options"] or "{}").get("sync")
        target = SyncTarget(sync["collection"], job["source"]) if sync else None
        index = self.catalog().get(job["collection"])
        if target is not None and index.info.uuid != target.collection:
            raise ValueError(f"collection {job['collection']!r} was dropped and created again since sync job "
                             f"{job_id} started; start a new sync")
        if not job["planned"]:
            self.store.set_state(job_id, "planning")
            # a sync compares files with its own records; any other run reuses what the last completed
            # run of this source indexed and the collection still holds
            previous = None if target else self.store.last_completed(job["source"], job["collection"],
                                                                    other_than=job_id)
            plan_job(self.store, job_id, source=job["source"], fmt=job["format"], modality=job["modality"],
                     chunk_size=job["chunk_size"], confinement=self.confinement, stop=signal.event, sync=target,
                     previous=previous, present=index.__contains__)
        if signal.reason() is not None:
            return signal.reason()
        self.store.start_run(job_id)
        outcome = self._encode_chunks(job_id, job, index, signal)
        if outcome == "completed" and target is not None:  # every file indexed: now remove the ones gone
            return remove_gone(self.store, job_id, target, index, signal) or "completed"
        return outcome

    def _encode_chunks(self, job_id: str, job, index, signal: _StopSignal) -> str:
        if job["mode"] == "redis":
            if not self.redis_url:
                raise ValueError(f"job {job_id} runs on Redis workers but this process has no redis_url")
            run = self._runs.get(job_id)
            coordinator = RedisCoordinator(self._queue_client(), self.store, self.settings.coordinator,
                                           report=lambda note: setattr(run, "note", note) if run else None)
            return coordinator.run(job_id, index, signal, dim=int(index.dim))
        settings = self.settings
        encoder = self.encoder()
        # decoding overlaps encoding: on a CPU the decode threads get cores of their own
        share = getattr(encoder, "sharing_cpu", None)
        sharing = share(settings.decode_workers) if share is not None and settings.overlap_decode else nullcontext()
        with sharing, ChunkEncoder(encoder, self.confinement, settings.fetch, settings.decode_workers,
                                   settings.max_item_bytes) as chunk_encoder:
            runner = LocalRunner(self.store, chunk_encoder, settings.encoder_retries, settings.retry_backoff_s,
                                 settings.commit, settings.overlap_decode)
            return runner.run(job_id, job["modality"], index, signal)

    # --- looking and steering -----------------------------------------------------------------------

    def status(self, job_id: str) -> JobStatus:
        try:
            status = self.store.status(job_id)
        except KeyError:
            raise UnknownJobError(f"no job {job_id!r}") from None
        if status.state in ACTIVE_STATES and not self._running_here(job_id):
            if not self.store.lease(job_id).held_elsewhere():
                status.state = "interrupted"  # its process died; resume() or resubmit picks it up
                status.items_per_s = status.eta_s = None
        elif self._running_here(job_id):
            status.note = self._runs[job_id].note
        return status

    @property
    def warnings(self) -> list[str]:
        """What users should know about the job history itself (e.g. that a damaged one was set aside)."""
        quarantined = getattr(self.store, "quarantined", None)
        return [quarantined] if quarantined else []

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
        elif not self.store.lease(job_id).held_elsewhere():
            self.store.set_state(job_id, "cancelled")  # nobody runs it: cancel it here
        if status.mode == "redis" and self.redis_url:
            self._queue_client().cancel(job_id)
        return self.status(job_id)

    def interrupt(self, job_id: str) -> None:
        """Stop this process's run of the job at its next chunk boundary, leaving it resumable ("interrupted")."""
        run = self._runs.get(job_id)
        if run is not None:
            run.signal.stop("interrupted")

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the job's run in this process ends (or ``timeout``); returns its status."""
        run = self._runs.get(job_id)
        if run is not None:
            run.thread.join(timeout)
        return self.status(job_id)

    def _running_here(self, job_id: str) -> bool:
        run = self._runs.get(job_id)
        return run is not None and run.thread.is_alive()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop every run at its next chunk boundary, leaving the jobs resumable ("interrupted").

        Waits up to ``timeout`` seconds for them (None: until they stop). Closes the catalog too
        when this manager opened it (not one it was given); a run still going then stops there,
        and is recorded "interrupted" all the same.
        """
        self._closed = True
        self._stopping.set()
        runs = list(self._runs.values())
        for run in runs:
            run.signal.stop("interrupted")
        deadline = None if timeout is None else time.monotonic() + timeout
        for run in runs:
            run.thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        if self._owns_catalog and self._catalog is not None:
            self._catalog.close()
