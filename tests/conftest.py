"""Shared fixtures: paths to the reference checkpoints copied from the official implementation."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "prolip-reference"
REFERENCE_MODELS = ("b16like", "h14like")


@pytest.fixture(params=REFERENCE_MODELS)
def reference_dir(request) -> Path:
    return REFERENCE / request.param
