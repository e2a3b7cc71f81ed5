"""The shipped CLIP BPE gives the ids of the reference tokenizers, with no network.

References: open_clip's own ``SimpleTokenizer`` on 3,000 varied strings
(tests/fixtures/tokenizers/clip_bpe_open_clip.json.gz, written by
scripts/generate_tokenizer_fixtures.py), and PCME++'s ``hf_models.tokenize`` (the strings
of the PCME++ reference fixture).
"""

import gzip
import json

import pytest

from models import clip_bpe
from models.tokenizer import clip_bpe_tokenizer
from tests.conftest import FIXTURES

TOKENIZERS = FIXTURES / "tokenizers"


@pytest.fixture(scope="module")
def open_clip_golden():
    with gzip.open(TOKENIZERS / "clip_bpe_open_clip.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize("context", [77, 16])
def test_ids_equal_open_clip_simple_tokenizer(open_clip_golden, context):
    expected = open_clip_golden["ids"][str(context)]
    texts = open_clip_golden["texts"][:len(expected)]
    ids = clip_bpe_tokenizer(context)(texts).tolist()
    mismatches = [(text, want, got) for text, want, got in zip(texts, expected, ids, strict=True) if want != got]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, first: {mismatches[0]}"


def test_golden_strings_cover_the_hard_cases(open_clip_golden):
    texts, ids = open_clip_golden["texts"], open_clip_golden["ids"]["77"]
    assert "" in texts and any("&amp;" in t for t in texts) and any("👨‍👩‍👧‍👦" in t for t in texts)
    assert sum(row[-1] == clip_bpe.EOT_ID for row in ids) > 100  # many are cut at the context
    assert any(clip_bpe.SOT_ID in row[1:] for row in ids)  # a literal "<start_of_text>" in a text


def test_ids_equal_pcmepp_tokenize():
    golden = json.loads((TOKENIZERS / "pcmepp_tokenize.json").read_text(encoding="utf-8"))
    tokenizer = clip_bpe_tokenizer(golden["context_length"])
    assert tokenizer(golden["texts"]).tolist() == golden["ids"]


def test_layout_pad_and_end_token():
    tokenizer = clip_bpe_tokenizer(8)
    assert tokenizer.vocab_size == 49408 and tokenizer.pad_id == 0
    assert tokenizer.added_ids == (clip_bpe.SOT_ID, clip_bpe.EOT_ID)
    assert tokenizer.special_ids == {0, 49406, 49407}
    assert tokenizer.mask_id == 286  # "?</w>", the official --replace-token for CLIP ids
    ids = tokenizer(["a photo", "one two three four five six seven"]).tolist()
    assert ids[0] == [49406, 320, 1125, 49407, 0, 0, 0, 0]
    assert ids[1][0] == 49406 and ids[1][-1] == 49407 and len(ids[1]) == 8
    # transformers' CLIPTokenizer pads with the end token instead; available on request
    assert clip_bpe_tokenizer(8, pad_id=49407)("a photo").tolist()[0][4:] == [49407] * 4


def test_builds_with_no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    clip_bpe._vocab_and_merges.cache_clear()
    assert clip_bpe_tokenizer(77)("a dog").shape == (1, 77)
