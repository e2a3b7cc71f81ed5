"""Indexer subcommands.

* ``index SOURCE --collection NAME``: fill a collection from a folder, manifest or shards
  (the job code is in ``indexer.jobs_cli``);
* ``collections list|stats|verify|snapshot|rebuild|drop [NAME]``: inspect and maintain them;
* ``export NAME --format parquet|npy --out PATH`` / ``import PATH --collection NAME``: the
  collection's ids, means, log-variances, uncertainties and metadata as files (``indexer.exchange``);
* ``worker`` and ``jobs`` (``indexer.jobs_cli``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os

from . import jobs_cli

ACTIONS = ("list", "stats", "verify", "snapshot", "rebuild", "drop")


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser(
        "index", help="index a corpus into a collection (resumable, with a progress bar)",
        description="Index SOURCE (a folder of images, a .csv/.tsv/.jsonl manifest, or WebDataset shards "
                    "such as a-{000..009}.tar) into a collection; an interrupted run resumes when the "
                    "same command runs again.")
    index.add_argument("target", metavar="SOURCE", help="the corpus to index")
    jobs_cli.add_indexing_arguments(index)
    _add_catalog_arguments(index)
    index.set_defaults(run=jobs_cli.run_index)

    collections = subparsers.add_parser(
        "collections", help="list, inspect, verify, snapshot, rebuild or drop collections",
        description="list collections; stats (JSON); verify (checksums, store/snapshot agreement; exit 1 if "
                    "corrupt); snapshot (persist the FAISS snapshot now); rebuild (from the item store); "
                    "drop (delete, needs --yes).")
    collections.add_argument("action", choices=ACTIONS)
    collections.add_argument("name", nargs="?", metavar="NAME", help="the collection (all actions but list)")
    collections.add_argument("--yes", action="store_true", help="really delete (drop)")
    collections.add_argument("--modality", choices=jobs_cli.MODALITIES, default=None,
                             help="rebuild: the collection's modality, when its collection.json is lost and its store "
                                  "predates stored descriptions")
    collections.add_argument("--model-id", default=None,
                             help="rebuild: the model id it was built with, in the same case as --modality")
    _add_catalog_arguments(collections)
    collections.set_defaults(run=_maintain)

    export = subparsers.add_parser(
        "export", help="write a collection's Gaussians and metadata to Parquet or .npy files",
        description="Write every item's id, mean, log-variance, uncertainty (sum of variances) and metadata. "
                    "parquet: one file (Spark; autofaiss --embedding_column_name mean); npy: a folder in "
                    "clip-retrieval's layout (mean/, logvar/, uncertainty/, metadata/; autofaiss --embeddings "
                    "OUT/mean). Streams page by page; the collection must not be open in a running server.")
    export.add_argument("name", metavar="COLLECTION")
    export.add_argument("--format", choices=("parquet", "npy"), default="parquet", help="default parquet")
    export.add_argument("--out", default=None, help="where to write (default COLLECTION.parquet or COLLECTION-npy/)")
    _add_catalog_arguments(export)
    export.set_defaults(run=_export)

    load = subparsers.add_parser(
        "import", help="add vectors computed elsewhere (a Parquet file or an npy export folder)",
        description="Validate every row (ids, dimension, finite values, unit-norm means, metadata JSON, no id "
                    "twice) and that the vectors come from the collection's model, then upsert them. Running it "
                    "again after an interruption completes it.")
    load.add_argument("path", metavar="PATH", help="a .parquet file or an npy export folder")
    load.add_argument("--collection", required=True, help="collection to fill (created when missing)")
    load.add_argument("--model-id", default=None, help="the model that computed the vectors (required when the "
                                                        "file does not say; must match the file and collection)")
    load.add_argument("--modality", choices=("image", "text"), default=None,
                      help="image or text embeddings (to create the collection when the file does not say)")
    _add_catalog_arguments(load)
    load.set_defaults(run=_import)

    lite = subparsers.add_parser(
        "milvus-lite", help="run Milvus Lite's server on a port (collections shared by several API replicas)",
        description="Serve a Milvus Lite database file at http://HOST:PORT, so several `serve` processes can share "
                    "it (PROLIP_MILVUS_URI=http://HOST:PORT). For trying replicas on one machine; production runs "
                    "Milvus Standalone or Distributed (see docs/milvus-kubernetes.md).")
    lite.add_argument("db_file", metavar="DB_FILE", help="the database file (created when missing)")
    lite.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    lite.add_argument("--port", type=int, default=19530, help="port (default 19530)")
    lite.set_defaults(run=_milvus_lite)
    jobs_cli.register(subparsers)


def redis_require_fsync() -> bool:
    """PROLIP_REDIS_REQUIRE_FSYNC, as the service reads it (default true)."""
    value = os.environ.get("PROLIP_REDIS_REQUIRE_FSYNC", "true").strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError(f"PROLIP_REDIS_REQUIRE_FSYNC must be true or false, not {value!r}")
    return value in ("1", "true", "yes", "on")


def _add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=jobs_cli.DEFAULT_DATA_DIR,
                        help="catalog folder (default $PROLIP_DATA_DIR or ./data)")
    parser.add_argument("--redis-url", default=os.environ.get("PROLIP_REDIS_URL"),
                        help="Redis holding collection metadata, if any (default $PROLIP_REDIS_URL); it must fsync "
                             "its AOF on every write unless PROLIP_REDIS_REQUIRE_FSYNC=false")
    parser.add_argument("--milvus-uri", default=os.environ.get("PROLIP_MILVUS_URI"),
                        help="collections in Milvus: http://host:19530 or a Milvus Lite file (default "
                             "$PROLIP_MILVUS_URI)")


def _catalog(args: argparse.Namespace):
    """The catalog the flags name (Milvus with --milvus-uri, else the data dir), without background snapshots."""
    from .catalog import open_catalog

    options = {} if args.milvus_uri else {"auto_snapshot": False, "redis_require_fsync": redis_require_fsync()}
    return open_catalog(args.data_dir, redis_url=args.redis_url, milvus_uri=args.milvus_uri, **options)


def _data_dir_lock(args: argparse.Namespace, what: str):
    """The data dir's lock for commands that open its collections (none needed when they live in Milvus)."""
    if args.milvus_uri:
        return contextlib.nullcontext()
    from .datadir import DataDirLock

    return DataDirLock(args.data_dir, what)


def _export(args: argparse.Namespace) -> int:
    from .exchange import export_collection

    out = args.out or (f"{args.name}.parquet" if args.format == "parquet" else f"{args.name}-npy")
    with _data_dir_lock(args, "prolip-retrieval export"), _catalog(args) as catalog:
        report = export_collection(catalog.get(args.name), out, args.format)
    print(f"exported {report.count} items of {args.name} to {report.path} ({report.bytes / 2**20:.1f} MiB, "
          f"{report.rate:,.0f} items/s)")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .exchange import import_vectors

    with _data_dir_lock(args, "prolip-retrieval import"), _catalog(args) as catalog:
        report = import_vectors(catalog, args.collection, args.path, model_id=args.model_id, modality=args.modality)
    print(f"imported {report.count} items into {args.collection}{' (created)' if report.created else ''} "
          f"({report.rate:,.0f} items/s)")
    return 0


def _maintain(args: argparse.Namespace) -> int:
    from .errors import CorruptIndexError

    action = args.action
    if action != "list" and not args.name:
        raise ValueError(f"`collections {action}` needs a collection NAME")
    with _data_dir_lock(args, f"prolip-retrieval collections {action}"), _catalog(args) as catalog:
        if action == "list":
            rows = [(i.name, i.modality, str(i.size), i.dim, i.model_id, i.spec.kind, i.store) for i in catalog.list()]
            header = ("NAME", "MODALITY", "ITEMS", "DIM", "MODEL", "KIND", "STORE")
            widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
            for row in [header, *rows]:
                print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
            for name, reason in catalog.broken().items():
                print(f"BROKEN {name}: {reason}")
            return 0
        if action == "drop":
            if not args.yes:
                raise ValueError(f"dropping {args.name!r} deletes all its data; add --yes to confirm")
            catalog.drop(args.name)
            return 0
        if action == "rebuild":
            print(json.dumps(catalog.rebuild(args.name, modality=args.modality, model_id=args.model_id).stats(),
                             indent=1))
            return 0
        try:
            index = catalog.get(args.name)
        except CorruptIndexError as error:
            print(f"CORRUPT: {error}\nrun `prolip-retrieval collections rebuild {args.name}` to rebuild from the store")
            return 1
        if action == "verify":
            print(f"ok: {args.name} ({len(index)} items, {index.kind} index) verifies")
        elif action == "snapshot":
            print(json.dumps(index.snapshot(), indent=1))
        else:
            print(json.dumps(index.stats(), indent=1))
    return 0


def _milvus_lite(args: argparse.Namespace) -> int:
    import signal

    from .milvus.lite import start_server

    process = start_server(args.db_file, args.port, host=args.host)
    print(f"Milvus Lite serving {args.db_file} at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGTERM)
        return process.wait(30)
