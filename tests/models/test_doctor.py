"""`prolip-retrieval doctor` on this very machine: what it offers and why a GPU is or isn't used."""

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import torch

from models.doctor import diagnose, render

ROOT = Path(__file__).resolve().parents[2]


def test_findings_match_the_machine():
    findings = {f.topic: f for f in diagnose()}
    assert {"cpu", "torch", "torch CUDA", "torch threads", "torch backend", "onnxruntime", "onnx backend",
            "faiss", "faiss GPU"} <= set(findings)
    cuda = findings["torch CUDA"]
    if torch.cuda.is_available():
        assert cuda.status == "ok"
    else:
        assert cuda.status == "warn" and cuda.detail.startswith("not used: ")
        assert "CPU in fp32" in findings["torch backend"].detail
    assert f"{torch.get_num_threads()} intra-op threads" in findings["torch threads"].detail
    for provider in ort.get_available_providers():
        assert provider in findings["onnxruntime"].detail
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "install onnxruntime-gpu" in findings["onnxruntime CUDA"].detail
        assert "runs fp32 on cpu" in findings["onnx backend"].detail
    else:
        assert "onnxruntime CUDA" not in findings


def test_render_marks_warnings():
    text = render(diagnose())
    assert text.count("\n") == len(diagnose()) - 1
    if not torch.cuda.is_available():
        assert "[WARN] torch CUDA" in text


def test_cli_doctor_runs():
    done = subprocess.run([sys.executable, "-m", "service.cli", "--log-level", "WARNING", "doctor"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "onnxruntime" in done.stdout and "torch CUDA" in done.stdout and "faiss GPU" in done.stdout


def test_doctor_lists_collections_with_their_model_family(tmp_path, clip_model_dir):
    from indexer import Catalog
    from service.cli_doctor import collection_findings, model_findings

    with Catalog(tmp_path / "data") as catalog:
        catalog.create("clip-texts", "text", 32, "clip@1", model_family="clip", deterministic=True)
        catalog.create("old", "image", 32, "prolip@1")  # no family recorded, as before families
    text = render(model_findings(str(clip_model_dir)) + collection_findings(tmp_path / "data"))
    assert f"{clip_model_dir}: clip family (deterministic: points, no uncertainty)" in text
    assert "collection clip-texts" in text and "text, 0 items, clip, deterministic: no uncertainty" in text
    assert "collection old" in text and "unknown family" in text
    assert "does not exist yet" in render(collection_findings(tmp_path / "nowhere"))
