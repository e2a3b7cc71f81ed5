"""Child process for the save-hook test: kill -9 a save at each of its steps, then reopen.

Usage: OMP_NUM_THREADS=1 python -m tests.reliability.save_killer WORKDIR REBUILD(0|1)

Every step of a save (each temp-file write, fsync, rename and the manifest commit) is a hook;
trial N forks a process that changes the collection, starts a snapshot and SIGKILLs itself at
hook N. Another forked process reopens the folder and reports what it found. This process
never touches FAISS itself, so forking it is safe. Prints one JSON line per trial.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np

DIM = 16
OLD = [f"old-{i}" for i in range(40)]
NEW = [f"new-{i}" for i in range(15)]
DELETED = OLD[:10]


def _vectors(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal((n, DIM)).astype(np.float32)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True), (rng.standard_normal((n, DIM)) - 3).astype(np.float32)


def _in_child(work, *args) -> int:
    """Run ``work(*args)`` in a forked process; returns its wait status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work(*args)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def _create(folder: Path) -> None:
    from indexer import Catalog, IndexSpec

    with Catalog(folder, auto_snapshot=False) as catalog:
        index = catalog.create("c", "image", DIM, "m", spec=IndexSpec(kind="flat", codec="flat"))
        mean, logvar = _vectors(1, len(OLD))
        index.add(OLD, mean, logvar, [{"i": i} for i in range(len(OLD))])
        index.snapshot()


def _hooked(names: list[str], kill_at: int | None, log_path: Path | None):
    """Patch the primitives a save is made of so each call is a numbered step."""
    from indexer import persistence

    def step(name: str) -> None:
        names.append(name)
        if log_path is not None:
            with open(log_path, "a") as log:
                log.write(name + "\n")
        if kill_at is not None and len(names) - 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    real_fsync, real_replace, real_write = os.fsync, os.replace, persistence.HashingWriter.write
    real_commit = persistence.commit_manifest

    def fsync(fd):
        step("fsync")
        return real_fsync(fd)

    def replace(src, dst):
        step(f"rename:{Path(dst).name.split('.')[0] or Path(dst).name}")
        return real_replace(src, dst)

    def write(self, data):
        step("temp-write")
        half = len(data) // 2
        real_write(self, data[:half])  # a kill here leaves a half-written temp file
        step("temp-write-half")
        return half + real_write(self, data[half:])

    def commit(folder, manifest):
        step("manifest-commit")
        return real_commit(folder, manifest)

    os.fsync, os.replace = fsync, replace
    persistence.HashingWriter.write = write
    persistence.commit_manifest = commit
    from indexer import snapshot as snapshot_module
    if getattr(snapshot_module, "commit_manifest", None) is real_commit:
        snapshot_module.commit_manifest = commit


def _save(folder: Path, rebuild: bool, kill_at: int | None, log_path: Path | None) -> None:
    from indexer import Catalog

    catalog = Catalog(folder, auto_snapshot=False)
    index = catalog.get("c")
    mean, logvar = _vectors(2, len(NEW))
    index.add(NEW, mean, logvar, [{"new": i} for i in range(len(NEW))])
    index.delete(DELETED)
    _hooked([], kill_at, log_path)
    index.snapshot(rebuild=rebuild)


def _check(folder: Path, out: Path) -> None:
    from indexer import Catalog

    report: dict = {}
    try:
        with Catalog(folder, auto_snapshot=False) as catalog:
            index = catalog.get("c")
            live = sorted(i for i in OLD + NEW if i in index)
            mean, logvar = _vectors(3, 1)
            hits = [h.id for h in index.search(mean, logvar, k=100)[0]]
            report = {"ids": live, "size": len(index), "hits": sorted(hits), "snapshot_seq": index._snapshot_seq,
                      "store_seq": index._store.last_seq()}
    except Exception as error:  # a torn state must show up here, as a failed open
        report = {"error": f"{type(error).__name__}: {error}"}
    out.write_text(json.dumps(report))


def main(workdir: str, rebuild: bool) -> None:
    import indexer  # noqa: F401  (imported once here, not in every forked child; runs no FAISS code)

    work = Path(workdir)
    base = work / "base"
    assert _in_child(_create, base) == 0
    log_path = work / "steps.log"
    shutil.copytree(base, work / "dry")
    assert _in_child(_save, work / "dry", rebuild, None, log_path) == 0
    steps = log_path.read_text().split()
    for n, name in enumerate(steps):
        trial = work / f"trial-{n}"
        shutil.copytree(base, trial)
        status = _in_child(_save, trial, rebuild, n, None)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        out = work / f"trial-{n}.json"
        _in_child(_check, trial, out)
        print(json.dumps({"step": n, "hook": name, "killed": killed, **json.loads(out.read_text())}), flush=True)
        shutil.rmtree(trial)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "1")
