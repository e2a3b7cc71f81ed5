"""A model folder for service benchmarks when the embedded demo model is not there yet.

The demo model (``models/demo/``) is trained separately; until it exists, the service
benchmarks run on the small reference checkpoint of the parity tests (the b16like layout,
image size 32) with a word-level tokenizer. Figures are then ratios on that model, and the
report says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"
REFERENCE = ROOT / "tests" / "fixtures" / "prolip-reference" / "b16like"
WORDS = "a an the red blue green yellow purple white circle square triangle diamond large small left right".split()


def service_model(requested: str | None, scratch: Path) -> tuple[str | None, str]:
    """(model source to serve, a note for the report)."""
    if requested is not None:
        return requested, f"model {requested}"
    if (DEMO / "config.json").exists():
        return None, "the embedded demo model"
    from tests.conftest import write_wordlevel_tokenizer

    folder = scratch / "reference-b16like"
    if not folder.exists():
        shutil.copytree(REFERENCE, folder)
        write_wordlevel_tokenizer(folder / "tokenizer.json", WORDS)
    return str(folder), "the small reference checkpoint (demo model not built yet)"
