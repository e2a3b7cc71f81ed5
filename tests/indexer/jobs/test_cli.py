"""`prolip-retrieval index` and `jobs` as a user runs them, including a crash and a resume."""

import re
import signal
import sqlite3
import subprocess
import time

import pytest

from indexer import Catalog
from service.cli import main
from tests.indexer.jobs.conftest import cli, write_images


def run(*args, timeout=120):
    process = cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def job_counts(data_dir):
    path = data_dir / "jobs.sqlite3"
    if not path.exists():
        return None
    with sqlite3.connect(path, timeout=5) as db:
        try:
            row = db.execute("SELECT done + failed, total FROM jobs").fetchone()
        except sqlite3.OperationalError:  # schema not written yet
            return None
    return row


def test_index_command_shows_progress_and_failures(tmp_path, model_dir, capsys):
    corpus = tmp_path / "corpus"
    write_images(corpus, [f"{i}.png" for i in range(6)])
    (corpus / "broken.jpg").write_bytes(b"garbage")
    data = tmp_path / "data"
    code = main(["index", str(corpus), "--collection", "photos", "--model", str(model_dir), "--data-dir", str(data),
                 "--device", "cpu", "--chunk-size", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.search(r"completed\s+6/7 done, 1 failed", out)
    assert re.search(r"failed: .*broken\.jpg: not a recognised image format", out)
    assert "7/7" in err  # the progress bar reached the end
    assert main(["jobs", "--data-dir", str(data)]) == 0
    out, _ = capsys.readouterr()
    assert re.search(r"completed\s+6/7 done", out) and f"photos <- {corpus}" in out
    assert main(["jobs", "nope", "--data-dir", str(data)]) == 2
    assert "no job 'nope'" in capsys.readouterr().err


def test_index_command_refuses_a_source_outside_allowed_roots(tmp_path, model_dir, capsys):
    corpus = tmp_path / "corpus"
    write_images(corpus, ["a.png"])
    (tmp_path / "root").mkdir()
    code = main(["index", str(corpus), "--collection", "photos", "--model", str(model_dir),
                 "--data-dir", str(tmp_path / "data"), "--allowed-root", str(tmp_path / "root")])
    assert code == 2 and "outside the allowed roots" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_index_run_resumes_without_indexing_anything_twice(tmp_path, model_dir):
    corpus = tmp_path / "corpus"
    write_images(corpus, [f"{i:03d}.png" for i in range(200)])
    data = tmp_path / "data"
    args = ("index", str(corpus), "--collection", "photos", "--model", str(model_dir), "--data-dir", str(data),
            "--device", "cpu", "--chunk-size", "3")
    first = cli(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    committed = None
    while committed is None:
        assert first.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        counts = job_counts(data)
        if counts and counts[1] and 0 < counts[0]:
            first.send_signal(signal.SIGSTOP)  # freeze, then make sure it is really mid-job
            counts = job_counts(data)
            if counts[0] < counts[1]:
                first.kill()
                committed = counts[0]
            else:
                first.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    first.wait(10)

    code, out, err = run(*args)
    assert code == 0, err
    assert "resuming job" in err
    resumed_from = int(err.split("resuming job ")[1].split(": ")[1].split(" ")[0])
    assert resumed_from == committed
    assert re.search(r"completed\s+200/200 done, 0 failed", out)
    with Catalog(data) as catalog:
        assert len(catalog.get("photos")) == 200


def test_collections_command_maintains_what_index_filled(tmp_path, model_dir, capsys):
    corpus = tmp_path / "corpus"
    write_images(corpus, [f"{i}.png" for i in range(3)])
    data = str(tmp_path / "data")
    assert main(["index", str(corpus), "--collection", "photos", "--model", str(model_dir), "--data-dir", data,
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["collections", "list", "--data-dir", data]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"photos\s+image\s+3\s+64", listing)
    assert main(["collections", "verify", "photos", "--data-dir", data]) == 0
    assert "ok: photos (3 items" in capsys.readouterr().out
    assert main(["collections", "stats", "--data-dir", data]) == 2
    assert "needs a collection NAME" in capsys.readouterr().err
    assert main(["index", str(corpus), "--data-dir", data]) == 2
    assert "needs --collection NAME" in capsys.readouterr().err


def _interrupt_mid_job(args, data, signals: int):
    """Start `index`, wait until it is really mid-job, send ``signals`` SIGINTs; returns (code, err)."""
    before = (job_counts(data) or (0, None))[0]
    process = cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it was interrupted"
        counts = job_counts(data)
        if counts and counts[1] and before < counts[0] < counts[1]:  # this run has committed some, not all
            break
        time.sleep(0.005)
    for _ in range(signals):
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
    out, err = process.communicate(timeout=60)
    return process.returncode, err


def _check_ctrl_c(tmp_path, model_dir, signal_counts):
    corpus = tmp_path / "corpus"
    write_images(corpus, [f"{i:03d}.png" for i in range(120)])
    data = tmp_path / "data"
    args = ("index", str(corpus), "--collection", "photos", "--model", str(model_dir), "--data-dir", str(data),
            "--device", "cpu", "--chunk-size", "2", "--batch-size", "2")
    for signals in signal_counts:
        code, err = _interrupt_mid_job(args, data, signals)
        # 130, or (a second Ctrl-C landing after the run had already stopped, as the process exits)
        # ended by SIGINT itself: a shell reports 130 for both
        assert code == 130 or (signals > 1 and code == -signal.SIGINT), (code, err)
        assert "Traceback" not in err and "Error" not in err, err
        assert "run the same command again" in err
        with sqlite3.connect(data / "jobs.sqlite3") as db:
            state, error = db.execute("SELECT state, error FROM jobs").fetchone()
        assert state in ("interrupted", "running") and error is None  # "running" with nobody holding it: resumable
    code, out, err = run(*args)
    assert code == 0, err
    assert "resuming job" in err and re.search(r"completed\s+120/120 done, 0 failed", out)
    with Catalog(data) as catalog:
        assert len(catalog.get("photos")) == 120


def test_ctrl_c_during_index_stops_at_a_chunk_boundary_and_the_job_resumes(tmp_path, model_dir):
    """Issue #16, defect 10: Ctrl-C stops cleanly, says so and leaves the job resumable; the run again
    indexes the rest, nothing twice."""
    _check_ctrl_c(tmp_path, model_dir, [1])


@pytest.mark.slow
def test_ctrl_c_twice_stops_at_once_and_the_job_still_resumes(tmp_path, model_dir, asked_for_slow):
    _check_ctrl_c(tmp_path, model_dir, [2, 1])
