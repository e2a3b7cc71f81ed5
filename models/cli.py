"""Model subcommands: `calibrate` (`doctor` is the service's: it also reads the collections)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    calibrate = subparsers.add_parser(
        "calibrate", help="fit a model's match-probability calibrator from labelled image-caption pairs",
        description="Fit P(caption true of image) for a model from labelled pairs: a JSON Lines file of "
                    "{image, caption, match 0/1} rows, or a multi-positive manifest of {image, caption} rows that "
                    "lists every true pair (all other combinations are non-matches). Prints a reliability table "
                    "(held-out images, raw vs calibrated) and saves the calibrator, metrics included, as "
                    "calibration.json next to the model, or at --out.")
    calibrate.add_argument("--model", default=None, help="model source (default: the embedded demo model)")
    calibrate.add_argument("--pairs", type=Path, required=True, help="labelled pairs or multi-positive manifest")
    calibrate.add_argument("--out", type=Path, default=None,
                           help="where to write the calibrator (default: calibration.json in the model's folder; "
                                "needed for hf-hub models, whose cache is not yours to write: then point "
                                "PROLIP_CALIBRATION or --calibration at it)")
    calibrate.add_argument("--max-pairs", type=int, default=2_000_000,
                           help="multi-positive manifests: most pairs fitted on; above it non-matches are sampled "
                                "and weighted (default 2,000,000)")
    calibrate.add_argument("--holdout", type=float, default=0.2,
                           help="share of images held out to measure the calibrator before the final fit (default 0.2)")
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--note", default=None, help="what the pairs are, in words (stored with the calibrator)")
    calibrate.add_argument("--device", default="auto")
    calibrate.set_defaults(run=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate, render
    from .encoder import Encoder
    from .loading import HUB_PREFIX, default_model_source

    if args.max_pairs < 2:
        raise ValueError("--max-pairs must be at least 2")
    source = default_model_source() if args.model is None else args.model
    out = args.out
    if out is None:
        if str(source).startswith((HUB_PREFIX, "arch:")):
            raise ValueError("give --out for a hub or arch: model: its folder is a cache, not yours to write")
        out = Path(source) / "calibration.json"
    # the file next to the model is not read: a stale one for other weights must not stop a refit
    encoder = Encoder.load(source, device=args.device, batch_size=128, load_calibration=False)
    calibrator = calibrate(encoder, args.pairs, max_pairs=args.max_pairs, holdout=args.holdout, seed=args.seed,
                           progress=True, note=args.note)
    print(render(calibrator))
    calibrator.save(out)
    print(f"\ncalibrator written to {out} (its reliability tables and fit description are in the file)")
    return 0
