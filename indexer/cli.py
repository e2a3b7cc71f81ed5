"""Index subcommands: `prolip-retrieval index list|stats|verify|snapshot|rebuild|drop`."""

from __future__ import annotations

import argparse
import json
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser("index", help="inspect and maintain the Gaussian indexes under a data folder")
    index.add_argument("--data-dir", default=os.environ.get("PROLIP_DATA_DIR", "data"),
                       help="catalog folder (default $PROLIP_DATA_DIR or ./data)")
    index.add_argument("--redis-url", default=os.environ.get("PROLIP_REDIS_URL"),
                       help="Redis holding collection metadata, if any (default $PROLIP_REDIS_URL)")
    actions = index.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="collections with their size, modality, model and index kind")
    for name, text in (("stats", "size, index, uncertainty quantiles and histogram, as JSON"),
                       ("verify", "open the collection: checksums, store/snapshot agreement (exit 1 if corrupt)"),
                       ("snapshot", "persist the FAISS snapshot now (compacting/retraining when due)"),
                       ("rebuild", "discard the FAISS snapshot and rebuild it from the item store"),
                       ("drop", "delete the collection and all its data")):
        action = actions.add_parser(name, help=text)
        action.add_argument("name", help="collection name")
        if name == "drop":
            action.add_argument("--yes", action="store_true", help="really delete")
    index.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from .catalog import Catalog
    from .errors import CorruptIndexError

    with Catalog(args.data_dir, redis_url=args.redis_url, auto_snapshot=False) as catalog:
        if args.action == "list":
            rows = [(i.name, i.modality, str(i.size), i.dim, i.model_id, i.spec.kind, i.store) for i in catalog.list()]
            header = ("NAME", "MODALITY", "ITEMS", "DIM", "MODEL", "KIND", "STORE")
            widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
            for row in [header, *rows]:
                print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
            return 0
        if args.action == "drop":
            if not args.yes:
                raise ValueError(f"dropping {args.name!r} deletes all its data; add --yes to confirm")
            catalog.drop(args.name)
            return 0
        if args.action == "rebuild":
            print(json.dumps(catalog.rebuild(args.name).stats(), indent=1))
            return 0
        try:
            index = catalog.get(args.name)
        except CorruptIndexError as error:
            print(f"CORRUPT: {error}\nrun `prolip-retrieval index rebuild {args.name}` to rebuild from the store")
            return 1
        if args.action == "verify":
            print(f"ok: {args.name} ({len(index)} items, {index.kind} index) verifies")
        elif args.action == "snapshot":
            print(json.dumps(index.snapshot(), indent=1))
        else:
            print(json.dumps(index.stats(), indent=1))
    return 0
