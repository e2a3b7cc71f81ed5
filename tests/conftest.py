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
    """A tokenizer.json with SigLIP's ids (<pad> 0, </s> 1 appended, <unk> 2) over a tiny word vocabulary.

    It declares no pad token, so a model without ``hf_tokenizer_name`` pads it with 0."""
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


# Words of the small tokenizer the session model uses: enough for the captions tests write.
SESSION_WORDS = ("a an the red blue green yellow purple white circle square triangle diamond photo of dog cat "
                 "object large small left right middle on in").split()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The b16like reference checkpoint with a small tokenizer: a complete model folder (image size 32, dim 64)."""
    import shutil

    folder = tmp_path_factory.mktemp("model") / "b16like"
    shutil.copytree(REFERENCE / "b16like", folder)
    write_wordlevel_tokenizer(folder / "tokenizer.json", SESSION_WORDS)
    return folder


@pytest.fixture(scope="session")
def encoder(model_dir):
    """One real encoder on ``model_dir`` for the whole session."""
    from models.encoder import Encoder

    return Encoder.load(model_dir, device="cpu", batch_size=16)


@pytest.fixture
def asked_for_slow(request):
    """Skips a long sweep unless the run asks for slow tests (`-m slow`, or PROLIP_SLOW_TESTS=1):
    `make test` keeps to the bounded sample beside it."""
    import os

    selected = "slow" in (request.config.getoption("markexpr") or "") and "not slow" not in (
        request.config.getoption("markexpr") or "")
    if not (selected or os.environ.get("PROLIP_SLOW_TESTS") == "1"):
        pytest.skip("a long sweep: run with -m slow or PROLIP_SLOW_TESTS=1")
CLIP_REFERENCE = FIXTURES / "clip-reference"
PCMEPP_REFERENCE = FIXTURES / "pcmepp-reference" / "b16like"


@pytest.fixture(scope="session")
def clip_model_dir(tmp_path_factory) -> Path:
    """A deterministic CLIP checkpoint (open_clip layout, eos pooling at id 1) with a small tokenizer."""
    import shutil

    folder = tmp_path_factory.mktemp("model") / "clip"
    shutil.copytree(CLIP_REFERENCE / "siglip-like", folder)
    write_wordlevel_tokenizer(folder / "tokenizer.json", SESSION_WORDS)
    return folder


@pytest.fixture(scope="session")
def clip_encoder(clip_model_dir):
    from models.encoder import Encoder

    return Encoder.load(clip_model_dir, device="cpu", batch_size=16)
