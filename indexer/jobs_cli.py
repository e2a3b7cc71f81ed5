"""The job side of the CLI: `index SOURCE --collection NAME`, `worker` and `jobs`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

DEFAULT_DATA_DIR = os.environ.get("PROLIP_DATA_DIR", "data")
DEFAULT_WORKERS_URL = os.environ.get("PROLIP_WORKERS_URL") or os.environ.get("REDIS_URL")

# the same as indexer.sources.FORMATS / MODALITIES, spelled out so `--help` imports nothing heavy
FORMATS = ("directory", "csv", "jsonl", "webdataset")
MODALITIES = ("image", "text")


def add_indexing_arguments(index: argparse.ArgumentParser) -> None:
    """The options of `index SOURCE`; the `index` parser itself is built in ``indexer.cli``."""
    group = index.add_argument_group("indexing a source (index SOURCE --collection NAME)")
    group.add_argument("--collection", help="collection to fill (created when missing)")
    group.add_argument("--model", default=None, help="model source (folder, hf-hub:<repo>); default: the demo model")
    group.add_argument("--family", default=None, choices=("prolip", "pcmepp", "clip"),
                       help="override the model family detected from the checkpoint's config")
    group.add_argument("--format", choices=FORMATS, help="source format (default: from the name)")
    group.add_argument("--modality", choices=MODALITIES, help="for a new collection: image or text (default: "
                                                              "images, or captions for a manifest without images)")
    group.add_argument("--workers-url", default=None, metavar="REDIS_URL",
                       help="encode on `prolip-retrieval worker` processes through this Redis instead of here")
    group.add_argument("--namespace", default="prolip", help="Redis key prefix shared with the workers")
    group.add_argument("--chunk-size", type=int, default=128, help="items per commit (default 128)")
    group.add_argument("--batch-size", type=int, default=64, help="inputs per encoder call (default 64)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    group.add_argument("--decode-workers", type=int, default=None,
                       help="image reading/decoding threads (default: a quarter of the cores, 1 to 4; "
                            "an encoder on the CPU leaves them their cores)")
    group.add_argument("--allowed-root", action="append", default=None, metavar="DIR",
                       help="confine every path to this folder (repeatable)")
    group.add_argument("--show-failures", type=int, default=10, metavar="N", help="failures to print at the end")
    group.add_argument("--allow-private-urls", action="store_true", help=PRIVATE_URLS_HELP)
    group.add_argument("--sync", action="store_true",
                       help="keep the collection in step with a folder: index new and changed files (size, mtime, "
                            "SHA-256), remove items whose files are gone, leave the rest untouched")
    group.add_argument("--watch", action="store_true",
                       help="with --sync: keep running and sync again whenever the folder changes (Ctrl-C stops)")
    group.add_argument("--poll-s", type=float, default=2.0, metavar="SECONDS",
                       help="--watch: how often the folder is checked for changes (default 2)")


PRIVATE_URLS_HELP = ("also fetch URLs that resolve to loopback, private or link-local addresses "
                     "(refused by default: a manifest could otherwise read this machine's network)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """`worker` and `jobs`."""
    worker = subparsers.add_parser(
        "worker", help="encode chunks and queries from Redis Streams (run one per GPU)",
        description="Serve chunk tasks of distributed indexing jobs and query encodings (ENCODER=remote). "
                    "Stops cleanly on SIGTERM/SIGINT after the task in hand.")
    worker.add_argument("--redis-url", default=DEFAULT_WORKERS_URL, required=DEFAULT_WORKERS_URL is None,
                        help="Redis URL (default $PROLIP_WORKERS_URL or $REDIS_URL)")
    worker.add_argument("--model", default=None, help="model source; must be the one the jobs name")
    worker.add_argument("--family", default=None, choices=("prolip", "pcmepp", "clip"),
                        help="override the model family detected from the checkpoint's config")
    worker.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    worker.add_argument("--device", default="auto")
    worker.add_argument("--dtype", default="auto")
    worker.add_argument("--batch-size", type=int, default=64)
    worker.add_argument("--name", default=None, help="consumer name (default host-pid)")
    worker.add_argument("--allow-private-urls", action="store_true", help=PRIVATE_URLS_HELP)
    worker.add_argument("--namespace", default="prolip")
    worker.add_argument("--claim-idle-s", type=float, default=60.0,
                        help="take over a task another worker left untouched this long (default 60)")
    worker.add_argument("--max-deliveries", type=int, default=3,
                        help="dead-letter a task after this many deliveries or failures (default 3)")
    worker.add_argument("--decode-workers", type=int, default=4)
    worker.add_argument("--allowed-root", action="append", default=None, metavar="DIR",
                        help="refuse item paths outside this folder (repeatable)")
    worker.set_defaults(run=run_worker)

    jobs = subparsers.add_parser("jobs", help="list indexing jobs; show one's failures; cancel one")
    jobs.add_argument("job_id", nargs="?", help="one job (default: list them all)")
    jobs.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    jobs.add_argument("--failures", type=int, default=20, metavar="N", help="failures to list for one job")
    jobs.add_argument("--cancel", action="store_true", help="cancel the job (wherever it runs)")
    jobs.set_defaults(run=run_jobs)


def _describe(status) -> str:
    total = "?" if status.total is None else str(status.total)
    line = f"{status.job_id}  {status.state:<11} {status.done}/{total} done, {status.failed} failed"
    if status.items_per_s:
        line += f", {status.items_per_s:.1f} items/s"
    if status.eta_s is not None:
        line += f", ETA {status.eta_s:.0f}s"
    if status.sync:
        line += f", {status.unchanged} unchanged, {status.removed} removed"
    line += f"  {status.collection} <- {status.source}"
    if status.error:
        line += f"\n    error: {status.error}"
    return line


def run_index(args: argparse.Namespace) -> int:
    """`index SOURCE --collection NAME`: run (or resume) a job in this process with a progress bar."""
    from .fetch import FetchPolicy
    from .jobs import JobManager, JobSettings, default_decode_workers

    if not args.collection:
        raise ValueError("indexing a source needs --collection NAME")
    if args.watch and not args.sync:
        raise ValueError("--watch keeps a folder in sync: add --sync")
    if args.poll_s <= 0:
        raise ValueError("--poll-s must be positive")
    if args.decode_workers is None:
        args.decode_workers = default_decode_workers()
    for name in ("chunk_size", "batch_size", "decode_workers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    settings = JobSettings(chunk_size=args.chunk_size, batch_size=args.batch_size, device=args.device,
                           decode_workers=args.decode_workers, namespace=args.namespace,
                           fetch=FetchPolicy(allow_private_networks=args.allow_private_urls))
    from .datadir import DataDirLock

    # Ctrl-C is ours until the very end, cleanup included (a second one there exits at once, cleanly)
    with DataDirLock(args.data_dir, "prolip-retrieval index"), _Interrupts() as interrupts:
        return _index_locked(args, settings, JobManager, interrupts)


def _index_locked(args: argparse.Namespace, settings, JobManager, interrupts) -> int:
    catalog = None
    if args.redis_url or args.milvus_uri:  # collections in Milvus, or their metadata in Redis
        from .catalog import open_catalog
        from .cli import redis_require_fsync

        options = {} if args.milvus_uri else {"redis_require_fsync": redis_require_fsync()}
        catalog = open_catalog(args.data_dir, redis_url=args.redis_url, milvus_uri=args.milvus_uri, **options)
    manager = JobManager(args.data_dir, catalog=catalog, model=args.model, redis_url=args.workers_url,
                         allowed_roots=args.allowed_root, settings=settings, model_family=args.family)
    try:
        return _index_with(manager, args, interrupts)
    finally:
        manager.close(timeout=None)  # a run still going stops at its chunk boundary first
        if catalog is not None:
            catalog.close()


class _Interrupts:
    """Ctrl-C while a job runs: the first stops it at its next chunk boundary (resumable), a second at once.

    Before the job has started, Ctrl-C raises KeyboardInterrupt as usual. Stopping at once is safe
    too: what is committed is committed (see ``indexer.jobstore``), the rest is done again on resume.
    """

    def __init__(self):
        self.count = 0
        self.stop_job = None  # set once the job runs: stops it at its next chunk boundary

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.stop_job is None and self.count == 1:
            raise KeyboardInterrupt
        if self.count == 1:
            tqdm_write("interrupted: stopping after the chunk in hand (Ctrl-C again to stop at once) ...")
            self.stop_job()
        else:
            tqdm_write("stopped at once; the job resumes from its last committed chunk: run the same command again")
            os._exit(130)


def tqdm_write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _index_with(manager, args: argparse.Namespace, interrupts: _Interrupts) -> int:
    source = manager.normalise_source(args.target)
    earlier = manager.store.find_unfinished(source, args.collection)
    if earlier is not None:
        print(f"resuming job {earlier}: {manager.status(earlier).done} items already indexed", file=sys.stderr)
    try:
        if args.watch:
            return _watch(manager, source, args, interrupts)
        job_id = manager.submit(source, args.collection, format=args.format, modality=args.modality,
                                sync=args.sync)
    except KeyboardInterrupt:
        print("interrupted before the job started", file=sys.stderr)
        return 130
    status = _run_job(manager, job_id, interrupts)
    if status.state == "interrupted":
        print(f"interrupted: {status.done + status.failed} of {status.total if status.total is not None else '?'} "
              "items are done and kept; run the same command again to resume", file=sys.stderr)
        return 130
    return _report(manager, job_id, status, args)


def _run_job(manager, job_id: str, interrupts: _Interrupts, progress: bool = True):
    """Follow the job's run; meanwhile a first Ctrl-C stops it at its next chunk boundary (see _Interrupts)."""
    interrupts.stop_job = lambda: manager.interrupt(job_id)
    try:
        return _follow(manager, job_id, progress=progress)
    finally:
        interrupts.stop_job = None


def _watch(manager, source: str, args: argparse.Namespace, interrupts: _Interrupts) -> int:
    """Sync now, then again each time the folder's files change, until Ctrl-C (SIGINT) or SIGTERM."""
    import time

    from .sync import folder_signature

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"watching {source} (checking every {args.poll_s:g}s; Ctrl-C stops)", file=sys.stderr, flush=True)
    seen = None
    try:
        while True:
            current = folder_signature(source, manager.confinement)
            if current != seen:
                job_id = manager.submit(source, args.collection, format=args.format, modality=args.modality,
                                        sync=True)
                status = _run_job(manager, job_id, interrupts, progress=False)
                if status.state == "interrupted":  # Ctrl-C while a sync ran: it resumes next time
                    print("stopped watching; the sync in progress resumes when run again", file=sys.stderr,
                          flush=True)
                    return 0
                _report(manager, job_id, status, args)
                if status.state != "completed":
                    return 1
                seen = current
            time.sleep(args.poll_s)
    except KeyboardInterrupt:  # the caller's close() stops a sync in progress at a chunk boundary; it resumes
        print("stopped watching", file=sys.stderr, flush=True)
        return 0


def _report(manager, job_id: str, status, args: argparse.Namespace) -> int:
    print(_describe(status), flush=True)
    unchanged = 0 if status.sync else manager.store.unchanged(job_id)
    if unchanged:
        print(f"{unchanged} items were unchanged since the last completed run and not encoded again")
    if status.failed:
        for failure in manager.failures(job_id, limit=max(args.show_failures, 1))[:args.show_failures]:
            print(f"  failed: {failure.location}: {failure.reason}")
        print(f"{status.failed} items failed; list them with `prolip-retrieval jobs {job_id} --data-dir "
              f"{args.data_dir} --failures N`")
    if status.state == "completed":
        return 0
    if status.state in ("paused", "interrupted"):
        print("the job can resume: run the same command again", file=sys.stderr)
    return 1


def _follow(manager, job_id: str, progress: bool = True):
    """Show a progress bar until the job's run in this process ends; returns its last status."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .jobstore import ACTIVE_STATES

    # log lines (a job's warnings) are written above the bar instead of through it
    shown_note, shown_at = None, 0.0
    with logging_redirect_tqdm(), tqdm(total=None, unit="item", dynamic_ncols=True, desc="planning",
                                       disable=not progress) as bar:
        while True:
            status = manager.wait(job_id, timeout=0.25)
            kind = status.note.split(" for ")[0] if status.note else None  # the note without its seconds
            if status.note and (kind != shown_note or time.monotonic() - shown_at > 30):
                bar.write(f"note: {status.note}", file=sys.stderr)
                shown_note, shown_at = kind, time.monotonic()
            elif not status.note:
                shown_note = None
            if status.total is not None and bar.total != status.total:
                bar.total = status.total
                bar.set_description("indexing")
            bar.update(status.done + status.failed - bar.n)
            bar.set_postfix(failed=status.failed, refresh=False)
            if status.state not in ACTIVE_STATES:
                bar.refresh()
                return status


def run_worker(args: argparse.Namespace) -> int:
    from models.encoder import Encoder

    from .fetch import FetchPolicy
    from .redis_queue import RedisQueue
    from .roots import Confinement
    from .worker import Worker, WorkerSettings, WorkerUnhealthyError

    if args.claim_idle_s <= 0 or args.max_deliveries < 1:
        raise ValueError("--claim-idle-s must be positive and --max-deliveries >= 1")
    settings = WorkerSettings(claim_idle_ms=int(args.claim_idle_s * 1000), max_deliveries=args.max_deliveries,
                              decode_workers=args.decode_workers)
    encoder = Encoder.load(args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                           batch_size=args.batch_size, family=args.family)
    fetch_policy = FetchPolicy(allow_private_networks=args.allow_private_urls)
    worker = Worker(RedisQueue.from_url(args.redis_url, args.namespace), encoder, name=args.name,
                    settings=settings, confinement=Confinement(args.allowed_root), fetch_policy=fetch_policy)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        worker.run(stop)
    except WorkerUnhealthyError as error:
        print(f"prolip-retrieval worker: stopping, the encoder is failing: {error}", file=sys.stderr)
        return 1
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    from .jobs import JobManager

    manager = JobManager(args.data_dir)
    for warning in manager.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.job_id is None:
        for status in manager.list():
            print(_describe(status))
        return 0
    try:
        status = manager.cancel(args.job_id) if args.cancel else manager.status(args.job_id)
    except LookupError as error:
        raise ValueError(str(error)) from None
    print(_describe(status))
    for failure in manager.failures(args.job_id, limit=max(args.failures, 1))[:args.failures]:
        print(f"  failed: {failure.item_id or '-'}  {failure.location}: {failure.reason}")
    return 0
