"""Tiny demo data, tokenizer and model config shared by the training tests."""

from pathlib import Path

import pytest

from models import demo_data
from models.training import TrainConfig
from models.training.vocab import build_word_level_tokenizer

TINY_MODEL = {
    "embed_dim": 16,
    "init_logit_bias": -10,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8, "init_unc_bias": -4},
    "text_cfg": {"context_length": 16, "vocab_size": 32, "width": 16, "heads": 2, "layers": 1, "init_unc_bias": -4,
                 "tokenizer_kwargs": {"clean": "canonicalize"}},
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A folder with train.jsonl (24 scenes x 4 captions = 96 pairs) and tokenizer.json."""
    folder = tmp_path_factory.mktemp("demo")
    demo_data.write_split(folder, "train", 24, corrupt_fraction=0.25)
    build_word_level_tokenizer(demo_data.vocabulary(), folder / "tokenizer.json")
    return folder


@pytest.fixture
def tiny_config(tiny_data, tmp_path):
    def make(**overrides) -> TrainConfig:
        fields = dict(data=[str(tiny_data / "train.jsonl")], tokenizer=str(tiny_data / "tokenizer.json"),
                      output_dir=str(tmp_path / "run"), model_config=TINY_MODEL, steps=4, batch_size=16,
                      lr=1e-3, warmup_steps=2, log_every=1, save_every=2, threads=1, seed=3)
        fields.update(overrides)
        return TrainConfig(**fields)
    return make
