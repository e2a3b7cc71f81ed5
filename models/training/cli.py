"""Training subcommands: `train`, `eval`, `demo-data`.

`train` options are generated from ``TrainConfig`` so the recipe and the command line
never drift apart: ``--config recipe.json`` gives the base, any flag overrides it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_MODEL_SOURCES = ("model_config", "arch", "init_from")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_train(subparsers)
    _register_eval(subparsers)
    _register_demo_data(subparsers)


# --------------------------------------------------------------------------- train
def _register_train(subparsers: argparse._SubParsersAction) -> None:
    from .config import TrainConfig

    parser = subparsers.add_parser(
        "train", help="train or fine-tune a ProLIP model (torchrun for several processes)",
        description="Train ProLIP with PPCL + inclusion + VIB. Under torchrun each process trains on its share "
                    "(DDP). Flags override the --config recipe.")
    parser.add_argument("--config", type=Path, help="JSON recipe with TrainConfig fields")
    parser.add_argument("--resume", nargs="?", const="auto",
                        help="resume from a checkpoint file, or (no value) the output folder's latest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "data":
            parser.add_argument(flag, nargs="+", help="manifests (.jsonl/.csv), .tar shards or folders of shards")
        elif field.name == "model_config":
            parser.add_argument(flag, type=Path, help="JSON file with a model config (a released config.json)")
        else:
            kind = _field_type(field)
            parser.add_argument(flag, type=kind, default=None, help=f"(default {field.default!r})")
    parser.set_defaults(run=_train)


def _field_type(field: dataclasses.Field) -> Any:
    default = field.default
    if isinstance(default, bool):
        return lambda text: text.lower() in ("1", "true", "yes")
    if isinstance(default, float) or "float" in str(field.type):
        return float
    if isinstance(default, int) or "int" in str(field.type):
        return int
    return str


def train_config_from_args(args: argparse.Namespace):
    """Merge the recipe file with the command-line flags into a TrainConfig."""
    from .config import TrainConfig

    raw: dict[str, Any] = {}
    if args.config:
        try:
            raw = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read training recipe {args.config}: {error}") from None
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    if "model_config" in overrides:
        path = Path(overrides["model_config"])
        try:
            overrides["model_config"] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read model config {path}: {error}") from None
    if any(name in overrides for name in _MODEL_SOURCES):  # a model given on the command line wins
        for name in _MODEL_SOURCES:
            raw.pop(name, None)
    raw.update(overrides)
    return TrainConfig.from_dict(raw)


def _train(args: argparse.Namespace) -> int:
    from .trainer import train

    result = train(train_config_from_args(args), resume=args.resume, progress=not args.no_progress)
    if result.skipped:
        log.warning("bad pairs skipped: %s", result.skipped)
    if result.model_dir is not None:
        print(f"trained {result.step} steps; model in {result.model_dir}")
    else:
        print(f"stopped at step {result.step}; resume with --resume (checkpoint {result.checkpoint})")
    return 0


# --------------------------------------------------------------------------- eval
def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a model (any family) on the demo world's held-out test split",
        description="Retrieval (R@K, multi-positive mAP@R, R-Precision; cosine vs CSD), uncertainty "
                    "against caption level and corruption strength, inclusion accuracy, risk-coverage of "
                    "image->text retrieval from degraded queries, hierarchy traversal. Deterministic models "
                    "(CLIP) get the sections that need no uncertainty.")
    parser.add_argument("--model", default=None, help="model source of any family (default: the embedded demo model)")
    parser.add_argument("--family", default=None, choices=("prolip", "pcmepp", "clip"),
                        help="override the model family detected from the checkpoint's config")
    parser.add_argument("--images", type=int, default=1000, help="test images in the gallery (default 1000)")
    parser.add_argument("--corruption-images", type=int, default=200,
                        help="images per corruption sweep (default 200)")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON report here")
    parser.set_defaults(run=_eval)


def _eval(args: argparse.Namespace) -> int:
    from ..demo_eval import evaluate_demo, render_report

    report = evaluate_demo(args.model, split=args.split, num_images=args.images,
                           corruption_images=args.corruption_images, device=args.device, progress=True,
                           family=args.family)
    print(render_report(report))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        tmp.replace(args.output)
        print(f"report written to {args.output}")
    return 0


# --------------------------------------------------------------------------- demo data
def _register_demo_data(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo-data", help="write the demo world's scenes (PNG + JSONL manifest) and its word-level tokenizer")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--train", type=int, default=0, help="train scenes (default 0)")
    parser.add_argument("--val", type=int, default=0, help="validation scenes (default 0)")
    parser.add_argument("--test", type=int, default=0, help="test scenes (default 0)")
    parser.add_argument("--corrupt-fraction", type=float, default=0.0,
                        help="share of train images given a random corruption (default 0)")
    parser.add_argument("--level-repeats", type=int, nargs=4, default=(1, 1, 1, 1), metavar=("L0", "L1", "L2", "L3"),
                        help="train manifest rows per image for caption levels 0..3 (default 1 1 1 1)")
    parser.set_defaults(run=_demo_data)


def _demo_data(args: argparse.Namespace) -> int:
    from .. import demo_data
    from .vocab import build_word_level_tokenizer

    for split in ("train", "val", "test"):
        count = getattr(args, split)
        if count < 0:
            raise ValueError(f"--{split} must be >= 0")
        if count:
            train = split == "train"
            manifest = demo_data.write_split(args.out, split, count, progress=True,
                                             corrupt_fraction=args.corrupt_fraction if train else 0.0,
                                             level_repeats=tuple(args.level_repeats) if train else (1, 1, 1, 1))
            print(f"{split}: {count} scenes -> {manifest}")
    tokenizer = build_word_level_tokenizer(demo_data.vocabulary(), args.out / "tokenizer.json")
    print(f"tokenizer -> {tokenizer}")
    return 0
