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
    collections.add_argument("--modality", choices=jobs_cli.MODALITIES, default=None,
                             help="rebuild: the collection's modality, when its collection.json is lost and its store "
                                  "predates stored descriptions")
    collections.add_argument("--model-id", default=None,
                             help="rebuild: the model id it was built with, in the same case as --modality")
    _add_catalog_arguments(collections)
    collections.set_defaults(run=_maintain)
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


def _maintain(args: argparse.Namespace) -> int:
    from .catalog import Catalog
    from .errors import CorruptIndexError

    action = args.action
    if action != "list" and not args.name:
        raise ValueError(f"`collections {action}` needs a collection NAME")
    from .datadir import DataDirLock

    with DataDirLock(args.data_dir, f"prolip-retrieval collections {action}"), \
            Catalog(args.data_dir, redis_url=args.redis_url, auto_snapshot=False,
                    redis_require_fsync=redis_require_fsync()) as catalog:
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
