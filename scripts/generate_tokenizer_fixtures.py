"""Golden token ids from the reference tokenizers, for tests/models/test_tokenizer_reference.py.

Writes ``tests/fixtures/tokenizers/clip_bpe_open_clip.json.gz``: a few thousand varied
strings (plain captions, unicode of many scripts, emoji sequences, HTML entities, mojibake,
odd whitespace, contractions, literal special tokens, very long and empty texts) and the
ids open_clip's own ``SimpleTokenizer`` gives them (context 77, and 16 for the first 500).

Run it where open_clip is installed (``pip install open_clip_torch``):

    python scripts/generate_tokenizer_fixtures.py

or, without installing open_clip and its torchvision dependency, point it at the
``open_clip`` folder of an unpacked wheel (``pip download --no-deps open_clip_torch``,
``unzip``); its ``tokenizer.py`` needs only torch, numpy, ftfy and regex:

    python scripts/generate_tokenizer_fixtures.py --open-clip-dir /tmp/oc/open_clip
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "tokenizers" / "clip_bpe_open_clip.json.gz"
NUM_STRINGS = 3000
SHORT_CONTEXT_STRINGS = 500

WORDS = ("a an the photo picture of dog cat two people standing next to red blue green car street tree at night "
         "beach sunset man woman child holding umbrella in rain on table with cup coffee running jumping "
         "airplane flying over mountains snow covered city skyline close-up view old wooden house").split()
UNICODE_WORDS = ["café", "naïve", "façade", "Zürich", "São", "Ελληνικά", "русский", "日本語", "中文字", "한국어",
                 "العربية", "עברית", "हिन्दी", "ไทย", "ẞtraße", "İstanbul", "ﬁnance", "Ⅻ", "①②", "x²", "½",
                 "e\u0301", "n\u0303", "\u0130", "ß", "ǅ", "ﬃ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "Ａｂｃ", "ｶﾀｶﾅ"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🏳️‍🌈", "🐶", "🎉", "✈", "☕", "🙂🙃", "👩🏿‍💻"]
ENTITIES = ["&amp;", "&lt;b&gt;", "&quot;hi&quot;", "&#39;", "&#x1F600;", "&amp;amp;", "&nbsp;", "&eacute;",
            "&copy;", "&#8212;", "&bogus;", "&#0;", "&#xD800;", "&amp;lt;"]
MOJIBAKE = ["cafÃ©", "donâ€™t", "Ã¼ber", "â€œquotedâ€\x9d", "Ã\xa0 la"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\u2028", "\u200b", "\x0b", "\x0c", "\x85"]
PUNCT = ["!", "!!", "?", ".", ",", ";", ":", "...", "—", "-", "_", "'", '"', "(", ")", "[x]", "{}", "/", "#", "@",
         "$5", "100%", "<", ">", "&", "*", "~", "`", "|", "\\", "«»", "¿", "。", "、"]
CONTRACTIONS = ["it's", "IT'S", "they'RE", "I'm", "we'll", "you've", "he'd", "don't", "o'clock", "'s", "''"]
SPECIAL = ["<start_of_text>", "<end_of_text>", "<|startoftext|>", "<|endoftext|>", "x<<start_of_text>",
           "<END_OF_TEXT>", "</w>", "<pad>", "</s>"]
NUMBERS = ["1", "42", "1,234.56", "2024-01-08", "3.14159", "007", "1st", "٣", "१२३", "五"]
FIXED = ["", " ", "   \t\n ", "a", "A", ".", "!!!", "a" * 300, "ab" * 200, "x " * 100, "😀" * 50, "&amp;" * 30,
         "a photo of a cat", "A DOG running on the beach!!", "two  people, one umbrella; rain", "café naïve façade"]


def random_codepoints(rng: random.Random) -> str:
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F64F), (0x2000, 0x206F)]
    chars = []
    for _ in range(rng.randint(1, 40)):
        low, high = rng.choice(ranges)
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


def make_strings(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pools = [WORDS, UNICODE_WORDS, EMOJI, ENTITIES, MOJIBAKE, PUNCT, CONTRACTIONS, SPECIAL, NUMBERS]
    strings = list(FIXED)
    while len(strings) < NUM_STRINGS:
        kind = rng.random()
        if kind < 0.1:
            strings.append(random_codepoints(rng))
            continue
        length = rng.choice([1, 2, 3, 5, 8, 12, 20, 40, 90, 200])
        parts = []
        for _ in range(length):
            pool = WORDS if rng.random() < 0.55 else rng.choice(pools)
            token = rng.choice(pool)
            style = rng.random()
            token = token.upper() if style < 0.1 else token.title() if style < 0.2 else token
            parts.append(token)
            parts.append(rng.choice(SPACES) if rng.random() < 0.15 else ("" if rng.random() < 0.1 else " "))
        strings.append("".join(parts))
    return strings


def load_open_clip_tokenizer(open_clip_dir: str | None):
    if open_clip_dir is None:
        import open_clip.tokenizer as module  # the installed package

        return module
    path = Path(open_clip_dir) / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--open-clip-dir", help="an open_clip package folder (default: the installed package)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    module = load_open_clip_tokenizer(args.open_clip_dir)
    reference = module.SimpleTokenizer()  # open_clip's defaults: its bundled vocabulary, clean="lower"
    strings = make_strings()
    ids77 = reference(strings, context_length=77).tolist()
    ids16 = reference(strings[:SHORT_CONTEXT_STRINGS], context_length=16).tolist()
    version_file = Path(module.__file__).with_name("version.py")
    version = version_file.read_text().split("=")[-1].strip().strip("'\"") if version_file.is_file() else None
    record = {
        "source": "open_clip SimpleTokenizer (tokenizer.py)" + (f" {version}" if version else ""),
        "generator": "scripts/generate_tokenizer_fixtures.py",
        "texts": strings,
        "ids": {"77": ids77, "16": ids16},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", encoding="utf-8", compresslevel=9) as out:
        json.dump(record, out, ensure_ascii=True, separators=(",", ":"))
    print(f"{len(strings)} strings -> {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
