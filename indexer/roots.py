"""Confining source paths to configured roots.

The service indexes paths that users name, so every path it opens must lie inside one of
the operator's ``allowed_roots``. A path is judged by where it really leads: ``..`` parts
and symlinks are resolved first, so neither can step outside a root. ``None`` as the roots
means "no confinement" (the CLI run by the machine's own user).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .errors import InvalidInputError

Roots = Sequence[str | os.PathLike] | None


class PathNotAllowedError(InvalidInputError):
    """A path leads outside every allowed root (directly, through '..' or through a symlink)."""


def normalise_roots(roots: Roots) -> tuple[Path, ...] | None:
    """Resolved root folders, or None when confinement is off. Roots must exist."""
    if roots is None:
        return None
    resolved = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ValueError(f"allowed root {str(root)!r} is not a folder")
        resolved.append(path.resolve(strict=True))
    return tuple(resolved)


class Confinement:
    """Checks paths against a fixed set of roots (resolved once, reused for every path)."""

    def __init__(self, roots: Roots):
        self.roots = normalise_roots(roots)

    @property
    def enabled(self) -> bool:
        return self.roots is not None

    def resolve(self, path: str | os.PathLike) -> Path:
        """The real path of ``path``, checked to lie inside a root.

        Raises ``PathNotAllowedError`` when it escapes them (directly, through '..' or a
        symlink) and ``FileNotFoundError`` when it does not exist.
        """
        given = Path(path).expanduser()
        try:
            real = given.resolve(strict=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{given}: no such file or folder") from None
        except RuntimeError as error:  # symlink loop
            raise PathNotAllowedError(f"{given}: {error}") from None
        if self.roots is None:
            return real
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            via = "" if real == given.absolute() else f" (it leads to {real})"
            raise PathNotAllowedError(
                f"{given} is outside the allowed roots{via}; allowed: {', '.join(map(str, self.roots))}")
        return real


def confine(path: str | os.PathLike, roots: Roots) -> Path:
    """One-off ``Confinement(roots).resolve(path)``."""
    return Confinement(roots).resolve(path)
