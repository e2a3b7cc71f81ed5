"""SigLIP-style tokenisation equals the official pipeline's: transformers' own classes are the reference.

The official call (naver-ai/prolip ``HFTokenizer.__call__``) is
``AutoTokenizer.from_pretrained(repo)(clean(texts), max_length=L, padding="max_length",
truncation=True)``. The tokenizer files (tests/fixtures/tokenizers/siglip_style: a small
sentencepiece model with SigLIP's id layout, saved by transformers as open_clip saved the
timm SigLIP tokenizers) and the cleaned strings (open_clip's own "canonicalize" cleaner)
come from scripts/generate_tokenizer_fixtures.py.
"""

import gzip
import json
import shutil

import pytest

from models.config import ModelConfig
from models.tokenizer import SIGLIP_PAD_TOKEN, tokenizer_for
from tests.conftest import FIXTURES

TOKENIZERS = FIXTURES / "tokenizers"
SIGLIP_STYLE = TOKENIZERS / "siglip_style"


def _config(context_length: int) -> ModelConfig:
    """A released SigLIP ProLIP config, small: it names the hub tokenizer and canonicalize cleaning."""
    return ModelConfig.from_dict({
        "embed_dim": 64, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 1},
        "text_cfg": {"context_length": context_length, "vocab_size": 100, "width": 64, "heads": 4, "layers": 1,
                     "hf_tokenizer_name": "timm/ViT-B-16-SigLIP", "tokenizer_kwargs": {"clean": "canonicalize"}}})


@pytest.fixture(scope="module")
def golden():
    with gzip.open(TOKENIZERS / "clip_bpe_open_clip.json.gz", "rt", encoding="utf-8") as handle:
        data = json.load(handle)
    return data["texts"], data["cleaned"]["canonicalize"]


@pytest.fixture(scope="module")
def reference():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(SIGLIP_STYLE))


@pytest.mark.parametrize("context, count", [(64, 3000), (16, 1000)])
def test_ids_equal_transformers_official_call(golden, reference, context, count):
    texts, cleaned = golden[0][:count], golden[1][:count]
    assert reference.pad_token_id == 1 and reference.eos_token_id == 1
    expected = reference(cleaned, max_length=context, padding="max_length", truncation=True).input_ids
    # a released model folder made offline: the hub tokenizer files next to config.json
    ours = tokenizer_for(_config(context), SIGLIP_STYLE)
    ids = ours(texts).tolist()
    mismatches = [(text, want, got) for text, want, got in zip(texts, expected, ids, strict=True) if want != got]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, first: {mismatches[0]}"
    assert sum(row[-1] == 1 and row[-2] != 1 for row in ids) > 100  # cut texts end with </s>


def test_cleaning_equals_open_clip_canonicalize(golden):
    from models.tokenizer import clean_canonicalize

    texts, cleaned = golden
    assert [clean_canonicalize(text) for text in texts] == cleaned


def test_pieces_equal_sentencepiece_itself(golden):
    """The Unigram model in tokenizer.json segments as the sentencepiece library does (an independent reference)."""
    import sentencepiece as spm

    texts, cleaned = golden
    processor = spm.SentencePieceProcessor(model_file=str(SIGLIP_STYLE / "spiece.model"))
    ours = tokenizer_for(_config(64), SIGLIP_STYLE)
    for text, clean, row in zip(texts[:1000], cleaned[:1000], ours(texts[:1000]).tolist(), strict=True):
        pieces = processor.encode(clean)[:63] + [1]
        assert row[:len(pieces)] == pieces, text
        assert all(token == 1 for token in row[len(pieces):])


def test_pad_token_is_the_official_one_when_the_files_do_not_say(tmp_path):
    """Only tokenizer.json copied next to the model: the official SigLIP pad token (</s> = 1) applies."""
    shutil.copy(SIGLIP_STYLE / "tokenizer.json", tmp_path / "tokenizer.json")
    tokenizer = tokenizer_for(_config(8), tmp_path)
    assert tokenizer.pad_id == tokenizer.token_to_id(SIGLIP_PAD_TOKEN) == 1
    assert tokenizer("").tolist() == [[1] * 8]
    assert tokenizer.special_ids == {1}
