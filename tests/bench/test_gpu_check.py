"""The GPU check's harness, exercised on the CPU (its GPU paths need a CUDA host; see bench/gpu.py)."""

from __future__ import annotations

import json

import pytest

from bench import gpu


def test_arguments_are_validated_and_cpu_only_picks_small_sizes():
    with pytest.raises(SystemExit):
        gpu.parse_args(["--n", "0"])
    with pytest.raises(SystemExit):
        gpu.parse_args(["--sections", "nonsense"])
    with pytest.raises(SystemExit):
        gpu.parse_args(["--budget-s", "-1"])
    plan = gpu.plan_from_args(gpu.parse_args(["--cpu-only"]))
    assert plan.device == "cpu" and plan.n == 4000 and plan.model == "reference" and plan.sections == gpu.SECTIONS
    full = gpu.plan_from_args(gpu.parse_args(["--n", "500", "--sections", "search"]))
    assert full.device == "cuda" and full.n == 500 and full.sections == ("search",)


def test_without_a_gpu_the_full_check_refuses_instead_of_reporting_cpu_figures(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu.main(["--sections", "search"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_junit_counts_and_the_table_and_json_say_what_ran(tmp_path):
    xml = '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2"></testsuite></testsuites>'
    assert gpu.junit_counts(xml) == {"passed": 2, "failed": 1, "skipped": 2}
    rows = [gpu.Row("encoder", "fast path", 300.0, "images/s", 100.0),
            gpu.Row("search", "ivf", status="skipped", note="no GPU")]
    plan = gpu.plan_from_args(gpu.parse_args(["--cpu-only"]))
    text = gpu.markdown(rows, {"gpu": None}, plan, 1.0)
    assert "| encoder | fast path | 300 images/s | 100 images/s | 3.00x | ok |" in text
    assert "| search | ivf |  |  |  | skipped | no GPU |" in text
    gpu.write_json(tmp_path / "out.json", rows, {"gpu": None}, plan, 1.0)
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["rows"][0]["ratio"] == 3.0 and document["plan"]["cpu_only"] is True


def test_cpu_only_run_of_every_measuring_section(tmp_path, capsys):
    out = tmp_path / "check.json"
    code = gpu.main(["--cpu-only", "--sections", "encoder", "indexing", "search", "--n", "1500", "--images", "12",
                     "--encode-images", "8", "--batch", "4", "--json", str(out)])
    document = json.loads(out.read_text())
    statuses = {(row["section"], row["status"]) for row in document["rows"]}
    assert code == 0, capsys.readouterr().out
    assert ("encoder", "ok") in statuses and ("indexing", "ok") in statuses
    assert not any(row["status"] == "failed" for row in document["rows"])
    eager = next(row for row in document["rows"] if "eager" in row["what"])
    assert eager["value"] > 0 and 0 < eager["extra"]["roofline_fraction"]
    pipeline = next(row for row in document["rows"] if "job pipeline" in row["what"])
    assert pipeline["value"] > 0 and "12 done" in pipeline["note"]
    search = [row for row in document["rows"] if row["section"] == "search"]
    assert search and all(row["baseline"] > 0 for row in search)  # the CPU baselines ran; GPU rows say why not
