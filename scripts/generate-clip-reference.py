"""Golden outputs of open_clip's own CLIP class on small random-weight checkpoints (tests/fixtures/clip-reference).

open_clip_torch would pull torch and torchvision into the test environment, so it runs here,
in a throwaway virtualenv, and only the data it produces is committed:

    python3 -m venv /tmp/openclip-venv
    /tmp/openclip-venv/bin/pip install torch==2.13.0 "torchvision==0.28.*" open_clip_torch==3.3.0 safetensors
    /tmp/openclip-venv/bin/python scripts/generate-clip-reference.py tests/fixtures/clip-reference

On a machine with only the CPU build of torch, PyPI's torchvision (built against CUDA torch)
cannot load its compiled operators, and its import fails registering fake kernels for two of
them (nms, qnms). The script declares those two operator schemas first so the import goes
through; CLIP's model code calls no torchvision operator, and every number below comes from
open_clip's own modules.

Two checkpoints, each exercising a different corner of open_clip's CLIP:

* ``openai-like`` (open_clip's hub layout: open_clip_config.json + open_clip_model.safetensors):
  quick_gelu, causal text mask, pooling at the argmax id (end-of-text is the largest id),
  a [width, embed_dim] text projection, no logit bias;
* ``siglip-like`` (the released layout: config.json + model.safetensors): GELU, LayerNorm eps
  1e-6, layer scale, no causal mask, pooling at the first eos_id (1, as SigLIP-style tokenizers
  append it), a Linear text projection with bias, a logit bias, final_ln_after_pool.

Weights are random and then perturbed (LayerNorm gains and every bias moved off 1 and 0) so a
parameter that is loaded into the wrong place changes the outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

# see the module docstring: lets torchvision's Python package import without its compiled ops
for _op in ("nms", "qnms"):
    torch.library.define(f"torchvision::{_op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import open_clip  # noqa: E402
from open_clip.model import CLIP  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]

CONFIGS = {
    "openai-like": {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 48, "heads": 4, "layers": 2},
    },
    "siglip-like": {
        "embed_dim": 32,
        "init_logit_bias": -10.0,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8,
                       "ls_init_value": 0.5, "final_ln_after_pool": True, "norm_kwargs": {"eps": 1e-6}},
        "text_cfg": {"context_length": 16, "vocab_size": 40, "width": 48, "heads": 4, "layers": 2,
                     "mlp_ratio": 2.0, "ls_init_value": 0.5, "no_causal_mask": True, "pool_type": "eos", "eos_id": 1,
                     "proj_bias": True, "norm_kwargs": {"eps": 1e-6}},
    },
}


def perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if name.endswith("bias") and parameter.ndim == 1:
                parameter.add_(0.05 * noise)
            elif parameter.ndim == 1 or name.endswith("gamma"):
                parameter.add_(0.2 * noise)  # LayerNorm gains, layer scales, class embedding
            else:
                parameter.add_(0.02 * noise)


def token_ids(config: dict, generator: torch.Generator) -> torch.Tensor:
    """[4, L] ids with 16, 9, 3 and 2 real tokens (pad 0), framed as the tower expects."""
    text = config["text_cfg"]
    length, vocab = text["context_length"], text["vocab_size"]
    rows = torch.zeros(4, length, dtype=torch.long)
    for row, real in enumerate((length, 9, 3, 2)):
        if text.get("pool_type", "argmax") == "argmax":  # <sot> words <eot>, eot the largest id
            words = torch.randint(1, vocab - 2, (real - 2,), generator=generator)
            rows[row, :real] = torch.cat([torch.tensor([vocab - 2]), words, torch.tensor([vocab - 1])])
        else:  # words </s>, as SigLIP-style tokenizers append eos
            words = torch.randint(2, vocab, (real - 1,), generator=generator)
            rows[row, :real] = torch.cat([words, torch.tensor([text["eos_id"]])])
    return rows


def generate(name: str, out: Path) -> None:
    config = CONFIGS[name]
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1234)
    model = CLIP(**config).eval()
    perturb(model, generator)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if name == "openai-like":
        save_file(state, folder / "open_clip_model.safetensors")
        hub_config = {"model_cfg": config, "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD}}
        (folder / "open_clip_config.json").write_text(json.dumps(hub_config, indent=2) + "\n")
    else:
        save_file(state, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    pixels = torch.randn(3, 3, 32, 32, generator=generator)
    ids = token_ids(config, generator)
    with torch.no_grad():
        expected = {
            "image_mean": model.encode_image(pixels, normalize=True),
            "text_mean": model.encode_text(ids, normalize=True),
            "logit_scale": model.logit_scale.exp().reshape(1),
        }
        if model.logit_bias is not None:
            expected["logit_bias"] = model.logit_bias.reshape(1)
    save_file({"pixel_values": pixels, "input_ids": ids}, folder / "inputs.safetensors")
    save_file({k: v.contiguous().float() for k, v in expected.items()}, folder / "expected.safetensors")
    print(f"{name}: {sum(v.numel() for v in state.values()):,} parameters -> {folder}")


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/clip-reference")
    for name in CONFIGS:
        generate(name, out)
    (out / "VERSIONS.json").write_text(json.dumps({"open_clip_torch": open_clip.__version__,
                                                   "torch": torch.__version__}, indent=2) + "\n")


if __name__ == "__main__":
    main()
