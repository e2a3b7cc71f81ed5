"""Tokenizers: cleaning, EOS/padding/truncation, and refusing the wrong tokenizer."""

import pytest
import torch

from models import ModelSourceError
from models.tokenizer import Tokenizer, clean_canonicalize, clip_bpe_tokenizer, load_tokenizer
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
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # the hub client reads the variables at import: another test may have imported it already
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelSourceError, match="huggingface-cli download") as error:
        load_tokenizer("arch:ViT-B-16-ProLIP")
    message = str(error.value)
    assert "timm/ViT-B-16-SigLIP tokenizer.json tokenizer_config.json" in message
    assert "next to its config.json and model.safetensors" in message


def test_vit_h14_tokenises_offline_with_the_shipped_clip_bpe(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    tokenizer = load_tokenizer("arch:ViT-H-14-ProLIP")
    assert (tokenizer.kind, tokenizer.context_length, tokenizer.pad_id, tokenizer.clean_name) == ("clip-bpe", 77, 0,
                                                                                                    "lower")
    assert tokenizer("A photo.").tolist()[0][:5] == [49406, 320, 1125, 269, 49407]
    # explicit and overridable: transformers' CLIP padding, or another tokenizer altogether
    assert load_tokenizer("arch:ViT-H-14-ProLIP", pad_id=49407)("a").tolist()[0][-1] == 49407


def test_override_with_a_tokenizer_file(reference_model_with_tokenizer, tmp_path):
    path = write_wordlevel_tokenizer(tmp_path / "other.json", ["dog"])
    tokenizer = load_tokenizer(reference_model_with_tokenizer, tokenizer=path)
    assert tokenizer.path == path and tokenizer("dog").tolist()[0][:2] == [3, 1]
    with pytest.raises(ModelSourceError, match="neither 'clip-bpe' nor"):
        load_tokenizer(reference_model_with_tokenizer, tokenizer=tmp_path / "missing.json")


def test_saved_tokenizer_keeps_its_pad_id(tmp_path):
    path = write_wordlevel_tokenizer(tmp_path / "tokenizer.json", "a red circle".split())
    tokenizer = Tokenizer(path, context_length=6, pad_id=2, clean="canonicalize")
    folder = tmp_path / "export"
    folder.mkdir()
    saved = tokenizer.save(folder)
    from models.tokenizer import file_tokenizer

    again = file_tokenizer(saved, 6, "canonicalize")
    assert again.pad_id == 2 and again("a red").tolist() == tokenizer("a red").tolist()
    assert clip_bpe_tokenizer(8).save(folder / "clip") is None  # the shipped vocabulary needs no file


def test_siglip_mask_token_is_the_official_replace_token(tmp_path):
    path = write_wordlevel_tokenizer(tmp_path / "tokenizer.json", ["a", "<extra_id_99>"])
    assert Tokenizer(path, 4).mask_id == 4
    assert Tokenizer(write_wordlevel_tokenizer(tmp_path / "plain.json", ["a"]), 4).mask_id is None
