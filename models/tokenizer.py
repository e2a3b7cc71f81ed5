"""Text tokenizers for ProLIP checkpoints: raw strings -> exactly the ids the official pipeline feeds.

Every tokenizer here runs the same three steps: clean the text in Python (``ftfy``, HTML
unescaping, whitespace, optionally lower-case / punctuation removal), turn it into ids with
the ``tokenizers`` library, then truncate and pad to the context length. The text tower
has no attention mask (padding is attended), so the pad id changes every embedding: it is
part of the tokenizer, not an afterthought.

What the official pipeline does, per released architecture (verified in the sources):

* ViT-B-16, ViT-L-16, ViT-SO400M-14 ProLIP (context 64) and LongProLIP ViT-B-16 (256):
  SigLIP's T5 sentencepiece vocabulary (32,000 pieces + 100 ``<extra_id_N>``).
  - naver-ai/prolip ``src/prolip/factory.py`` ``get_tokenizer`` (l. 75-101): the config's
    ``hf_tokenizer_name`` (``timm/ViT-B-16-SigLIP``; SO400M: ``timm/ViT-SO400M-14-SigLIP``)
    goes to ``HFTokenizer`` with the config's ``tokenizer_kwargs`` (``clean="canonicalize"``).
  - ``src/prolip/tokenizer.py`` ``HFTokenizer.__call__`` (l. 107-132): clean each text, then
    ``batch_encode_plus(texts, max_length=context_length, padding="max_length",
    truncation=True)`` of transformers' ``AutoTokenizer``; ``_clean_canonicalize`` (l. 35)
    = ``canonicalize_text(basic_clean(x))``: ftfy, HTML-unescape twice, strip, "_" -> " ",
    drop ``string.punctuation``, lower-case, collapse ``\\s+`` with the ``regex`` module.
  - The pad token is the tokenizer's own: ``</s>`` = id 1, the same id as EOS. Evidence:
    transformers ``models/siglip/tokenization_siglip.py`` ``SiglipTokenizer.__init__``
    defaults ``pad_token="</s>"``; open_clip ``src/open_clip/tokenizer.py``
    ``SigLipTokenizer.__init__`` (v2.24.0 l. 486-487, the wrapper the ``timm/*-SigLIP`` hub
    tokenizers were saved from) sets ``pad_token_id = eos_token_id = 1`` (big_vision's
    ``pad_value=1``, open_clip issue #940); naver-ai/prolip ``src/prolip_train/train.py``
    l. 107 treats ``texts != 1`` as the real tokens. (The hub repos themselves cannot be
    read from this project's machines; their pad token is read from their files at run time.)
  - EOS at truncation: transformers truncates the text to ``max_length - 1`` pieces and
    then appends ``</s>``, so a long text still ends with id 1.
  Here: the hub repo's ``tokenizer.json`` (the same file transformers' fast tokenizer
  runs), its pad token read from the repo's ``tokenizer_config.json`` /
  ``special_tokens_map.json``, ``</s>`` when neither says (the official value above).
* ViT-H-14 ProLIP (context 77, vocabulary 49,408): OpenAI's CLIP BPE with open_clip's
  ``SimpleTokenizer`` rules. The official ``get_tokenizer`` has no path for it: H-14's
  config names no ``hf_tokenizer_name`` and the function raises "simple tokenizer is not
  supported" (factory.py l. 99). Evidence for the choice: H-14's config is, field for
  field, open_clip v2.24.0's ``model_configs/ViT-H-14-quickgelu.json`` (the open_clip
  version ProLIP forked, factory.py l. 2) plus the [UNC] fields; for a config without
  ``hf_tokenizer_name`` open_clip v2.24.0 ``get_tokenizer`` (factory.py l. 112-122) builds
  ``SimpleTokenizer(context_length=77)``, default ``clean="lower"``; the only pretrained
  ViT-H-14-quickgelu weights there (``pretrained.py`` l. 232-240: MetaCLIP, DFN5B) are
  used with it, and the released checkpoint's name as other code bases load it
  (``SanghyukChun/ProLIP-ViT-H-14-FT-DC-1B-1_28M``) says it was fine-tuned, from such a CLIP
  by every sign above; ``params.py`` l. 540 documents ``--replace-token`` for
  "CLIP: 286 (? token ...)", so the authors trained on CLIP ids. open_clip's rules
  (``SimpleTokenizer.__call__``, v2.24.0 tokenizer.py l. 250-257):
  ``[<start_of_text>] + bpe(clean_lower(text)) + [<end_of_text>]``; longer than the
  context: cut to the context and set the last id to ``<end_of_text>`` (49407); pad with 0.
  transformers' ``CLIPTokenizer`` would pad with 49407 instead: pass ``pad_id=49407`` to
  ``load_tokenizer`` for that. Here: ``clip_bpe_tokenizer``, built from the vocabulary
  shipped in ``models/vocab`` (no network).
* A model trained by this project (the demo model): the ``tokenizer.json`` next to its
  weights, pad id from that file (``[PAD]`` = 0 for the word-level demo tokenizer).

The tokenizer is never silently replaced by another one: when the one a model needs is
not available, loading fails and says which file to put where.
"""

from __future__ import annotations

import html
import json
import logging
import os
import string
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import clip_bpe
from .config import ModelConfig
from .loading import ARCH_PREFIX, HUB_PREFIX, ModelSourceError, load_config, resolve_source

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
# Files of a hub tokenizer repo that declare its pad token (transformers reads them).
TOKENIZER_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
CLIP_BPE = "clip-bpe"  # the name of the shipped CLIP BPE tokenizer, for overrides
CLIP_VOCAB_SIZE = clip_bpe.VOCAB_SIZE
SIGLIP_PAD_TOKEN = "</s>"  # the official SigLIP pad token (id 1), see the module docstring
SIGLIP_MASK_TOKEN = "<extra_id_99>"  # id 32000: the official --replace-token for SigLIP ids
CLIP_MASK_TOKEN = "?</w>"  # id 286: the official --replace-token for CLIP ids (params.py l. 540)
MAX_TEXT_CHARS = 100_000  # far beyond any context window; stops pathological inputs early


def _regex():
    import regex  # the official cleaners use ``regex``, whose \s differs from ``re``'s

    return regex


def _basic_clean(text: str) -> str:
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace(text: str) -> str:
    return _regex().sub(r"\s+", " ", text).strip()


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
    """Cleans texts and turns them into a [B, context_length] int64 tensor of token ids.

    ``tokenizer_file``: a ``tokenizer.json``; or None with ``backend`` (a built
    ``tokenizers.Tokenizer``) and ``split`` (text -> words, for backends fed pre-split words).
    """

    def __init__(self, tokenizer_file: str | os.PathLike | None, context_length: int, pad_id: int = 0,
                 clean: str = "whitespace", *, backend=None, split: Callable[[str], list[str]] | None = None,
                 kind: str = "file"):
        if clean not in CLEANERS:
            raise ValueError(f"unknown text cleaning {clean!r}; choose one of {sorted(CLEANERS)}")
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        if backend is None:
            from tokenizers import Tokenizer as HFTokenizer

            if tokenizer_file is None:
                raise ValueError("give a tokenizer file or a backend")
            backend = HFTokenizer.from_file(str(tokenizer_file))
        self.path = Path(tokenizer_file) if tokenizer_file is not None else None
        self.kind = kind
        self.context_length = context_length
        self.pad_id = int(pad_id)
        self.clean_name = clean
        self._clean = CLEANERS[clean]
        self._split = split
        self._tokenizer = backend
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad id {self.pad_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        # The ids the post-processor adds to every text (EOS; SOT + EOT), read before padding is on.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.added_ids = tuple(self._encode_batch([""])[0].ids)
        # Truncation counts the special tokens the post-processor adds (EOS, SOT/EOT), so a
        # long text keeps its end token, as transformers and open_clip do.
        self._tokenizer.enable_truncation(max_length=context_length)
        pad_token = self._tokenizer.id_to_token(self.pad_id) or ""
        self._tokenizer.enable_padding(length=context_length, pad_id=self.pad_id, pad_token=pad_token)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids that are structure, not text: padding and the tokens added to every text."""
        return frozenset((self.pad_id, *self.added_ids))

    @property
    def mask_id(self) -> int | None:
        """The id the official trainer writes over masked tokens (``--replace-token``), when it has one."""
        for token in (SIGLIP_MASK_TOKEN, CLIP_MASK_TOKEN):
            token_id = self._tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        return None

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def clean(self, text: str) -> str:
        return self._clean(text)

    def _encode_batch(self, cleaned: list[str]):
        if self._split is None:
            return self._tokenizer.encode_batch(cleaned)
        return self._tokenizer.encode_batch([self._split(text) for text in cleaned], is_pretokenized=True)

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}")
        # Cut before cleaning: tokens beyond the context are dropped anyway, and this
        # bounds the work a huge input can cause.
        cleaned = [self._clean(text[:MAX_TEXT_CHARS]) for text in texts]
        encodings = self._encode_batch(cleaned)
        return torch.tensor([encoding.ids for encoding in encodings], dtype=torch.long).reshape(
            len(cleaned), self.context_length)

    def save(self, folder: str | os.PathLike) -> Path | None:
        """Write ``tokenizer.json`` (padding and pad id included) into ``folder``, atomically.

        The shipped CLIP BPE needs no file (a CLIP-vocabulary config selects it): None.
        """
        if self.kind == CLIP_BPE:
            return None
        path = Path(folder) / TOKENIZER_FILE
        tmp = path.with_name(path.name + ".tmp")
        self._tokenizer.save(str(tmp))
        os.replace(tmp, path)
        return path


def clip_bpe_tokenizer(context_length: int, clean: str = "lower", pad_id: int = 0) -> Tokenizer:
    """OpenAI's CLIP BPE with open_clip's rules, from the vocabulary shipped in this package (no network).

    ``[<start_of_text>] + ids + [<end_of_text>]``, cut to ``context_length`` with the end
    token kept, padded with ``pad_id`` (open_clip: 0; transformers' CLIPTokenizer: 49407).
    """
    return Tokenizer(None, context_length, pad_id, clean, backend=clip_bpe.build_backend(),
                     split=clip_bpe.word_splitter(), kind=CLIP_BPE)


# --------------------------------------------------------------------------- pad tokens
def _token_name(value) -> str | None:
    if isinstance(value, dict):  # transformers' serialised AddedToken
        value = value.get("content")
    return value if isinstance(value, str) else None


def declared_pad_token(folder: Path) -> str | None:
    """The pad token a transformers tokenizer folder declares (tokenizer_config.json, then special_tokens_map.json)."""
    for name in TOKENIZER_CONFIG_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            token = _token_name(json.loads(path.read_text(encoding="utf-8")).get("pad_token"))
        except (OSError, ValueError, AttributeError) as error:
            raise ModelSourceError(f"cannot read {path}: {error}") from None
        if token is not None:
            return token
    return None


def _file_pad_id(path: Path) -> int | None:
    """The pad id a tokenizer.json itself records (our exports write it), if any."""
    try:
        padding = json.loads(path.read_text(encoding="utf-8")).get("padding")
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"cannot read {path}: {error}") from None
    return int(padding["pad_id"]) if isinstance(padding, dict) and "pad_id" in padding else None


def file_tokenizer(path: Path, context_length: int, clean: str, pad_id: int | None = None,
                   official_pad_token: str | None = None) -> Tokenizer:
    """A ``tokenizer.json`` tokenizer. Its pad id, unless given, is the pad token declared by the
    transformers files beside it; else, for a hub tokenizer of the official pipeline,
    ``official_pad_token`` (transformers ignores the file's own padding section there);
    else the pad id the file records (this project's exports write it); else 0."""
    if pad_id is None:
        token = declared_pad_token(path.parent) or official_pad_token
        if token is None:
            recorded = _file_pad_id(path)
            pad_id = 0 if recorded is None else recorded
        else:
            from tokenizers import Tokenizer as HFTokenizer

            pad_id = HFTokenizer.from_file(str(path)).token_to_id(token)
            if pad_id is None:
                raise ModelSourceError(f"{path} has no pad token {token!r}")
    return Tokenizer(path, context_length, pad_id, clean)


# --------------------------------------------------------------------------- the hub
def _hub_tokenizer_file(repo_id: str) -> Path:
    """``tokenizer.json`` of a hub repo (and its pad-token files, when the repo has them)."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError as error:  # pragma: no cover
        raise ModelSourceError("hub tokenizers need the huggingface_hub package") from error
    try:
        path = Path(hf_hub_download(repo_id, TOKENIZER_FILE))
    except LocalEntryNotFoundError as error:
        raise ModelSourceError(
            f"the tokenizer {repo_id!r} is not in the local Hugging Face cache and the hub cannot be reached. "
            f"On a connected machine run `huggingface-cli download {repo_id} {TOKENIZER_FILE} "
            f"{' '.join(TOKENIZER_CONFIG_FILES)} --local-dir tok`, then copy those files into the model folder, "
            f"next to its config.json and model.safetensors, and load the model from that folder") from error
    except Exception as error:
        raise ModelSourceError(f"downloading the tokenizer {repo_id!r} failed: {error}") from error
    for name in TOKENIZER_CONFIG_FILES:
        try:
            hf_hub_download(repo_id, name)  # same snapshot folder as tokenizer.json
        except (EntryNotFoundError, LocalEntryNotFoundError):
            pass  # optional: the official pad token applies
        except Exception as error:
            log.warning("could not fetch %s of %s (%s); using the official pad token", name, repo_id, error)
    return path


# --------------------------------------------------------------------------- per model
def tokenizer_kind(config: ModelConfig, folder: Path | None) -> str:
    """Which tokenizer a model uses by default: "file" (next to its weights), "hub" or "clip-bpe"."""
    text_cfg = config.text_cfg
    if folder is not None and (folder / TOKENIZER_FILE).is_file():
        return "file"
    if text_cfg.hf_tokenizer_name:
        return "hub"
    if text_cfg.vocab_size == CLIP_VOCAB_SIZE:
        return CLIP_BPE  # ViT-H-14 ProLIP: see the module docstring for the evidence
    raise ModelSourceError(
        f"no tokenizer for this model: {folder or 'the model'} has no {TOKENIZER_FILE} and its config names "
        f"no hf_tokenizer_name (nor has CLIP's {CLIP_VOCAB_SIZE}-token vocabulary); put the {TOKENIZER_FILE} "
        f"the model was trained with next to its config.json")


def tokenizer_for(config: ModelConfig, folder: Path | None, tokenizer: str | os.PathLike | None = None,
                  pad_id: int | None = None) -> Tokenizer:
    """The tokenizer a model was trained with (see the module docstring), or the one asked for.

    ``tokenizer`` overrides the choice: "clip-bpe" (the shipped CLIP BPE), a
    ``tokenizer.json`` path, or a folder holding one. ``pad_id`` overrides the pad id.
    """
    text_cfg = config.text_cfg
    kwargs = dict(text_cfg.tokenizer_kwargs)
    clean = kwargs.pop("clean", None)
    if kwargs:
        log.warning("ignoring tokenizer options %s", sorted(kwargs))
    if tokenizer is not None:
        text = str(tokenizer)
        if text == CLIP_BPE:
            kind, path = CLIP_BPE, None
        else:
            path = Path(text)
            path = path / TOKENIZER_FILE if path.is_dir() else path
            if not path.is_file():
                raise ModelSourceError(f"tokenizer {text!r} is neither {CLIP_BPE!r} nor a {TOKENIZER_FILE} "
                                       f"(or a folder holding one)")
            kind = "file"
    else:
        kind = tokenizer_kind(config, folder)
        path = folder / TOKENIZER_FILE if kind == "file" else None
    if kind == CLIP_BPE:
        result = clip_bpe_tokenizer(text_cfg.context_length, clean or "lower", 0 if pad_id is None else pad_id)
    else:
        if kind == "hub":
            path = _hub_tokenizer_file(text_cfg.hf_tokenizer_name)
        # The official HFTokenizer's default cleaning is "whitespace"; hub SigLIP configs say "canonicalize".
        official_pad = SIGLIP_PAD_TOKEN if text_cfg.hf_tokenizer_name else None
        result = file_tokenizer(path, text_cfg.context_length, clean or "whitespace", pad_id, official_pad)
    if result.vocab_size > text_cfg.vocab_size:
        raise ModelSourceError(
            f"tokenizer {result.path or kind} has {result.vocab_size} tokens but the model embeds only "
            f"{text_cfg.vocab_size}: it is not this model's tokenizer")
    return result


def load_tokenizer(source: str | os.PathLike | None = None, tokenizer: str | os.PathLike | None = None,
                   pad_id: int | None = None, family: str | None = None) -> Tokenizer:
    """The tokenizer for a model source (same sources and ``family`` as ``load_model``; None = demo model).

    ``tokenizer`` / ``pad_id`` override the model's own choice (see ``tokenizer_for``).
    """
    from .loading import default_model_source

    source = default_model_source() if source is None else source
    text = str(source)
    if text.startswith(ARCH_PREFIX):
        return tokenizer_for(load_config(text), None, tokenizer, pad_id)
    folder = resolve_source(source) if text.startswith(HUB_PREFIX) or Path(text).is_dir() else None
    if folder is None:
        raise ModelSourceError(f"model source {text!r} not found")
    return tokenizer_for(load_config(folder, family), folder, tokenizer, pad_id)
