"""Model subcommands: `doctor`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser("doctor", help="report CUDA, ONNX Runtime providers, FAISS GPU and threads")
    doctor.set_defaults(run=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose, render

    print(render(diagnose()))
    return 0
