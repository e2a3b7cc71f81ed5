"""torch loads only where a model runs: the CLI's parser, the index and the job code stay light.

Importing torch costs about 2.5 s here; every `prolip-retrieval --help`, `collections list`
and job process would pay it. These run in a fresh interpreter, where nothing is imported yet.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import models

LIGHT = "service.cli indexer indexer.catalog indexer.jobs models models.gaussian models.preprocess models.training"


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cli_parser_index_and_jobs_do_not_import_torch():
    code = (f"import importlib, sys\nfor name in {LIGHT.split()!r}: importlib.import_module(name)\n"
            "import service.cli; service.cli.build_parser()\nprint('torch' in sys.modules)")
    assert _fresh(code) == "False"


def test_numpy_math_works_without_torch_and_tensors_still_take_the_torch_path():
    code = ("import sys, numpy as np\nfrom models import gaussian\n"
            "m = np.eye(2, dtype=np.float32); v = np.full((2, 2), -4.0, np.float32)\n"
            "d = gaussian.csd(m, v, m, v)\nassert isinstance(d, np.ndarray) and 'torch' not in sys.modules\n"
            "import torch\nt = gaussian.csd(*(torch.from_numpy(a) for a in (m, v, m, v)))\n"
            "assert isinstance(t, torch.Tensor) and np.allclose(t.numpy(), d)\nprint('ok')")
    assert _fresh(code) == "ok"


@pytest.mark.parametrize("name", models.__all__)
def test_every_exported_name_resolves(name):
    assert getattr(models, name) is not None
    assert name in dir(models)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        models.nope  # noqa: B018
