"""Word-level tokenizers for small closed vocabularies (the demo model's captions).

Written with the ``tokenizers`` library as a ``tokenizer.json`` that ``models.tokenizer``
reads like any other: lower-casing, whitespace/punctuation splitting, ids ``[PAD]`` = 0
(the model's pad_id), ``[EOS]`` = 1 appended to every text as SigLIP does, ``[UNK]`` = 2
for words outside the vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PAD, EOS, UNK = "[PAD]", "[EOS]", "[UNK]"
SPECIAL_TOKENS = (PAD, EOS, UNK)  # ids 0, 1, 2


def build_word_level_tokenizer(words: Iterable[str], path: str | os.PathLike) -> Path:
    """Write a WordLevel ``tokenizer.json`` for ``words`` (ids from 3, in sorted order)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.processors import TemplateProcessing

    vocabulary = sorted({word.lower() for word in words} - {token.lower() for token in SPECIAL_TOKENS})
    if not vocabulary:
        raise ValueError("a tokenizer needs at least one word")
    ids = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    ids.update({word: len(SPECIAL_TOKENS) + index for index, word in enumerate(vocabulary)})
    tokenizer = Tokenizer(WordLevel(ids, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, ids[EOS])])
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tokenizer.save(str(tmp))
    os.replace(tmp, path)
    return path
