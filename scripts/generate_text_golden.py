"""Token-level golden files: strings -> official ids -> official text embeddings.

For tests/models/test_text_golden.py. Two configurations:

* ``siglip/``: the ``b16like`` reference checkpoint (tests/fixtures/prolip-reference) with
  the SigLIP-layout sentencepiece tokenizer of tests/fixtures/tokenizers/siglip_style,
  tokenised by the official ``prolip.tokenizer.HFTokenizer(..., clean="canonicalize")``
  (transformers underneath), as the released ViT-B/L/SO400M configs ask.
* ``clip/``: a new small checkpoint with CLIP's 49,408-token vocabulary and ViT-H-14's
  ``quick_gelu``, built and perturbed with the official ``prolip.model.ProLIP``, tokenised
  by open_clip's ``SimpleTokenizer`` (the tokenizer ViT-H-14 ProLIP was trained with; the
  official package has no CLIP path, see models/tokenizer.py).

Each folder gets ``texts.json``, ``expected.safetensors`` (``input_ids`` [N, L] int64,
``text_mean`` [N, D] L2-normalised, ``text_logvar`` [N, D]); ``clip/`` also its
``config.json`` and ``model.safetensors``.

Run it where the official packages are installed (``pip install -e naver-ai/prolip``,
``pip install open_clip_torch transformers``):

    python scripts/generate_text_golden.py

or point it at source folders (their tokenizer and model modules need only torch, numpy,
ftfy, regex and transformers; the package ``__init__`` files would also need torchvision):

    python scripts/generate_text_golden.py --prolip-src /tmp/prolip/src/prolip --open-clip-dir /tmp/oc/open_clip
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "prolip-reference" / "text-golden"
SIGLIP_STYLE = FIXTURES / "tokenizers" / "siglip_style"
B16LIKE = FIXTURES / "prolip-reference" / "b16like"

TEXTS = [
    "a photo of a dog",
    "A DOG running on the beach!!",
    "two  people, one umbrella; rain",
    "café naïve façade",
    "",
    "   ",
    "&lt;b&gt;bold&lt;/b&gt; &amp; more",
    "it's THEY'RE don't",
    "snake_case words_and numbers 12345",
    "😀 emoji 👨‍👩‍👧‍👦 and 日本語",
    "an extremely long caption that will certainly be cut at the context length of this model, "
    "going on and on about the red car parked on the street at night next to an old wooden house",
    "a",
]

CLIP_CONFIG = {
    "embed_dim": 8,
    "quick_gelu": True,
    "init_logit_bias": -10,
    "vision_cfg": {"image_size": 28, "layers": 1, "width": 16, "head_width": 8, "patch_size": 14,
                   "embed_unc": True, "init_unc_bias": -10},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 2,
                 "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "embed_cls": True,
                 "embed_unc": True, "init_unc_bias": -10},
}


def load_package(name: str, folder: str | None):
    """The installed package, or a namespace stub over ``folder`` that skips its ``__init__``."""
    if folder is None:
        return importlib.import_module(name)
    package = types.ModuleType(name)
    package.__path__ = [str(Path(folder).resolve())]
    sys.modules[name] = package
    return package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prolip-src", help="naver-ai/prolip's src/prolip folder (default: the installed package)")
    parser.add_argument("--open-clip-dir", help="an open_clip package folder (default: the installed package)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file, save_file

    load_package("prolip", args.prolip_src)
    load_package("open_clip", args.open_clip_dir)
    prolip_model = importlib.import_module("prolip.model")
    prolip_tokenizer = importlib.import_module("prolip.tokenizer")
    open_clip_tokenizer = importlib.import_module("open_clip.tokenizer")

    def official_text(model, ids):
        model.eval()
        with torch.no_grad():
            features = model.encode_text(ids, normalize=True)
        return {"input_ids": ids.long().contiguous(), "text_mean": features["mean"].float().contiguous(),
                "text_logvar": features["std"].float().contiguous()}

    # --- SigLIP-tokenised: b16like + the SigLIP-layout tokenizer, through the official HFTokenizer
    config = json.loads((B16LIKE / "config.json").read_text())
    model = prolip_model.ProLIP(**config)
    model.load_state_dict(load_file(B16LIKE / "model.safetensors"), strict=True)
    tokenizer = prolip_tokenizer.HFTokenizer(str(SIGLIP_STYLE), context_length=config["text_cfg"]["context_length"],
                                             clean="canonicalize")
    if not hasattr(tokenizer.tokenizer, "batch_encode_plus"):
        # transformers 5 dropped batch_encode_plus, which the official code (written for 4.x) calls;
        # __call__ takes the same arguments and returns the same ids
        tokenizer.tokenizer.batch_encode_plus = tokenizer.tokenizer.__call__
    write(OUT / "siglip", TEXTS, official_text(model, tokenizer(TEXTS)), save_file,
          {"model": "tests/fixtures/prolip-reference/b16like", "tokenizer": "tests/fixtures/tokenizers/siglip_style",
           "official_call": "prolip.tokenizer.HFTokenizer(tokenizer, context_length=16, clean='canonicalize')"})

    # --- CLIP-BPE-tokenised: a new small checkpoint with CLIP's vocabulary, through open_clip's SimpleTokenizer
    torch.manual_seed(12)
    model = prolip_model.ProLIP(**CLIP_CONFIG)
    with torch.no_grad():  # perturb so every parameter matters, and raise the uncertainty biases
        for name, parameter in model.named_parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
            if "uncertainty_proj" in name and name.endswith("bias"):
                parameter.add_(8.0)
    folder = OUT / "clip"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CLIP_CONFIG, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    tokenizer = open_clip_tokenizer.SimpleTokenizer(context_length=CLIP_CONFIG["text_cfg"]["context_length"])
    write(folder, TEXTS, official_text(model, tokenizer(TEXTS)), save_file,
          {"model": "config.json + model.safetensors here (official prolip.model.ProLIP, seed 12, perturbed)",
           "official_call": "open_clip.tokenizer.SimpleTokenizer(context_length=24)(texts)"})
    return 0


def write(folder: Path, texts: list[str], tensors: dict, save_file, provenance: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "texts.json").write_text(json.dumps({"texts": texts, **provenance}, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    save_file(tensors, folder / "expected.safetensors")
    print(f"{folder}: {tuple(tensors['input_ids'].shape)} ids, {tuple(tensors['text_mean'].shape)} means")


if __name__ == "__main__":
    raise SystemExit(main())
