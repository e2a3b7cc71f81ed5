"""`prolip-retrieval`: one console script, one subcommand per job.

Each subcommand lives next to the code it drives and registers itself through a
``register(subparsers)`` function; this module only assembles them, importing nothing
heavy until a subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

# module path of each subcommand's register() function, in help order
SUBCOMMANDS = (
    "service.cli_serve",
    "service.cli_doctor",
    "models.cli",
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
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the subcommands are imported
        return 130
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_noisy_loggers()
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # here, so a reader that went away is met inside the try
        return _exiting(status)
    except KeyboardInterrupt:
        return _exiting(130)
    except BrokenPipeError:
        # the reader went away (`prolip-retrieval jobs | head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except Exception as error:
        if not is_user_error(error):
            raise  # a bug: the traceback is what helps
        # user-facing failures (bad source, bad flag values, unknown names, damaged files): one clear line
        print(f"prolip-retrieval {args.command}: error: {error}", file=sys.stderr)
        return 2


def _exiting(status: int) -> int:
    """After an interrupt the process only exits: a further Ctrl-C there is ignored, not a traceback from
    the interpreter's own clean-up."""
    if status == 130:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return status


def is_user_error(error: Exception) -> bool:
    """Whether an error is about what the user asked for or has on disk, not a bug."""
    if isinstance(error, (ValueError, LookupError, OSError, RuntimeError)):
        return True
    from indexer.errors import IndexerError  # here: only when something failed

    return isinstance(error, IndexerError)


def quiet_noisy_loggers() -> None:
    """Libraries that log one INFO line per request (httpx, for every URL a job fetches) log warnings only."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
