"""Indexer subcommands.

* ``index SOURCE --collection NAME``: fill a collection from a folder, manifest or shards
  (the job code is in ``indexer.jobs_cli``);
* ``collections list|stats|verify|snapshot|rebuild|drop [NAME]``: inspect and maintain them;
* ``worker`` and ``jobs`` (``indexer.jobs_cli``).
"""

from __future__ import annotations

import argparse
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
    _add_catalog_arguments(collections)
    collections.set_defaults(run=_maintain)
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


def _add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=jobs_cli.DEFAULT_DATA_DIR,
                        help="catalog folder (default $PROLIP_DATA_DIR or ./data)")
    parser.add_argument("--redis-url", default=os.environ.get("PROLIP_REDIS_URL"),
                        help="Redis holding collection metadata, if any (default $PROLIP_REDIS_URL)")
    parser.add_argument("--milvus-uri", default=os.environ.get("PROLIP_MILVUS_URI"),
                        help="collections in Milvus: http://host:19530 or a Milvus Lite file (default "
                             "$PROLIP_MILVUS_URI)")


def _maintain(args: argparse.Namespace) -> int:
    from .catalog import open_catalog
    from .errors import CorruptIndexError

    action = args.action
    if action != "list" and not args.name:
        raise ValueError(f"`collections {action}` needs a collection NAME")
    options = {} if args.milvus_uri else {"auto_snapshot": False}
    with open_catalog(args.data_dir, redis_url=args.redis_url, milvus_uri=args.milvus_uri, **options) as catalog:
        if action == "list":
            rows = [(i.name, i.modality, str(i.size), i.dim, i.model_id, i.spec.kind, i.store) for i in catalog.list()]
            header = ("NAME", "MODALITY", "ITEMS", "DIM", "MODEL", "KIND", "STORE")
            widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
            for row in [header, *rows]:
                print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
            return 0
        if action == "drop":
            if not args.yes:
                raise ValueError(f"dropping {args.name!r} deletes all its data; add --yes to confirm")
            catalog.drop(args.name)
            return 0
        if action == "rebuild":
            print(json.dumps(catalog.rebuild(args.name).stats(), indent=1))
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
