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
    from .config import HELP, MODEL_DEPENDENT, TrainConfig

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
        meaning = HELP.get(field.name, "")
        if field.name == "data":
            parser.add_argument(flag, nargs="+", metavar="SOURCE", help=meaning)
        elif field.name == "model_config":
            parser.add_argument(flag, type=Path, metavar="JSON_FILE", help=meaning + " (a JSON file)")
        elif field.name == "occluder_grey":
            parser.add_argument(flag, type=float, nargs=2, metavar=("DARKEST", "LIGHTEST"), default=None,
                                help=meaning)
        else:
            kind = _field_type(field)
            if field.name in MODEL_DEPENDENT:
                shown = "the official value for the model (models/ARCHITECTURES.md)"
            else:
                default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
                shown = "unset" if default is None else default
            parser.add_argument(flag, type=kind, default=None, metavar=field.name.upper(),
                                help=f"{meaning} (default {shown})")
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
    from .config import ConfigError, TrainConfig

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
    try:
        return TrainConfig.from_dict(raw)
    except ConfigError as error:  # name the flags the user typed, not the recipe's fields
        raise ValueError(error.flags()) from None


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
        description="Retrieval (R@K, multi-positive mAP@R, R-Precision; cosine vs CSD vs calibrated probability), "
                    "uncertainty against caption level and corruption strength, inclusion accuracy, hierarchy "
                    "traversal, calibration of the match probability per caption level, R@1 per query-uncertainty "
                    "quintile, risk-coverage (uncertainty against top-1 cosine, degraded queries), and a gallery "
                    "mixing clean and corrupted images. Deterministic models (CLIP) get the sections that need no "
                    "uncertainty. With --output, PNG plots are written next to the JSON.")
    parser.add_argument("--model", default=None, help="model source of any family (default: the embedded demo model)")
    parser.add_argument("--family", default=None, choices=("prolip", "pcmepp", "clip"),
                        help="override the model family detected from the checkpoint's config")
    parser.add_argument("--images", type=int, default=1000, help="test images in the gallery (default 1000)")
    parser.add_argument("--corruption-images", type=int, default=200,
                        help="images per corruption sweep (default 200)")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the JSON report here, and its plots beside it (<name>-reliability.png, ...)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="calibrator file (default: calibration.json next to the model; without one, eval fits "
                             "one on the validation split)")
    parser.set_defaults(run=_eval)


def _eval(args: argparse.Namespace) -> int:
    from ..demo_eval import evaluate_demo, render_report
    from ..eval_plots import write_plots

    report = evaluate_demo(args.model, split=args.split, num_images=args.images,
                           corruption_images=args.corruption_images, device=args.device, progress=True,
                           calibration=args.calibration, family=args.family)
    print(render_report(report))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        tmp.replace(args.output)
        print(f"report written to {args.output}")
        for path in write_plots(report, args.output.parent, args.output.stem):
            print(f"plot written to {path}")
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
    parser.add_argument("--val-corrupt-fraction", type=float, default=0.0,
                        help="share of validation images given a random corruption (default 0)")
    parser.add_argument("--matches", action="store_true",
                        help="also write {split}-matches.jsonl for val and test: every true (image, caption) pair "
                             "of the split (a multi-positive manifest for `calibrate`)")
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
            fraction = {"train": args.corrupt_fraction, "val": args.val_corrupt_fraction}.get(split, 0.0)
            manifest = demo_data.write_split(args.out, split, count, progress=True, corrupt_fraction=fraction,
                                             level_repeats=tuple(args.level_repeats) if train else (1, 1, 1, 1),
                                             matches=args.matches and not train)
            print(f"{split}: {count} scenes -> {manifest}")
    tokenizer = build_word_level_tokenizer(demo_data.vocabulary(), args.out / "tokenizer.json")
    print(f"tokenizer -> {tokenizer}")
    return 0
