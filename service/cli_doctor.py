"""`prolip-retrieval doctor`: the machine (CUDA, ONNX Runtime, FAISS, threads), the model, the collections.

The machine findings come from ``models.doctor``; this command adds what only the service
layer sees together: the configured model's family, and each collection of the data dir with
the family of the model that embedded it (a deterministic model's collection has no
uncertainty), so a data dir filled by another model is visible before a query fails on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser(
        "doctor", help="report CUDA, ONNX Runtime providers, FAISS GPU and threads, the model and the collections")
    doctor.add_argument("--data-dir", default=None, help="collections to list (default: the data_dir setting)")
    doctor.add_argument("--model", dest="model_source", default=None,
                        help="model to describe (default: the model_source setting, else the embedded demo model)")
    doctor.set_defaults(run=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from models.doctor import diagnose, render

    from .settings import load_settings

    settings = load_settings(None, data_dir=args.data_dir, model_source=args.model_source)
    findings = diagnose() + model_findings(settings.model_source) + collection_findings(Path(settings.data_dir))
    print(render(findings))
    return 0


def model_findings(source: str | None):
    from models.doctor import Finding
    from models.families import DETERMINISTIC
    from models.loading import default_model_source, load_config

    source = source or default_model_source()
    try:
        family = load_config(source).family
    except (ValueError, OSError) as error:
        return [Finding("model", "warn", f"{source}: cannot be read ({error})")]
    kind = "deterministic: points, no uncertainty" if DETERMINISTIC[family] else "Gaussian embeddings"
    return [Finding("model", "info", f"{source}: {family} family ({kind})")]


def collection_findings(data_dir: Path):
    """One finding per collection: modality, size, model family and id (read-only: safe beside a server)."""
    from indexer import list_collections
    from models.doctor import Finding

    if not data_dir.is_dir():
        return [Finding("collections", "info", f"none: {data_dir} does not exist yet")]
    infos = list_collections(data_dir)
    if not infos:
        return [Finding("collections", "info", f"none in {data_dir}")]
    findings = []
    for info in infos:
        family = info.model_family or "unknown family (created before families were recorded)"
        kind = ", deterministic: no uncertainty" if info.deterministic else ""
        size = "?" if info.size is None else f"{info.size:,}"
        findings.append(Finding(f"collection {info.name}", "info",
                                f"{info.modality}, {size} items, {family}{kind}, model {info.model_id}"))
    return findings
