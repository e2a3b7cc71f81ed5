"""Service fixtures: a real encoder on the reference checkpoint, real apps, real servers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REFERENCE, write_wordlevel_tokenizer

WORDS = ("a an the red blue green yellow purple white circle square triangle diamond photo of dog cat object "
         "large small left right middle on in").split()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The b16like reference checkpoint with a small tokenizer: a complete model folder (image size 32)."""
    folder = tmp_path_factory.mktemp("model") / "b16like"
    shutil.copytree(REFERENCE / "b16like", folder)
    write_wordlevel_tokenizer(folder / "tokenizer.json", WORDS)
    return folder


@pytest.fixture(scope="session")
def encoder(model_dir):
    from models.encoder import Encoder

    return Encoder.load(model_dir, device="cpu", batch_size=16)
