"""`prolip-retrieval`: one console script, one subcommand per job.

Each subcommand lives next to the code it drives and registers itself through a
``register(subparsers)`` function; this module only assembles them, importing nothing
heavy until a subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# module path of each subcommand's register() function, in help order
SUBCOMMANDS = (
    "service.cli_serve",
    "service.cli_doctor",
    "indexer.cli",
    "models.training.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prolip-retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # user-facing failures (bad source, bad flag values): one clear line, no traceback
        print(f"prolip-retrieval {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
