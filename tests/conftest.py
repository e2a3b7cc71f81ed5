"""Shared fixtures: paths to the reference checkpoints copied from the official implementation."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "prolip-reference"
REFERENCE_MODELS = ("b16like", "h14like")


@pytest.fixture(params=REFERENCE_MODELS)
def reference_dir(request) -> Path:
    return REFERENCE / request.param


def write_wordlevel_tokenizer(path: Path, words: list[str]) -> Path:
    """A SigLIP-shaped tokenizer.json (pad 0, EOS 1 appended) over a tiny word vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.save(str(path))
    return path


@pytest.fixture
def reference_model_with_tokenizer(tmp_path) -> Path:
    """The b16like reference checkpoint plus a small tokenizer.json, as a complete model folder."""
    import shutil

    folder = tmp_path / "b16like"
    shutil.copytree(REFERENCE / "b16like", folder)
    words = "a an the red blue green circle square photo of dog cat".split()
    write_wordlevel_tokenizer(folder / "tokenizer.json", words)
    return folder
