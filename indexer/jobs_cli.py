"""The job side of the CLI: `index SOURCE --collection NAME`, `worker` and `jobs`."""

from __future__ import annotations

import argparse
import os
import sys
import threading

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
    group.add_argument("--decode-workers", type=int, default=4, help="image reading/decoding threads (default 4)")
    group.add_argument("--allowed-root", action="append", default=None, metavar="DIR",
                       help="confine every path to this folder (repeatable)")
    group.add_argument("--show-failures", type=int, default=10, metavar="N", help="failures to print at the end")
    group.add_argument("--allow-private-urls", action="store_true", help=PRIVATE_URLS_HELP)


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
    line += f"  {status.collection} <- {status.source}"
    if status.error:
        line += f"\n    error: {status.error}"
    return line


def run_index(args: argparse.Namespace) -> int:
    """`index SOURCE --collection NAME`: run (or resume) a job in this process with a progress bar."""
    from .fetch import FetchPolicy
    from .jobs import JobManager, JobSettings

    if not args.collection:
        raise ValueError("indexing a source needs --collection NAME")
    for name in ("chunk_size", "batch_size", "decode_workers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    settings = JobSettings(chunk_size=args.chunk_size, batch_size=args.batch_size, device=args.device,
                           decode_workers=args.decode_workers, namespace=args.namespace,
                           fetch=FetchPolicy(allow_private_networks=args.allow_private_urls))
    catalog = None
    if args.redis_url:  # collection metadata kept in Redis: the catalog must be opened with it
        from .catalog import Catalog

        catalog = Catalog(args.data_dir, redis_url=args.redis_url)
    manager = JobManager(args.data_dir, catalog=catalog, model=args.model, redis_url=args.workers_url,
                         allowed_roots=args.allowed_root, settings=settings, model_family=args.family)
    try:
        return _index_with(manager, args)
    finally:
        manager.close()
        if catalog is not None:
            catalog.close()


def _index_with(manager, args: argparse.Namespace) -> int:
    source = manager.normalise_source(args.target)
    earlier = manager.store.find_unfinished(source, args.collection)
    if earlier is not None:
        print(f"resuming job {earlier}: {manager.status(earlier).done} items already indexed", file=sys.stderr)
    try:
        job_id = manager.submit(source, args.collection, format=args.format, modality=args.modality)
        status = _follow(manager, job_id)
    except KeyboardInterrupt:  # the caller's close() stops the run at a chunk boundary: it stays resumable
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(_describe(status))
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


def _follow(manager, job_id: str):
    """Show a progress bar until the job's run in this process ends; returns its last status."""
    from tqdm import tqdm

    from .jobstore import ACTIVE_STATES

    with tqdm(total=None, unit="item", dynamic_ncols=True, desc="planning") as bar:
        while True:
            status = manager.wait(job_id, timeout=0.25)
            if status.total is not None and bar.total != status.total:
                bar.total = status.total
                bar.set_description("indexing")
            bar.update(status.done + status.failed - bar.n)
            bar.set_postfix(failed=status.failed, refresh=False)
            if status.state not in ACTIVE_STATES:
                bar.refresh()
                return status


def run_worker(args: argparse.Namespace) -> int:
    import signal

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
