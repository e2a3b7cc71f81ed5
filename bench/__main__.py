"""Run every benchmark, or the ones named: ``python -m bench [encoder_bench ...]``.

A benchmark is a module under ``bench/`` with ``main(argv) -> int`` that prints a Markdown
report; add its module name to BENCHMARKS to have it run here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

BENCHMARKS = (
    "bench.encoder_bench",
)


def main(argv: Sequence[str] | None = None) -> int:
    wanted = list(sys.argv[1:] if argv is None else argv)
    known = {name.rpartition(".")[2]: name for name in BENCHMARKS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(known)}", file=sys.stderr)
        return 2
    failures = 0
    for short, module in known.items():
        if wanted and short not in wanted:
            continue
        print(f"## {short}\n", flush=True)
        failures += importlib.import_module(module).main([]) != 0
        print()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
