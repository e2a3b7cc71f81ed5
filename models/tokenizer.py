"""Text tokenizers for ProLIP checkpoints, all read from a Hugging Face ``tokenizer.json``.

Three kinds exist among the checkpoints, and one code path serves them all because each
ships (or its hub repo ships) a ``tokenizer.json`` that the ``tokenizers`` library runs
exactly as ``transformers``' fast tokenizers do:

* SigLIP sentencepiece (ViT-B/L/SO400M ProLIP; hub ``timm/ViT-B-16-SigLIP``,
  ``timm/ViT-SO400M-14-SigLIP``): "canonicalize" cleaning (punctuation removed, lower
  case), EOS id 1 appended, padded with 0 to the context length (64; 256 for LongProLIP).
* OpenAI CLIP BPE (ViT-H-14 ProLIP, context 77): lower-case, whitespace-collapsed, framed
  by <|startoftext|> ... <|endoftext|> and padded with 0 as open_clip does.
* A local ``tokenizer.json`` next to a model this project ships (the demo model).

The tokenizer is found next to the weights first, then from the config's
``hf_tokenizer_name`` on the hub. It is never silently replaced by another one: when
neither is available, loading fails and says what is missing.
"""

from __future__ import annotations

import html
import logging
import os
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .config import ModelConfig
from .loading import ARCH_PREFIX, HUB_PREFIX, ModelSourceError, load_config, resolve_source

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
# ViT-H-14 ProLIP uses OpenAI's CLIP vocabulary; its config names no tokenizer repo.
CLIP_BPE_HUB_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CLIP_VOCAB_SIZE = 49408
MAX_TEXT_CHARS = 100_000  # far beyond any context window; stops pathological inputs early


def _basic_clean(text: str) -> str:
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_canonicalize(text: str) -> str:
    """big_vision's canonicalisation, as SigLIP and ProLIP were trained with."""
    text = _basic_clean(text).replace("_", " ").translate(_PUNCTUATION).lower()
    return _whitespace(text)


def clean_lower(text: str) -> str:
    return _whitespace(_basic_clean(text)).lower()


def clean_whitespace(text: str) -> str:
    return _whitespace(_basic_clean(text))


CLEANERS: dict[str, Callable[[str], str]] = {
    "canonicalize": clean_canonicalize,
    "lower": clean_lower,
    "whitespace": clean_whitespace,
    "none": lambda text: text,
}


class Tokenizer:
    """Cleans texts and turns them into a [B, context_length] int64 tensor of token ids."""

    def __init__(self, tokenizer_file: str | os.PathLike, context_length: int, pad_id: int = 0,
                 clean: str = "whitespace"):
        from tokenizers import Tokenizer as HFTokenizer

        if clean not in CLEANERS:
            raise ValueError(f"unknown text cleaning {clean!r}; choose one of {sorted(CLEANERS)}")
        self.path = Path(tokenizer_file)
        self.context_length = context_length
        self.pad_id = pad_id
        self.clean_name = clean
        self._clean = CLEANERS[clean]
        self._tokenizer = HFTokenizer.from_file(str(self.path))
        # Truncation counts the special tokens the post-processor adds (EOS, SOT/EOT),
        # so a long text keeps its end-of-text token, as transformers does.
        self._tokenizer.enable_truncation(max_length=context_length)
        self._tokenizer.enable_padding(length=context_length, pad_id=pad_id)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def clean(self, text: str) -> str:
        return self._clean(text)

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}")
        # Cut before cleaning: tokens beyond the context are dropped anyway, and this
        # bounds the work a huge input can cause.
        cleaned = [self._clean(text[:MAX_TEXT_CHARS]) for text in texts]
        encodings = self._tokenizer.encode_batch(cleaned)
        return torch.tensor([encoding.ids for encoding in encodings], dtype=torch.long).reshape(
            len(cleaned), self.context_length)


def _hub_tokenizer_file(repo_id: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as error:  # pragma: no cover
        raise ModelSourceError("hub tokenizers need the huggingface_hub package") from error
    try:
        return Path(hf_hub_download(repo_id, TOKENIZER_FILE))
    except LocalEntryNotFoundError as error:
        raise ModelSourceError(
            f"the tokenizer {repo_id!r} is not in the local Hugging Face cache and the hub cannot be "
            f"reached; download it elsewhere (`huggingface-cli download {repo_id} {TOKENIZER_FILE}`) "
            f"and put {TOKENIZER_FILE} next to the model's config.json") from error
    except Exception as error:
        raise ModelSourceError(f"downloading the tokenizer {repo_id!r} failed: {error}") from error


def tokenizer_for(config: ModelConfig, folder: Path | None) -> Tokenizer:  # any family's config
    """The tokenizer a model was trained with: next to its weights, else from the hub."""
    text_cfg = config.text_cfg
    kwargs = dict(text_cfg.tokenizer_kwargs)
    clean = kwargs.pop("clean", None)
    if kwargs:
        log.warning("ignoring tokenizer options %s", sorted(kwargs))
    is_clip = text_cfg.vocab_size == CLIP_VOCAB_SIZE and text_cfg.hf_tokenizer_name is None
    if clean is None:
        clean = "lower" if is_clip else "whitespace"
    if folder is not None and (folder / TOKENIZER_FILE).is_file():
        path = folder / TOKENIZER_FILE
    elif text_cfg.hf_tokenizer_name:
        path = _hub_tokenizer_file(text_cfg.hf_tokenizer_name)
    elif is_clip:
        path = _hub_tokenizer_file(CLIP_BPE_HUB_REPO)
    else:
        raise ModelSourceError(
            f"no tokenizer for this model: {folder or 'the model'} has no {TOKENIZER_FILE} and its "
            f"config names no hf_tokenizer_name")
    tokenizer = Tokenizer(path, text_cfg.context_length, text_cfg.pad_id, clean)
    if tokenizer.vocab_size > text_cfg.vocab_size:
        raise ModelSourceError(
            f"tokenizer {path} has {tokenizer.vocab_size} tokens but the model embeds only "
            f"{text_cfg.vocab_size}: it is not this model's tokenizer")
    return tokenizer


def load_tokenizer(source: str | os.PathLike | None = None, family: str | None = None) -> Tokenizer:
    """The tokenizer for a model source (same sources and ``family`` as ``load_model``; None = demo model)."""
    from .loading import default_model_source

    source = default_model_source() if source is None else source
    text = str(source)
    if text.startswith(ARCH_PREFIX):
        return tokenizer_for(load_config(text), None)
    folder = resolve_source(source) if text.startswith(HUB_PREFIX) or Path(text).is_dir() else None
    if folder is None:
        raise ModelSourceError(f"model source {text!r} not found")
    return tokenizer_for(load_config(folder, family), folder)
