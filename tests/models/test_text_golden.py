"""Raw strings -> ids -> text embeddings equal the official pipeline's, end to end.

Golden files (tests/fixtures/prolip-reference/text-golden, written by
scripts/generate_text_golden.py): the official ``prolip.tokenizer.HFTokenizer`` on a
SigLIP-layout tokenizer with the b16like reference model, and open_clip's
``SimpleTokenizer`` with a CLIP-vocabulary model built by the official ``prolip.model.ProLIP``.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from models import load_model
from models.tokenizer import load_tokenizer
from tests.conftest import FIXTURES, REFERENCE

GOLDEN = REFERENCE / "text-golden"
ATOL = 1e-5


def _check(folder, golden):
    texts = json.loads((golden / "texts.json").read_text(encoding="utf-8"))["texts"]
    expected = load_file(golden / "expected.safetensors")
    ids = load_tokenizer(folder)(texts)
    assert ids.tolist() == expected["input_ids"].tolist()
    model = load_model(folder, device="cpu", dtype="fp32")
    text = model.encode_text(ids)
    torch.testing.assert_close(text.mean, expected["text_mean"], atol=ATOL, rtol=0)
    torch.testing.assert_close(text.logvar, expected["text_logvar"], atol=ATOL, rtol=0)
    return model, ids, expected


def _padding_changes_the_embedding(model, ids, pad_id, other_pad):
    """The text tower attends to padding: padding with another id moves the embeddings."""
    repadded = ids.masked_fill(ids == pad_id, other_pad)
    assert (model.encode_text(repadded).mean - model.encode_text(ids).mean).abs().max() > 1e-3


def test_siglip_tokenised_strings_give_the_official_embeddings(tmp_path):
    folder = tmp_path / "siglip-model"
    shutil.copytree(REFERENCE / "b16like", folder)
    config = json.loads((folder / "config.json").read_text())
    # as a released SigLIP config says, with the hub tokenizer's files put next to it for offline use
    config["text_cfg"].update(hf_tokenizer_name="timm/ViT-B-16-SigLIP", tokenizer_kwargs={"clean": "canonicalize"})
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURES / "tokenizers" / "siglip_style" / name, folder / name)
    model, ids, _ = _check(folder, GOLDEN / "siglip")
    assert load_tokenizer(folder).pad_id == 1
    _padding_changes_the_embedding(model, ids[:, :-1], 1, 0)  # the old pad id 0 (last column: a cut text's EOS)


def test_clip_bpe_tokenised_strings_give_the_official_embeddings(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the CLIP vocabulary ships with the package
    folder = GOLDEN / "clip"
    model, ids, _ = _check(folder, GOLDEN / "clip")
    assert load_tokenizer(folder).pad_id == 0
    assert load_tokenizer(folder, pad_id=49407)("a").tolist()[0][2:] == [49407] * 22  # transformers' padding
    _padding_changes_the_embedding(model, ids, 0, 49407)


@pytest.mark.parametrize("golden", ["siglip", "clip"])
def test_golden_files_exercise_truncation_and_empty_texts(golden):
    texts = json.loads((GOLDEN / golden / "texts.json").read_text(encoding="utf-8"))["texts"]
    ids = load_file(GOLDEN / golden / "expected.safetensors")["input_ids"]
    long_row = max(range(len(texts)), key=lambda i: len(texts[i]))
    end = 1 if golden == "siglip" else 49407
    assert ids[long_row, -1].item() == end  # a cut text still ends with its end token
    assert "" in texts
