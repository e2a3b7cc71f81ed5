"""Indexer subcommands.

* ``index SOURCE --collection NAME``: fill a collection from a folder, manifest or shards
  (the job code is in ``indexer.jobs_cli``);
* ``index list|stats|verify|snapshot|rebuild|drop [NAME]``: inspect and maintain collections;
* ``worker`` and ``jobs`` (``indexer.jobs_cli``).

One ``index`` command serves both uses: a first word that is a maintenance action selects
it, anything else is a source (write ``./list`` for a folder literally named "list").
"""

from __future__ import annotations

import argparse
import json
import os

from . import jobs_cli

ACTIONS = ("list", "stats", "verify", "snapshot", "rebuild", "drop")


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser(
        "index", help="index a corpus into a collection, or inspect and maintain collections",
        usage="prolip-retrieval index SOURCE --collection NAME [options]\n"
              "       prolip-retrieval index {list,stats,verify,snapshot,rebuild,drop} [NAME] [--yes]",
        description="With a SOURCE (a folder of images, a .csv/.tsv/.jsonl manifest, or WebDataset shards "
                    "such as a-{000..009}.tar), index it into a collection with a progress bar; an "
                    "interrupted run resumes when the same command runs again. With an action: list "
                    "collections; stats (JSON); verify (checksums, store/snapshot agreement; exit 1 if "
                    "corrupt); snapshot (persist the FAISS snapshot now); rebuild (from the item store); "
                    "drop (delete, needs --yes).")
    index.add_argument("target", metavar="SOURCE|ACTION", help="a corpus to index, or one of " + ", ".join(ACTIONS))
    index.add_argument("name", nargs="?", metavar="NAME", help="collection name, for an action")
    index.add_argument("--data-dir", default=jobs_cli.DEFAULT_DATA_DIR,
                       help="catalog folder (default $PROLIP_DATA_DIR or ./data)")
    index.add_argument("--redis-url", default=os.environ.get("PROLIP_REDIS_URL"),
                       help="Redis holding collection metadata, if any (default $PROLIP_REDIS_URL)")
    index.add_argument("--yes", action="store_true", help="really delete (drop)")
    jobs_cli.add_indexing_arguments(index)
    index.set_defaults(run=_index)
    jobs_cli.register(subparsers)


def _index(args: argparse.Namespace) -> int:
    if args.target in ACTIONS:
        return _maintain(args)
    return jobs_cli.run_index(args)


def _maintain(args: argparse.Namespace) -> int:
    from .catalog import Catalog
    from .errors import CorruptIndexError

    action = args.target
    if action != "list" and not args.name:
        raise ValueError(f"`index {action}` needs a collection NAME")
    if args.collection:
        raise ValueError(f"--collection is for indexing a source; `index {action}` takes the NAME itself")
    with Catalog(args.data_dir, redis_url=args.redis_url, auto_snapshot=False) as catalog:
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
            print(f"CORRUPT: {error}\nrun `prolip-retrieval index rebuild {args.name}` to rebuild from the store")
            return 1
        if action == "verify":
            print(f"ok: {args.name} ({len(index)} items, {index.kind} index) verifies")
        elif action == "snapshot":
            print(json.dumps(index.snapshot(), indent=1))
        else:
            print(json.dumps(index.stats(), indent=1))
    return 0
