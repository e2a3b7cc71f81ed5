"""Path patterns shared by training and indexing: ``shards-{000..099}.tar`` ranges and globs."""

from __future__ import annotations

import glob
import os
import re

BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def is_pattern(text: str) -> bool:
    """Whether ``text`` holds a ``{a..b}`` range or a glob character."""
    return bool(BRACES.search(text)) or any(c in text for c in "*?[")


def expand(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar (zero-padded as written); globs are
    expanded and sorted. ValueError for a range that runs backwards; FileNotFoundError for a glob
    that matches nothing. Ranges are not checked against the filesystem."""
    match = BRACES.search(pattern)
    if match:
        first, last = match.group(1), match.group(2)
        if int(last) < int(first):
            raise ValueError(f"range {match.group(0)} runs backwards")
        head, tail = pattern[:match.start()], pattern[match.end():]
        return [path for n in range(int(first), int(last) + 1) for path in expand(f"{head}{n:0{len(first)}d}{tail}")]
    if any(c in pattern for c in "*?["):
        found = sorted(glob.glob(os.path.expanduser(pattern)))
        if not found:
            raise FileNotFoundError(f"nothing matches {pattern!r}")
        return found
    return [pattern]
