"""Generate tests/fixtures/bprw/: the official BPRW code's outputs on synthetic inputs.

Run it in a throwaway virtualenv that has torch, numpy and tqdm (nothing of this project), with the
official analysis file from naver-ai/prolip (``src/analysis/unc_zeroshot_prompts.py``) checked out
somewhere outside this repository:

    python3 -m venv /tmp/bprw-venv && /tmp/bprw-venv/bin/pip install torch numpy tqdm
    /tmp/bprw-venv/bin/python scripts/bprw_reference.py /path/to/unc_zeroshot_prompts.py tests/fixtures/bprw

The file's top-level imports pull in its training package, so only its two functions are taken
(``estimate_mixing_proportions`` and ``bprw``, by parsing the file) and run as they are. ``bprw`` is
called in its few-shot mode (``use_gt``: class c's images are rows 50c .. 50c + NN - 1) with
``coeff`` = alpha-multiplier-NN-K-stable_eps-prior, reading the image Gaussians from the
``em_cache.pt`` it looks for in ``checkpoint_dir``. Its only randomness is one ``torch.randn`` per
class for the samples; the same draws are replayed from the same seed and saved, so a test can
feed them to our implementation. Nothing of the official code is written to the output.
"""

from __future__ import annotations

import ast
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

SEED = 1234
CASES = {  # name: (classes, templates, dim, coeff)
    "few_shot_table3": (3, 6, 16, "2-1-5-20-0.02-inverse"),  # the paper's Table 3 few-shot setting
    "uniform_prior": (2, 4, 8, "5-1-3-10-0.0-uniform"),
}


def official_functions(path: Path) -> dict:
    """Execute only the two function definitions of the official file, with the imports they use."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wanted = [node for node in tree.body if isinstance(node, ast.FunctionDef)
              and node.name in ("estimate_mixing_proportions", "bprw")]
    if len(wanted) != 2:
        raise SystemExit(f"{path} does not define estimate_mixing_proportions and bprw")
    import os

    from tqdm import tqdm

    namespace = {"np": np, "torch": torch, "os": os, "tqdm": tqdm}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace


def synthetic(classes: int, templates: int, dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Prompt Gaussians per class and 50 image Gaussians per class, at ProLIP-like scales."""
    centres = rng.standard_normal((classes, dim))
    prompt_mean = centres[:, None, :] + 0.6 * rng.standard_normal((classes, templates, dim))
    prompt_mean /= np.linalg.norm(prompt_mean, axis=-1, keepdims=True)
    prompt_variance = np.exp(rng.normal(np.log(0.3 / dim), 0.5, (classes, templates, 1))
                             + 0.3 * rng.standard_normal((classes, templates, dim)))
    image_mean = np.repeat(centres, 50, axis=0) + 0.8 * rng.standard_normal((classes * 50, dim))
    image_mean /= np.linalg.norm(image_mean, axis=-1, keepdims=True)
    image_logvar = np.log(0.05 / dim) + 0.5 * rng.standard_normal((classes * 50, dim))
    return {"prompt_mean": prompt_mean.astype(np.float32), "prompt_variance": prompt_variance.astype(np.float32),
            "image_mean": image_mean.astype(np.float32), "image_logvar": image_logvar.astype(np.float32)}


def run_case(functions: dict, name: str, classes: int, templates: int, dim: int, coeff: str, out: Path) -> dict:
    inputs = synthetic(classes, templates, dim, np.random.default_rng([SEED, len(name)]))
    alpha, _, nn, k, stable_eps, prior = coeff.split("-")
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        torch.save([torch.from_numpy(inputs["image_mean"]), torch.from_numpy(inputs["image_logvar"])],
                   Path(checkpoint_dir) / "em_cache.pt")
        loaded = {"args": SimpleNamespace(device="cpu", batch_size=1), "model": None, "tokenizer": None,
                  "autocast": None, "input_dtype": torch.float32, "preprocess_train": None, "preprocess_val": None}
        weights_file = Path(checkpoint_dir) / "weights.pt"
        torch.manual_seed(SEED)
        classifier, text_stds = functions["bprw"](
            torch.from_numpy(inputs["prompt_mean"]), torch.from_numpy(inputs["prompt_variance"]), coeff,
            dataloader=None, loaded=loaded, checkpoint_dir=checkpoint_dir, em_weight_out_fname=str(weights_file),
            use_gt=True)
        weights = torch.stack(torch.load(weights_file)).numpy()
    torch.manual_seed(SEED)  # replay the draws bprw made: one randn per class, in class order
    noise = np.stack([torch.randn(int(nn), int(k), dim).numpy() for _ in range(classes)])
    np.savez_compressed(out / f"{name}.npz", **inputs, noise=noise, weights=weights,
                        class_mean=classifier.T.numpy(), class_variance=text_stds.T.numpy())
    return {"classes": classes, "templates": templates, "dim": dim, "coeff": coeff, "alpha": float(alpha),
            "images_per_class": int(nn), "samples_per_image": int(k), "stable_eps": float(stable_eps),
            "init": prior}


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    functions = official_functions(Path(sys.argv[1]))
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    cases = {name: run_case(functions, name, *spec, out) for name, spec in CASES.items()}
    (out / "cases.json").write_text(json.dumps({"torch": torch.__version__, "seed": SEED, "cases": cases},
                                               indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
