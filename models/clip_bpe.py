"""OpenAI's CLIP BPE vocabulary, shipped with this package, as a ``tokenizers`` byte-level BPE.

The vocabulary file ``models/vocab/bpe_simple_vocab_16e6.txt.gz`` is OpenAI's (MIT licence,
notice in ``models/vocab/LICENSE-openai-clip.txt``), byte-identical to the copies inside
open_clip and PCME++ (sha256 below). Ids are laid out as open_clip's ``SimpleTokenizer``
lays them out (``open_clip/tokenizer.py``, ``SimpleTokenizer.__init__``; the same in
naver-ai/pcmepp ``hf_models/tokenizer.py``):

* 0..255: the 256 byte symbols of ``bytes_to_unicode`` (printable bytes first);
* 256..511: the same symbols ending a word (``</w>``);
* 512..49405: one id per merge, the first 48,894 merges of the file in order;
* 49406 ``<start_of_text>``, 49407 ``<end_of_text>``: 49,408 ids in all.

Splitting a cleaned text into words uses the reference pattern (contractions, letter runs,
single digits, runs of other non-space characters; case-insensitive, special tokens first)
with the ``regex`` module, exactly as the reference does; the ``tokenizers`` library then
byte-encodes each word and applies the merges, as transformers' CLIP conversion does.
Nothing is read from the network.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from pathlib import Path

VOCAB_DIR = Path(__file__).parent / "vocab"
VOCAB_FILE = VOCAB_DIR / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
NUM_MERGES = 49152 - 256 - 2  # the reference keeps lines 1 .. 48894 of the file
SOT, EOT = "<start_of_text>", "<end_of_text>"
VOCAB_SIZE = 512 + NUM_MERGES + 2  # 49408
SOT_ID, EOT_ID = VOCAB_SIZE - 2, VOCAB_SIZE - 1
# The word pattern of the reference, special tokens first, matched case-insensitively.
WORD_PATTERN = "|".join([SOT, EOT]) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, in the order that fixes the ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return {byte: table[byte] for byte in [*printable, *(b for b in range(256) if b not in printable)]}


@functools.lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    data = VOCAB_FILE.read_bytes()
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        raise RuntimeError(f"{VOCAB_FILE} is not OpenAI's CLIP vocabulary (sha256 mismatch); reinstall the package")
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges] + [SOT, EOT]
    return {token: index for index, token in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=1)
def word_splitter():
    """``text -> list of words`` with the reference pattern (the ``regex`` module, IGNORECASE)."""
    import regex

    return regex.compile(WORD_PATTERN, regex.IGNORECASE).findall


def build_backend():
    """The ``tokenizers.Tokenizer`` for pre-split words: byte-level BPE, then <start_of_text> ... <end_of_text>."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = _vocab_and_merges()
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                            fuse_unk=False, unk_token=None, dropout=None))
    # Words arrive already split (is_pretokenized); this only maps their UTF-8 bytes to symbols.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(SOT, normalized=False), AddedToken(EOT, normalized=False)])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, SOT_ID), (EOT, EOT_ID)])
    if backend.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE or backend.token_to_id(EOT) != EOT_ID:
        raise RuntimeError("the CLIP BPE vocabulary did not build to its reference layout")
    return backend
