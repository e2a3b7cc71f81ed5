"""kill -9 at every step of a save (temp write, fsync, rename, manifest commit): old or new, never torn.

The collection's content is committed to the store before the save starts, so whichever
snapshot loads (the old one plus a replay of the store, or the new one) the reopened
collection must hold exactly the new content; a torn snapshot would fail its checksums or
disagree with the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .save_killer import DELETED, NEW, OLD

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rebuild", [False, True], ids=["persist", "rebuild"])
def test_kill_at_each_save_step_leaves_old_or_new_state(tmp_path, rebuild):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "tests.reliability.save_killer", str(tmp_path), str(int(rebuild))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = [json.loads(line) for line in run.stdout.splitlines()]
    hooks = {t["hook"].split(":")[0] for t in trials}
    assert {"temp-write", "temp-write-half", "fsync", "rename", "manifest-commit"} <= hooks, hooks
    expected = sorted(set(OLD + NEW) - set(DELETED))
    seqs = set()
    for trial in trials:
        assert trial["killed"], trial  # the hook fired: this really is a crash at that step
        assert "error" not in trial, trial
        assert trial["ids"] == expected and trial["size"] == len(expected), trial
        assert trial["hits"] == expected, trial
        seqs.add(trial["snapshot_seq"])
    # both outcomes occur: killed before the manifest rename -> the old snapshot (replayed); after -> the new one
    assert len(seqs) == 2, seqs
