"""Tokenizers: cleaning, EOS/padding/truncation, and refusing the wrong tokenizer."""

import pytest
import torch

from models import ModelSourceError
from models.tokenizer import Tokenizer, clean_canonicalize, load_tokenizer
from tests.conftest import REFERENCE, write_wordlevel_tokenizer


def test_canonicalize_drops_punctuation_and_case():
    assert clean_canonicalize("  A RED, circle!  &amp; a_dog ") == "a red circle a dog"


@pytest.fixture
def tokenizer(tmp_path):
    path = write_wordlevel_tokenizer(tmp_path / "tokenizer.json", "a red circle blue square".split())
    return Tokenizer(path, context_length=6, pad_id=0, clean="canonicalize")


def test_eos_then_padding(tokenizer):
    ids = tokenizer(["A red circle.", ""])
    assert ids.dtype == torch.long and ids.shape == (2, 6)
    vocab = tokenizer._tokenizer.get_vocab()
    assert ids[0].tolist() == [vocab["a"], vocab["red"], vocab["circle"], 1, 0, 0]
    assert ids[1].tolist() == [1, 0, 0, 0, 0, 0]


def test_truncation_keeps_the_end_token(tokenizer):
    ids = tokenizer("a red circle " * 10)
    assert ids.shape == (1, 6)
    assert ids[0, -1].item() == 1


def test_unknown_cleaning_is_refused(tmp_path):
    path = write_wordlevel_tokenizer(tmp_path / "tokenizer.json", ["a"])
    with pytest.raises(ValueError, match="unknown text cleaning"):
        Tokenizer(path, 4, clean="shout")


def test_model_folder_tokenizer_is_used(reference_model_with_tokenizer):
    tokenizer = load_tokenizer(reference_model_with_tokenizer)
    assert tokenizer.context_length == 16  # from the model's config
    assert tokenizer("a photo of a dog").shape == (1, 16)


def test_a_tokenizer_too_big_for_the_model_is_refused(reference_model_with_tokenizer):
    write_wordlevel_tokenizer(reference_model_with_tokenizer / "tokenizer.json", [f"w{i}" for i in range(200)])
    with pytest.raises(ModelSourceError, match="not this model's tokenizer"):
        load_tokenizer(reference_model_with_tokenizer)


def test_missing_tokenizer_is_an_error_not_a_substitute():
    # The reference folder has no tokenizer.json and its config names no hub tokenizer.
    with pytest.raises(ModelSourceError, match="no tokenizer"):
        load_tokenizer(REFERENCE / "b16like")


def test_offline_hub_tokenizer_error_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelSourceError, match="huggingface-cli download"):
        load_tokenizer("arch:ViT-B-16-ProLIP")
